"""The one flow every task that can change anything runs: plan, show, confirm, apply, audit,
verify, recap.

A task is a planner: given a RunContext it returns Work (a Plan, one applier per pending change,
and optionally a verify function that re-plans). Everything else lives here once: the dry-run
gate, confirmation for prod and real Azure, interrupts, the audit line for each change as it
completes, the final re-plan that must be empty, the recap and the --json document.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deploykit.engine.apply import Applier, Execution, Outcome, execute, in_flight_limit
from deploykit.engine.model import Change, Plan
from deploykit.errors import EXIT_INTERRUPTED, EXIT_PENDING, DeployKitError, UserError
from deploykit.parallel import each
from deploykit.report import Reporter, audit, recap_line

if TYPE_CHECKING:
    from deploykit.azure.arm import ArmProvider
    from deploykit.azure.target import OpenTarget
    from deploykit.config import Platform


@dataclass(frozen=True)
class RunOptions:
    """What every task is asked: which task, env and target, dry run, JSON, confirmation."""

    task: str
    env: str | None
    target: str = "sandbox"
    dry_run: bool = False
    as_json: bool = False
    yes: bool = False
    all_envs: bool = False  # step1 --all: every environment, prod included
    exit_code: bool = False  # dry runs: exit 3 when changes are pending
    tag: str | None = None  # steps that deploy images: --tag overrides the env's image_tag
    no_wait: bool = False  # return once Azure has accepted each long operation; a re-run waits for it

    @property
    def needs_confirmation(self) -> bool:
        """Prod, or real Azure: a person types yes, or --yes is given."""
        return self.target == "azure" or self.env == "prod" or self.all_envs


@dataclass
class Work:
    """What a planner hands the flow."""

    title: str
    plan: Plan
    appliers: Mapping[str, Applier] = field(default_factory=dict)
    depends_on: Mapping[str, Iterable[str]] = field(default_factory=dict)
    workers: int = 1
    verify: Callable[[], Plan] | None = None  # a fresh plan after apply; what was applied must be unchanged
    # Checks of the result that ARM state alone cannot show (apps answering their health
    # endpoints): run after apply, and also when nothing changed (never in a dry run); each
    # returns the problems found, one line each.
    checks: Callable[[], list[str]] | None = None
    no_changes: str = "No changes. Everything matches the desired state."
    # What a dry run found besides the plan (drift's orphans): shown, put in --json under its
    # key, and counted as pending for --exit-code. Never applied.
    findings: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class RunContext:
    """One run's shared parts: options, reporter, config, and the target (opened on first use)."""

    options: RunOptions
    reporter: Reporter
    stack: ExitStack
    platform: Platform | None = None
    opened: OpenTarget | None = None
    notes: list[str] = field(default_factory=list)
    cancel_hooks: list[Callable[[], None]] = field(default_factory=list)  # called on the first Ctrl-C
    # What a step planner read and applied this run (its StateCache): deploy's db.create reads
    # the vault, the server and its allow-list from here instead of asking ARM again.
    state: Any = None
    # Changes applied inside one planned change (deploy's db.create, planned once the server
    # exists), by that change's address: the recap says how many, beside the plan's count.
    inside: dict[str, int] = field(default_factory=dict)
    _target_lock: threading.Lock = field(default_factory=threading.Lock)

    def target(self) -> OpenTarget:
        from deploykit.azure.target import open_target

        with self._target_lock:
            if self.opened is None:
                if self.platform is None:
                    raise RuntimeError("RunContext.target() needs the platform loaded first")
                self.opened = self.stack.enter_context(open_target(self.platform, self.options.target))
            return self.opened

    def provider(self) -> ArmProvider:
        return self.target().provider

    def note(self, message: str) -> None:
        """A line for the end of the run; one already waiting is not added again (a planner may
        run twice in a run: verify plans again)."""
        if message not in self.notes:
            self.notes.append(message)


Planner = Callable[[RunContext], Work]


