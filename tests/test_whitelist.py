"""Operator whitelisting through the CLI against one sandbox: add, list, again, remove, prune, races, mistakes.

The module deploys beta's step 1, 2b and 3 once (a real PostgreSQL server behind
psql-trading-beta); each test cleans up the rules it made. The owner is the OS user (USER), the
clock DEPLOYKIT_NOW. Counts come from the sandbox's journal and from the plan each run printed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.sandbox.server import SandboxServer
from deploykit.sandbox.store import remove_state
from tests.conftest import REPO, Sandbox, invoke_path, run_invoke

DATA_GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-data"
SHARED_GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-shared"
VAULT = f"{DATA_GROUP}/providers/Microsoft.KeyVault/vaults/kv-trading-beta"
REGISTRY = f"{SHARED_GROUP}/providers/Microsoft.ContainerRegistry/registries/acrtradingshared"
ALL = "postgres,redis,vault,registry"
OWNER = "alice.smith@contoso-fx.com"
NOW = dt.datetime(2026, 11, 23, 17, 30, tzinfo=dt.UTC)
PG_NAME = re.compile(r"^[-\w._]+$")  # azure-facts.md 3.8
REDIS_NAME = re.compile(r"^[A-Za-z0-9]{1,256}$")  # azure-facts.md 3.10


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    root = Path(tempfile.mkdtemp(prefix="deploykit-wl-"))
    root.chmod(0o755)  # as root, the sandbox's PostgreSQL runs as another user
    server = SandboxServer(root / "sandbox", run_id="whitelist")
    box = Sandbox(server)
    env = {**box.env(), "DEPLOYKIT_AUDIT_DIR": str(root / "audit"), "USER": OWNER, "LOGNAME": OWNER}
    env.pop("DEPLOYKIT_DISCOVERY_URLS", None)
    try:
        for args in (("step1", "--env", "beta"), ("step2b",), ("step3", "--env", "beta")):
            result = run_invoke(*args, "--yes", env=env)
            assert result.returncode == 0, result.stderr
        yield {"sandbox": box, "env": env, "root": root}
    finally:
        server.stop()
        remove_state(root / "sandbox")
        shutil.rmtree(root, ignore_errors=True)


def cli(
    world: dict, *args: str, now: dt.datetime = NOW, owner: str = OWNER, **extra_env: str
) -> tuple[int, dict | None, str, dict]:
    """Run one whitelist task; returns (exit, JSON or None, stderr, this run's sandbox counts)."""
    box: Sandbox = world["sandbox"]
    mark = box.journal_mark()
    env = {**world["env"], "DEPLOYKIT_NOW": now.isoformat(), "USER": owner, "LOGNAME": owner, **extra_env}
    result = run_invoke(*args, env=env)
    document = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.returncode, document, result.stderr, box.requests_since(mark)


def listing(world: dict, now: dt.datetime = NOW) -> dict:
    status, doc, stderr, counts = cli(world, "whitelist.list", "--env", "beta", "--json", now=now)
    assert status == 0, stderr
    assert counts["writes"] == 0
    assert doc is not None
    return doc


def list_values(world: dict, resource_id: str, path: tuple[str, ...]) -> list[str]:
    actual = world["sandbox"].provider.read(resource_id, "2026-05-15" if "KeyVault" in resource_id else "2025-11-01")
    node = actual
    for part in path:
        node = node.get(part) or {}
    return [str(item["value"]) for item in (node or [])]


@pytest.fixture()
def clean(world: dict) -> Iterator[None]:
    """Every test leaves no operator rule behind."""
    yield
    for owner in {r["owner"] for r in listing(world)["rules"]}:
        status, _, stderr, _ = cli(world, "whitelist.remove", "--env", "beta", "--all-mine", owner=owner)
        assert status == 0, stderr


def pending(doc: dict) -> int:
    return sum(1 for c in doc["changes"] if c["action"] != "unchanged")


def test_add_list_add_again_remove(world: dict, clean: None) -> None:
    add = (
        "whitelist.add",
        "--env",
        "beta",
        "--ip",
        "52.1.2.3",
        "--ttl",
        "2h",
        "--services",
        ALL,
        "--reason",
        "psql check",
        "--json",
    )
    status, doc, stderr, counts = cli(world, *add)
    assert status == 0, stderr
    assert doc["summary"]["create"] == 2 and doc["summary"]["update"] == 2  # two rules, two lists
    assert counts["writes"] == pending(doc)  # one PUT per change: no retries needed alone

    rules = listing(world)["rules"]
    assert sorted(r["service"] for r in rules) == sorted(ALL.split(","))
    for rule in rules:
        assert (rule["owner"], rule["address"], rule["expired"]) == (OWNER, "52.1.2.3", False)
        assert rule["expires"] == "2026-11-23T19:30:00Z" and rule["seconds_left"] == 2 * 3600
    names = {r["service"]: r["name"] for r in rules}
    assert PG_NAME.fullmatch(names["postgres"]) and REDIS_NAME.fullmatch(names["redis"])
    assert "52.1.2.3/32" in list_values(world, VAULT, ("properties", "networkAcls", "ipRules"))
    assert "52.1.2.3" in list_values(world, REGISTRY, ("properties", "networkRuleSet", "ipRules"))

    status, doc, stderr, counts = cli(world, *add)
    assert status == 0, stderr
    assert pending(doc) == 0 and counts["writes"] == 0
    assert "already open" in stderr

    status, doc, stderr, counts = cli(world, "whitelist.remove", "--env", "beta", "--ip", "52.1.2.3", "--json")
    assert status == 0, stderr
    assert doc["summary"]["delete"] == 2 and doc["summary"]["update"] == 2
    assert counts["writes"] == pending(doc)
    assert listing(world)["rules"] == []
    assert "52.1.2.3/32" not in list_values(world, VAULT, ("properties", "networkAcls", "ipRules"))

    lines = [json.loads(line) for line in (world["root"] / "audit" / "audit.jsonl").read_text().splitlines()]
    opened = [o for line in lines if line.get("task") == "whitelist.add" for o in line.get("opened", [])]
    assert {o["service"] for o in opened} >= set(ALL.split(","))
    assert all(o["owner"] == OWNER and o["address"] == "52.1.2.3" and o["reason"] == "psql check" for o in opened)
    closed = [c for line in lines if line.get("task") == "whitelist.remove" for c in line.get("closed", [])]
    assert {c["service"] for c in closed} >= set(ALL.split(","))


def test_renew_replaces_the_rule_with_the_new_expiry(world: dict, clean: None) -> None:
    add = ("whitelist.add", "--env", "beta", "--ip", "52.1.2.4", "--ttl", "1h", "--services", "postgres,redis", "--json")
    assert cli(world, *add)[0] == 0
    later = NOW + dt.timedelta(minutes=30)
    status, doc, stderr, counts = cli(world, *add, now=later)
    assert status == 0, stderr
    assert (doc["summary"]["create"], doc["summary"]["delete"]) == (2, 2)  # per service: the new rule, then the old one closed
    assert counts["writes"] == pending(doc)
    rules = listing(world, later)["rules"]
    assert [r["expires"] for r in rules] == ["2026-11-23T19:00:00Z"] * 2


def test_adding_again_after_expiry_opens_a_new_rule_not_the_expired_one(world: dict, clean: None) -> None:
    add = ("whitelist.add", "--env", "beta", "--ip", "52.1.2.9", "--ttl", "3m", "--services", "postgres", "--json")
    assert cli(world, *add)[0] == 0
    later = NOW + dt.timedelta(minutes=4)  # expired a minute ago; the same TTL again ends 4 minutes later
    status, doc, stderr, _ = cli(world, *add, now=later)
    assert status == 0, stderr
    assert (doc["summary"]["create"], doc["summary"]["delete"], doc["summary"]["unchanged"]) == (1, 1, 0)
    rules = listing(world, later)["rules"]
    assert [(r["address"], r["expired"]) for r in rules] == [("52.1.2.9", False)]


def test_prune_removes_expired_rules_of_every_owner_and_nothing_else(world: dict, clean: None) -> None:
    assert cli(world, "whitelist.add", "--env", "beta", "--ip", "52.1.2.5", "--ttl", "1h", "--services", ALL)[0] == 0
    assert (
        cli(world, "whitelist.add", "--env", "beta", "--ip", "52.1.2.6", "--ttl", "8h", "--services", ALL, owner="bob-ops")[0]
        == 0
    )
    later = NOW + dt.timedelta(hours=2)
    expired = [r for r in listing(world, later)["rules"] if r["expired"]]
    assert {(r["owner"], r["address"]) for r in expired} == {(OWNER, "52.1.2.5")}

    status, doc, stderr, counts = cli(world, "whitelist.prune", "--env", "beta", "--yes", "--json", now=later)
    assert status == 0, stderr
    assert pending(doc) == len(expired) and counts["writes"] == len(expired)
    left = listing(world, later)["rules"]
    assert {(r["owner"], r["address"]) for r in left} == {("bob-ops", "52.1.2.6")}
    assert "52.1.2.6/32" in list_values(world, VAULT, ("properties", "networkAcls", "ipRules"))

    status, doc, stderr, counts = cli(world, "whitelist.prune", "--env", "beta", "--yes", "--json", now=later)
    assert status == 0 and pending(doc) == 0 and counts["writes"] == 0


def test_add_prunes_the_owners_own_expired_rules(world: dict, clean: None) -> None:
    assert cli(world, "whitelist.add", "--env", "beta", "--ip", "52.1.2.7", "--ttl", "1h", "--services", "postgres")[0] == 0
    later = NOW + dt.timedelta(hours=3)
    status, doc, stderr, _ = cli(
        world, "whitelist.add", "--env", "beta", "--ip", "52.1.2.8", "--ttl", "1h", "--services", "postgres", "--json", now=later
    )
    assert status == 0, stderr
    assert (doc["summary"]["create"], doc["summary"]["delete"]) == (1, 1)
    assert [r["address"] for r in listing(world, later)["rules"]] == ["52.1.2.8"]


def concurrent_adds(world: dict, adds: list[tuple[str, str]], services: str) -> list[tuple[int, str]]:
    """Start every add at once; each PUT waits 2 s in the sandbox, so all of them read before any writes."""
    runs = []
    for ip, owner in adds:
        env = {**world["env"], "DEPLOYKIT_NOW": NOW.isoformat(), "USER": owner, "LOGNAME": owner, "PYTHONPATH": str(REPO)}
        invoke = invoke_path()
        command = [invoke, "--search-root", str(REPO), "whitelist.add", "--env", "beta", "--ip", ip, "--services", services]
        runs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(run.wait(timeout=120), run.stderr.read() if run.stderr else "") for run in runs]


