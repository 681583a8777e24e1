"""Beta, end to end, through the CLI against one sandbox: five healthy apps, then day-two faults.

The tests in this module run in order and share one sandbox (one PostgreSQL cluster): the first
deploys beta from nothing, the later ones change one thing and deploy again.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.config import load_platform
from tests.conftest import REPO, project_world, run_invoke
from tests.helpers import set_yaml_value

APPS = [a["name"] for a in __import__("yaml").safe_load((REPO / "config" / "beta.yaml").read_text())["apps"]]
APPS_GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-apps"
DATA_GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-data"
VAULT = f"{DATA_GROUP}/providers/Microsoft.KeyVault/vaults/kv-trading-beta"
BETA = load_platform(REPO / "config", ["beta"]).envs["beta"]
ADMIN_PASSWORD_SECRET = BETA.postgres.admin_password_secret
OUTPUTS: list[str] = []  # every stdout and stderr of this module's runs, for the secret canary


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    with project_world("deploykit-e2e-", "e2e") as made:
        # the repo's config and playbooks, health timeout shortened for the fault tests
        set_yaml_value(made["project"] / "config" / "beta.yaml", ["health", "timeout_seconds"], 20)
        yield made


def deploy(world: dict, *extra: str) -> tuple[int, dict, str]:
    result = run_invoke("deploy", "--env", "beta", "--yes", "--json", *extra, env=world["env"])
    OUTPUTS.extend([result.stdout, result.stderr])
    return result.returncode, json.loads(result.stdout), result.stderr


def get(url: str, ca: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:  # noqa: S310 - loopback sandbox
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def app_url(world: dict, app: str, path: str) -> tuple[int, str]:
    box = world["sandbox"]
    actual = box.provider.read(f"{APPS_GROUP}/providers/Microsoft.App/containerApps/{app}-beta", "2026-07-01")
    return get(f"https://{actual['properties']['configuration']['ingress']['fqdn']}{path}", box.ca)


def test_fresh_deploy_ends_with_every_app_healthy(world: dict) -> None:
    mark = world["sandbox"].journal_mark()
    status, doc, stderr = deploy(world)
    assert status == 0, stderr
    assert doc["checks"] == {"passed": True, "problems": []}
    assert doc["summary"]["failed"] == 0 and doc["summary"]["create"] > 0
    for app in APPS:
        assert app_url(world, app, "/readyz")[0] == 200, app
        assert app_url(world, app, "/healthz")[0] == 200, app
    # The admin password is generated and stored once; the server's PUT and db.create's admin
    # connection (which worked: the databases exist) take it from that write, and only verify
    # reads it back from the vault.
    password = f"/secrets/{ADMIN_PASSWORD_SECRET}"
    entries = world["sandbox"].control("GET", f"/journal?since={mark}")["entries"]
    reads = [e["status"] for e in entries if e["method"] == "GET" and e["path"].rstrip("/").endswith(password)]
    assert 404 in reads and reads.count(200) == 1, reads
    assert {c["address"] for c in doc["changes"] if c["action"] == "create"} >= {"db.create"}


def test_second_run_changes_nothing_and_still_verifies_health(world: dict) -> None:
    box = world["sandbox"]
    mark = box.journal_mark()
    status, doc, stderr = deploy(world)
    assert status == 0, stderr
    summary = doc["summary"]
    assert (summary["create"], summary["update"], summary["delete"], summary["failed"]) == (0, 0, 0, 0), doc["changes"]
    assert box.requests_since(mark)["writes"] == 0
    assert doc["checks"]["passed"] is True
    # The checks start from the plan's reads (nothing changed since): each app and its serving
    # revision are read once in the whole run; the health endpoints are still asked (checks passed).
    entries = box.control("GET", f"/journal?since={mark}")["entries"]
    app_reads = Counter(
        e["path"].split("?")[0].lower() for e in entries if e["method"] == "GET" and "/containerapps/" in e["path"].lower()
    )
    revisions = [path for path in app_reads if "/revisions/" in path]
    assert len(app_reads) - len(revisions) == len(revisions) == len(APPS), app_reads
    assert set(app_reads.values()) == {1}, app_reads
    # The admin login is config, not a secret, although the vault keeps a copy: its databases name it.
    admin_owned = [d.name for d in BETA.databases if not d.owner]
    reasons = {c["address"]: c["reason"] for c in doc["changes"]}
    assert admin_owned and all(f"owner {BETA.postgres.admin_login}," in reasons[f"db.{name}"] for name in admin_owned)


def drift(world: dict) -> tuple[int, dict, str]:
    result = run_invoke("drift", "--env", "beta", "--json", env=world["env"])
    OUTPUTS.extend([result.stdout, result.stderr])
    return result.returncode, json.loads(result.stdout), result.stderr


def test_drift_names_exactly_the_changed_field_and_the_undeclared_resource(world: dict) -> None:
    box = world["sandbox"]
    mark = box.journal_mark()
    status, doc, stderr = drift(world)
    assert status == 0, (doc["changes"], doc["orphans"])
    assert doc["orphans"] == [] and all(c["action"] == "unchanged" for c in doc["changes"])
    cache = f"{DATA_GROUP}/providers/Microsoft.Cache/redis/redis-trading-beta-1023"
    box.control("POST", "/mutate", {"id": cache, "set": {"properties.minimumTlsVersion": "1.0"}})  # as in the portal
    stray = f"{APPS_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-someone-made"
    box.control("POST", "/seed", {"id": stray, "body": {"location": "centralus", "properties": {}}})
    try:
        status, doc, stderr = drift(world)
        assert status == 3, stderr
        drifted = {c["address"]: c["diff"] for c in doc["changes"] if c["action"] != "unchanged"}
        assert drifted == {"redis.beta": {"properties.minimumTlsVersion": {"old": "1.0", "new": "1.2"}}}
        assert [o["id"].lower() for o in doc["orphans"]] == [stray.lower()]  # MSI ids come back with /resourcegroups/
    finally:
        box.control("POST", "/mutate", {"id": cache, "set": {"properties.minimumTlsVersion": "1.2"}})
        box.provider.delete(stray, "2024-11-30")
    assert box.requests_since(mark)["writes"] == 1  # the test's own DELETE (control calls are not journaled); drift wrote nothing
    assert drift(world)[0] == 0


def test_a_removed_role_assignment_is_named_then_restored(world: dict) -> None:
    box = world["sandbox"]
    vault = VAULT
    found = box.provider.list_at(f"{vault}/providers/Microsoft.Authorization/roleAssignments", "2022-04-01")
    mine = [a for a in found if a["properties"]["roleDefinitionId"].endswith("4633458b-17de-408a-b874-0445c86b69e6")]
    assert mine, found
    box.provider.delete(mine[0]["id"], "2022-04-01")
    for _ in range(50):  # readiness is re-evaluated about once a second, as a probe would
        status, body = app_url(world, APPS[0], "/readyz")
        if status != 200:
            break
        time.sleep(0.2)
    assert status == 503 and "Key Vault" in body, body
    check = run_invoke("step5", "--env", "beta", "--yes", env=world["env"])
    OUTPUTS.extend([check.stdout, check.stderr])
    assert check.returncode == 1
    said = check.stdout + check.stderr
    assert "Key Vault" in said and f"{APPS[0]}-beta" in said, said
    status, doc, stderr = deploy(world)
    assert status == 0, stderr
    restored = [c for c in doc["changes"] if c["type"] == "Microsoft.Authorization/roleAssignments" and c["action"] == "create"]
    assert len(restored) == 1, doc["changes"]
    assert app_url(world, APPS[0], "/readyz")[0] == 200


def test_a_failing_image_tag_leaves_the_previous_revision_serving(world: dict) -> None:
    box = world["sandbox"]
    app = APPS[0]
    before = box.provider.read(f"{APPS_GROUP}/providers/Microsoft.App/containerApps/{app}-beta", "2026-07-01")
    serving = before["properties"]["latestReadyRevisionName"]
    box.control("PUT", "/images/failing", {"image": f"acrtradingshared.azurecr.io/trading/{app}:broken"})
    status, doc, stderr = deploy(world, "--tag", "broken")
    assert status == 1
    after = box.provider.read(f"{APPS_GROUP}/providers/Microsoft.App/containerApps/{app}-beta", "2026-07-01")
    new_revision = after["properties"]["latestRevisionName"]
    assert new_revision != serving
    assert app in stderr and new_revision in stderr, stderr
    assert after["properties"]["latestReadyRevisionName"] == serving
    assert app_url(world, app, "/healthz")[0] == 200  # the previous revision still answers
    status, doc, stderr = deploy(world)
    assert status == 0, stderr
    assert doc["checks"]["passed"] is True


def _text_if_still_there(path: Path) -> str | None:
    """A file's text; None when it went away meanwhile (a running PostgreSQL replaces its cache files)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return None


def test_no_generated_secret_reaches_any_output(world: dict) -> None:
    """The canary: every value in the env vault, searched for in every output the runs produced."""
    box = world["sandbox"]
    vault = VAULT
    client = box.provider.secret_client(box.provider.read(vault, "2026-05-15")["properties"]["vaultUri"])
    values = [client.get_secret(p.name).value for p in client.list_properties_of_secrets()]
    secrets = [v for v in values if v and len(v) >= 8 and v not in {"sigmatiqadmin"} and not v.startswith("127.0.0.1")]
    assert len(secrets) >= 1 + 1 + len(APPS) * 2, "admin password, cache key, and per app a role password and a URL"
    files = [p for p in Path(world["root"]).rglob("*") if p.is_file() and p.name != "state.json" and "postgres" not in p.parts]
    texts = OUTPUTS + [text for text in map(_text_if_still_there, files) if text is not None]
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert os.path.exists(world["root"] / "audit" / "audit.jsonl")