def run(options: RunOptions, planner: Planner) -> int:
    """Plan, show, confirm, apply, audit, verify, recap. Returns the exit status."""
    started = time.monotonic()
    in_flight_limit()  # a bad DEPLOYKIT_MAX_IN_FLIGHT stops the run before anything is read or asked
    reporter = Reporter(options.task, options.env, options.target, options.dry_run, options.as_json)
    with ExitStack() as stack:
        ctx = RunContext(options, reporter, stack)
        work = planner(ctx)
        plan = work.plan
        reporter.show_plan(plan, work.title)
        if options.dry_run or not plan.pending:
            found = {key: items for key, items in work.findings.items() if items}
            if not plan.pending and not found:
                reporter.info(work.no_changes)
            for key, items in found.items():
                for item in items:
                    reporter.warn(f"{key}: {item.get('summary') or item}")
            problems = None if options.dry_run else _run_checks(ctx, work)
            _flush_notes(ctx)
            _close(ctx, plan, [], None, problems, dict(work.findings))
            if problems:
                return 1
            return EXIT_PENDING if options.exit_code and (plan.pending or found) else 0
        confirm(options, plan, reporter)
        execution = _apply(ctx, work, plan)
        applied_ok = {o.change.address for o in execution.outcomes if o.ok and not o.accepted}
        failed = [o for o in execution.outcomes if not o.ok]
        checkable = not failed and not execution.interrupted and not execution.deferred
        checkable = checkable and not any(o.accepted for o in execution.outcomes)
        # The result checks only read, as verify does: they start now and run beside it.
        checks = _Background(work.checks) if checkable and work.checks is not None else None
        leftover: list[Change] = []
        try:
            if work.verify is not None and applied_ok and not execution.interrupted:
                try:
                    leftover = [c for c in work.verify().pending if c.address in applied_ok]
                except DeployKitError as exc:
                    reporter.warn(f"could not re-read after applying ({exc}); run the plan again to check")
                for change in leftover:
                    reporter.warn(f"{change.address} did not converge: {change.reason}")
        except BaseException:
            _stop_checks(ctx, checks)
            raise
        if leftover:
            _stop_checks(ctx, checks, wait=STOPPED_CHECKS_WAIT_SECONDS)
        problems = _run_checks(ctx, work, checks) if checks is not None and not leftover else []
        _flush_notes(ctx)
        reporter.info(recap_line(execution.outcomes, len(leftover), time.monotonic() - started, ctx.inside))
        _report_not_waited(reporter, execution)
        if execution.interrupted:
            never = [c.address for c in execution.not_started]
            reporter.info(
                "Interrupted: every change made is listed above and in the audit log; "
                + (f"not started: {', '.join(never)}. " if never else "")
                + "Run the same command again to converge."
            )
        _close(ctx, plan, execution.outcomes, execution, problems)
        if execution.interrupted:
            return EXIT_INTERRUPTED
        return 1 if failed or leftover or problems else 0


def _report_not_waited(reporter: Reporter, execution: Execution) -> None:
    """--no-wait: what Azure is still doing, and what waits for it (a re-run finishes both)."""
    accepted = [o.change.address for o in execution.outcomes if o.accepted]
    if not accepted:
        return
    deferred = [c.address for c in execution.deferred]
    reporter.info(
        f"Not waited for (--no-wait): {', '.join(accepted)} accepted by Azure and still running; "
        + (f"not started because they need it: {', '.join(deferred)}. " if deferred else "")
        + "Run the same command again to wait for it and finish."
    )


STOPPED_CHECKS_WAIT_SECONDS = 15.0  # a health GET in flight ends within its own 10 s timeout


