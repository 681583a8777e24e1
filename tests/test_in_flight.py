"""Operations in flight cost no worker: the scheduler polls them, and its own limit bounds them.

Order in the sandbox's journal shows it, with no clock in the assertions: with one worker and
1 s operations, every PUT is sent before any operation has finished; with a limit of two, the
third PUT waits for one of the first two to finish.
"""

from __future__ import annotations

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.runner import apply_plan
from tests.conftest import Sandbox

GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-inflight"
PIP_API = "2026-03-01"


def _specs(count: int) -> dict[str, ResourceSpec]:
    body = {"location": "centralus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}}
    return {
        f"pip.{i}": ResourceSpec(
            f"pip.{i}",
            "Microsoft.Network/publicIPAddresses",
            PIP_API,
            f"{GROUP}/providers/Microsoft.Network/publicIPAddresses/pip-{i}",
            body,
            "t",
        )
        for i in range(count)
    }


def _apply(sandbox: Sandbox, count: int, workers: int, limit: int) -> list[dict]:
    sandbox.provider.put(
        ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", GROUP, {}, "t"), {"location": "centralus"}
    )
    sandbox.faults(lro_seconds=1.0)
    mark = sandbox.journal_mark()
    specs = _specs(count)
    plan = Plan(tuple(Change(a, s.type, s.id, Action.CREATE, "does not exist") for a, s in specs.items()))
    outcomes = apply_plan(plan, specs, sandbox.provider, workers=workers, in_flight=limit)
    assert [o.ok for o in outcomes] == [True] * count
    for spec in specs.values():
        assert sandbox.provider.read(spec.id, PIP_API)["properties"]["provisioningState"] == "Succeeded"
    return sandbox.control("GET", f"/journal?since={mark}")["entries"]


def _finished(entries: list[dict]) -> list[int]:
    """Journal positions of each operation's final GET of its resource (after the status said Succeeded)."""
    return [i for i, e in enumerate(entries) if e["method"] == "GET" and "/publicIPAddresses/" in e["path"]]


def test_one_worker_keeps_every_operation_in_flight_at_once(sandbox: Sandbox) -> None:
    entries = _apply(sandbox, 4, workers=1, limit=64)
    puts = [i for i, e in enumerate(entries) if e["method"] == "PUT"]
    assert len(puts) == 4
    assert max(puts) < min(_finished(entries))  # all four sent before the first finished
    polls = [e for e in entries if "operationStatuses" in e["path"]]
    assert len(polls) >= 4  # each operation was polled by the scheduler, not waited on by a worker


def test_the_in_flight_limit_bounds_operations_not_the_pool(sandbox: Sandbox) -> None:
    entries = _apply(sandbox, 3, workers=8, limit=2)
    puts = [i for i, e in enumerate(entries) if e["method"] == "PUT"]
    assert len(puts) == 3
    assert puts[1] < min(_finished(entries)) < puts[2]  # the third waited for a slot
