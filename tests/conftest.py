"""Shared fixtures: a real in-process sandbox reached over HTTPS by the real SDK clients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.arm import ArmProvider, Target
from deploykit.sandbox.server import SandboxServer
from deploykit.target import SANDBOX_SUBSCRIPTION, SandboxCredential, sandbox_control

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO.parent / "shared" / "arm-examples"


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
        server.stop()


@pytest.fixture(autouse=True)
def audit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the audit log of runs out of the working tree."""
    path = tmp_path / "audit"
    monkeypatch.setenv("DEPLOYKIT_AUDIT_DIR", str(path))
    return path


def run_invoke(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would; tasks.py is found in the repo even from another cwd."""
    invoke = shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke"
    environment = {**(env or os.environ), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [invoke, "--search-root", str(REPO), *args],
        cwd=cwd,
        env=environment,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_example(relative: str) -> dict:
    return json.loads((EXAMPLES / relative).read_text(encoding="utf-8"))
