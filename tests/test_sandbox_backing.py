"""A PostgreSQL server's real cluster is prepared inside its long-running operation, not inside the PUT.

The PUT answers at once (Azure answers 201 and then creates the server); the operation stays
InProgress until the cluster is ready, ends Failed with the preparation's error, and a process
killed while preparing leaves an operation that ends Failed when the state is next read. Real
PostgreSQL clusters, the real SDK pipeline over HTTPS, the store directly where the timing is
measured. One sandbox serves the module; each test has its own server name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from deploykit.azure.operations import begin_put
from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError
from deploykit.sandbox.pgcluster import INIT_MARKER, Cluster
from deploykit.sandbox.server import SandboxServer
from deploykit.sandbox.store import SandboxState
from tests.conftest import REPO, Sandbox

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-backing"
PG = "Microsoft.DBforPostgreSQL/flexibleServers"
API = "2026-10-01"
ADMIN = "backingadmin"


def server_id(name: str) -> str:
    return f"{RG}/providers/{PG}/{name}"


def server_body(password: str) -> dict:
    return {
        "location": "centralus",
        "sku": {"name": "Standard_B1ms", "tier": "Burstable"},
        "properties": {"version": "16", "administratorLogin": ADMIN, "administratorLoginPassword": password},
    }


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    server = SandboxServer(tmp_path_factory.mktemp("backing") / "sandbox", run_id="backing")
    server.state.put_resource(RG, {"location": "centralus"})
    try:
        yield Sandbox(server)
    finally:
        server.state.reset()  # waits for backing work, then stops and deletes the clusters
        server.stop()


def wait_until_ended(state: SandboxState, op_id: str, timeout: float = 60.0) -> dict:
    """The operation once it is no longer InProgress (polled through the store, as the HTTP monitor reads it)."""
    deadline = time.monotonic() + timeout
    while (op := state.get_operation(op_id))["status"] == "InProgress":
        assert time.monotonic() < deadline, f"operation {op_id} still InProgress after {timeout} s"
        time.sleep(0.01)
    return op


def connect(fqdn: str, password: str) -> psycopg.Connection:
    host, _, port = fqdn.rpartition(":")
    return psycopg.connect(
        host=host, port=int(port), user=ADMIN, password=password, dbname="postgres", sslmode="require", connect_timeout=10
    )  # fmt: skip


def put_through_http(box: Sandbox, rid: str, body: dict) -> object:
    """Send the PUT once through the SDK's pipeline; the Operation to poll (deploykit's own, as a run does)."""
    return begin_put(box.provider, ResourceSpec("t", PG, API, rid, {}, "t"), body)


def poll_to_end(operation: object, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not operation.poll():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(min(operation.delay, 0.2))  # type: ignore[attr-defined]
    return operation.result  # type: ignore[attr-defined]


def test_put_answers_before_the_cluster_is_ready(box: Sandbox) -> None:
    """The PUT returns at once; the operation is InProgress while initdb runs; a GET meanwhile does not wait."""
    state = box.server.state
    name = "psql-backing-fast"
    started = time.monotonic()
    created, record, op_id = state.put_resource(server_id(name), server_body("Fast-pass-1"), 0.0)
    answered = time.monotonic() - started
    assert created and op_id is not None
    assert record["body"]["properties"]["provisioningState"] == "Creating"
    assert state.get_operation(op_id)["status"] == "InProgress"  # lro_seconds 0: only the backing work is left

    read_started = time.monotonic()
    shown = box.provider.read(server_id(name), API)  # over HTTPS, while the cluster is being prepared
    read_seconds = time.monotonic() - read_started
    assert shown is not None
    assert state.get_operation(op_id)["status"] == "InProgress"  # the GET really overlapped the preparation
    assert shown["properties"]["fullyQualifiedDomainName"] == f"{name}.postgres.database.azure.com"
    assert shown["properties"]["provisioningState"] == "Creating"

    op = wait_until_ended(state, op_id)
    total = time.monotonic() - started
    assert op["status"] == "Succeeded" and op["failure"] is None
    # The answer came before the work it no longer waits for, and the GET did not wait for it either.
    assert answered < total / 2 and read_seconds < total / 2, (answered, read_seconds, total)
    print(f"\nPUT answered in {answered:.3f} s; GET while preparing {read_seconds:.3f} s; Succeeded after {total:.3f} s")

    ready = box.provider.read(server_id(name), API)
    assert ready is not None and ready["properties"]["provisioningState"] == "Succeeded"
    with connect(ready["properties"]["fullyQualifiedDomainName"], "Fast-pass-1") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)  # a sandbox cluster need not survive an OS crash
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)


def test_writes_while_preparing_take_effect_in_order(box: Sandbox) -> None:
    """A second PUT (a new password) and an azure.extensions PUT sent while the cluster is being made."""
    state = box.server.state
    name = "psql-backing-order"
    rid = server_id(name)
    operations = [
        state.put_resource(rid, server_body("Order-pass-1"), 0.0)[2],
        state.put_resource(rid, server_body("Order-pass-2"), 0.0)[2],
        state.put_resource(f"{rid}/configurations/azure.extensions", {"properties": {"value": "VECTOR"}}, 0.0)[2],
    ]
    assert [state.get_operation(op)["status"] for op in operations].count("InProgress") == len(operations)
    assert [wait_until_ended(state, op)["status"] for op in operations] == ["Succeeded"] * len(operations)
    shown = box.provider.read(rid, API)
    assert shown is not None
    fqdn = shown["properties"]["fullyQualifiedDomainName"]
    with connect(fqdn, "Order-pass-2") as conn:  # the later PUT's password won
        assert conn.execute("SELECT current_setting('azure.extensions')").fetchone() == ("VECTOR",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(fqdn, "Order-pass-1").close()


def test_failed_preparation_fails_the_operation_and_a_re_put_converges(box: Sandbox) -> None:
    """A socket folder that is not the sandbox's own (a symlink in /tmp): the cluster cannot start."""
    name = "psql-backing-fails"
    rid = server_id(name)
    cluster = Cluster.for_server(box.server.state.home(), name)
    cluster.socket_dir.symlink_to(box.server.state.home())  # someone else's link where the socket folder goes
    try:
        operation = put_through_http(box, rid, server_body("Fail-pass-1"))
        with pytest.raises(AzureOperationError) as caught:
            poll_to_end(operation)
        assert caught.value.code == "InternalServerError"
        assert f"{cluster.socket_dir} is not the sandbox's own folder" in caught.value.message
        failed = box.provider.read(rid, API)
        assert failed is not None and failed["properties"]["provisioningState"] == "Failed"
    finally:
        cluster.socket_dir.unlink()
    again = poll_to_end(put_through_http(box, rid, server_body("Fail-pass-2")))
    assert again["properties"]["provisioningState"] == "Succeeded"
    with connect(again["properties"]["fullyQualifiedDomainName"], "Fail-pass-2") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)


