"""The README's commands stay true: CI runs its test command; the install command deploys beta."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def _command_after(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"^python3 -m venv .*$", section, re.MULTILINE).group(0)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "Run the tests" in ci
    command = _command_after("Run the tests")
    assert command.endswith("python -m pytest")
    extracted = subprocess.run(
        ["bash", "-c", "sed -n '/^Run the tests/,/^## /p' README.md | grep -m1 '^python3 -m venv'"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command


def test_install_command_ends_with_the_beta_deploy() -> None:
    assert _command_after("Install, then deploy beta").endswith("invoke deploy --env beta")
