"""deploy/plan end to end: idempotence, dry runs, retries, JSON shape."""

from __future__ import annotations

import json
import time

from deploykit.azure.health import RunReadsFirst
from deploykit.engine.apply import InFlight
from deploykit.engine.model import Action, Change
from deploykit.engine.plan import StateCache, compute_plan
from deploykit.engine.runner import apply_resource
from tests.conftest import REPO, run_invoke
from tests.helpers import plan_for, run, specs_for

BETA_STEPS = ["step1", "step2a", "step2b"]
ALL_BETA_STEPS = __import__("yaml").safe_load((REPO / "config" / "beta.yaml").read_text(encoding="utf-8"))["steps"]


def test_deploy_twice_second_run_makes_zero_writes(sandbox) -> None:
    assert run(BETA_STEPS, task="deploy") == 0
    mark = sandbox.journal_mark()
    assert run(BETA_STEPS, task="deploy") == 0
    counts = sandbox.requests_since(mark)
    assert counts["writes"] == 0, counts
    # All reads in one round: one GET per resource, nothing more.
    assert counts["by_method"] == {"GET": len(specs_for(BETA_STEPS))}


def test_cli_deploy_then_noop_reports_zero_create_zero_update(sandbox) -> None:
    # The shared layer only; the whole of beta, twice, is tests/test_beta_end_to_end.py.
    count = len(specs_for(["step1"]))
    first = run_invoke("step1", "--env", "beta", "--json", env=sandbox.env())
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["summary"]["create"] == count
    second = run_invoke("step1", "--env", "beta", "--json", env=sandbox.env())
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["summary"] == {"create": 0, "update": 0, "delete": 0, "wait": 0, "unchanged": count, "failed": 0}
    assert "0 writes" in second.stderr


def test_dry_run_json_prints_plan_and_changes_nothing(sandbox) -> None:
    before = sandbox.resource_ids()
    mark = sandbox.journal_mark()
    result = run_invoke("deploy", "--env", "beta", "--dry-run", "--json", env=sandbox.env())
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert set(doc) == {"task", "env", "target", "dry_run", "summary", "changes", "state_read"}
    assert doc["state_read"] is True
    assert doc["task"] == "deploy" and doc["env"] == "beta" and doc["target"] == "sandbox" and doc["dry_run"] is True
    # Every step's resources, and db.create deferred until the server exists (no migration folders here).
    expected = {s.address for s in specs_for(ALL_BETA_STEPS)} | {"db.create"}
    assert doc["summary"]["create"] == len(expected)
    assert {c["address"] for c in doc["changes"]} == expected
    assert all({"address", "type", "action", "diff"} <= set(c) for c in doc["changes"])
    assert sandbox.resource_ids() == before
    assert sandbox.requests_since(mark)["writes"] == 0