def test_two_adds_at_the_same_moment_keep_both_addresses(world: dict, clean: None) -> None:
    box: Sandbox = world["sandbox"]
    box.faults(put_delay_ms=2000)
    mark = box.journal_mark()
    try:
        results = concurrent_adds(world, [("52.1.3.1", OWNER), ("52.1.3.2", "carol.o-neil@contoso-fx.com")], ALL)
    finally:
        box.control("DELETE", "/faults")
    assert all(status == 0 for status, _ in results), results
    refused = [e for e in box.control("GET", f"/journal?since={mark}")["entries"] if e["status"] == 412]
    assert {e["method"] for e in refused} == {"PUT"} and len(refused) >= 2  # the loser of each list's race re-read
    assert {"52.1.3.1/32", "52.1.3.2/32"} <= set(list_values(world, VAULT, ("properties", "networkAcls", "ipRules")))
    assert {"52.1.3.1", "52.1.3.2"} <= set(list_values(world, REGISTRY, ("properties", "networkRuleSet", "ipRules")))
    by_service: dict[str, set[str]] = {}
    for rule in listing(world)["rules"]:
        by_service.setdefault(rule["service"], set()).add(rule["address"])
    assert by_service == {s: {"52.1.3.1", "52.1.3.2"} for s in ALL.split(",")}


