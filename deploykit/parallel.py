"""One way to run independent I/O side by side: each item on a bounded pool, results in order."""

from __future__ import annotations

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
