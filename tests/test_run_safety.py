"""Runs that overlap, are interrupted, or are killed lose nothing and converge when run again.

Through the real CLI: concurrent runs share the default (in-process) sandbox's state folder; the
interrupt and kill tests use one external sandbox so its journal shows what was really sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.sandbox import pgcluster
from deploykit.sandbox.server import SandboxServer
from tests.conftest import REPO, Sandbox, run_invoke
from tests.helpers import spec, specs_for

WRITES = {"PUT", "POST", "PATCH", "DELETE"}


def start_invoke(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.Popen[str]:
    invoke = shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke"
    process = subprocess.Popen(
        [invoke, "--search-root", str(REPO), *args],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(stdin)
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it again
    return process


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        results.append((process.returncode, out, err))
    return results


@pytest.fixture()
def default_sandbox_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The default sandbox (each run starts its own in-process server) on one shared state folder.

    The runs' PostgreSQL clusters outlive them, as an operator's do; they are stopped and deleted after the test.
    """
    monkeypatch.delenv("DEPLOYKIT_SANDBOX_URL", raising=False)
    monkeypatch.delenv("DEPLOYKIT_SANDBOX_CA", raising=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYKIT_SANDBOX_")}
    yield {**env, "DEPLOYKIT_SANDBOX_DIR": str(tmp_path / "sandbox"), "DEPLOYKIT_AUDIT_DIR": str(tmp_path / "audit")}
    pgcluster.remove_all(tmp_path / "sandbox")


def test_concurrent_runs_keep_everything(default_sandbox_env: dict[str, str], tmp_path: Path) -> None:
    env, certs = default_sandbox_env, str(tmp_path / "certs")
    # Round 1, all at once: both environments deployed, the VPN root made.
    round_one = finish(
        [
            start_invoke("deploy", "--env", "beta", env=env),
            start_invoke("deploy", "--env", "prod", "--yes", env=env),
            start_invoke("vpn.root", "--env", "prod", "--yes", "--certs-dir", certs, env=env),
        ]
    )
    assert [r[0] for r in round_one] == [0, 0, 0], [r[2] for r in round_one]
    # Round 2, all at once: two secrets, two client certificates.
    round_two = finish(
        [
            start_invoke("secrets.set", "--name", "openai-api-key", env=env, stdin="sk-first-value-0001\n"),
            start_invoke("secrets.set", "--name", "github-token", env=env, stdin="ghp-second-value-0002\n"),
            start_invoke("vpn.client", "--env", "prod", "--yes", "--certs-dir", certs, "--name", "ana", env=env),
            start_invoke("vpn.client", "--env", "prod", "--yes", "--certs-dir", certs, "--name", "bo", env=env),
        ]
    )
    assert [r[0] for r in round_two] == [0, 0, 0, 0], [r[2] for r in round_two]

    server = SandboxServer(Path(env["DEPLOYKIT_SANDBOX_DIR"]), run_id="check")
    try:
        box = Sandbox(server)
        ids = {i.lower() for i in box.resource_ids()}
        wanted = {s.id.lower() for e in ("beta", "prod") for s in specs_for(["step1", "step2a", "step2b"], e)}
        assert wanted <= ids, sorted(wanted - ids)
        vault = spec(["step2a"], "kv.shared")
        uri = box.provider.read(vault.id, vault.api_version)["properties"]["vaultUri"]
        client = box.provider.secret_client(uri)
        assert client.get_secret("openai-api-key").value == "sk-first-value-0001"
        assert client.get_secret("github-token").value == "ghp-second-value-0002"
    finally:
        server.stop()
    listed = run_invoke("vpn.list", "--env", "prod", "--certs-dir", certs, "--json", env=env)
    assert {c["name"] for c in json.loads(listed.stdout)["certificates"]} == {"ana", "bo"}
    for name in ("ana", "bo"):
        revoked = run_invoke("vpn.revoke", "--env", "prod", "--yes", "--certs-dir", certs, "--name", name, env=env)
        assert revoked.returncode == 0, revoked.stderr
    listed = run_invoke("vpn.list", "--env", "prod", "--certs-dir", certs, "--json", env=env)
    assert {c["status"] for c in json.loads(listed.stdout)["certificates"]} == {"revoked"}


def audit_lines(audit_dir: Path) -> list[dict]:
    path = audit_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigint_finishes_in_flight_work_starts_nothing_new_and_audits_every_write(sandbox, audit_dir: Path) -> None:
    sandbox.faults(latency_ms=1500)
    mark = sandbox.journal_mark()
    process = start_invoke("deploy", "--env", "beta", "--yes", env={**sandbox.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)})
    assert process.stdout is not None
    seen = ""
    while " create, " not in seen:  # the plan's summary line: apply starts right after it
        line = process.stdout.readline()
        assert line, seen + (process.stderr.read() if process.stderr else "")
        seen += line
    time.sleep(0.3)  # the first wave (the resource groups) is in flight
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    output = seen + out
    assert process.returncode == 130, output + err
    assert "Interrupt: starting nothing new; waiting for" in output
    entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
    written = {e["path"].lower() for e in entries if e["method"] in WRITES}
    lines = audit_lines(audit_dir)
    started = {line["id"].lower() for line in lines if line["result"] == "started"}
    finished = {line["id"].lower(): line["result"] for line in lines if line["result"] != "started"}
    assert started == set(finished) == written  # each write: a line when sent, a line when done
    assert set(finished.values()) == {"ok"}
    beta_steps = __import__("yaml").safe_load(Path("config/beta.yaml").read_text(encoding="utf-8"))["steps"]
    planned = {s.address: s for s in specs_for(beta_steps)}
    never = [a for a, s in planned.items() if s.id.lower() not in written]
    assert never, "the interrupt should have stopped the second wave"
    assert f"not started: {', '.join(sorted(never))}" in " ".join(output.split()) or all(a in output for a in never)
    sandbox.control("DELETE", "/faults")
    again = run_invoke("deploy", "--env", "beta", "--yes", "--json", env=sandbox.env())
    assert again.returncode == 0, again.stderr
    # What never started, plus db.create (deferred: planned once the server exists).
    assert json.loads(again.stdout)["summary"]["create"] == len(never) + 1