def test_two_adds_keep_both_addresses_without_etags_too(world: dict, clean: None) -> None:
    """Azure's vault and registry may carry no ETag: the delayed second read-back catches the overlap."""
    box: Sandbox = world["sandbox"]
    box.faults(put_delay_ms=2000, etags=False)
    try:
        results = concurrent_adds(world, [("52.1.6.1", OWNER), ("52.1.6.2", "dave@contoso-fx.com")], "vault,registry")
        assert "etag" not in box.provider.read(VAULT, "2026-05-15")
    finally:
        box.control("DELETE", "/faults")
    assert all(status == 0 for status, _ in results), results
    assert {"52.1.6.1/32", "52.1.6.2/32"} <= set(list_values(world, VAULT, ("properties", "networkAcls", "ipRules")))
    assert {"52.1.6.1", "52.1.6.2"} <= set(list_values(world, REGISTRY, ("properties", "networkRuleSet", "ipRules")))
    lines = [json.loads(line) for line in (world["root"] / "audit" / "audit.jsonl").read_text().splitlines()]
    ours = [line for line in lines if any(o["address"] in {"52.1.6.1", "52.1.6.2"} for o in line.get("opened", []))]
    assert max(line["attempts"] for line in ours) >= 2  # a clobbered address was seen missing and written again


