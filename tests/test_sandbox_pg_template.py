"""A new sandbox PostgreSQL cluster is a copy of a cached template, not a fresh initdb.

Real PostgreSQL clusters (the embedded binaries), the cache pointed at a temporary folder with
DEPLOYKIT_CACHE_DIR. A copy is recognised by its system identifier (pg_controldata): initdb
draws a new one, a copy keeps its template's. One template serves the module's tests where they
do not change it; the tests of half-built, unwritable and concurrently built caches have their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from deploykit.azure.operations import begin_put
from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.sandbox.ids import ArmError
from deploykit.sandbox.pgcluster import (
    ADMIN_GROUP,
    AZURE_DATABASES,
    SCRATCH_PREFIX,
    TEMPLATE_DONE,
    Cluster,
    PgTemplate,
    _commands,
    binary_version,
)
from deploykit.sandbox.server import SandboxServer
from tests.conftest import REPO, Sandbox

ADMIN = "templateadmin"
VERSION = ".".join(binary_version())
MakeCluster = Callable[[str], Cluster]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's cache folder (its template is made by the first test that needs one)."""
    folder = tmp_path_factory.mktemp("pg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYKIT_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[MakeCluster]:
    """Clusters of one test's state folder, stopped and deleted afterwards."""
    made: list[Cluster] = []

    def make(name: str) -> Cluster:
        made.append(Cluster.for_server(tmp_path / "state", name))
        return made[-1]

    yield make
    for cluster in made:
        cluster.destroy()


def system_identifier(data: Path) -> str:
    """The cluster's identity, drawn by initdb: a copy has its template's."""
    for line in _commands().pg_controldata(["-D", str(data)]).splitlines():
        if line.startswith("Database system identifier:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"pg_controldata shows no system identifier for {data}")


def over_tls(cluster: Cluster, tls: Path, password: str, user: str = ADMIN, dbname: str = "postgres") -> psycopg.Connection:
    """A client's connection through the cluster's TLS front, as deploykit makes one."""
    port = cluster.endpoint(tls)
    assert port is not None
    return psycopg.connect(
        host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, sslmode="require", connect_timeout=10,
        autocommit=True,
    )  # fmt: skip


def base_of(cluster: Cluster) -> dict[str, object]:
    """What a new server has before its admin: roles, databases and their owners, the gate in each database."""
    with cluster.connect() as conn:
        databases = dict(conn.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database").fetchall())
        group = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (ADMIN_GROUP,)).fetchall()
    gates = {}
    for database in sorted(set(databases) - {"template0"}):
        with cluster.connect(database) as conn:
            gates[database] = conn.execute(
                "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'azure_extension_gate'"
            ).fetchone()[0]
    return {"databases": databases, "group": group, "gates": gates}


def test_copies_do_not_share_a_superuser_password(cache: Path, clusters: MakeCluster) -> None:
    """Two servers from one template: each has its own superuser password; the other's and the template's are refused."""
    first, second = clusters("first"), clusters("second")
    first.ensure()
    second.ensure()
    template = PgTemplate(cache)
    assert template.complete() and template.home == cache / "pg-template" / VERSION
    assert system_identifier(first.data) == system_identifier(template.data) == system_identifier(second.data)

    shared = (template.home / "superuser").read_text()
    own = {cluster.home: (cluster.home / "superuser").read_text() for cluster in (first, second)}
    assert len({shared, *own.values()}) == 3
    for path in (template.home / "superuser", first.home / "superuser", second.home / "superuser"):
        assert path.stat().st_mode & 0o777 == 0o600
    for cluster, other in ((first, second), (second, first)):
        with cluster.connect() as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        for wrong in (own[other.home], shared):
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                cluster.connect(password=wrong).close()


def test_the_admin_logs_in_with_its_own_password(cache: Path, clusters: MakeCluster, tmp_path: Path) -> None:
    """The admin login of a copy: its password over TLS works, as a non-superuser member of azure_pg_admin."""
    cluster = clusters("admin")
    cluster.ensure()
    cluster.set_admin(ADMIN, "Admin-pass-1")
    assert system_identifier(cluster.data) == system_identifier(PgTemplate(cache).data)
    with over_tls(cluster, tmp_path / "tls", "Admin-pass-1") as conn:
        assert conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            ADMIN,
            False,
        )
        assert conn.execute("SELECT pg_has_role(current_user, %s, 'member')", (ADMIN_GROUP,)).fetchone() == (True,)
    superuser = (cluster.home / "superuser").read_text()
    for user, password in ((ADMIN, "Admin-pass-2"), (ADMIN, superuser), ("postgres", "Admin-pass-1")):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            over_tls(cluster, tmp_path / "tls", password, user).close()


def test_a_copy_has_the_gate_and_azure_databases_before_its_admin(cache: Path, clusters: MakeCluster, tmp_path: Path) -> None:
    """Before set_admin the copy has the group, the gate and the azure databases; set_admin adds only the admin."""
    cluster = clusters("base")
    cluster.ensure()
    assert system_identifier(cluster.data) == system_identifier(PgTemplate(cache).data)
    before = base_of(cluster)
    databases = before["databases"]
    assert isinstance(databases, dict)
    assert set(AZURE_DATABASES) <= set(databases) and databases["postgres"] == ADMIN_GROUP
    assert before["group"] == [(False,)]  # NOLOGIN
    assert before["gates"] == dict.fromkeys(sorted(set(databases) - {"template0"}), 1)

    cluster.set_admin(ADMIN, "Base-pass-1")
    assert base_of(cluster) == before  # found them all: nothing made twice
    with over_tls(cluster, tmp_path / "tls", "Base-pass-1") as conn:
        with pytest.raises(psycopg.errors.RaiseException, match='extension "hstore" is not allow-listed'):
            conn.execute("CREATE EXTENSION hstore")
        conn.execute("CREATE DATABASE made_by_admin")
    made_by_admin = over_tls(cluster, tmp_path / "tls", "Base-pass-1", dbname="made_by_admin")
    with made_by_admin as conn, pytest.raises(psycopg.errors.RaiseException, match="is not allow-listed"):
        conn.execute("CREATE EXTENSION hstore")  # the gate came from template1


def _wait_for_lock(inode: int, held: int, queued: int) -> None:
    """Wait until Linux's /proc/locks shows `held` flocks and `queued` waiters on the lock file `inode`."""
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in Path("/proc/locks").read_text().splitlines() if f":{inode} " in line]
        waiting = sum("->" in line for line in lines)
        if (len(lines) - waiting, waiting) == (held, queued):
            return
        time.sleep(0.005)
    raise AssertionError(f"the lock file {inode} never had {held} holder(s) and {queued} waiter(s): {lines}")