class _Background:
    """A call on a daemon thread, its result (or exception) kept for whoever asks: never waited
    for at exit, so checks whose answer is no longer wanted do not hold the process."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="checks", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._result = call()
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def wait(self, seconds: float) -> None:
        self._thread.join(seconds)

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _stop_checks(ctx: RunContext, checks: _Background | None, wait: float = 0.0) -> None:
    """Checks started beside verify whose answer is not wanted (verify failed or was interrupted):
    end their waits now (the cancel hooks the first Ctrl-C would call), so they neither hold the
    process nor print after the recap; `wait` seconds at most for them to end."""
    if checks is None:
        return
    for hook in list(ctx.cancel_hooks):
        hook()
    checks.wait(wait)


def _run_checks(ctx: RunContext, work: Work, started: _Background | None = None) -> list[str]:
    """The work's result checks (or those already started); each problem is warned about,
    audited and put in --json."""
    if work.checks is None:
        return []
    problems = started.result() if started is not None else work.checks()
    for problem in problems:
        ctx.reporter.warn(problem)
    if not problems:
        ctx.reporter.info("Checks passed: verified beyond ARM state (every app's latest revision healthy, as health.mode asks).")
    options = ctx.options
    audit(
        options.task, options.env, options.target, [{"check": "failed", "problem": p} for p in problems] or [{"check": "passed"}]
    )
    return problems


def confirm(options: RunOptions, plan: Plan, reporter: Reporter) -> None:
    """The one confirmation: prod and real Azure ask a person, or need --yes."""
    if options.yes or not options.needs_confirmation:
        return
    where = "real Azure" if options.target == "azure" else options.target
    what = f"{len(plan.pending)} change(s) to {options.env or 'every environment'} on {where}"
    if not sys.stdin.isatty():
        raise UserError(f"--yes: required to apply {what} without a terminal (nothing was changed)")
    reporter.console.print(f"Apply {what}? Only 'yes' is accepted: ", end="")
    try:
        answer = input()
    except EOFError:
        raise UserError("confirmation: end of input before 'yes'; nothing was changed") from None
    if answer.strip() != "yes":
        raise UserError("confirmation: not confirmed (only 'yes' is accepted); nothing was changed")


def _apply(ctx: RunContext, work: Work, plan: Plan) -> Execution:
    reporter, options = ctx.reporter, ctx.options
    stop = threading.Event()
    in_flight: dict[str, float] = {}
    written: set[str] = set()
    audit_lock = threading.Lock()

    def on_done(outcome: Outcome) -> None:
        if outcome.started:  # the audit first: a failing print must not lose it
            with audit_lock:
                audit(options.task, options.env, options.target, [_audit_record(outcome)])
                written.add(outcome.change.address)
        # If output is gone, the run goes on, audited; the CLI reports the closed pipe at the end.
        with contextlib.suppress(BrokenPipeError):
            error = None if outcome.ok else _error_text(outcome)
            reporter.progress(outcome.change, outcome.ok, outcome.seconds, error, outcome.accepted)

    def on_start(change: Change) -> None:
        """A line before the write is sent: a run killed mid-operation still shows what it began."""
        with audit_lock:
            audit(options.task, options.env, options.target, [{**_change_fields(change), "result": "started"}])

    def on_slow(slow: list[tuple[Change, float]]) -> None:
        for change, seconds in slow:
            reporter.info(f"  still {change.action.value}: {change.address} ({_elapsed(seconds)} elapsed)")

    def hard_exit() -> None:
        """Second Ctrl-C: record what is still in flight as unknown, then leave at once."""
        with audit_lock:
            lost = [a for a in in_flight if a not in written]
            by_address = plan.by_address()
            audit(
                options.task,
                options.env,
                options.target,
                [{**_change_fields(by_address[a]), "result": "interrupted; outcome unknown"} for a in lost],
            )
        reporter.info(f"Stopped at once; outcome unknown for: {', '.join(lost) or 'nothing'}. Run again to converge.")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def first_interrupt() -> None:
        stop.set()
        waiting = ", ".join(sorted(in_flight)) or "nothing"
        reporter.info(f"Interrupt: starting nothing new; waiting for {waiting} to finish. Press Ctrl-C again to stop at once.")
        for hook in list(ctx.cancel_hooks):
            hook()

    signals = [0]  # Ctrl-C count, set by the handler; acted on by the apply loop (never inside a lock)
    acted = [0]

    def on_tick() -> None:
        if signals[0] >= 2:
            hard_exit()
        if signals[0] >= 1 and not acted[0]:
            acted[0] = 1
            first_interrupt()

    pending = plan.pending
    limit = in_flight_limit()
    with _interrupts(signals, stop):
        return execute(
            pending,
            {c.address: work.appliers[c.address] for c in pending},
            work.depends_on,
            work.workers,
            on_done,
            stop,
            on_slow,
            in_flight,
            on_start,
            on_tick,
            limit,
            options.no_wait,
        )


@contextmanager
def _interrupts(signals: list[int], stop: threading.Event):
    """SIGINT (and SIGTERM) in the main thread only count and stop scheduling; the apply loop
    says what it waits for (first) or exits (second), so a handler never waits on a lock its own
    thread holds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signals[0] += 1
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def apply_deferred(ctx: RunContext, address: str, make_work: Callable[[], Work]) -> dict[str, Any]:
    """The applier of a change that can only be planned once earlier changes exist (db.create
    inside deploy, before the server is there): plan it now, apply it, audit each change.
    How many it applied is kept in `ctx.inside` for the recap.
    """
    from deploykit.errors import ApplyError

    work = make_work()
    pending = work.plan.pending
    options = ctx.options

    def on_done(outcome: Outcome) -> None:
        audit(options.task, options.env, options.target, [_audit_record(outcome)])
        ctx.reporter.progress(outcome.change, outcome.ok, outcome.seconds, None if outcome.ok else _error_text(outcome))

    execution = execute(
        pending, work.appliers, work.depends_on, work.workers, on_done, threading.Event(), in_flight_limit=in_flight_limit()
    )
    failed = [o for o in execution.outcomes if not o.ok]
    ctx.inside[address] = len(execution.outcomes) - len(failed)
    if failed:
        raise ApplyError(f"{len(failed)} of {len(pending)} failed; first: {failed[0].change.address}: {_error_text(failed[0])}")
    return {"applied": [c.address for c in pending] or "nothing: already in place"}


