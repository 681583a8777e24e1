"""Thin dispatcher for the release tasks: tasks.py builds a ReleaseRequest and calls one function here.

Each function's body lives in its own module (deploy.py, rollback.py, status.py, promote.py) so the
engineers who own them never edit the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.engine.flow import RunOptions


@dataclass(frozen=True)
class ReleaseRequest(RunOptions):
    """Flags of release, release.rollback, release.status and release.promote.

    Positional order is RunOptions' (task, env, target, dry_run, json, yes); `json` is RunOptions'
    `as_json` (also readable as `.json`). `all` is promote's --all (every app), not step1's all_envs.
    """

    app: str | None = None
    revision: str | None = None
    all: bool = False
    force: bool = False

    @property
    def json(self) -> bool:
        return self.as_json


def release(req: ReleaseRequest) -> int:
    """invoke release: one app's tag, migrations first, verified (deploykit/release/deploy.py)."""
    from deploykit.release.deploy import release as run_release

    return run_release(req)


def rollback(req: ReleaseRequest) -> int:
    """invoke release.rollback: back to the previous healthy image, verified (deploykit/release/rollback.py)."""
    from deploykit.release.rollback import rollback as run_rollback

    return run_rollback(req)


def status(req: ReleaseRequest) -> int:
    """invoke release.status: what each app serves (deploykit/release/status.py)."""
    from deploykit.release.status import status as run_status

    return run_status(req)


def promote(req: ReleaseRequest) -> int:
    """invoke release.promote: beta's image copied by digest to prod's tag (deploykit/release/promote.py)."""
    from deploykit.release.promote import promote as run_promote

    return run_promote(req)