def _blocked_on(lock: Path, waiters: int) -> None:
    """Wait until `waiters` flock requests are queued behind the one holder of `lock`."""
    _wait_for_lock(lock.stat().st_ino, held=1, queued=waiters)


def _postmasters_of(cluster: Cluster) -> list[int]:
    """Live postgres processes whose command line names this cluster's data folder."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if stat != "Z" and str(cluster.data).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


def _in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as exc:  # the test inspects what the thread raised
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_preparation_that_waited_on_a_deleted_cluster_makes_nothing(cache: Path, clusters: MakeCluster) -> None:
    """A server deleted while its preparation waited on the cluster's flock: no cluster, no folder, no postmaster.

    The test plays the deleting process: it holds the flock, removes the folder (lock file
    included), and lets go. The waiter then holds the flock of a file that is gone.
    """
    cluster = clusters("raced")
    cluster.home.mkdir(parents=True)  # as the server's PUT makes it
    lock = cluster.home / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    preparing, outcome = _in_thread(lambda: cluster.ensure(make_home=False))
    try:
        _blocked_on(lock, 1)
        shutil.rmtree(cluster.home)
    finally:
        os.close(fd)
    preparing.join(30)
    assert isinstance(outcome[0], ArmError) and "was removed (server deleted)" in str(outcome[0])
    assert not cluster.home.exists() and _postmasters_of(cluster) == []


def test_a_preparation_queued_behind_destroy_makes_nothing(cache: Path, clusters: MakeCluster) -> None:
    """Destroy holds the flock while it stops the running cluster and takes its folder away.

    A preparation that queued on the same lock file meanwhile then finds the server deleted: it
    starts nothing in a folder that is gone or half-removed.
    """
    cluster = clusters("contended")
    cluster.ensure()
    inode = (cluster.home / "lock").stat().st_ino
    destroying, destroyed = _in_thread(cluster.destroy)
    _wait_for_lock(inode, held=1, queued=0)  # destroy holds it (pg_ctl's stop takes a tenth of a second or more)
    preparing, prepared = _in_thread(lambda: cluster.ensure(make_home=False))
    _wait_for_lock(inode, held=1, queued=1)
    destroying.join(30)
    preparing.join(30)
    assert destroyed == [None]
    assert isinstance(prepared[0], ArmError) and "was removed (server deleted)" in str(prepared[0]), prepared
    assert not cluster.home.exists() and _postmasters_of(cluster) == []
    assert [p.name for p in cluster.home.parent.iterdir()] == []  # the folder renamed aside is gone too


def test_a_server_put_through_the_sdk_gets_a_copy(cache: Path, tmp_path: Path) -> None:
    """The sandbox's own path: a flexible server PUT over HTTPS is prepared from the template."""
    server = SandboxServer(tmp_path / "sandbox", run_id="pg-template")
    box = Sandbox(server)
    group = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-template"
    rid = f"{group}/providers/Microsoft.DBforPostgreSQL/flexibleServers/psql-template"
    body = {
        "location": "centralus",
        "sku": {"name": "Standard_B1ms", "tier": "Burstable"},
        "properties": {"version": "16", "administratorLogin": ADMIN, "administratorLoginPassword": "Sdk-pass-1"},
    }
    try:
        server.state.put_resource(group, {"location": "centralus"})
        operation = begin_put(
            box.provider, ResourceSpec("t", "Microsoft.DBforPostgreSQL/flexibleServers", "2026-10-01", rid, {}, "t"), body
        )
        deadline = time.monotonic() + 60
        while not operation.poll():
            assert time.monotonic() < deadline
            time.sleep(min(operation.delay, 0.2))
        shown = operation.result
        assert shown["properties"]["provisioningState"] == "Succeeded"
        cluster = Cluster.for_server(server.state.home(), "psql-template")
        assert system_identifier(cluster.data) == system_identifier(PgTemplate(cache).data)
        host, _, port = shown["properties"]["fullyQualifiedDomainName"].rpartition(":")
        with psycopg.connect(
            host=host, port=int(port), user=ADMIN, password="Sdk-pass-1", dbname="azure_maintenance", sslmode="require"
        ) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)
    finally:
        server.state.reset()  # waits for the backing work, then stops and deletes the cluster
        server.stop()