def test_kill_during_a_long_create_then_rerun_waits_and_converges(sandbox, audit_dir: Path) -> None:
    assert run_invoke("step1", "--env", "beta", env=sandbox.env()).returncode == 0
    vault = spec(["step2a"], "kv.shared")
    sandbox.faults(lro_seconds=4)
    mark = sandbox.journal_mark()
    process = start_invoke("step2a", env=sandbox.env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
        if any(e["method"] == "PUT" and e["path"].lower() == vault.id.lower() for e in entries):
            break
        time.sleep(0.05)
    process.kill()  # SIGKILL: no handler runs
    process.communicate(timeout=30)
    state = sandbox.provider.read(vault.id, vault.api_version)["properties"]["provisioningState"]
    assert state == "Creating"
    killed = [line for line in audit_lines(audit_dir) if line["task"] == "step2a"]
    assert [(line["address"], line["result"]) for line in killed] == [("kv.shared", "started")]
    mark = sandbox.journal_mark()
    rerun = run_invoke("step2a", "--json", env=sandbox.env())
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    [change] = [c for c in json.loads(rerun.stdout)["changes"] if c["address"] == "kv.shared"]
    assert change["action"] == "wait" and change["result"] == "ok"
    entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
    assert not any(e["method"] == "PUT" for e in entries), "the create must not be sent again"
    assert sandbox.provider.read(vault.id, vault.api_version)["properties"]["provisioningState"] == "Succeeded"
    final = run_invoke("step2a", "--json", env=sandbox.env())
    assert json.loads(final.stdout)["summary"]["unchanged"] == 1
