"""The sandbox's state file: shared safely by several processes, refused with one line when invalid, always resettable.

The file is a snapshot and a log of changes (store.SandboxState): what one process writes
another sees, a killed writer loses nothing it acknowledged, and replaying the file gives
exactly what the writer held in memory.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
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
from deploykit.sandbox.store import ArmError, SandboxState

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
    "bad-log-line": (
        json.dumps({"version": 1, "resources": {}, "deleted_vaults": {}, "secrets": {}, "operations": {}}).encode()
        + b'\n{"put": {"resources": {}}}\nnot a change\n{"put": {}}\n',
        "line 3 is not a logged change",
    ),
    "log-after-snapshot-on-its-line": (
        json.dumps({"version": 1, "resources": {}, "deleted_vaults": {}, "secrets": {}, "operations": {}}).encode() + b" {}\n",
        "not JSON: Extra data",
    ),
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


# ---- the log: durability and replay ------------------------------------------------------------------
# A CLI run's sandbox writing as fast as it can, printing each name once its PUT was answered.
WRITER = textwrap.dedent(
    """
    import http.client, json, ssl, sys
    from pathlib import Path
    from urllib.parse import urlsplit
    from deploykit.sandbox.server import SandboxServer

    state_dir, group = sys.argv[1:3]
    server = SandboxServer(Path(state_dir), run_id="doomed")
    split = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    conn = http.client.HTTPSConnection(split.hostname, split.port, context=context, timeout=30)
    headers = {"Authorization": "Bearer sandbox", "Content-Type": "application/json"}
    i = 0
    while True:
        rid = f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-doomed-{i}"
        conn.request("PUT", f"{rid}?api-version=2024-11-30", body=json.dumps({"location": "centralus"}), headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 201, response.status
        print(f"id-doomed-{i}", flush=True)
        i += 1
    """
)


def test_a_killed_writer_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    _prepare(state_dir, with_vault=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state_dir), RG], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    acknowledged: list[str] = []
    try:
        assert writer.stdout is not None
        while len(acknowledged) < 60:
            line = writer.stdout.readline()
            assert line, writer.stderr.read() if writer.stderr else "the writer ended"
            acknowledged.append(line.strip())
        writer.send_signal(signal.SIGKILL)  # mid-stream: possibly in the middle of appending a change
        rest, _ = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    acknowledged += rest.split()
    survivor = SandboxState(state_dir / "state.json")
    names = {record["id"].rsplit("/", 1)[-1] for record in survivor.list_resources()}
    assert set(acknowledged) <= names
    survivor.put_resource(f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-after", {"location": "centralus"})
    assert SandboxState(state_dir / "state.json").counts()["resources"] == len(names) + 1


def test_a_torn_last_line_is_not_applied_and_the_next_write_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "state.json"
    writer = SandboxState(path)
    writer.put_resource(RG, {"location": "centralus"})
    writer.put_resource(VAULT_NAME.join((f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/", "")), {})
    with path.open("ab") as handle:  # what a writer killed in the middle of its append leaves
        handle.write(b'{"put": {"resources": {"/subscriptions/torn": {"id": "/subscriptions/to')
    reader = SandboxState(path)
    assert reader.counts()["resources"] == 2
    writer.put_resource(f"{RG}2", {"location": "centralus"})
    raw = path.read_bytes()
    assert b"torn" not in raw and raw.count(b"\n") == 1  # rewritten as a snapshot, not appended after the torn line
    assert reader.counts()["resources"] == 3
    assert SandboxState(path).get_resource(f"{RG}2")["body"]["location"] == "centralus"


def test_a_state_file_without_a_log_is_read_and_rewritten_on_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "state.json"
    SandboxState(path).put_resource(RG, {"location": "centralus"})
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))  # by hand, or an older sandbox: no log
    state = SandboxState(path)
    assert state.get_resource(RG)["body"]["location"] == "centralus"
    state.put_resource(f"{RG}2", {"location": "centralus"})
    assert json.loads(path.read_text())["resources"].keys() == {RG.lower(), f"{RG}2".lower()}
    assert SandboxState(path).counts()["resources"] == 2


APP_ENV = f"{RG}/providers/Microsoft.App/managedEnvironments/env-shared"
APP = f"{RG}/providers/Microsoft.App/containerApps/app-shared"
REDIS = f"{RG}/providers/Microsoft.Cache/redis/redis-shared-1"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrshared"
VAULT_BODY = {
    "location": "centralus",
    "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
}


def _everything(state: SandboxState, operations: list[str]) -> dict:
    """All a state answers, through its public methods."""
    return {
        "resources": sorted(state.list_resources(), key=lambda r: r["id"]),
        "counts": state.counts(),
        "secrets": state.list_secrets(VAULT_NAME),
        "deleted": state.get_deleted_vault(SANDBOX_SUBSCRIPTION, "centralus", "kv-gone"),
        "operations": [state.get_operation(op) for op in operations],
    }


def test_replaying_the_file_gives_what_the_writer_holds(tmp_path: Path) -> None:
    """Every kind of change, hooks and in-place changes included, reaches the file."""
    path = tmp_path / "sandbox" / "state.json"
    live = SandboxState(path)
    live.put_resource(RG, {"location": "centralus"})
    live.put_resource(VAULT, VAULT_BODY)
    live.set_secret(VAULT_NAME, "one", "value-1", None, {"t": "1"})
    live.set_secret(VAULT_NAME, "one", "value-2", "text/plain", None)
    for name in ("kv-gone", "kv-back", "kv-purged"):
        live.put_resource(f"{RG}/providers/Microsoft.KeyVault/vaults/{name}", VAULT_BODY)
        live.set_secret(name, "kept", f"secret-of-{name}", None, None)
        live.delete_resource(f"{RG}/providers/Microsoft.KeyVault/vaults/{name}")  # a hook keeps it as deleted
    recover = {**VAULT_BODY, "properties": {**VAULT_BODY["properties"], "createMode": "recover"}}
    live.put_resource(f"{RG}/providers/Microsoft.KeyVault/vaults/kv-back", recover)  # a hook takes it back
    live.purge_deleted_vault("centralus", "kv-purged")
    operations = [live.put_resource(REGISTRY, {"location": "centralus", "sku": {"name": "Premium"}})[2]]
    assert live.get_resource(REGISTRY)["body"]["properties"]["provisioningState"] == "Succeeded"  # settled by the read
    live.mutate(REGISTRY, {"properties.adminUserEnabled": True})  # drift, in place
    operations.append(
        live.put_resource(
            REDIS, {"location": "centralus", "properties": {"sku": {"name": "Basic", "family": "C", "capacity": 0}}}
        )[2]
    )
    live.run_action(REDIS, "regenerateKey", {"keyType": "Secondary"})  # in place, by an action hook
    live.run_action(REDIS, "regenerateKey", {"keyType": "Primary"})  # (the first also settled the PUT's operation)
    live.put_resource(APP_ENV, {"location": "centralus", "properties": {}})
    template = {"containers": [{"name": "web", "image": "nginx:1", "resources": {"cpu": 0.25, "memory": "0.5Gi"}}]}
    app = {"location": "centralus", "properties": {"managedEnvironmentId": APP_ENV, "template": template}}
    live.put_resource(APP, app)  # a hook adds a revision
    revision = next(r["id"] for r in live.list_resources() if r["type"].endswith("/revisions"))
    live.run_action(revision, "deactivate", None)
    live.seed(f"{RG}/providers/Microsoft.Network/virtualNetworkGateways/gw", {"location": "centralus", "properties": {}})
    live.put_resource(f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-gone", {"location": "centralus"})
    live.delete_resource(f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-gone")
    expected = _everything(live, operations)  # reading settles the long-running operations: written too
    assert {op["status"] for op in expected["operations"]} == {"Succeeded"}
    assert expected["secrets"][0]["value"] == "value-2" and expected["counts"]["deleted_vaults"] == ["kv-gone"]
    assert _everything(SandboxState(path), operations) == expected
    with pytest.raises(ArmError):  # a refused write changes nothing, in memory or in the file
        live.put_resource(f"{RG}/providers/Microsoft.KeyVault/vaults/{VAULT_NAME}", VAULT_BODY, if_match='"stale"')
    assert _everything(live, operations) == expected
    assert _everything(SandboxState(path), operations) == expected
    raw = path.read_bytes()
    assert raw.count(b"\n") > 10  # it was a log, not a rewrite per change
