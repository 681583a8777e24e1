"""Exclusive locks between runs (fcntl.flock): two runs of a task at once take turns, never lose
an update. The holder's pid is written into the lock file so a waiting run can say who it waits for.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from deploykit.errors import UserError
from deploykit.paths import state_dir

LOCK_WAIT_SECONDS = 120.0


def lock_path(kind: str, resource: Path | str) -> Path:
    """A lock file under .deploykit/locks/ for one resource (a folder, a file), named readably."""
    text = str(Path(resource).resolve()) if isinstance(resource, Path) else resource
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return state_dir() / "locks" / f"{kind}-{digest}.lock"


@contextmanager
def exclusive(
    path: Path, what: str, on_wait: Callable[[str], None] = lambda message: None, timeout: float = LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold `path` exclusively; wait (saying for whom) up to `timeout`, then refuse with one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if not told:
                    on_wait(f"waiting for {what}: another run (pid {holder}) holds it")
                    told = True
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{what}: another run (pid {holder}) still holds it after {timeout:.0f} s; "
                        "try again when it ends (nothing was changed)"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def held(path: Path) -> bool:
    """Whether some process holds an flock on `path` now (a missing file: nobody); never waits."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"
