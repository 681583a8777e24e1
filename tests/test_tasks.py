"""The task surface: fast listing with no SDK imported, and every task documented by a runbook."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from deploykit.runbooks import check_runbooks, invoke_problems, task_flags
from tests.conftest import REPO, invoke_path, run_invoke

LIST_PROBE = """
import sys
from invoke import Program, Collection
import tasks
Program(namespace=Collection.from_module(tasks)).run(["invoke", "--list"], exit=False)
heavy = sorted(m for m in sys.modules if m.startswith(("azure", "psycopg", "deploykit.azure.arm", "deploykit.sandbox")))
print("HEAVY:" + ",".join(heavy))
"""


def test_list_imports_no_azure_sdk_or_psycopg() -> None:
    result = subprocess.run([sys.executable, "-c", LIST_PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    assert "step2a" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_runbooks_check_passes_on_the_repo() -> None:
    result = run_invoke("runbooks.check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("runbooks.check: ok")


def test_runbooks_check_finds_unknown_flags_tasks_and_shell_errors(tmp_path: Path) -> None:
    import tasks

    for runbook in (REPO / "runbooks").glob("*.md"):
        (tmp_path / runbook.name).write_text(runbook.read_text())
    broken = tmp_path / "step2b.md"
    broken.write_text(
        broken.read_text() + "\n## Extra\n\n```bash\ninvoke step2b --colour blue\ninvoke step99\necho $undefined_var\n```\n"
    )
    (tmp_path / "orphan.md").write_text("# orphan\n")
    assert check_runbooks(tasks.ns, tmp_path) == 1


def test_invoke_line_parsing_knows_flags_and_values() -> None:
    import tasks

    flags = task_flags(tasks.ns)
    assert invoke_problems("invoke deploy --env beta --dry-run --json", flags) == []
    assert invoke_problems("invoke secrets.set --name github-token --file ./token.txt", flags) == []
    assert invoke_problems("invoke step1 --env=prod --yes && invoke step2a", flags) == []
    assert invoke_problems("invoke step2a --env beta", flags)[0].startswith("task step2a has no flag --env")
    assert invoke_problems("invoke stepX", flags) == ["unknown task 'stepX'"]


def test_commands_cache_the_packages_bytecode_unless_python_is_told_not_to(tmp_path: Path) -> None:
    """Invoke turns bytecode writing off for its process (--write-pyc); tasks.py turns it back on
    for the package, which otherwise compiled from source on every command (0.13 s), except
    where the user asked Python not to write bytecode."""
    cached: dict[str, list[str]] = {}
    for name, asked in (("default", {}), ("told-not-to", {"PYTHONDONTWRITEBYTECODE": "1"})):
        copy = tmp_path / name
        shutil.copytree(REPO / "deploykit", copy / "deploykit", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "tasks.py", copy / "tasks.py")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("DEPLOYKIT_")}
        env |= {
            **asked,
            "PYTHONPATH": str(copy),
            "DEPLOYKIT_ROOT": str(REPO),
            "DEPLOYKIT_SANDBOX_DIR": str(tmp_path / "sandbox"),
            "DEPLOYKIT_AUDIT_DIR": str(tmp_path / "audit"),
        }
        result = subprocess.run(
            [invoke_path(), "--search-root", str(copy), "step2a", "--dry-run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        imported = [f.stem for f in (copy / "deploykit" / "engine").glob("*.py")]
        cached[name] = sorted(p.name.split(".")[0] for p in (copy / "deploykit" / "engine").glob("__pycache__/*.pyc"))
        assert not (copy / "__pycache__").exists()  # invoke's reason stands: no tasks.pyc beside tasks.py
    assert "plan" in cached["default"] and set(cached["default"]) <= set(imported)
    assert cached["told-not-to"] == []
