"""`sandbox.reset` and `sandbox.status`: manage the local emulator's persisted state.

reset always recovers: it removes the files without trusting their content. status on an invalid
state file stops with the same one-line UserError that names the file and says to reset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deploykit.paths import sandbox_dir
from deploykit.sandbox.server import summarise
from deploykit.sandbox.store import SandboxState, remove_state
from deploykit.target import external_sandbox, sandbox_control


def reset() -> int:
    external = external_sandbox()
    if external:
        sandbox_control(*external, "POST", "/reset")
        print(f"sandbox at {external[0]} reset")
        return 0
    directory = sandbox_dir()
    removed = remove_state(directory)
    what = f"{removed} resources removed" if removed is not None else "an unreadable state removed"
    print(f"sandbox reset: {what} from {directory}/ (TLS certificate kept)")
    return 0


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
