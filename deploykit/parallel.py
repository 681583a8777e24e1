"""Independent work side by side: I/O on a bounded pool (results in order), imports off the critical path."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(call: Callable[[T], R], items: Iterable[T], limit: int, name: str = "each") -> list[R]:
    """call(item) for every item, at most `limit` at once; results in the items' order.

    One item (or none) runs in the caller's thread: no pool to start for nothing. The first
    exception raised by a call is raised here, after the calls already started have ended.
    """
    todo = list(items)
    if len(todo) <= 1:
        return [call(item) for item in todo]
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(todo))), thread_name_prefix=name) as pool:
        return list(pool.map(call, todo))


def import_meanwhile(*modules: str, after: threading.Event | None = None) -> None:
    """Import modules on a daemon thread once `after` is set (the run waits on the network), or
    after 10 s without it.

    For modules a run needs soon but not yet (deploy's database layer with psycopg, the vault's
    SDK: 0.1 s), so their import overlaps the plan's reads instead of following them, without
    slowing the imports the first request needs. Only modules that cannot import the caller's
    own in-progress modules (no import cycle across the two threads). A failure is left for the
    real import to raise where it is needed.
    """

    def load() -> None:
        if after is not None:
            after.wait(timeout=10)
        for module in modules:
            try:
                importlib.import_module(module)
            except BaseException:  # the caller's own import raises it where it is needed
                return

    threading.Thread(target=load, name="import-meanwhile", daemon=True).start()