@pytest.mark.parametrize("leftover", ["temporary sibling", "no completion marker", "another recipe"])
def test_a_half_built_template_is_not_used_and_is_rebuilt(
    leftover: str, tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed build leaves is never copied: the template is made anew and the copy works."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(cache))
    root = cache / "pg-template"
    sibling = root / f".{VERSION}.building-999999-dead"
    home = root / VERSION
    junk = (sibling if leftover == "temporary sibling" else home) / "data"
    junk.mkdir(parents=True)
    (junk / "PG_VERSION").write_text("junk\n")  # a copy of this could never start
    (junk.parent / "superuser").write_text("not-the-template")
    if leftover == "another recipe":
        (home / TEMPLATE_DONE).write_text("0" * 64)

    cluster = clusters("rebuilt")
    cluster.ensure()
    cluster.set_admin(ADMIN, "Rebuilt-pass-1")
    template = PgTemplate(cache)
    assert template.complete() and not sibling.exists()
    assert (template.data / "PG_VERSION").read_text().strip() == binary_version()[0]
    assert (template.home / "superuser").read_text() != "not-the-template"
    assert sorted(path.name for path in root.iterdir()) == [VERSION, f"{VERSION}.lock"]
    assert system_identifier(cluster.data) == system_identifier(template.data)
    with over_tls(cluster, tmp_path / "tls", "Rebuilt-pass-1") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)


