"""Bad config and playbooks: one line naming file, field (or line) and what is allowed; exit 2; nothing sent or written.

Each case copies config/ and playbooks/ into its own folder (a project of its own: the root is the
nearest folder holding config/shared.yaml), breaks it with a small edit, and runs the real CLI there.
Raw text edits make what yaml.safe_dump cannot: duplicate keys, bytes that are not UTF-8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploykit.sandbox.server import SandboxServer
from tests.conftest import Sandbox, run_invoke
from tests.helpers import copy_project, set_yaml_value

PLAN_BETA = ("plan", "--env", "beta")
DEPLOY_BETA = ("deploy", "--env", "beta", "--yes")
PLAN_PROD = ("plan", "--env", "prod")
DEPLOY_PROD = ("deploy", "--env", "prod", "--yes")
# Variables that would send the run's files somewhere else: unset, so a write shows in the work folder.
REDIRECTS = ("DEPLOYKIT_ROOT", "DEPLOYKIT_AUDIT_DIR", "DEPLOYKIT_SANDBOX_DIR")

Edit = Callable[[Path], None]
Where = str | Callable[[Path], str]


# ---- edits ---------------------------------------------------------------------------------------
def set_value(file: str, path: list[str | int], value: object) -> Edit:
    """Set (or, with value None, delete) one setting through a YAML round trip."""

    def edit(root: Path) -> None:
        set_yaml_value(root / file, path, value)

    return edit


def replace(file: str, old: str, new: str) -> Edit:
    """A raw text edit; `old` must occur exactly once so the case stays meaningful."""

    def edit(root: Path) -> None:
        target = root / file
        text = target.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{file}: {old!r} occurs {text.count(old)} times"
        target.write_text(text.replace(old, new), encoding="utf-8")

    return edit


def write_bytes(file: str, make: Callable[[bytes], bytes]) -> Edit:
    def edit(root: Path) -> None:
        target = root / file
        target.write_bytes(make(target.read_bytes()))

    return edit


def line_of(file: str, text: str, occurrence: int = 1) -> Callable[[Path], str]:
    """`line N` of the occurrence-th line starting (after indentation) with `text`, in the edited file."""

    def where(root: Path) -> str:
        found = [
            n
            for n, line in enumerate((root / file).read_bytes().decode("utf-8", "replace").splitlines(), 1)
            if line.lstrip(" -").startswith(text)
        ]
        return f"line {found[occurrence - 1]}"

    return where


@dataclass(frozen=True)
class Case:
    id: str
    edits: tuple[Edit, ...]
    file: str  # the file the message must name, as typed from the project root
    where: Where  # the field path (or `line N`) the message must name right after the file
    allowed: str  # a fragment of what is allowed (or why), which must be in the message
    command: tuple[str, ...] = PLAN_BETA
    also: tuple[str, ...] = field(default_factory=tuple)  # more fragments the line must hold


BETA, PROD, SHARED = "config/beta.yaml", "config/prod.yaml", "config/shared.yaml"
STEP1, STEP2A, STEP2B = "playbooks/step1.yaml.j2", "playbooks/step2a.yaml.j2", "playbooks/step2b.yaml.j2"
LONG = "x" * 513


def _app_index(root: Path, name: str) -> int:
    """Where an app is in the edited beta.yaml's apps list."""
    import yaml

    return [app["name"] for app in yaml.safe_load((root / BETA).read_text())["apps"]].index(name)