def test_discovered_address_when_no_ip_is_given(world: dict, clean: None) -> None:
    box: Sandbox = world["sandbox"]
    box.control("PUT", "/ip", {"answers": ["52.9.8.7"]})
    try:
        status, _, stderr, _ = cli(world, "whitelist.add", "--env", "beta", "--services", "redis", "--json")
    finally:
        box.control("DELETE", "/ip")
    assert status == 0, stderr
    assert "52.9.8.7" in stderr
    assert [r["address"] for r in listing(world)["rules"]] == ["52.9.8.7"]


BAD = [
    (("--ip", "10.1.2.3"), {}, "private"),
    (("--ip", "2001:db8::1"), {}, "IPv6"),
    (("--ip", "52.0.0.0/8"), {}, "wider than /29"),
    (("--ip", "52.1.2.3", "--ttl", "forever"), {}, "not a duration"),
    (("--ip", "52.1.2.3", "--ttl", "2d"), {}, "longer than"),
    (("--ip", "52.1.2.3", "--services", "postgres,mysql"), {}, "not a service"),
    ((), {"DEPLOYKIT_DISCOVERY_URLS": "https://127.0.0.1:9/a,https://127.0.0.1:9/b"}, "pass --ip"),
]


@pytest.mark.parametrize(("args", "env", "words"), BAD, ids=[w for _, _, w in BAD])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(world: dict, args: tuple, env: dict, words: str) -> None:
    status, _, stderr, counts = cli(world, "whitelist.add", "--env", "beta", *args, **env)
    assert status == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and words in stderr and "Traceback" not in stderr
    assert counts["writes"] == 0


