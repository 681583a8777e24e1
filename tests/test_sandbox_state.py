"""The sandbox's state file: shared safely by several processes, refused with one line when invalid, always resettable."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploykit import sandbox_tasks
from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.flow import RunOptions
from deploykit.errors import UserError
from deploykit.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parent.parent
RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-shared"
VAULT_NAME = "kv-shared"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/{VAULT_NAME}"
PER_PROCESS = 20

# One CLI run in miniature: its own in-process SandboxServer on the shared folder; waits for
# "go" on stdin so that both processes write at the same time.
WORKER = textwrap.dedent(
    """
    import http.client, json, ssl, sys
    from pathlib import Path
    from urllib.parse import urlsplit
    from deploykit.sandbox.server import SandboxServer

    state_dir, tag, kind, group, vault = sys.argv[1:6]
    server = SandboxServer(Path(state_dir), run_id=tag)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    headers = {"Authorization": "Bearer sandbox", "Content-Type": "application/json"}

    def connect(url):
        split = urlsplit(url)
        return http.client.HTTPSConnection(split.hostname, split.port, context=context, timeout=30)

    def call(conn, method, path, body):
        conn.request(method, path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 201), (method, path, response.status)

    conn = connect(server.vault_url(vault) if kind == "secrets" else server.url)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(20):
        if kind == "secrets":
            call(conn, "PUT", f"/secrets/{tag}-{i}?api-version=7.6", {"value": f"value-{tag}-{i}"})
        else:
            rid = f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-{tag}-{i}"
            call(conn, "PUT", f"{rid}?api-version=2024-11-30", {"location": "centralus", "tags": {"i": str(i)}})
    conn.close()
    server.stop()
    print("done", flush=True)
    """
)
RESET = RunOptions("sandbox.reset", None)


def _run_two_at_once(state_dir: Path, kind: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(state_dir), tag, kind, RG, VAULT_NAME],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for tag in ("alpha", "beta")
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", worker.stderr
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0 and out.strip() == "done", err
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def _prepare(state_dir: Path, with_vault: bool) -> None:
    setup = SandboxServer(state_dir, run_id="setup")
    try:
        setup.state.put_resource(RG, {"location": "centralus"})
        if with_vault:
            body = {
                "location": "centralus",
                "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
            }
            setup.state.put_resource(VAULT, body)
    finally:
        setup.stop()


def _get(server: SandboxServer, url: str, path: str) -> dict:
    split = urlsplit(url)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    conn = http.client.HTTPSConnection(split.hostname, split.port, context=context, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer sandbox"})
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def test_two_processes_putting_resources_lose_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    _prepare(state_dir, with_vault=False)
    _run_two_at_once(state_dir, "resources")
    third = SandboxServer(state_dir, run_id="reader")
    try:
        ids = {r["name"] for r in _get(third, third.url, "/_sandbox/resources")["value"]}
        assert {f"id-{tag}-{i}" for tag in ("alpha", "beta") for i in range(PER_PROCESS)} <= ids
        assert _get(third, third.url, "/_sandbox/status")["resources"] == 2 * PER_PROCESS + 1
    finally:
        third.stop()
    assert (state_dir / "state.json").stat().st_mode & 0o777 == 0o600
    # Each process journals its own run, all lines intact.
    entries = [json.loads(line) for line in (state_dir / "journal.jsonl").read_text().splitlines()]
    for tag in ("alpha", "beta"):
        mine = [e for e in entries if e["run"] == tag]
        assert [e["seq"] for e in mine] == list(range(1, PER_PROCESS + 1))
        assert all(e["method"] == "PUT" and e["status"] == 201 for e in mine)


def test_two_processes_setting_secrets_lose_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    _prepare(state_dir, with_vault=True)
    _run_two_at_once(state_dir, "secrets")
    third = SandboxServer(state_dir, run_id="reader")
    try:
        listed = _get(third, third.vault_url(VAULT_NAME), "/secrets?api-version=7.6")["value"]
        names = {item["id"].rsplit("/", 1)[-1] for item in listed}
        assert names == {f"{tag}-{i}" for tag in ("alpha", "beta") for i in range(PER_PROCESS)}
        one = _get(third, third.vault_url(VAULT_NAME), "/secrets/beta-7?api-version=7.6")
        assert one["value"] == "value-beta-7"
    finally:
        third.stop()


def test_a_change_by_another_instance_is_seen_without_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    first, second = SandboxServer(state_dir, run_id="a"), SandboxServer(state_dir, run_id="b")
    try:
        first.state.put_resource(RG, {"location": "centralus"})
        assert second.state.get_resource(RG)["body"]["location"] == "centralus"
        second.state.delete_resource(RG)
        assert first.state.counts()["resources"] == 0
    finally:
        first.stop()
        second.stop()


# ---- invalid state files ----------------------------------------------------------------------------
CORRUPT = {
    "not-json": (b"{this is not json", "not JSON"),
    "not-utf8": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "not-an-object": (b"[1, 2, 3]", "not an object"),
    "wrong-version": (json.dumps({"version": 99, "resources": {}}).encode(), "version 99, expected 1"),
    "missing-section": (json.dumps({"version": 1, "resources": {}}).encode(), "'deleted_vaults' is missing"),
}


@pytest.fixture()
def local_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sandbox.reset/status on a local folder (no external sandbox)."""
    state_dir = tmp_path / "sandbox"
    monkeypatch.delenv("DEPLOYKIT_SANDBOX_URL", raising=False)
    monkeypatch.delenv("DEPLOYKIT_SANDBOX_CA", raising=False)
    monkeypatch.setenv("DEPLOYKIT_SANDBOX_DIR", str(state_dir))
    return state_dir


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_invalid_state_is_one_line_and_reset_recovers(local_sandbox: Path, kind: str, capsys) -> None:
    raw, reason = CORRUPT[kind]
    local_sandbox.mkdir(parents=True)
    (local_sandbox / "state.json").write_bytes(raw)
    with pytest.raises(UserError) as caught:
        SandboxServer(local_sandbox)
    message = str(caught.value)
    assert "\n" not in message and reason in message
    assert message.startswith(f"{local_sandbox / 'state.json'}: not a valid sandbox state (")
    assert message.endswith("; run `invoke sandbox.reset`")
    with pytest.raises(UserError) as again:
        sandbox_tasks.status(as_json=False)
    assert str(again.value) == message

    assert sandbox_tasks.reset(RESET) == 0
    assert "an unreadable state file (removed without being parsed)" in capsys.readouterr().out
    fresh = SandboxServer(local_sandbox)
    try:
        assert fresh.state.counts()["resources"] == 0
        fresh.state.put_resource(RG, {"location": "centralus"})
    finally:
        fresh.stop()


def test_reset_counts_what_it_removes(local_sandbox: Path, capsys) -> None:
    _prepare(local_sandbox, with_vault=True)
    assert sandbox_tasks.reset(RESET) == 0
    assert "2 resources, " in capsys.readouterr().out
    assert not (local_sandbox / "state.json").exists() and not (local_sandbox / "journal.jsonl").exists()
    assert (local_sandbox / "tls" / "cert.pem").exists()  # the certificate is kept


def test_a_running_server_sees_a_reset(local_sandbox: Path) -> None:
    server = SandboxServer(local_sandbox)
    try:
        server.state.put_resource(RG, {"location": "centralus"})
        sandbox_tasks.reset(RESET)
        assert server.state.counts()["resources"] == 0  # reloaded, not written back
        server.state.put_resource(f"{RG}2", {"location": "centralus"})
        assert json.loads((local_sandbox / "state.json").read_text())["resources"].keys() == {f"{RG}2".lower()}
    finally:
        server.stop()
