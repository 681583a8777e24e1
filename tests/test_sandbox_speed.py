"""What keeps the sandbox from distorting what it measures, as behaviour (benchmarks/bench_sandbox.py has the figures).

Accepted connections have TCP_NODELAY and are not handshaken in the accept loop (a stalled or
failed handshake delays nobody); stop() ends every listener; a write appends its own change to
the state file instead of rewriting it, and the log is folded into a snapshot once it outgrows
it; finished long-running operations are pruned.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.sandbox.server import ArmHandler, SandboxServer, TLSListener
from deploykit.sandbox.store import COMPACT_MIN_BYTES, MAX_FINISHED_OPERATIONS, ArmError, SandboxState
from deploykit.sandbox.tls import ensure_certificate

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-speed"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrspeed"


def identity(name: object) -> str:
    """The id of a small synchronous resource (a user-assigned identity)."""
    return f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-{name}"


def _address(url: str) -> tuple[str, int]:
    split = urlsplit(url)
    assert split.hostname is not None and split.port is not None
    return split.hostname, split.port


# ---- listeners ----------------------------------------------------------------------------------
def test_an_accepted_connection_has_nodelay_before_any_handshake(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = TLSListener(("127.0.0.1", 0), ArmHandler, context)
    listener.socket.settimeout(10)  # a handshake in accept would wait for a ClientHello that never comes
    client = socket.create_connection(listener.server_address[:2], timeout=10)
    try:
        accepted, _ = listener.get_request()  # the client has sent nothing: no handshake can have happened
        try:
            assert isinstance(accepted, ssl.SSLSocket)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
    finally:
        client.close()
        listener.stop()


def test_a_stalled_or_failed_handshake_delays_nobody(sandbox) -> None:
    address = _address(sandbox.url)
    stalled = socket.create_connection(address, timeout=10)  # connects, never says hello
    garbage = socket.create_connection(address, timeout=10)
    try:
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # plain HTTP on the TLS port
        # Every other client is served while both are open (the control call's own timeout is 30 s).
        assert sandbox.control("GET", "/status")["resources"] == 0
        sandbox.seed_vault("rg-speed", "kv-speed")
        assert sandbox.control("GET", "/status")["resources"] == 2
        assert _ends(garbage)  # the failed handshake closed that connection only
    finally:
        stalled.close()
        garbage.close()


def _ends(conn: socket.socket) -> bool:
    """Whether the peer ends the connection (EOF or a reset) before the socket's timeout raises."""
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_stop_ends_every_listener(tmp_path: Path) -> None:
    server = SandboxServer(tmp_path / "sandbox", run_id="stop")
    vault = urlsplit(server.vault_url("kv-stop"))
    ports = {_address(server.url)[1], vault.port}
    names = {f"sandbox-listener-{port}" for port in ports}
    assert names <= {thread.name for thread in threading.enumerate()}
    server.stop()
    assert not names & {thread.name for thread in threading.enumerate() if thread.is_alive()}
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    server.stop()  # a second stop changes nothing


# ---- the state file: a snapshot and a log -------------------------------------------------------
def test_a_write_appends_only_its_own_change(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "state.json"
    state = SandboxState(path)
    state.put_resource(RG, {"location": "centralus"})
    for n in range(20):
        state.put_resource(identity(n), {"location": "centralus"})
    before = path.read_bytes()
    state.put_resource(identity("new"), {"location": "centralus", "tags": {"n": "1"}})
    after = path.read_bytes()
    assert after.startswith(before)  # nothing already written is written again
    added = after[len(before) :]
    assert added.endswith(b"\n") and added.count(b"\n") == 1
    assert set(json.loads(added)["put"]["resources"]) == {identity("new").lower()}
    assert len(added) < 2000 < len(before)
    other = SandboxState(path)  # as another process would: it shares nothing but the file
    assert other.get_resource(identity("new"))["body"]["tags"] == {"n": "1"}
    assert other.counts()["resources"] == 22


def test_the_log_is_folded_into_a_snapshot_when_it_outgrows_it(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "state.json"
    state, reader = SandboxState(path), SandboxState(path)
    state.put_resource(RG, {"location": "centralus"})
    first = path.stat().st_ino
    n = 0
    while path.stat().st_ino == first:
        state.put_resource(identity(n), {"location": "centralus"})
        n += 1
        assert n < 4 * COMPACT_MIN_BYTES // 100, "no snapshot was ever written"
    assert path.read_bytes().count(b"\n") == 1  # a fresh snapshot, its log empty
    assert path.stat().st_mode & 0o777 == 0o600
    assert reader.counts()["resources"] == n + 1  # a reader that held the old file loads the new one
    state.put_resource(identity("after"), {"location": "centralus"})
    assert path.read_bytes().count(b"\n") == 2  # and appending resumes
    assert reader.get_resource(identity("after"))["id"] == identity("after")


def test_finished_operations_are_pruned(tmp_path: Path) -> None:
    state = SandboxState(tmp_path / "sandbox" / "state.json")
    state.put_resource(RG, {"location": "centralus"})
    body = {"location": "centralus", "sku": {"name": "Basic"}}
    operations = [state.put_resource(REGISTRY, body)[2] for _ in range(MAX_FINISHED_OPERATIONS + 20)]
    assert state.get_operation(operations[-1])["status"] in {"InProgress", "Succeeded"}
    assert state.get_operation(operations[-MAX_FINISHED_OPERATIONS])["status"] == "Succeeded"
    for op_id in operations[:10]:
        with pytest.raises(ArmError) as caught:
            state.get_operation(op_id)
        assert caught.value.status == 404 and caught.value.code == "OperationNotFound"
    fresh = SandboxState(tmp_path / "sandbox" / "state.json")  # pruning is persisted too
    with pytest.raises(ArmError):
        fresh.get_operation(operations[0])
    assert fresh.get_operation(operations[-2])["status"] == "Succeeded"
