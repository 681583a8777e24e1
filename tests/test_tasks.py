"""The task surface: fast listing with no SDK imported, and every task documented by a runbook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploykit.runbooks import check_runbooks, invoke_problems, task_flags
from tests.conftest import REPO, run_invoke

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
