"""Every task that can change prod asks first: no terminal and no --yes -> exit 2, nothing changed.

Run through the real CLI (stdin is a pipe, so not a terminal). "Nothing changed" is checked where
each task writes: the sandbox journal (no write request), the certificate folder, the database.
One prompt test runs under a real pseudo-terminal: end of input, "no", and "yes".
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, run_invoke
from tests.helpers import specs_for

WRITES = {"PUT", "POST", "PATCH", "DELETE"}


def tree_digest(folder: Path) -> str:
    """One hash over every file's path and bytes under a folder (absent folder: a fixed value)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def databases(admin: str) -> list[tuple]:
    with psycopg.connect(admin) as conn:
        return conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE 'sigmatiq%%' ORDER BY 1"
        ).fetchall()


def write_count(sandbox, mark: int) -> int:
    entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
    return sum(1 for e in entries if e["method"] in WRITES)


@pytest.fixture()
def prod_world(sandbox, pg_admin: str, tmp_path: Path):
    """Prod as far as the built steps go: groups, the prod vault, a VPN root and one client, databases."""
    env = sandbox.env()
    assert run_invoke("step1", "--env", "prod", "--yes", env=env).returncode == 0
    sandbox.seed_vault("rg-trading-prod-data", "kv-trading-prod")
    certs = tmp_path / "certs"
    for args in (["vpn.root"], ["vpn.client", "--name", "ana"]):
        result = run_invoke(*args, "--env", "prod", "--yes", "--certs-dir", str(certs), env=env)
        assert result.returncode == 0, result.stderr
    result = run_invoke("db.create", "--env", "prod", "--yes", "--admin-dsn", pg_admin, "--db", "sigmatiq_core", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_orders.sql").write_text("CREATE TABLE orders (id int);\n")
    return {"env": env, "certs": certs, "admin": pg_admin, "migrations": migrations}


def prod_commands(world: dict) -> list[list[str]]:
    certs, admin = str(world["certs"]), world["admin"]
    return [
        ["step1", "--env", "prod", "--dry-run"],  # a dry run never asks: exit 0 below
        ["step1", "--all"],
        ["deploy", "--env", "prod"],
        ["secrets.set", "--env", "prod", "--name", "github-token"],
        ["db.create", "--env", "prod", "--admin-dsn", admin],
        ["db.migrate", "--env", "prod", "--admin-dsn", admin, "--db", "sigmatiq_core", "--dir", str(world["migrations"])],
        ["vpn.root", "--env", "prod", "--certs-dir", certs, "--rotate"],
        ["vpn.client", "--env", "prod", "--certs-dir", certs, "--name", "bo"],
        ["vpn.revoke", "--env", "prod", "--certs-dir", certs, "--name", "ana"],
        ["vpn.profile", "--env", "prod", "--certs-dir", certs, "--name", "ana", "--gateway-address", "203.0.113.10"],
    ]


def test_every_prod_task_without_yes_and_terminal_exits_2_and_changes_nothing(sandbox, prod_world) -> None:
    commands = prod_commands(prod_world)
    for args in commands:
        # Prod groups exist, but a change is pending for every command: the shared vault and
        # registry for deploy/--all, a new secret, a database, a migration, certificates.
        before = (tree_digest(prod_world["certs"]), databases(prod_world["admin"]))
        mark = sandbox.journal_mark()
        result = run_invoke(*args, env=prod_world["env"], stdin="ghp_from-stdin-not-a-terminal\n")
        if "--dry-run" in args:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: --yes: required"), (args, lines)
            assert "nothing was changed" in lines[0]
        assert write_count(sandbox, mark) == 0, args
        assert (tree_digest(prod_world["certs"]), databases(prod_world["admin"])) == before, args
        assert "Traceback" not in result.stderr
    assert len(commands) == 10


def run_on_terminal(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout, type `answer` at the prompt."""
    import shutil
    import sys

    invoke = shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke"
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [invoke, "--search-root", str(REPO), *args],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    while b"accepted: " not in output and time.monotonic() < deadline and process.poll() is None:
        try:
            output += os.read(master, 4096)
        except OSError:
            break
    os.write(master, answer)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    code = process.wait(timeout=60)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace"))  # colours
    return code, re.sub(r"\s+", " ", text)  # the terminal may wrap long lines


@pytest.mark.parametrize(
    ("answer", "code", "expected"),
    [
        (b"\x04", 2, "end of input before 'yes'"),  # Ctrl-D at the prompt
        (b"no\n", 2, "not confirmed"),
        (b"YES please\n", 2, "not confirmed"),
        (b"yes\n", 0, "Apply finished: {n} created"),
    ],
    ids=["eof", "no", "not-exactly-yes", "yes"],
)
def test_prompt_on_a_terminal(sandbox, answer: bytes, code: int, expected: str) -> None:
    n = len(specs_for(["step1"], "prod"))  # a fresh sandbox: every resource of the step is created
    mark = sandbox.journal_mark()
    status, output = run_on_terminal(["step1", "--env", "prod"], sandbox.env(), answer)
    assert status == code, output
    assert expected.format(n=n) in output
    assert f"Apply {n} change(s) to prod on sandbox?" in output
    assert (write_count(sandbox, mark) > 0) == (code == 0)
