"""Operations in flight cost no worker: the scheduler polls them, and its own limit bounds them.

Order in the sandbox's journal shows it, with no clock in the assertions: with one worker and
1 s operations, every PUT is sent before any operation has finished; with a limit of two, the
third PUT waits for one of the first two to finish.
"""

from __future__ import annotations

import threading
from typing import Any

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.runner import apply_plan
from deploykit.errors import AzureOperationError
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


# ---- the scheduler alone, with appliers that report in-flight work -------------------------------
def _change(address: str) -> Change:
    return Change(address, "Test/things", f"/things/{address}", Action.CREATE, "does not exist")


def _in_flight_for(polls: int, log: list[str], address: str, fail: bool = False) -> Any:
    """An applier whose operation needs `polls` checks, then succeeds (or raises)."""
    from deploykit.engine.apply import InFlight

    left = [polls]

    def check() -> Any:
        log.append(f"check {address}")
        left[0] -= 1
        if left[0] > 0:
            return InFlight(check, 0.0)
        if fail:
            raise AzureOperationError("OperationFailed", f"{address} failed at Azure")
        return {"done": address}

    def applier() -> Any:
        log.append(f"send {address}")
        return InFlight(check, 0.0)

    return applier


def test_checks_report_once_and_failures_become_outcomes() -> None:
    from deploykit.engine.apply import execute

    log: list[str] = []
    changes = [_change("a"), _change("b"), _change("c")]
    appliers = {"a": _in_flight_for(3, log, "a"), "b": _in_flight_for(2, log, "b", fail=True), "c": _in_flight_for(1, log, "c")}
    done: list[Any] = []
    execution = execute(changes, appliers, {"c": ("a",)}, 1, done.append, threading.Event())
    by = {o.change.address: o for o in execution.outcomes}
    assert sorted(by) == ["a", "b", "c"] and len(done) == 3  # each reported exactly once
    assert by["a"].ok and by["a"].extra == {"done": "a"} and log.count("check a") == 3
    assert not by["b"].ok and by["b"].error_code == "OperationFailed"
    assert log.index("send c") > max(i for i, line in enumerate(log) if line == "check a")  # c waited for a's operation


def test_the_first_interrupt_leaves_parked_operations_to_azure() -> None:
    from deploykit.engine.apply import STILL_RUNNING, InFlight, execute

    stop = threading.Event()
    sent: list[str] = []

    def applier() -> Any:
        sent.append("x")
        stop.set()  # Ctrl-C arrives while Azure works on it
        return InFlight(lambda: InFlight(lambda: None, 3600.0), 3600.0)

    execution = execute([_change("x"), _change("y")], {"x": applier, "y": applier}, {"y": ("x",)}, 1, lambda o: None, stop)
    assert [(o.change.address, o.ok, o.error) for o in execution.outcomes] == [("x", False, STILL_RUNNING)]
    assert [c.address for c in execution.not_started] == ["y"] and execution.interrupted


def test_retry_after_zero_or_absent_falls_back_to_the_back_off() -> None:
    from deploykit.azure.operations import retry_after

    assert retry_after({"Retry-After": "0"}) is None
    assert retry_after({}) is None
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