def test_dry_run_against_azure_without_credentials_still_plans(tmp_path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AZURE_CONFIG_DIR": str(tmp_path / "az"),
        "DEPLOYKIT_AUDIT_DIR": str(tmp_path / "audit"),
    }
    result = run_invoke("deploy", "--env", "beta", "--dry-run", "--json", "--target", "azure", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["target"] == "azure" and doc["dry_run"] is True
    assert doc["summary"]["create"] == len(specs_for(ALL_BETA_STEPS))
    assert "planning without reading Azure" in result.stderr


def test_plan_task_is_the_dry_run_of_deploy(sandbox) -> None:
    result = run_invoke("plan", "--env", "beta", "--json", env=sandbox.env())
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["task"] == "plan" and doc["dry_run"] is True
    assert sandbox.resource_ids() == []


def test_throttling_and_unavailable_are_retried_to_success(sandbox) -> None:
    sandbox.faults(
        rules=[
            {"method": "GET", "status": 429, "retry_after": 1, "count": 2},
            {"method": "PUT", "path_contains": "vaults", "status": 503, "count": 1},
            {"method": "PUT", "path_contains": "registries", "status": 429, "retry_after": 1, "count": 1},
        ]
    )
    assert run(BETA_STEPS, task="deploy") == 0
    entries = sandbox.control("GET", "/journal?since=0")["entries"]
    assert sum(e["status"] == 429 for e in entries) == 3
    assert sum(e["status"] == 503 for e in entries) == 1
    assert all(c.action is Action.UNCHANGED for c in plan_for(sandbox, BETA_STEPS).changes)


def test_prod_changes_need_confirmation_without_a_terminal(sandbox) -> None:
    result = run_invoke("step1", "--env", "prod", env=sandbox.env())
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert sandbox.resource_ids() == []
    assert run_invoke("step1", "--env", "prod", "--yes", env=sandbox.env()).returncode == 0


def test_a_change_azure_does_not_keep_is_reported_and_exits_1_then_converges(sandbox) -> None:
    # Azure accepts the group's PUT but keeps no tags (a provider dropping a property, once).
    shared = next(s for s in specs_for(["step1"]) if s.address == "rg.shared")
    sandbox.faults(rules=[{"method": "PUT", "path_contains": shared.id.rsplit("/", 1)[-1], "ignore": ["tags"]}])
    result = run_invoke("step1", "--env", "beta", env=sandbox.env())
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    warned = [i for i, line in enumerate(lines) if "did not converge" in line]
    assert len(warned) == 1 and lines[warned[0]].startswith("warning: rg.shared did not converge: differs in tags")
    recap = next(i for i, line in enumerate(lines) if line.startswith("Apply finished:"))
    assert warned[0] < recap and "1 failed" in lines[recap], result.stdout  # the recap counts it, after the warning
    assert "Traceback" not in result.stderr
    # Once Azure keeps what it is sent, the same command converges: one update, then nothing.
    again = run_invoke("step1", "--env", "beta", "--json", env=sandbox.env())
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"]["update"] == 1
    assert all(c.action is Action.UNCHANGED for c in plan_for(sandbox, ["step1"]).changes)


def test_a_password_rotated_after_the_plan_is_sent_as_the_vault_holds_it_when_applying(beta_vault) -> None:
    """A secret's value read while planning never answers a write: the vault may have changed since."""
    sandbox = beta_vault
    specs = specs_for(["step1", "step2a", "step2b", "step3"])
    by_address = {s.address: s for s in specs}
    secret, server = by_address["secret.beta.postgres-admin-password"], by_address["pg.beta"]
    vault = sandbox.provider.vault_secret_client(secret.id.rsplit("/secrets/", 1)[0])
    vault.set_secret(secret.name, "first-password-Aa1")
    cache = StateCache(sandbox.provider, by_address)
    plan = compute_plan(specs, sandbox.provider, cache=cache)
    assert plan.by_address()[secret.address].action is Action.UNCHANGED  # read (and kept) while planning
    vault.set_secret(secret.name, "rotated-password-Bb2")  # someone rotates it before the apply
    body = cache.resolved(server, strict=True)  # what the server's applier sends
    assert body["properties"]["administratorLoginPassword"] == "rotated-password-Bb2"


def test_a_result_check_starts_from_the_runs_recent_read_until_the_run_writes_the_entry(sandbox) -> None:
    """A check's first look at an entry the run read moments ago costs no request; its next look,
    and an entry the run wrote, or whose dependency it wrote, or read too long ago, go to Azure."""
    cache, by_address = _deployed_and_read(sandbox)
    vault, registry, shared = by_address["kv.shared"], by_address["acr.shared"], by_address["rg.shared"]
    data, apps = by_address["rg.beta-data"], by_address["rg.beta-apps"]
    assert shared.address in registry.depends_on and shared.address not in (data.depends_on + apps.depends_on)
    reads = RunReadsFirst(sandbox.provider, cache)
    mark = sandbox.journal_mark()
    assert reads.read(vault.id, vault.api_version) == cache.get(vault.address) is not None
    assert sandbox.requests_since(mark)["reads"] == 0  # the plan's read answered
    assert reads.read(vault.id, vault.api_version)["id"].lower() == vault.id.lower()
    assert sandbox.requests_since(mark)["reads"] == 1  # a second look is live
    child = f"{registry.id}/replications/nowhere"  # a read inside the entry (kept.py's revision)
    assert cache.read_child(registry.address, child, registry.api_version) is None
    assert cache.recent_read(child) == (True, None) and cache.recent_read(registry.id)[0] is True
    assert cache.recent_read(registry.id, max_age=0.0) == (False, None)
    cache.set(data.address, cache.get(data.address))  # an apply's result
    cache.writing(shared.address)  # an apply starts on what the registry depends on
    assert [cache.recent_read(s.id)[0] for s in (data, shared, registry, apps)] == [False, False, False, True]
    assert cache.recent_read(child) == (False, None)
    assert reads.read(registry.id, registry.api_version) is not None
    assert sandbox.requests_since(mark)["reads"] == 3  # the child's read and the registry's


def test_the_get_that_ends_an_operation_answers_a_check_a_synchronous_put_answer_does_not(sandbox) -> None:
    """After an apply, a check starts from the GET that ended a long-running operation (a read
    made after the write); a synchronous PUT's own answer is not a read, so the check reads."""
    cache, by_address = _deployed_and_read(sandbox)
    registry, group = by_address["acr.shared"], by_address["rg.shared"]  # long-running, synchronous
    for spec in (group, registry):  # in the graph's order: the registry depends on its group
        outcome = apply_resource(Change(spec.address, spec.type, spec.id, Action.UPDATE, "test"), spec, cache)
        while isinstance(outcome, InFlight):
            time.sleep(outcome.delay)
            outcome = outcome.check()
    mark = sandbox.journal_mark()
    reads = RunReadsFirst(sandbox.provider, cache)
    assert reads.read(registry.id, registry.api_version) == cache.get(registry.address) is not None
    assert sandbox.requests_since(mark)["reads"] == 0
    assert reads.read(group.id, group.api_version) is not None
    assert sandbox.requests_since(mark)["reads"] == 1


def _deployed_and_read(sandbox) -> tuple[StateCache, dict]:
    """BETA_STEPS deployed, then read by a plan's cache (as a run holds them before its checks)."""
    assert run(BETA_STEPS) == 0
    specs = specs_for(BETA_STEPS)
    by_address = {s.address: s for s in specs}
    cache = StateCache(sandbox.provider, by_address)
    cache.read_for_plan(specs)
    return cache, by_address


def test_the_recap_matches_the_plan_and_the_ok_lines(sandbox) -> None:
    """db.create is one planned change on a fresh environment; the recap says how many it applied inside."""
    import re

    result = run_invoke("deploy", "--env", "beta", "--yes", env=sandbox.env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    planned = int(re.search(r"^(\d+) create,", next(line for line in lines if " create, " in line)).group(1))
    recap = next(line for line in lines if line.startswith("Apply finished:"))
    created = int(re.search(r"(\d+) created", recap).group(1))
    inside = int(re.search(r"db\.create counts as one: (\d+) changes inside it", recap).group(1))
    oks = [line for line in lines if line.startswith("  ok ")]
    assert created == planned and inside > 0
    assert len(oks) == created + inside, (recap, len(oks))


def test_plan_and_drift_titles_name_what_they_cover(sandbox) -> None:
    """plan and drift cover what deploy covers (its databases and migrations too), and their titles say so."""
    titles = {}
    for task in ("deploy", "plan", "drift"):
        args = (task, "--env", "beta", "--dry-run") if task == "deploy" else (task, "--env", "beta")
        result = run_invoke(*args, env=sandbox.env())
        assert result.returncode in (0, 3), result.stderr
        titles[task] = result.stdout.splitlines()[0]
    covered = titles["deploy"].removeprefix("Plan for deploy ")
    assert covered.startswith("(db.create, db.migrate, step1,"), titles
    assert titles["plan"] == f"Plan for plan {covered}" and titles["drift"] == f"Drift check {covered}", titles
