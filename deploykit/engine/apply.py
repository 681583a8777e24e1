"""Run planned changes over their dependency graph with bounded parallelism.

Knows nothing of what a change does: each pending change has an applier (a callable). Outcomes
are reported as they land, so the caller audits each write when it happens. A stop event (the
first Ctrl-C) ends scheduling: requests being sent finish, nothing new starts, and operations
Azure is still working on are left to it (reported as still running; a re-run waits for them).

Waiting costs no worker: an applier whose request Azure accepted but has not finished returns
an `InFlight` (when to check next, and how). The scheduler keeps every such operation and hands
each check to the pool when it is due, so workers only ever send requests; how many operations
may be in flight at once is its own limit (`in_flight_limit`), not the pool's size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from deploykit.engine.model import Action, Change
from deploykit.errors import AzureOperationError, DeployKitError
from deploykit.report import redact

PROGRESS_EVERY_SECONDS = 10.0
# Operations Azure is working on at once, across the run. This bounds concurrency, not the rate:
# ARM throttles writes per principal and subscription (a token bucket), and a 429 is retried
# with its Retry-After by the SDK pipeline. DEPLOYKIT_MAX_IN_FLIGHT overrides.
IN_FLIGHT_LIMIT = 64


def in_flight_limit() -> int:
    """The run's limit: DEPLOYKIT_MAX_IN_FLIGHT (1-1000), else IN_FLIGHT_LIMIT."""
    import os

    from deploykit.errors import UserError

    text = os.environ.get("DEPLOYKIT_MAX_IN_FLIGHT")
    if not text:
        return IN_FLIGHT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise UserError(f"DEPLOYKIT_MAX_IN_FLIGHT: {text!r} is not allowed; allowed: a whole number from 1 to 1000")
    return int(text)


@dataclass(frozen=True)
class InFlight:
    """An accepted operation still running: check it again after `delay` seconds.

    `check` returns another InFlight while it is still running, else what the applier would
    have returned (the audit's extra fields, or None); it raises when the operation failed.
    """

    check: Callable[[], InFlight | Mapping[str, Any] | None]
    delay: float


Applier = Callable[[], InFlight | Mapping[str, Any] | None]
STILL_RUNNING = "accepted by Azure and still running there (interrupted); run the same command again to wait for it"


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    seconds: float
    error_code: str | None = None
    error: str | None = None
    started: bool = True  # False: never attempted because a dependency failed
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the applier reports for the audit log
    in_flight: InFlight | None = None  # not finished yet: the scheduler checks it again later
    accepted: bool = False  # --no-wait: Azure accepted it and is still working; not waited for


@dataclass
class Execution:
    outcomes: list[Outcome]
    not_started: list[Change]
    interrupted: bool
    deferred: list[Change] = field(default_factory=list)  # --no-wait: they need an operation still running


