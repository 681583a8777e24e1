"""Run a plan over its dependency graph with bounded parallelism; report each outcome as it lands."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from deploykit.arm import ArmProvider
from deploykit.errors import AzureOperationError, ResourceLockedError
from deploykit.model import Action, Change, Plan, ResourceSpec
from deploykit.recovery import recover

APPLY_WORKERS = 8


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    seconds: float
    error_code: str | None = None
    error: str | None = None


def apply_plan(
    plan: Plan,
    specs: Mapping[str, ResourceSpec],
    provider: ArmProvider,
    on_start: Callable[[Change], None] = lambda change: None,
    on_done: Callable[[Outcome], None] = lambda outcome: None,
    workers: int = APPLY_WORKERS,
) -> list[Outcome]:
    """Apply every pending change once its dependencies in the plan have succeeded.

    Dependencies outside the plan (another step's resources) are taken as satisfied; if they are
    missing, Azure says so (ResourceGroupNotFound) and the error names the step to run.
    """
    pending = {c.address: c for c in plan.pending}
    waiting_on = {addr: {d for d in specs[addr].depends_on if d in pending} for addr in pending}
    outcomes: list[Outcome] = []
    failed: set[str] = set()
    running: dict[Future[Outcome], str] = {}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while waiting_on or running:
            for addr in [a for a, deps in waiting_on.items() if not deps]:
                del waiting_on[addr]
                on_start(pending[addr])
                running[pool.submit(_apply_one, pending[addr], specs[addr], provider)] = addr
            for addr in [a for a, deps in waiting_on.items() if deps & failed]:
                # A dependency failed: this change cannot be attempted; say which one.
                blocker = sorted(waiting_on.pop(addr) & failed)[0]
                outcome = Outcome(pending[addr], False, 0.0, "DependencyFailed", f"not attempted: {blocker} failed")
                failed.add(addr)
                outcomes.append(outcome)
                on_done(outcome)
            if not running:
                if waiting_on and not any(deps & failed for deps in waiting_on.values()):
                    raise RuntimeError(f"dependency cycle among {sorted(waiting_on)}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                addr = running.pop(future)
                outcome = future.result()
                outcomes.append(outcome)
                on_done(outcome)
                if outcome.ok:
                    for deps in waiting_on.values():
                        deps.discard(addr)
                else:
                    failed.add(addr)
    return outcomes


def _apply_one(change: Change, spec: ResourceSpec, provider: ArmProvider) -> Outcome:
    started = time.monotonic()
    try:
        if change.action is Action.RECOVER:
            recover(spec, provider)
        if change.action in (Action.CREATE, Action.RECOVER, Action.UPDATE):
            provider.put(spec, spec.body)
        elif change.action is Action.DELETE:
            provider.delete(spec.id, spec.api_version)
    except ResourceLockedError as exc:
        return Outcome(
            change,
            False,
            time.monotonic() - started,
            exc.code,
            f"blocked by a management lock (never lifted automatically): {exc.message}",
        )
    except AzureOperationError as exc:
        hint = " (run step1 first: the resource group is missing)" if exc.code == "ResourceGroupNotFound" else ""
        return Outcome(change, False, time.monotonic() - started, exc.code, exc.message + hint)
    return Outcome(change, True, time.monotonic() - started)