def merge(title: str, works: list[Work], extra_depends: Mapping[str, Iterable[str]] | None = None) -> Work:
    """Several planners' work as one plan and one graph (deploy: steps, databases, migrations)."""
    depends: dict[str, tuple[str, ...]] = {}
    appliers: dict[str, Applier] = {}
    for work in works:
        appliers.update(work.appliers)
        depends.update({a: tuple(d) for a, d in work.depends_on.items()})
    for address, more in (extra_depends or {}).items():
        depends[address] = (*depends.get(address, ()), *more)
    verifies = [w.verify for w in works if w.verify is not None]
    checks = [w.checks for w in works if w.checks is not None]
    plan = Plan(tuple(c for w in works for c in w.plan.changes), state_read=all(w.plan.state_read for w in works))
    return Work(
        title,
        plan,
        appliers,
        depends,
        workers=max((w.workers for w in works), default=1),
        verify=(lambda: Plan(tuple(c for plan in _all_at_once(verifies) for c in plan.changes))) if verifies else None,
        checks=(lambda: [p for found in _all_at_once(checks) for p in found]) if checks else None,
    )


def _all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Independent reads (each planner's verify, each check) side by side, results in order."""
    return each(lambda call: call(), calls, len(calls), "verify")


def _change_fields(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "type": change.type,
        "id": change.id,
        "action": change.action.value,
        "changed_fields": sorted(change.diff),
    }


def _audit_record(outcome: Outcome) -> dict[str, Any]:
    result = ("accepted" if outcome.accepted else "ok") if outcome.ok else "failed"
    record = {**_change_fields(outcome.change), **outcome.extra, "result": result}
    if not outcome.ok:
        record["error_code"], record["error"] = outcome.error_code, outcome.error
    return record


def _error_text(outcome: Outcome) -> str:
    return f"{outcome.error_code}: {outcome.error}" if outcome.error_code else str(outcome.error)


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _flush_notes(ctx: RunContext) -> None:
    for note in ctx.notes:
        ctx.reporter.info(note)
    ctx.notes.clear()


def _request_counts(opened: OpenTarget) -> dict[str, int] | None:
    """This run's requests to the sandbox (None on Azure): counted from the journal, per run."""
    if not opened.sandbox_url:
        return None
    from deploykit.azure.target import sandbox_control

    ca = str(opened.provider.target.connection_verify)
    return sandbox_control(opened.sandbox_url, ca, "GET", f"/journal?since={opened.journal_start}")["counts"]


def _close(
    ctx: RunContext,
    plan: Plan,
    outcomes: list[Outcome],
    execution: Execution | None,
    problems: list[str] | None = None,
    findings: dict[str, Any] | None = None,
) -> None:
    """Sandbox request counts, then the --json document (one object, also on failure)."""
    try:
        counts = _request_counts(ctx.opened) if ctx.opened is not None else None
    except DeployKitError:
        counts = None  # an external sandbox that went away: the results below still count
    if counts is not None:
        ctx.reporter.info(f"sandbox requests this run: {counts['requests']} ({counts['reads']} reads, {counts['writes']} writes)")
    if not ctx.reporter.as_json:
        return
    results = {o.change.address: o for o in outcomes}
    changes = []
    for change in plan.changes:
        item = change.to_json()
        outcome = results.get(change.address)
        if outcome is not None:
            item["result"] = ("accepted" if outcome.accepted else "ok") if outcome.ok else "failed"
            if not outcome.ok:
                item["error"] = _error_text(outcome)
        elif execution is not None and (change in execution.not_started or change in execution.deferred):
            item["result"] = "not started"
        changes.append(item)
    failed = sum(1 for o in outcomes if not o.ok)
    extra: dict[str, Any] = {"state_read": plan.state_read}
    if execution is not None:
        extra["interrupted"] = execution.interrupted
    if problems is not None:
        extra["checks"] = {"passed": not problems, "problems": problems}
    extra.update(findings or {})
    ctx.reporter.emit_json(plan, changes, failed, extra=extra)