KILLED_PUT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from deploykit.sandbox.store import SandboxState

    state = SandboxState(Path(sys.argv[1]))
    body = {"location": "centralus",
            "properties": {"administratorLogin": sys.argv[3], "administratorLoginPassword": "Killed-pass-1"}}
    print(state.put_resource(sys.argv[2], body, 0.0)[2], flush=True)
    time.sleep(120)  # killed long before
    """
)


def wait_for_group_to_die(group: int, timeout: float = 10.0) -> None:
    """Until every process of the killed group has exited (a zombie has let go of its files too).

    A child forked by the killed process (initdb being spawned) holds a copy of its descriptors
    until the kernel has finished killing it too, a moment after the process itself was reaped.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
                alive.append(stat.parent.name)
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes {alive} of group {group} still alive"
        time.sleep(0.01)


def test_operation_left_by_a_killed_process_fails_on_load_and_a_re_put_converges(box: Sandbox) -> None:
    """A process killed during initdb: its operation is Failed for the next reader; the next PUT re-inits."""
    name = "psql-backing-killed"
    rid = server_id(name)
    home = box.server.state.home()
    child = subprocess.Popen(  # its own session, so initdb dies with it, as when a terminal closes
        [sys.executable, "-c", KILLED_PUT, str(home / "state.json"), rid, ADMIN],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        op_id = (child.stdout.readline() if child.stdout else "").strip()
        assert op_id, "the child did not answer its PUT"
        marker = Cluster.for_server(home, name).home / INIT_MARKER
        deadline = time.monotonic() + 30
        while not marker.exists():  # initdb has begun
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.005)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
        wait_for_group_to_die(child.pid)

    fresh = SandboxState(home / "state.json")  # a new process's view of the saved state
    try:
        op = fresh.get_operation(op_id)
        assert op["status"] == "Failed"
        assert op["failure"]["code"] == "InternalServerError"
        assert "stopped while preparing" in op["failure"]["message"] and "send the PUT again" in op["failure"]["message"]
        assert fresh.get_resource(rid)["body"]["properties"]["provisioningState"] == "Failed"
    finally:
        fresh.close()
    assert marker.exists()  # the half-made cluster is still there for the re-PUT to replace

    again = poll_to_end(put_through_http(box, rid, server_body("Killed-pass-2")))
    assert again["properties"]["provisioningState"] == "Succeeded" and not marker.exists()
    with connect(again["properties"]["fullyQualifiedDomainName"], "Killed-pass-2") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)


def test_stop_lets_backing_work_finish(tmp_path: Path) -> None:
    """A run that exits right after its PUT was accepted (--no-wait) still leaves a ready server."""
    server = SandboxServer(tmp_path / "sandbox", run_id="backing-stop")
    sandbox = Sandbox(server)
    name = "psql-backing-stop"
    try:
        server.state.put_resource(RG, {"location": "centralus"})
        operation = put_through_http(sandbox, server_id(name), server_body("Stop-pass-1"))
        assert not operation.done  # type: ignore[attr-defined]
        op_id = operation.monitor.rsplit("/", 1)[-1].split("?")[0]  # type: ignore[attr-defined]
    finally:
        server.stop()
    later = SandboxState(tmp_path / "sandbox" / "state.json")  # the next run's sandbox
    try:
        assert later.get_operation(op_id)["status"] == "Succeeded"
        host, port = later.postgres_endpoint(server_id(name))
        with connect(f"{host}:{port}", "Stop-pass-1") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)
    finally:
        later.reset()
        later.close()
