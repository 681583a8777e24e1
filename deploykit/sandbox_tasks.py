"""`sandbox.reset` and `sandbox.status`: manage the local emulator's persisted state.

reset always recovers: it removes the files without trusting their content. status on an invalid
state file stops with the same one-line UserError that names the file and says to reset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deploykit.azure.target import external_sandbox, sandbox_control
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import UserError
from deploykit.paths import sandbox_dir
from deploykit.sandbox.server import summarise
from deploykit.sandbox.store import SandboxState, remove_state


def reset(options: RunOptions) -> int:
    """Through the one flow: the plan says what will be emptied; the TLS certificate is kept."""
    return run(options, _plan_reset)


def _plan_reset(ctx: RunContext) -> Work:
    external = external_sandbox()
    if external:
        url, ca = external
        counts = sandbox_control(url, ca, "GET", "/status")  # an unreachable URL is a UserError

        def apply_external() -> dict[str, Any]:
            sandbox_control(url, ca, "POST", "/reset")
            return {"resources_removed": counts["resources"]}

        return _reset_work(url, _describe(counts), bool(counts["resources"] or counts["secrets"]), apply_external)
    directory = sandbox_dir()
    state = directory / "state.json"
    try:
        counts: dict[str, Any] | None = SandboxState(state).counts() if state.exists() else None
        what = _describe(counts) if counts else "no state"
    except UserError:
        counts, what = None, "an unreadable state file (removed without being parsed)"
    present = state.exists() or (directory / "journal.jsonl").exists()

    def apply_local() -> dict[str, Any]:
        return {"resources_removed": remove_state(directory)}

    return _reset_work(f"{directory}/", what, present, apply_local)


def _describe(counts: dict[str, Any]) -> str:
    return (
        f"{counts['resources']} resources, {counts['secrets']} secret versions, "
        f"{len(counts['deleted_vaults'])} soft-deleted vaults"
    )


def _reset_work(where: str, what: str, present: bool, applier: Any) -> Work:
    action = Action.DELETE if present else Action.UNCHANGED
    change = Change("sandbox.state", "sandbox/state", where, action, f"{what}; the TLS certificate is kept")
    return Work(
        f"Plan for sandbox.reset of {where}", Plan((change,)), {change.address: applier}, no_changes="The sandbox is empty."
    )


def last_run(journal: Path) -> dict[str, Any]:
    """Request counts of the most recent run recorded in the journal file."""
    if not journal.exists():
        return summarise([])
    entries = []
    for line in journal.read_bytes().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a torn or foreign line: the journal is a log, not the state
            continue
        if isinstance(entry, dict) and "run" in entry and "method" in entry:
            entries.append(entry)
    if not entries:
        return summarise([])
    run = entries[-1]["run"]
    return {"run": run, **summarise([e for e in entries if e["run"] == run])}


def status(as_json: bool) -> int:
    external = external_sandbox()
    if external:
        data = sandbox_control(*external, "GET", "/status")
        data["where"] = external[0]
    else:
        directory = sandbox_dir()
        data = {
            **SandboxState(directory / "state.json").counts(),
            "where": f"{directory}/",
            "last_run": last_run(directory / "journal.jsonl"),
        }
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return 0
    print(f"sandbox state: {data['where']}")
    print(f"resources: {data['resources']}")
    for kind, count in data["by_type"].items():
        print(f"  {kind}: {count}")
    print(f"soft-deleted vaults: {', '.join(data['deleted_vaults']) or 'none'}")
    print(f"secrets (all versions): {data['secrets']}")
    run = data.get("last_run") or data.get("journal") or {}
    if run:
        print(f"last run: {run.get('requests', 0)} requests ({run.get('reads', 0)} reads, {run.get('writes', 0)} writes)")
    return 0
