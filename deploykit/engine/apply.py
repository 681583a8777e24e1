"""Run planned changes over their dependency graph with bounded parallelism.

Knows nothing of what a change does: each pending change has an applier (a callable). Outcomes
are reported as they land, so the caller audits each write when it happens. A stop event (the
first Ctrl-C) ends scheduling: in-flight calls finish, nothing new starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from deploykit.engine.model import Change
from deploykit.errors import AzureOperationError, DeployKitError
from deploykit.report import redact

Applier = Callable[[], Mapping[str, Any] | None]
PROGRESS_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    seconds: float
    error_code: str | None = None
    error: str | None = None
    started: bool = True  # False: never attempted because a dependency failed
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the applier reports for the audit log


@dataclass
class Execution:
    outcomes: list[Outcome]
    not_started: list[Change]
    interrupted: bool


def execute(
    pending: Sequence[Change],
    appliers: Mapping[str, Applier],
    depends_on: Mapping[str, Iterable[str]],
    workers: int,
    on_done: Callable[[Outcome], None],
    stop: threading.Event,
    on_slow: Callable[[list[tuple[Change, float]]], None] = lambda slow: None,
    in_flight: dict[str, float] | None = None,
    on_start: Callable[[Change], None] = lambda change: None,
    on_tick: Callable[[], None] = lambda: None,
) -> Execution:
    """Apply each pending change once its dependencies in the plan have succeeded.

    Dependencies outside the plan (another step's resources) are taken as satisfied; if they are
    missing, the applier's error says so. `in_flight` (address -> start time) is kept current for
    whoever must say what the run is waiting for.
    """
    in_flight = {} if in_flight is None else in_flight
    by_address = {c.address: c for c in pending}
    waiting_on = {a: {d for d in depends_on.get(a, ()) if d in by_address} for a in by_address}
    outcomes: list[Outcome] = []
    failed: set[str] = set()
    running: dict[Future[Outcome], tuple[str, float]] = {}
    last_progress = time.monotonic()

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        on_done(outcome)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="apply")
    try:
        while (waiting_on and not stop.is_set()) or running:
            on_tick()  # outside any lock: where an interrupt is acted on
            if not stop.is_set():
                for addr in [a for a, deps in waiting_on.items() if not deps]:
                    del waiting_on[addr]
                    on_start(by_address[addr])
                    future = pool.submit(_apply_one, by_address[addr], appliers[addr])
                    running[future] = (addr, time.monotonic())
                    in_flight[addr] = running[future][1]
                for addr in [a for a, deps in waiting_on.items() if deps & failed]:
                    blocker = sorted(waiting_on.pop(addr) & failed)[0]
                    failed.add(addr)
                    record(Outcome(by_address[addr], False, 0.0, "DependencyFailed", f"not attempted: {blocker} failed", False))
            if not running:
                if waiting_on and not stop.is_set() and not any(deps & failed for deps in waiting_on.values()):
                    raise RuntimeError(f"dependency cycle among {sorted(waiting_on)}")
                continue
            done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                addr, _started = running.pop(future)
                in_flight.pop(addr, None)
                outcome = future.result()
                record(outcome)
                if outcome.ok:
                    for deps in waiting_on.values():
                        deps.discard(addr)
                else:
                    failed.add(addr)
            now = time.monotonic()
            if running and now - last_progress >= PROGRESS_EVERY_SECONDS:
                last_progress = now
                slow = [(by_address[a], now - t0) for a, t0 in running.values() if now - t0 >= PROGRESS_EVERY_SECONDS]
                if slow:
                    on_slow(slow)
    finally:
        pool.shutdown(wait=not stop.is_set() or not running, cancel_futures=True)
    return Execution(outcomes, [by_address[a] for a in waiting_on], stop.is_set())


def _apply_one(change: Change, applier: Applier) -> Outcome:
    started = time.monotonic()
    try:
        extra = applier() or {}
    except AzureOperationError as exc:
        return Outcome(change, False, time.monotonic() - started, exc.code, redact(exc.message))
    except DeployKitError as exc:
        return Outcome(change, False, time.monotonic() - started, type(exc).__name__, redact(str(exc)))
    except Exception as exc:  # an applier's own bug must not hide what the other changes did
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Outcome(change, False, time.monotonic() - started, type(exc).__name__, redact(first))
    return Outcome(change, True, time.monotonic() - started, extra=dict(extra))