def test_disagreeing_discovery_exits_2(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    box.control("PUT", "/ip", {"answers": ["52.9.8.7", "52.9.8.6"]})
    try:
        status, _, stderr, counts = cli(world, "whitelist.add", "--env", "beta")
    finally:
        box.control("DELETE", "/ip")
    assert status == 2 and "disagrees" in stderr and len(stderr.strip().splitlines()) == 1
    assert counts["writes"] == 0


def test_prod_is_refused_pointing_at_the_vpn(world: dict) -> None:
    for task in ("whitelist.add", "whitelist.list", "whitelist.prune"):
        status, _, stderr, counts = cli(world, task, "--env", "prod", *(["--ip", "52.1.2.3"] if task == "whitelist.add" else []))
        assert status == 2 and "vpn.client" in stderr and len(stderr.strip().splitlines()) == 1, (task, stderr)
        assert counts["requests"] == 0


def test_a_lock_on_the_data_group_stops_removal_and_says_so(world: dict, clean: None) -> None:
    box: Sandbox = world["sandbox"]
    assert cli(world, "whitelist.add", "--env", "beta", "--ip", "52.1.4.1", "--services", ALL)[0] == 0
    lock = ResourceSpec(
        "lock",
        "Microsoft.Authorization/locks",
        "2020-05-01",
        f"{DATA_GROUP}/providers/Microsoft.Authorization/locks/test-lock",
        {},
        "t",
    )
    box.provider.put(lock, {"properties": {"level": "CanNotDelete"}})
    try:
        status, doc, _, _ = cli(world, "whitelist.remove", "--env", "beta", "--all-mine", "--json")
        assert status == 1
        failed = {c["address"].split(":")[0] for c in doc["changes"] if c.get("result") == "failed"}
        assert failed == {"postgres", "redis"}  # deletes in the locked group
        assert all("management lock" in c["error"] for c in doc["changes"] if c.get("result") == "failed")
        assert {r["service"] for r in listing(world)["rules"]} == {"postgres", "redis"}  # the lists were changed
        assert box.provider.read(lock.id, lock.api_version) is not None  # never lifted
    finally:
        box.provider.delete(lock.id, lock.api_version)


def test_step3_keeps_the_vault_addresses_when_it_updates_the_vault(world: dict, clean: None) -> None:
    box: Sandbox = world["sandbox"]
    assert cli(world, "whitelist.add", "--env", "beta", "--ip", "52.1.5.1", "--services", "vault")[0] == 0
    box.control("POST", "/mutate", {"id": VAULT, "set": {"properties.softDeleteRetentionInDays": 30}})
    result = run_invoke("step3", "--env", "beta", "--yes", "--json", env=world["env"])
    assert result.returncode == 0, result.stderr
    assert [c["action"] for c in json.loads(result.stdout)["changes"] if c["address"] == "kv.beta"] == ["update"]
    assert "52.1.5.1/32" in list_values(world, VAULT, ("properties", "networkAcls", "ipRules"))
    assert [r["address"] for r in listing(world)["rules"]] == ["52.1.5.1"]


def test_manual_rules_are_listed_apart_and_never_touched(world: dict, clean: None) -> None:
    box: Sandbox = world["sandbox"]
    acls = {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "52.7.7.7/32"}]}
    box.control("POST", "/mutate", {"id": VAULT, "set": {"properties.networkAcls": acls}})
    try:
        manual = {(r["service"], r["address"]) for r in listing(world)["manual"]}
        assert ("vault", "52.7.7.7") in manual
        assert ("postgres", "0.0.0.0") in manual  # noqa: S104 - step 3's Azure-services rule, under Azure's own name

        # The vault now denies by default, so a plain add opens it too; the manual entry stays untagged.
        status, doc, stderr, _ = cli(world, "whitelist.add", "--env", "beta", "--ip", "52.7.7.7", "--json")
        assert status == 0, stderr
        vault = [c for c in doc["changes"] if c["address"].startswith("vault:")]
        assert [c["action"] for c in vault] == ["unchanged"] and "left alone" in vault[0]["reason"]
        later = NOW + dt.timedelta(days=2)
        assert cli(world, "whitelist.prune", "--env", "beta", "--yes", now=later)[0] == 0
        assert {(r["service"], r["address"]) for r in listing(world, later)["manual"]} == manual
        assert "52.7.7.7/32" in list_values(world, VAULT, ("properties", "networkAcls", "ipRules"))
    finally:
        box.control(
            "POST", "/mutate", {"id": VAULT, "set": {"properties.networkAcls": {**acls, "defaultAction": "Allow", "ipRules": []}}}
        )