ACCEPTED = "accepted by Azure and still running there (--no-wait); run the same command again to wait for it"
STILL_IN_FLIGHT = "found still running in Azure, nothing sent (--no-wait); run the same command again to wait for it"


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
    in_flight_limit: int = IN_FLIGHT_LIMIT,
    no_wait: bool = False,
) -> Execution:
    """Apply each pending change once its dependencies in the plan have succeeded.

    Dependencies outside the plan (another step's resources) are taken as satisfied; if they are
    missing, the applier's error says so. `in_flight` (address -> start time) is kept current for
    whoever must say what the run is waiting for: it holds every change started and not ended,
    whether a worker is sending its request or Azure is still working on it. With `no_wait`, an
    operation Azure accepted is recorded as accepted instead of parked, and what depends on it is
    deferred (not started; a re-run plans the operation as `wait` and goes on from there).
    """
    in_flight = {} if in_flight is None else in_flight
    by_address = {c.address: c for c in pending}
    waiting_on = {a: {d for d in depends_on.get(a, ()) if d in by_address} for a in by_address}
    outcomes: list[Outcome] = []
    failed: set[str] = set()
    running: dict[Future[Outcome], str] = {}  # a worker is sending this change's request
    parked: dict[str, tuple[InFlight, float]] = {}  # Azure is working: (how to check, when)
    started_at: dict[str, float] = {}
    deferred: list[Change] = []
    last_progress = time.monotonic()
    limit = max(1, in_flight_limit)

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        on_done(outcome)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="apply")
    try:
        while (waiting_on and not stop.is_set()) or running or parked:
            on_tick()  # outside any lock: where an interrupt is acted on
            now = time.monotonic()
            if stop.is_set():
                for addr in list(parked):
                    del parked[addr]
                    in_flight.pop(addr, None)
                    failed.add(addr)
                    record(Outcome(by_address[addr], False, now - started_at[addr], "StillRunning", STILL_RUNNING))
            for addr in [a for a, (_, due) in parked.items() if due <= now]:
                check, _ = parked.pop(addr)
                running[pool.submit(_check_one, by_address[addr], check, started_at[addr])] = addr
            if not stop.is_set():
                for addr in [a for a, deps in waiting_on.items() if not deps]:
                    if len(running) + len(parked) >= limit:
                        break
                    del waiting_on[addr]
                    on_start(by_address[addr])
                    started_at[addr] = in_flight[addr] = time.monotonic()
                    running[pool.submit(_apply_one, by_address[addr], appliers[addr])] = addr
                for addr in [a for a, deps in waiting_on.items() if deps & failed]:
                    blocker = sorted(waiting_on.pop(addr) & failed)[0]
                    failed.add(addr)
                    record(Outcome(by_address[addr], False, 0.0, "DependencyFailed", f"not attempted: {blocker} failed", False))
            if not running and not parked:
                if waiting_on and not stop.is_set() and not any(deps & failed for deps in waiting_on.values()):
                    raise RuntimeError(f"dependency cycle among {sorted(waiting_on)}")
                continue
            next_due = min((due for _, due in parked.values()), default=now + 0.25)
            timeout = max(0.0, min(0.25, next_due - time.monotonic()))
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED) if running else (set(), None)
            if not running:
                time.sleep(timeout)
            for future in done:
                addr = running.pop(future)
                outcome = future.result()
                if outcome.in_flight is not None and no_wait:
                    in_flight.pop(addr, None)
                    change = by_address[addr]
                    note = STILL_IN_FLIGHT if change.action is Action.WAIT else ACCEPTED  # a wait sent nothing
                    record(Outcome(change, True, outcome.seconds, extra={"note": note}, accepted=True))
                    deferred.extend(by_address[a] for a in _defer_dependents(addr, waiting_on))
                    continue
                if outcome.in_flight is not None:
                    parked[addr] = (outcome.in_flight, time.monotonic() + max(0.0, outcome.in_flight.delay))
                    continue
                in_flight.pop(addr, None)
                record(outcome)
                if outcome.ok:
                    for deps in waiting_on.values():
                        deps.discard(addr)
                else:
                    failed.add(addr)
            now = time.monotonic()
            if (running or parked) and now - last_progress >= PROGRESS_EVERY_SECONDS:
                last_progress = now
                busy = [*running.values(), *parked]
                slow = [(by_address[a], now - started_at[a]) for a in busy if now - started_at[a] >= PROGRESS_EVERY_SECONDS]
                if slow:
                    on_slow(slow)
    finally:
        pool.shutdown(wait=not stop.is_set() or not running, cancel_futures=True)
    return Execution(outcomes, [by_address[a] for a in waiting_on], stop.is_set(), deferred)


def _defer_dependents(address: str, waiting_on: dict[str, set[str]]) -> list[str]:
    """Take everything that needs `address`, directly or not, out of the schedule."""
    blocked, out = {address}, []
    while True:
        found = [a for a, deps in waiting_on.items() if deps & blocked]
        if not found:
            return out
        for addr in found:
            del waiting_on[addr]
            blocked.add(addr)
            out.append(addr)


def _settle(change: Change, call: Callable[[], Any], started: float) -> Outcome:
    """Run an applier or a check; a failure becomes an Outcome (never an exception in the loop)."""
    try:
        result = call() or {}
    except AzureOperationError as exc:
        return Outcome(change, False, time.monotonic() - started, exc.code, redact(exc.message))
    except DeployKitError as exc:
        return Outcome(change, False, time.monotonic() - started, type(exc).__name__, redact(str(exc)))
    except Exception as exc:  # an applier's own bug must not hide what the other changes did
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Outcome(change, False, time.monotonic() - started, type(exc).__name__, redact(first))
    if isinstance(result, InFlight):
        return Outcome(change, True, time.monotonic() - started, in_flight=result)
    return Outcome(change, True, time.monotonic() - started, extra=dict(result))


def _apply_one(change: Change, applier: Applier) -> Outcome:
    return _settle(change, applier, time.monotonic())


def _check_one(change: Change, check: InFlight, started: float) -> Outcome:
    return _settle(change, check.check, started)