CASES = [
    # ---- files: duplicate keys, encoding, shape, syntax ------------------------------------------
    Case(
        "duplicate top-level key",
        (replace(BETA, "\nidentity:\n", "\nredis:\n  name: redis-other\n\nidentity:\n"),),
        BETA,
        line_of(BETA, "redis:", 2),
        "duplicate key 'redis'",
        also=("each key once",),
    ),
    Case(
        "duplicate nested key",
        (replace(SHARED, "  sku: standard\n", "  sku: standard\n  sku: premium\n"),),
        SHARED,
        line_of(SHARED, "sku: premium"),
        "duplicate key 'sku'",
        DEPLOY_BETA,
    ),
    Case(
        "duplicate key in a flow mapping",
        (replace(BETA, "{name: card-api, port: 8000,", "{name: card-api, port: 8000, port: 8001,"),),
        BETA,
        line_of(BETA, "{name: card-api"),
        "duplicate key 'port'",
    ),
    Case(
        "duplicate key under vpn",
        (replace(PROD, "  routes: [10.20.0.0/16]", "  routes: [10.20.0.0/16]\n  routes: [10.30.0.0/16]"),),
        PROD,
        line_of(PROD, "routes: [10.30"),
        "duplicate key 'routes'",
        PLAN_PROD,
    ),
    Case(
        "latin-1 byte in a comment",
        (write_bytes(BETA, lambda b: b.replace(b"# Beta: testing", b"# B\xe9ta: testing")),),
        BETA,
        "line 1",
        "not valid UTF-8",
        also=("0xe9", "allowed: UTF-8 text"),
    ),
    Case(
        "binary garbage in shared.yaml",
        (write_bytes(SHARED, lambda b: b.replace(b"owner: platform-team", b"owner: platform-\xff\xfeteam")),),
        SHARED,
        line_of(SHARED, "owner: platform-"),
        "not valid UTF-8",
        DEPLOY_BETA,
    ),
    Case("empty file", (write_bytes(BETA, lambda b: b""),), BETA, "the file is empty", "allowed: a mapping of settings"),
    Case(
        "only comments",
        (write_bytes(PROD, lambda b: b"# nothing here yet\n"),),
        PROD,
        "the file is empty",
        "allowed: a mapping of settings",
        PLAN_PROD,
    ),
    Case(
        "top level is a list",
        (write_bytes(SHARED, lambda b: b"- product: trading\n- owner: platform-team\n"),),
        SHARED,
        "(top level)",
        "allowed: a mapping of settings",
        also=("is a list",),
    ),
    Case(
        "top level is a scalar",
        (write_bytes(BETA, lambda b: b"just some words\n"),),
        BETA,
        "(top level)",
        "allowed: a mapping of settings",
    ),
    Case(
        "bad indentation",
        (replace(BETA, "  sku_name: Standard_B1ms\n", "  sku_name: Standard_B1ms\n    tier: Burstable\n"),),
        BETA,
        line_of(BETA, "tier: Burstable"),
        "allowed: valid YAML",
    ),
    Case(
        "control character",
        (write_bytes(BETA, lambda b: b.replace(b"name: kv-trading-beta", b"name: kv-trading-\x07beta")),),
        BETA,
        line_of(BETA, "name: kv-trading-"),
        "U+0007 is not allowed",
    ),
    # ---- playbooks ---------------------------------------------------------------------------------
    Case(
        "duplicate key in a rendered playbook",
        (replace(STEP2B, "    sku: {name:", "    kind: registry\n    kind: registry\n    sku: {name:"),),
        STEP2B,
        "rendered line",
        "duplicate key 'kind'",
    ),
    Case(
        "playbook not UTF-8",
        (write_bytes(STEP2A, lambda b: b.replace(b"the shared Key Vault", b"the shared Key Vault \x80")),),
        STEP2A,
        "line 1",
        "not valid UTF-8",
        DEPLOY_BETA,
    ),
    Case(
        "playbook top level is a list",
        (write_bytes(STEP2B, lambda b: b"- address: acr.shared\n"),),
        STEP2B,
        "(top level)",
        "allowed: a mapping with a resources list",
    ),
    Case(
        "playbook location is not a region",
        (replace(STEP2B, "location: {{ shared.location | tojson }}", 'location: "mars"'),),
        STEP2B,
        "acr.shared.location",
        "is not an Azure region",
    ),
    Case(
        "playbook tag name with a slash",
        (replace(STEP1, 'tags: {{ shared.tags_for("shared") | tojson }}', 'tags: {"cost/center": "1"}'),),
        STEP1,
        "rg.shared.tags.cost/center",
        "allowed: any characters but",
    ),
    # ---- the private network (step 6) --------------------------------------------------------
    Case(
        "public IP without zones",
        (set_value(PROD, ["network", "public_ip", "zones"], []),),
        PROD,
        "network.public_ip.zones",
        "at least 1 item",
        PLAN_PROD,
    ),
    Case(
        "a zone twice",
        (set_value(PROD, ["network", "public_ip", "zones"], ["1", "1"]),),
        PROD,
        "network.public_ip.zones[1]",
        "allowed: each zone once",
        PLAN_PROD,
    ),
    Case(
        "subnet outside the VNet",
        (set_value(PROD, ["network", "subnets", 1, "prefix"], "10.21.2.0/24"),),
        PROD,
        "network.subnets[1].prefix",
        "outside address_space",
        PLAN_PROD,
    ),
    Case(
        "overlapping subnets",
        (set_value(PROD, ["network", "subnets", 1, "prefix"], "10.20.1.0/24"),),
        PROD,
        "network.subnets[1].prefix",
        "overlaps subnets[0]",
        PLAN_PROD,
    ),
    Case(
        "an NSG on GatewaySubnet",
        (set_value(PROD, ["network", "subnets", 3, "nsg"], {"name": "nsg-gw"}),),
        PROD,
        "network.subnets[3].nsg",
        "not supported by Azure",
        PLAN_PROD,
    ),
    Case(
        "a non-AZ gateway SKU",
        (set_value(PROD, ["network", "gateway", "sku"], "VpnGw1"),),
        PROD,
        "network.gateway.sku",
        "VpnGw1AZ",
        PLAN_PROD,
    ),
    Case(
        "a data service's private zone missing",
        (set_value(PROD, ["network", "private_dns_zones"], ["privatelink.postgres.database.azure.com"]),),
        PROD,
        "network.private_dns_zones",
        "allowed: a list holding it",
        PLAN_PROD,
        also=("privatelink.vaultcore.azure.net is missing",),
    ),
    Case(
        "gateway away from its VNet",
        (set_value(PROD, ["vpn", "gateway", "resource_group"], "rg-trading-prod-data"),),
        PROD,
        "vpn.gateway.resource_group",
        "allowed: rg-trading-prod-apps",
        PLAN_PROD,
    ),
    Case(
        "VPN DNS not the resolver",
        (set_value(PROD, ["vpn", "dns_servers"], ["10.20.3.5"]),),
        PROD,
        "vpn.dns_servers",
        "allowed: [10.20.3.4]",
        PLAN_PROD,
    ),
    # ---- addresses -------------------------------------------------------------------------------
    Case(
        "pool with host bits set",
        (set_value(PROD, ["vpn", "client_address_pool"], "172.16.201.5/24"),),
        PROD,
        "vpn.client_address_pool",
        "did you mean 172.16.201.0/24",
        PLAN_PROD,
        also=("'172.16.201.5/24'",),
    ),
    Case(
        "pool prefix too long",
        (set_value(PROD, ["vpn", "client_address_pool"], "172.16.201.0/33"),),
        PROD,
        "vpn.client_address_pool",
        "allowed: an IPv4 network as a.b.c.d/n",
        PLAN_PROD,
    ),
    Case(
        "pool without prefix",
        (set_value(PROD, ["vpn", "client_address_pool"], "172.16.201.0"),),
        PROD,
        "vpn.client_address_pool",
        "is not a CIDR",
        DEPLOY_PROD,
    ),
    Case(
        "pool octet over 255",
        (set_value(PROD, ["vpn", "client_address_pool"], "172.16.301.0/24"),),
        PROD,
        "vpn.client_address_pool",
        "'172.16.301.0/24' is not a CIDR",
        PLAN_PROD,
    ),
    Case(
        "pool is a public range",
        (set_value(PROD, ["vpn", "client_address_pool"], "8.8.8.0/24"),),
        PROD,
        "vpn.client_address_pool",
        "allowed: a range inside 10.0.0.0/8",
        PLAN_PROD,
    ),
    Case(
        "pool overlaps the VNet route",
        (set_value(PROD, ["vpn", "client_address_pool"], "10.20.200.0/24"),),
        PROD,
        "vpn.client_address_pool",
        "allowed: a client pool outside every route",
        PLAN_PROD,
        also=("overlaps routes[0] 10.20.0.0/16",),
    ),
    Case(
        "route with host bits set",
        (set_value(PROD, ["vpn", "routes"], ["10.20.1.0/16"]),),
        PROD,
        "vpn.routes[0]",
        "did you mean 10.20.0.0/16",
        PLAN_PROD,
    ),
    Case(
        "route is not an address",
        (set_value(PROD, ["vpn", "routes"], ["10.20.0.0/16", "vnet"]),),
        PROD,
        "vpn.routes[1]",
        "'vnet' is not a CIDR",
        PLAN_PROD,
    ),
    Case(
        "route listed twice",
        (set_value(PROD, ["vpn", "routes"], ["10.20.0.0/16", "10.30.0.0/16", "10.20.0.0/16"]),),
        PROD,
        "vpn.routes[2]",
        "allowed: each route once",
        PLAN_PROD,
        also=("vpn.routes[0]",),
    ),
    Case(
        "dns server octet over 255",
        (set_value(PROD, ["vpn", "dns_servers"], ["10.20.3.256"]),),
        PROD,
        "vpn.dns_servers[0]",
        "allowed: a unicast IPv4 address",
        PLAN_PROD,
    ),
    Case(
        "dns server given as a CIDR",
        (set_value(PROD, ["vpn", "dns_servers"], ["10.20.3.4/32"]),),
        PROD,
        "vpn.dns_servers[0]",
        "is not an IPv4 address",
        PLAN_PROD,
    ),
    Case(
        "dns server inside the client pool",
        (set_value(PROD, ["vpn", "dns_servers"], ["172.16.201.53"]),),
        PROD,
        "vpn.dns_servers[0]",
        "allowed: a DNS server outside the client pool",
        PLAN_PROD,
    ),
    Case(
        "dns server is loopback",
        (set_value(PROD, ["vpn", "dns_servers"], ["127.0.0.1"]),),
        PROD,
        "vpn.dns_servers[0]",
        "cannot be used by a client",
        DEPLOY_PROD,
    ),
    # ---- regions ---------------------------------------------------------------------------------
    Case(
        "misspelt region",
        (set_value(BETA, ["location"], "centralsu"),),
        BETA,
        "location",
        "did you mean 'centralus'?",
        also=("is not an Azure region",),
    ),
    Case(
        "region display name",
        (set_value(SHARED, ["location"], "West Europe"),),
        SHARED,
        "location",
        "did you mean 'westeurope'",
        DEPLOY_BETA,
    ),
    Case(
        "unknown region",
        (set_value(PROD, ["location"], "moon"),),
        PROD,
        "location",
        "allowed: a lower-case region name",
        PLAN_PROD,
    ),
    # ---- duplicate names -------------------------------------------------------------------------
    Case(
        "two apps with one name",
        (set_value(BETA, ["apps", 3, "name"], "auth-api"),),
        BETA,
        "apps[3].name",
        "allowed: each app name once",
        also=("is also apps[0].name",),
    ),
    Case(
        "two databases with one name",
        (set_value(PROD, ["databases", 6, "name"], "sigmatiq_core"),),
        PROD,
        "databases[6].name",
        "allowed: each database name once",
        PLAN_PROD,
        also=("is also databases[1].name",),
    ),
    Case(
        "two provider secrets with one name (case ignored)",
        (set_value(SHARED, ["provider_secrets", 4, "name"], "Polygon-API-Key"),),
        SHARED,
        "provider_secrets[4].name",
        "allowed: each secret name",
        also=("is also provider_secrets[0].name",),
    ),
    Case(
        "beta uses a prod resource group",
        (set_value(BETA, ["resource_groups", "apps", "name"], "rg-trading-prod-apps"),),
        BETA,
        "resource_groups.apps.name",
        "allowed: a resource group name no other environment or role uses",
        also=("in config/prod.yaml",),
    ),
    Case(
        "prod uses a beta resource group, seen from beta",
        (set_value(PROD, ["resource_groups", "data", "name"], "rg-trading-beta-data"),),
        BETA,
        "resource_groups.data.name",
        "no other environment or role uses",
        DEPLOY_BETA,
        also=("is also resource_groups.data.name in config/prod.yaml",),
    ),
    Case(
        "an env uses the shared resource group",
        (set_value(PROD, ["resource_groups", "data", "name"], "RG-Trading-Shared"),),
        PROD,
        "resource_groups.data.name",
        "no other environment or role uses",
        PLAN_PROD,
        also=("in config/shared.yaml",),
    ),
    Case(
        "data and apps share a group",
        (set_value(BETA, ["resource_groups", "apps", "name"], "rg-trading-beta-data"),),
        BETA,
        "resource_groups.apps.name",
        "no other environment or role uses",
        also=("is also resource_groups.data.name;",),
    ),
    Case(
        "env vault named like the shared vault",
        (set_value(BETA, ["key_vault", "name"], "kv-trading-shared"),),
        BETA,
        "key_vault.name",
        "vault names are global",
    ),
    Case(
        "prod cache named like beta's",
        (set_value(PROD, ["redis", "name"], "redis-trading-beta"), set_value(PROD, ["redis", "name_suffix"], "1023")),
        PROD,
        "redis.name_suffix",
        "cache names are global",
        PLAN_PROD,
    ),
    Case(
        "a step listed twice",
        (set_value(BETA, ["steps"], ["step1", "step2a", "step1"]),),
        BETA,
        "steps[2]",
        "allowed: each step once",
    ),
    Case("an unknown step", (set_value(BETA, ["steps"], ["step1", "step99"]),), BETA, "steps[1]", "allowed: step1"),
    # ---- tags ------------------------------------------------------------------------------------
    Case("tag name too long", (set_value(SHARED, ["tags", LONG], "x"),), SHARED, f"tags.{LONG}", "allowed: 1-512 characters"),
    Case(
        "tag value too long",
        (set_value(SHARED, ["tags", "cost-center"], "v" * 257),),
        SHARED,
        "tags.cost-center",
        "allowed: 0-256 characters",
    ),
    Case(
        "too many tags",
        (set_value(SHARED, ["tags"], {f"tag{i}": "x" for i in range(48)}),),
        SHARED,
        "tags",
        "allowed: at most 50 tags per resource",
        DEPLOY_BETA,
    ),
    Case(
        "tag name with a forbidden character",
        (set_value(SHARED, ["tags", "team?"], "ops"),),
        SHARED,
        "tags.team?",
        "allowed: any characters but < > % & \\ ? /",
    ),
    Case(
        "tag name with an Azure prefix",
        (set_value(SHARED, ["tags", "Azure-team"], "ops"),),
        SHARED,
        "tags.Azure-team",
        "allowed: names not starting with microsoft, azure, windows",
    ),
    Case(
        "tag deploykit sets itself",
        (set_value(SHARED, ["tags", "Environment"], "test"),),
        SHARED,
        "tags.Environment",
        "is set by deploykit on every resource",
    ),
    Case(
        "tag names differing in case",
        (set_value(SHARED, ["tags", "Managed-By"], "me"),),
        SHARED,
        "tags.Managed-By",
        "allowed: each tag name once (Azure ignores case)",
    ),
    Case(
        "owner too long for a tag value",
        (set_value(SHARED, ["owner"], "o" * 300),),
        SHARED,
        "owner",
        "allowed: 0-256 characters",
    ),
    # ---- a typo'd key, a value of the wrong kind, out of range, a number YAML read -----------------
    Case(
        "misspelt key names the typo, not the field it hides",
        (replace(BETA, "  sku_name: Standard_B1ms\n", "  sku_nmae: Standard_B1ms\n"),),
        BETA,
        "postgres.sku_nmae",
        "unknown field (did you mean sku_name?)",
        also=("allowed: name, sku_name",),
    ),
    Case(
        "a size with its unit",
        (replace(BETA, "  storage_gb: 32\n", "  storage_gb: 32GB\n"),),
        BETA,
        "postgres.storage_gb",
        "allowed: a whole number",
        also=("'32GB'",),
    ),
    Case(
        "retention above Azure's maximum",
        (set_value(BETA, ["postgres", "backup_retention_days"], 70),),
        BETA,
        "postgres.backup_retention_days",
        "allowed: at most 35",
    ),
    Case(
        "an unquoted tag YAML reads as a number",
        (replace(BETA, 'image_tag: "2026.11.1"\n', "image_tag: 2026.10\n"),),
        BETA,
        "image_tag",
        'quote it: "2026.10"',
        also=("(2026.1)",),
    ),
    Case(
        "a number where text is needed, inside a flow mapping",
        (replace(BETA, "image: trading/card-api, purpose", "image: 2026.10, purpose"),),
        BETA,
        lambda root: f"apps[{_app_index(root, 'card-api')}].image",
        'quote it: "2026.10"',
        also=("(2026.1)",),
    ),
    # ---- other things Azure would refuse ---------------------------------------------------------
    Case(
        "postgres sku of another tier",
        (set_value(BETA, ["postgres", "sku_name"], "Standard_D2ds_v4"),),
        BETA,
        "postgres.sku_name",
        "allowed: Standard_B* for Burstable",
    ),
    Case(
        "postgres storage size not offered",
        (set_value(PROD, ["postgres", "storage_gb"], 100),),
        PROD,
        "postgres.storage_gb",
        "allowed: 32, 64, 128",
        PLAN_PROD,
    ),
    Case(
        "postgres admin login reserved",
        (set_value(BETA, ["postgres", "admin_login"], "pg_admin"),),
        BETA,
        "postgres.admin_login",
        "not starting with pg_",
    ),
    Case(
        "high availability on Burstable",
        (set_value(BETA, ["postgres", "high_availability"], "ZoneRedundant"),),
        BETA,
        "postgres.high_availability",
        "allowed: Disabled",
    ),
    Case(
        "redis family of another sku",
        (set_value(BETA, ["redis", "family"], "P"),),
        BETA,
        "redis.family",
        "allowed: C",
        DEPLOY_BETA,
    ),
    Case(
        "redis premium capacity",
        (set_value(PROD, ["redis", "capacity"], 6),),
        PROD,
        "redis.capacity",
        "allowed: 1-5",
        PLAN_PROD,
    ),
    Case(
        "redis suffix makes the name too long",
        (set_value(BETA, ["redis", "name_suffix"], "1" * 50),),
        BETA,
        "redis.name_suffix",
        "allowed: 1-63 characters",
    ),
    Case(
        "database every server already has",
        (set_value(BETA, ["databases", 3, "name"], "postgres"),),
        BETA,
        "databases[3].name",
        "already exists on every server",
    ),
    Case(
        "gateway name ending in a hyphen",
        (set_value(PROD, ["vpn", "gateway", "name"], "vgw-trading-prod-"),),
        PROD,
        "vpn.gateway.name",
        "ending alphanumeric or underscore",
        PLAN_PROD,
    ),
    Case(
        "gateway in a group the env does not have",
        (set_value(PROD, ["vpn", "gateway", "resource_group"], "rg-trading-prod-network"),),
        PROD,
        "vpn.gateway.resource_group",
        "allowed: rg-trading-prod-data, rg-trading-prod-apps",
        PLAN_PROD,
    ),
    Case(
        "lock name over 90 characters",
        (set_value(PROD, ["resource_groups", "data", "name"], "rg-" + "d" * 80),),
        PROD,
        "resource_groups.data.name",
        "allowed: 1-90 characters",
        PLAN_PROD,
        also=("the lock's name",),
    ),
    Case(
        "app configuration key with a percent sign",
        (set_value(BETA, ["app_configuration", "settings", "CACHE_%"], "1"),),
        BETA,
        "app_configuration.settings.CACHE_%",
        "allowed: any text except '%'",
    ),
    Case(
        "database owner that is not an app",
        (set_value(BETA, ["databases", 0, "owner"], "login-api"),),
        BETA,
        "databases[0].owner",
        "allowed: auth-api, native-api",
    ),
    Case(
        "renewal window longer than validity",
        (set_value(PROD, ["vpn", "renewal_days"], 365),),
        PROD,
        "vpn.renewal_days",
        "allowed: fewer days than client_validity_days",
        PLAN_PROD,
    ),
]


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for the whole table: no case may send it anything."""
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), run_id="bad-config")
    try:
        yield Sandbox(server)
    finally:
        server.stop()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expected_where(case: Case, workdir: Path) -> str:
    return case.where(workdir) if callable(case.where) else case.where


# ---- the table -----------------------------------------------------------------------------------
def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line(shared_sandbox: Sandbox, tmp_path: Path, case: Case) -> None:
    workdir = copy_project(tmp_path / "project")
    for edit in case.edits:
        edit(workdir)
    where = _expected_where(case, workdir)
    before = _snapshot(workdir)
    env = {k: v for k, v in shared_sandbox.env().items() if k not in REDIRECTS}
    mark = shared_sandbox.journal_mark()

    result = run_invoke(*case.command, cwd=workdir, env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"error: {case.file}: {where}"), line
    for fragment in (case.allowed, *case.also):
        assert fragment in line, (fragment, line)
    assert shared_sandbox.requests_since(mark)["requests"] == 0
    assert _snapshot(workdir) == before
    for written in (".sandbox", ".deploykit", "certs"):
        assert not (workdir / written).exists(), written


def test_the_unedited_copy_plans_cleanly(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    """The harness itself: an untouched copy passes every check, for beta and prod."""
    workdir = copy_project(tmp_path / "project")
    env = {k: v for k, v in shared_sandbox.env().items() if k not in REDIRECTS}
    for command in (PLAN_BETA, PLAN_PROD):
        result = run_invoke(*command, cwd=workdir, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == ""
