"""Shared fixtures: a real in-process sandbox reached over HTTPS by the real SDK clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploykit.azure.arm import ArmProvider, Target
from deploykit.azure.target import SANDBOX_SUBSCRIPTION, SandboxCredential, sandbox_control
from deploykit.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "data" / "arm-examples"  # copies of the shared examples, listed in INDEX.md


class Sandbox:
    """A running sandbox plus the helpers tests use: control calls and a provider."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.ca = str(server.cert_path)
        self.provider = ArmProvider(
            Target(
                "sandbox",
                self.url,
                SandboxCredential(),
                SANDBOX_SUBSCRIPTION,
                "https://management.azure.com/.default",
                self.ca,
                1.0,
                False,
            )
        )

    def control(self, method: str, path: str, body: object = None) -> dict:
        return sandbox_control(self.url, self.ca, method, path, body)

    def journal_mark(self) -> int:
        return int(self.control("GET", "/journal?since=999999999")["last"])

    def requests_since(self, mark: int) -> dict:
        return self.control("GET", f"/journal?since={mark}")["counts"]

    def faults(self, **faults: object) -> None:
        self.control("PUT", "/faults", faults)

    def resource_ids(self) -> list[str]:
        return sorted(r["id"] for r in self.control("GET", "/resources")["value"])

    def make_group(self, group_id: str) -> None:
        """A resource group (its full ARM id) in centralus, through the SDK."""
        from deploykit.engine.model import ResourceSpec

        self.provider.put(
            ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", group_id, {}, "t"), {"location": "centralus"}
        )

    def seed_vault(self, group: str, vault: str) -> str:
        """Create a group and a vault through the SDK (for vaults whose step is not built yet); returns its id."""
        from deploykit.engine.model import ResourceSpec

        rg = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/{group}"
        self.make_group(rg)
        vault_id = f"{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
        body = {
            "location": "centralus",
            "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
        }
        self.provider.put(ResourceSpec("kv", "Microsoft.KeyVault/vaults", "2026-05-15", vault_id, {}, "t"), body)
        return vault_id

    def env(self) -> dict[str, str]:
        """Environment for a CLI subprocess that should use this sandbox."""
        return {**os.environ, "DEPLOYKIT_SANDBOX_URL": self.url, "DEPLOYKIT_SANDBOX_CA": self.ca}


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A fresh sandbox per test; the engine reaches it through DEPLOYKIT_SANDBOX_URL like a user would."""
    server = SandboxServer(tmp_path / "sandbox", run_id="test")
    box = Sandbox(server)
    monkeypatch.setenv("DEPLOYKIT_SANDBOX_URL", box.url)
    monkeypatch.setenv("DEPLOYKIT_SANDBOX_CA", box.ca)
    monkeypatch.chdir(REPO)
    try:
        yield box
    finally:
        try:
            server.state.reset()  # the PostgreSQL clusters of servers the test made: stopped and deleted
        finally:
            server.stop()


@pytest.fixture(autouse=True)
def audit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the audit log of runs out of the working tree."""
    path = tmp_path / "audit"
    monkeypatch.setenv("DEPLOYKIT_AUDIT_DIR", str(path))
    return path


def invoke_path() -> str:
    """The `invoke` of the interpreter running the tests (its venv), whatever PATH says."""
    return shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke"


def run_invoke(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would; tasks.py is found in the repo even from another cwd."""
    environment = {**(env or os.environ), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [invoke_path(), "--search-root", str(REPO), *args],
        cwd=cwd,
        env=environment,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_example(relative: str) -> dict:
    return json.loads((EXAMPLES / relative).read_text(encoding="utf-8"))


APP_ROLES = ("auth_api", "native_api", "pilot_api", "card_api", "sim_api")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One real PostgreSQL for the session (the same embedded server the sandbox target uses).

    Its data lives outside pytest's temporary root: the server runs as another user, and pytest
    makes its root 0700 (a second pytest run would cut the server off from its own files).
    """
    import tempfile

    from deploykit.sandbox.postgres import start_embedded

    folder = Path(tempfile.mkdtemp(prefix="deploykit-test-pg-"))
    folder.chmod(0o755)
    try:
        yield start_embedded((folder / "pg").resolve())
    finally:
        stop_postmaster(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)


def stop_postmaster(data: Path) -> None:
    """Stop the postmaster of a data folder (fast shutdown) before the folder is deleted.

    pgserver's own stop runs at exit and looks for its bookkeeping inside the folder, so once the
    folder is gone the server would run on, serving a deleted folder, until the machine restarts.
    """
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.02)


@pytest.fixture()
def pg_admin(pg_server: str) -> str:
    """The admin URI, with every database and role the tasks create dropped first."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_server, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sigmatiq%%'").fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in APP_ROLES:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    return pg_server


@pytest.fixture()
def beta_vault(sandbox) -> Sandbox:
    """The beta vault step 3 will create, seeded so db.create can store role passwords."""
    sandbox.seed_vault("rg-trading-beta-data", "kv-trading-beta")
    return sandbox


@contextmanager
def module_sandbox(folder: Path, run_id: str, group_id: str) -> Iterator[Sandbox]:
    """One module's sandbox with a resource group made; its PostgreSQL clusters stopped and deleted after."""
    server = SandboxServer(folder / "sandbox", run_id=run_id)
    box = Sandbox(server)
    box.make_group(group_id)
    try:
        yield box
    finally:
        server.state.reset()
        server.stop()


@contextmanager
def project_world(prefix: str, run_id: str) -> Iterator[dict]:
    """A copy of config/ and playbooks/ (the caller edits it) with its own sandbox, for a module's CLI runs.

    Made outside pytest's 0700 temporary root: as root, the sandbox's PostgreSQL runs as another user.
    """
    from deploykit.sandbox.store import remove_state
    from tests.helpers import copy_project  # helpers imports this module: not at the top

    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    project = root / "project"
    copy_project(project)
    server = SandboxServer(root / "sandbox", run_id=run_id)
    box = Sandbox(server)
    env = {**box.env(), "DEPLOYKIT_AUDIT_DIR": str(root / "audit"), "DEPLOYKIT_ROOT": str(project)}
    try:
        yield {"sandbox": box, "env": env, "root": root, "project": project}
    finally:
        server.stop()
        remove_state(root / "sandbox")
        shutil.rmtree(root, ignore_errors=True)