def test_an_unwritable_cache_falls_back_to_initdb(tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be made (a file is in its way; root ignores modes): initdb, and all still works."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(blocker / "cache"))
    cluster = clusters("fallback")
    cluster.ensure()
    cluster.set_admin(ADMIN, "Fallback-pass-1")
    assert blocker.is_file()
    base = base_of(cluster)
    databases = base["databases"]
    assert isinstance(databases, dict) and set(AZURE_DATABASES) <= set(databases)
    assert base["gates"] == dict.fromkeys(sorted(set(databases) - {"template0"}), 1)
    with over_tls(cluster, tmp_path / "tls", "Fallback-pass-1") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ADMIN,)


def running_postmaster(pattern: str) -> tuple[int, Path] | None:
    """The pid and scratch folder of a ready postmaster whose pid file matches the pattern under the temporary folder."""
    for pid_file in Path(tempfile.gettempdir()).glob(pattern):
        with contextlib.suppress(OSError):
            lines = pid_file.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready" and int(lines[0]) > 0:
                return int(lines[0]), pid_file.parents[2]
    return None


def running(pid: int) -> bool:
    """The process has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


BUILD_AND_WAIT = textwrap.dedent(
    """
    import time
    from deploykit.sandbox.pgcluster import PgTemplate, _run_as

    with PgTemplate.held(_run_as()):
        time.sleep(120)
    """
)


def test_a_killed_build_leaves_nothing_used_or_running(
    tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while its scratch template runs: the next build stops that postmaster and removes it all."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(cache))
    child = subprocess.Popen(
        [sys.executable, "-c", BUILD_AND_WAIT], env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True
    )
    pattern = f"{SCRATCH_PREFIX}{child.pid}-*/cluster/data/postmaster.pid"
    try:
        deadline = time.monotonic() + 60
        while not (postmaster := running_postmaster(pattern)):  # initdb's own backends write the file too
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.005)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    pid, scratch = postmaster
    assert running(pid)  # left running by the killed build
    assert not PgTemplate(cache).complete()

    cluster = clusters("after-kill")
    cluster.ensure()
    template = PgTemplate(cache)
    assert template.complete() and not scratch.exists()
    deadline = time.monotonic() + 10
    while running(pid):
        assert time.monotonic() < deadline, "the killed build's postmaster still runs"
        time.sleep(0.01)
    assert system_identifier(cluster.data) == system_identifier(template.data)


ENSURE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from deploykit.sandbox.pgcluster import Cluster

    Cluster.for_server(Path(sys.argv[1]), sys.argv[2]).ensure()
    """
)


def test_processes_starting_together_make_one_template(
    tmp_path: Path, clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes with an empty cache at once: one builds, the other waits and copies the same template."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(cache))
    names = ("together-a", "together-b")
    made = [clusters(name) for name in names]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE, str(tmp_path / "state"), name], env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        for name in names
    ]
    assert [child.wait(timeout=120) for child in children] == [0] * len(children)
    template = PgTemplate(cache)
    assert template.complete()
    assert {system_identifier(cluster.data) for cluster in made} == {system_identifier(template.data)}
    assert sorted(path.name for path in template.root.iterdir()) == [VERSION, f"{VERSION}.lock"]
    for cluster in made:
        with cluster.connect() as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
