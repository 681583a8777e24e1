"""Step 1: resource groups, tags, the prod data lock; idempotence and lock reporting."""

from __future__ import annotations

from deploykit.engine.model import Action, Change, Plan
from deploykit.engine.runner import apply_plan
from deploykit.errors import ResourceLockedError
from tests.helpers import plan_for, run, spec, specs_for

GROUPS = {"rg-trading-shared", "rg-trading-beta-data", "rg-trading-beta-apps", "rg-trading-prod-data", "rg-trading-prod-apps"}


def test_step1_creates_all_groups_tagged_and_locks_prod_data(sandbox) -> None:
    assert run(["step1"], env=None) == 0
    groups = {rid.rsplit("/", 1)[-1]: rid for rid in sandbox.resource_ids() if rid.count("/") == 4}
    assert set(groups) == GROUPS
    beta_data = sandbox.provider.read(groups["rg-trading-beta-data"], "2025-04-01")
    assert beta_data["tags"] == {"managed-by": "deploykit", "environment": "beta", "product": "trading", "owner": "platform-team"}
    locks = [rid for rid in sandbox.resource_ids() if "/locks/" in rid]
    assert len(locks) == 1 and "/rg-trading-prod-data/" in locks[0]
    lock = sandbox.provider.read(locks[0], "2020-05-01")
    assert lock["properties"]["level"] == "CanNotDelete"


def test_step1_for_one_env_touches_only_shared_and_that_env(sandbox) -> None:
    assert run(["step1"], env="beta") == 0
    names = {rid.rsplit("/", 1)[-1] for rid in sandbox.resource_ids()}
    assert names == {"rg-trading-shared", "rg-trading-beta-data", "rg-trading-beta-apps"}


def test_second_run_makes_no_writes(sandbox) -> None:
    assert run(["step1"], env=None) == 0
    mark = sandbox.journal_mark()
    assert run(["step1"], env=None) == 0
    counts = sandbox.requests_since(mark)
    assert counts["writes"] == 0
    assert counts["reads"] == len(specs_for(["step1"], env=None))
    assert all(c.action is Action.UNCHANGED and c.reason for c in plan_for(sandbox, ["step1"], env=None).changes)


def test_tag_drift_is_planned_as_exactly_that_update(sandbox) -> None:
    assert run(["step1"], env="beta") == 0
    rg = spec(["step1"], "rg.beta-apps")
    sandbox.control("POST", "/mutate", {"id": rg.id, "set": {"tags.owner": "someone-else"}})
    changes = {c.address: c for c in plan_for(sandbox, ["step1"]).changes}
    assert changes["rg.beta-apps"].action is Action.UPDATE
    assert changes["rg.beta-apps"].diff == {"tags.owner": {"old": "someone-else", "new": "platform-team"}}
    assert {a for a, c in changes.items() if c.action is not Action.UNCHANGED} == {"rg.beta-apps"}


def test_lock_blocks_delete_and_is_reported_as_a_lock(sandbox) -> None:
    assert run(["step1"], env=None) == 0
    group = spec(["step1"], "rg.prod-data", env=None)
    try:
        sandbox.provider.delete(group.id, group.api_version)
        raise AssertionError("delete inside a locked group succeeded")
    except ResourceLockedError as exc:
        assert exc.code == "ScopeLocked"
        assert "rg-trading-prod-data" in exc.message
    # Through the engine: the outcome says a lock blocked it, and the group is still there.
    plan = Plan((Change(group.address, group.type, group.id, Action.DELETE, "test"),))
    [outcome] = apply_plan(plan, {group.address: group}, sandbox.provider)
    assert not outcome.ok and outcome.error_code == "ScopeLocked"
    assert "management lock" in outcome.error
    assert sandbox.provider.read(group.id, group.api_version) is not None


def test_moving_a_group_to_another_region_fails_with_azures_code(sandbox) -> None:
    assert run(["step1"], env="beta") == 0
    rg = spec(["step1"], "rg.beta-data")
    sandbox.control("POST", "/mutate", {"id": rg.id, "set": {"location": "westus"}})
    [change] = [c for c in plan_for(sandbox, ["step1"]).changes if c.address == "rg.beta-data"]
    assert change.diff == {"location": {"old": "westus", "new": "centralus"}}
    [outcome] = apply_plan(Plan((change,)), {rg.address: rg}, sandbox.provider)
    assert outcome.error_code == "InvalidResourceGroupLocation"
