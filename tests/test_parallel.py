"""deploykit.parallel: side-by-side reads keep their order; imports for later wait for their signal."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from deploykit.parallel import each, import_meanwhile


def test_each_keeps_the_items_order_and_raises_the_first_failing_item_s_error() -> None:
    assert each(lambda n: n * n, range(20), 4) == [n * n for n in range(20)]

    def fail_from_three(n: int) -> int:
        if n >= 3:
            raise ValueError(f"item {n}")
        return n

    with pytest.raises(ValueError, match="item 3"):  # the first in the items' order, whichever finished first
        each(fail_from_three, range(8), 4)


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_import_meanwhile_imports_only_once_its_signal_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "later_module_a.py").write_text("VALUE = 1\n")
    (tmp_path / "later_module_b.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    signal = threading.Event()
    import_meanwhile("later_module_b", "later_module_a", after=signal)
    time.sleep(0.2)
    assert "later_module_a" not in sys.modules  # still waiting for the signal
    signal.set()
    # A failing import stops the thread quietly (the real import raises where it is needed).
    assert not _wait_for(lambda: "later_module_a" in sys.modules, seconds=0.5)
    with pytest.raises(ImportError, match="broken on purpose"):
        __import__("later_module_b")

    waiting = threading.Event()
    import_meanwhile("later_module_a", after=waiting)
    helper = next(t for t in threading.enumerate() if t.name == "import-meanwhile" and t.is_alive())
    assert helper.daemon  # never holds the process's exit
    waiting.set()
    try:
        assert _wait_for(lambda: "later_module_a" in sys.modules)
    finally:
        sys.modules.pop("later_module_a", None)
        sys.modules.pop("later_module_b", None)
