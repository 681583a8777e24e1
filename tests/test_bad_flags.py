"""Mistakes on the command line: exit 2, one line naming the flag and what is allowed, nothing written.

The config-file half of the table is tests/test_bad_config.py. Here: unknown tasks and flags (with
"did you mean"), missing or invalid values, files that cannot be read, a prompt that cannot be
answered, an unreachable sandbox, and prod without --env.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_invoke
from tests.helpers import copy_project

WRITES = {"PUT", "POST", "PATCH", "DELETE"}

# (id, arguments, stdin, expected fragment of the one error line); {tmp} is a scratch folder.
CASES = [
    ("unknown-task", ["depoly", "--env", "beta"], "", "unknown task 'depoly'; did you mean 'deploy'?"),
    ("unknown-flag", ["deploy", "--evn", "beta"], "", "deploy: unknown flag '--evn'; did you mean '--env'?"),
    ("no-short-flags", ["deploy", "-y", "--env", "beta"], "", "deploy: unknown flag '-y'"),
    ("flag-without-value", ["deploy", "--env"], "", "needed value and was not given one"),
    ("stray-word", ["deploy", "--env", "beta", "everything"], "", "unknown task 'everything'"),
    ("unknown-env", ["deploy", "--env", "staging"], "", "--env: 'staging' is not an environment; allowed: beta, prod"),
    ("deploy-needs-env", ["deploy"], "", "--env: required; allowed: beta, prod"),
    ("plan-needs-env", ["plan"], "", "--env: required; allowed: beta, prod"),
    ("unknown-target", ["deploy", "--env", "beta", "--target", "moon"], "", "--target: 'moon' is not a target"),
    ("step1-needs-env-or-all", ["step1"], "", "--env: give one environment (beta or prod), or --all"),
    ("step1-not-both", ["step1", "--env", "beta", "--all"], "", "--env: give one environment (beta or prod), or --all"),
    ("shared-step-has-no-env", ["step2a", "--env", "beta"], "", "step2a: unknown flag '--env'"),
    ("prod-without-yes", ["deploy", "--env", "prod"], "", "--yes: required to apply"),
    (
        "lock-timeout-word",
        ["db.migrate", "--env", "beta", "--lock-timeout", "soon"],
        "",
        "--lock-timeout: 'soon' is not a number",
    ),
    (
        "lock-timeout-range",
        ["db.migrate", "--env", "beta", "--lock-timeout", "99999"],
        "",
        "--lock-timeout: '99999' is out of range",
    ),
    ("baseline-word", ["db.migrate", "--env", "beta", "--baseline", "two"], "", "--baseline: 'two' is not a number"),
    ("baseline-fraction", ["db.migrate", "--env", "beta", "--baseline", "1.5"], "", "--baseline: '1.5' is not a number"),
    ("dir-needs-db", ["db.migrate", "--env", "beta", "--dir", "{tmp}"], "", "--dir: needs --db"),
    ("unknown-db", ["db.migrate", "--env", "beta", "--db", "nosuch"], "", "--db: 'nosuch' is not a database of beta"),
    ("db-create-needs-env", ["db.create"], "", "--env: required"),
    ("db-status-no-baseline", ["db.status", "--env", "beta", "--baseline", "1"], "", "db.status: unknown flag '--baseline'"),
    ("vpn-needs-env", ["vpn.client", "--name", "ana"], "", "--env: required"),
    ("vpn-list-needs-env", ["vpn.list"], "", "--env: required"),
    ("vpn-bad-name", ["vpn.client", "--env", "prod", "--name", "ana smith"], "", "--name: 'ana smith' is not allowed"),
    ("vpn-one-action", ["vpn.root", "--env", "prod", "--rotate", "--to-vault"], "", "give at most one"),
    ("vpn-not-in-beta", ["vpn.root", "--env", "beta"], "", "config/beta.yaml: vpn: not configured"),
    (
        "profile-address-newline",
        ["vpn.profile", "--env", "prod", "--name", "ana", "--gateway-address", "203.0.113.9\nremote evil.example"],
        "",
        "--gateway-address: ",
    ),
    ("shared-step-no-env", ["step2b", "--env", "beta"], "", "step2b: unknown flag '--env'; step2b takes no --env"),
    ("switch-with-value", ["deploy", "--env", "beta", "--dry-run=yes"], "", "--dry-run is a switch and takes no value"),
    ("value-flag-then-a-stray-word", ["deploy", "--env=beta", "beta"], "", "unknown task 'beta'"),
    ("unknown-secret", ["secrets.set", "--name", "nope"], "", "--name: 'nope' is not a provider secret"),
    ("secret-file-missing", ["secrets.set", "--name", "github-token", "--file", "{tmp}/missing"], "", "--file: cannot read"),
    ("secret-file-not-utf8", ["secrets.set", "--name", "github-token", "--file", "{tmp}/latin1"], "", "is not UTF-8"),
    ("secret-empty-stdin", ["secrets.set", "--name", "github-token"], "", "the secret value is empty"),
    (
        "secret-unknown-env",
        ["secrets.set", "--name", "github-token", "--env", "qa"],
        "x-value\n",
        "--env: 'qa' is not an environment",
    ),
]


@pytest.mark.parametrize(("case", "args", "stdin", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_flag_exits_2_with_one_line(sandbox, tmp_path: Path, audit_dir: Path, case, args, stdin, expected) -> None:
    (tmp_path / "latin1").write_bytes("clé".encode("latin-1"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    mark = sandbox.journal_mark()
    result = run_invoke(*args, env=sandbox.env(), stdin=stdin)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Traceback" not in result.stderr + result.stdout
    entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
    assert not [e for e in entries if e["method"] in WRITES]
    assert not audit_dir.exists()


def test_unreachable_sandbox_url_is_a_user_error(sandbox, audit_dir: Path) -> None:
    env = {**sandbox.env(), "DEPLOYKIT_SANDBOX_URL": "https://127.0.0.1:9"}
    for args in (["deploy", "--env", "beta"], ["sandbox.status"], ["sandbox.reset"]):
        result = run_invoke(*args, env=env)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: DEPLOYKIT_SANDBOX_URL: no sandbox answers at https://127.0.0.1:9")
    assert not audit_dir.exists()


def test_table_is_large_enough() -> None:
    """Together with the config table, the issue asks for at least 60 mistakes tried."""
    from tests.test_bad_config import CASES as CONFIG_CASES

    assert len(CASES) + len(CONFIG_CASES) >= 60


def test_dependency_cycle_is_refused_before_anything_is_sent(sandbox, tmp_path: Path, audit_dir: Path) -> None:
    copy_project(tmp_path)
    # The registry (step2b) waits for the shared group; make the group wait for the registry.
    step1 = tmp_path / "playbooks" / "step1.yaml.j2"
    step1.write_text(
        step1.read_text().replace("  - address: rg.shared\n", "  - address: rg.shared\n    depends_on: [acr.shared]\n", 1)
    )
    mark = sandbox.journal_mark()
    result = run_invoke("plan", "--env", "beta", cwd=tmp_path, env=sandbox.env())
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "depends_on forms a cycle: " in line and "rg.shared" in line and "acr.shared" in line
    assert sandbox.requests_since(mark)["requests"] == 0
