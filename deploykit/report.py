"""The only module that prints: plan tables, progress, --json, and the append-only audit log.

Every string passes through the redactor first, so a secret registered with `redact_value`
never reaches the console, JSON or the audit log.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from deploykit.engine.model import Action, Change, Plan
from deploykit.paths import audit_dir

REDACTED = "[redacted]"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

ACTION_STYLE = {
    Action.CREATE: "green",
    Action.RECOVER: "cyan",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.WAIT: "magenta",
    Action.UNCHANGED: "dim",
}
PAST_TENSE = {
    Action.CREATE: "created",
    Action.RECOVER: "recovered",
    Action.UPDATE: "updated",
    Action.DELETE: "deleted",
    Action.WAIT: "waited for",
}
# With stdout not a terminal (CI logs, files), tables are laid out this wide instead of 80 columns.
PIPE_WIDTH = 240
RUN_ID = uuid.uuid4().hex[:12]  # ties a run's audit lines together
_json_emitted = threading.Event()


MIN_REDACTED_LENGTH = 4  # shorter values would blank out ordinary words; no real secret is that short


def redact_value(value: str) -> None:
    """Register a secret: from now on it is replaced wherever it would be printed or logged."""
    if len(value) >= MIN_REDACTED_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        for value in sorted(_secrets, key=len, reverse=True):
            text = text.replace(value, REDACTED)
    return text


def _redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    return value


# rich is imported when a run first prints, not when the CLI starts: 0.03 s of every command
# (`invoke --list` included), and deploy imports it beside the plan's reads (import_meanwhile).
def escape(text: str) -> str:
    """rich's markup escape: the text prints as it is, brackets included."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


@cache
def _console_class() -> type:
    from rich.console import Console

    class _Console(Console):
        """Rich exits 1 on a broken pipe by itself; hand it to the CLI's handler instead (exit 2, one line)."""

        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console


class Reporter:
    """Console output for one task run; with --json, humans read stderr and stdout is one object."""

    def __init__(self, task: str, env: str | None, target: str, dry_run: bool, as_json: bool) -> None:
        self.task, self.env, self.target, self.dry_run, self.as_json = task, env, target, dry_run, as_json
        self._lock = threading.Lock()

    @cached_property
    def console(self) -> Any:
        console = _console_class()(stderr=self.as_json, highlight=False, soft_wrap=True)
        if not console.is_terminal and not os.environ.get("COLUMNS"):
            console.width = PIPE_WIDTH
        return console

    def info(self, message: str) -> None:
        with self._lock:
            self.console.print(escape(redact(message)))

    def warn(self, message: str) -> None:
        with self._lock:
            self.console.print(f"[yellow]warning:[/] {escape(redact(message))}")

    def show_plan(self, plan: Plan, title: str) -> None:
        from rich.table import Table

        table = Table(title=redact(title), title_justify="left", show_lines=False, expand=False)
        table.add_column("address")
        table.add_column("type")
        table.add_column("action")
        table.add_column("detail", overflow="fold")
        for change in plan.changes:
            style = ACTION_STYLE[change.action]
            table.add_row(
                escape(change.address), escape(change.type), f"[{style}]{change.action.value}[/]", escape(redact(_detail(change)))
            )
        with self._lock:
            self.console.print(table)
            self.console.print(escape(summary_line(plan.summary())))

    def progress(self, change: Change, ok: bool, seconds: float, error: str | None = None, accepted: bool = False) -> None:
        verb = PAST_TENSE.get(change.action, change.action.value)
        with self._lock:
            if accepted:
                self.console.print(
                    f"  [yellow]accepted[/] {escape(change.address)}: {change.action.value} still running in Azure (--no-wait)"
                )
            elif ok:
                self.console.print(f"  [green]ok[/] {escape(change.address)} {verb} ({seconds:.1f}s)")
            else:
                self.console.print(f"  [red]failed[/] {escape(change.address)}: {escape(redact(error or ''))}")

    def emit_json(
        self, plan: Plan, changes: Iterable[dict[str, Any]], failed: int = 0, extra: dict[str, Any] | None = None
    ) -> None:
        """The one --json document: the standard keys, then a task's own listing (`extra`), redacted."""
        document = {
            "task": self.task,
            "env": self.env,
            "target": self.target,
            "dry_run": self.dry_run,
            "summary": plan.summary(failed=failed),
            "changes": list(changes),
            **(extra or {}),
        }
        write_json(document)


def write_json(document: dict[str, Any]) -> None:
    """Write the run's one JSON object (redacted) to stdout; remembered so a failure adds no second."""
    sys.stdout.write(json.dumps(_redact_json(document), default=str) + "\n")
    sys.stdout.flush()
    _json_emitted.set()


def emit_error_json(task: str, message: str, exit_status: int) -> None:
    """With --json, a run that failed before printing its document still prints one object."""
    if not _json_emitted.is_set():
        write_json({"task": task, "error": message, "exit_status": exit_status})


def recap_line(outcomes: Iterable[Any], not_converged: int, seconds: float, inside: Mapping[str, int] | None = None) -> str:
    """Terraform's closing line: what was done, what failed, how long it took.

    The counts are the plan's changes. A change that applied others inside it (`inside`: deploy's
    db.create, planned as one change before the server exists) says how many, so the recap
    matches both the plan and the `ok` lines printed.
    """
    counts: dict[str, int] = {}
    failed = 0
    for outcome in outcomes:
        if not outcome.ok:
            failed += 1
            continue
        verb = (
            "accepted"
            if getattr(outcome, "accepted", False)
            else PAST_TENSE.get(outcome.change.action, outcome.change.action.value)
        )
        counts[verb] = counts.get(verb, 0) + 1
    order = ["created", "recovered", "updated", "deleted", "waited for", "accepted"]
    parts = [f"{counts.get(v, 0)} {v}" for v in order if counts.get(v) or v in ("created", "updated")]
    parts.append(f"{failed + not_converged} failed")
    within = "; ".join(f"{address} counts as one: {n} changes inside it" for address, n in (inside or {}).items() if n)
    return f"Apply finished: {', '.join(parts)} in {seconds:.1f} s." + (f" ({within})" if within else "")


def summary_line(summary: dict[str, int]) -> str:
    """'1 create, 0 update, 0 delete, 4 unchanged, 0 failed' (operations waited for only when there are some)."""
    return ", ".join(f"{n} {k}" for k, n in summary.items() if n or k != "wait")


def _detail(change: Change) -> str:
    if not change.diff:
        return change.reason
    parts = [f"{path}: {_short(v.get('old'))} -> {_short(v.get('new'))}" for path, v in change.diff.items()]
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def audit(task: str, env: str | None, target: str, records: Iterable[dict[str, Any]]) -> Path:
    """Append one line per change to .deploykit/audit.jsonl: when, who, task, env, target, what."""
    directory = audit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "audit.jsonl"
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    who = _who()
    lines = [
        json.dumps(_redact_json({"when": when, "who": who, "run": RUN_ID, "task": task, "env": env, "target": target, **r}))
        for r in records
    ]
    if not lines:
        return path
    # One O_APPEND write per call: lines from concurrent runs never interleave, and each is on
    # disk (in the page cache) the moment its change completed, so a kill loses none.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, ("\n".join(lines) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return path


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
