"""deploykit.db.migrations against a real PostgreSQL: a killed, failed or cancelled no-transaction file is
recorded as unfinished (never silently lost), Ctrl-C and cancel() stop the statement on the server, a
lock timeout names the holder, and an old tracking table is upgraded in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from deploykit.db import migrations as mig
from tests.conftest import REPO

DB = "sigmatiq_migration_safety"  # the pg_admin fixture drops sigmatiq* databases
NO_TX = mig.NO_TRANSACTION_MARKER + "\n"
OLD_DDL = f"""CREATE TABLE {mig.TRACKING_TABLE} (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL,
    duration_ms integer NOT NULL
)"""  # the format before the status column


@pytest.fixture()
def dsn(pg_admin: str) -> Iterator[str]:
    with psycopg.connect(pg_admin, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    target = make_conninfo(pg_admin, dbname=DB)
    try:
        yield target
    finally:
        _terminate_sleepers(pg_admin)


@pytest.fixture()
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(mig.TRACKING_DDL)
        yield connection


def write(folder: Path, files: dict[str, str]) -> list[mig.Migration]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return mig.discover(folder)


def sleepers(dsn: str) -> list[int]:
    """Backends of the test database still running a pg_sleep(30)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE '%%pg_sleep(30)%%' AND pid <> pg_backend_pid()",
            (DB,),
        ).fetchall()
    return [r[0] for r in rows]


def _terminate_sleepers(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (DB,)
        )


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def state(dsn: str, files: list[mig.Migration]) -> mig.Comparison:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return mig.compare(files, mig.read_applied(conn))


RUNNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import psycopg
    from deploykit.db import migrations as mig

    conn = psycopg.connect(sys.argv[1], autocommit=True)
    mig.prepare_session(conn, "kill-test")
    conn.execute(mig.TRACKING_DDL)
    for migration in mig.discover(Path(sys.argv[2])):
        mig.apply_one(conn, migration, "kill-test")
    """
)


def test_killed_no_transaction_migration_is_unfinished_until_repaired(dsn: str, tmp_path: Path) -> None:
    files = write(
        tmp_path / "m",
        {
            "0001_table.sql": "CREATE TABLE quotes (symbol text);\n",
            "0002_slow_index.sql": NO_TX + "SELECT pg_sleep(30);\n",
            "0003_after.sql": "CREATE TABLE later (id int);\n",
        },
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, dsn, str(tmp_path / "m")], cwd=REPO, env=env)
    try:
        wait_for(lambda: bool(sleepers(dsn)) or proc.poll() is not None)
        assert proc.poll() is None, "the runner ended before it could be killed"
        time.sleep(0.3)
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    cmp = state(dsn, files)
    assert [m.name for m, _ in cmp.unfinished] == ["0002_slow_index.sql"]
    assert [a.name for a in cmp.applied] == ["0001_table.sql"]  # not counted as applied ...
    assert [m.name for m in cmp.pending] == ["0003_after.sql"]  # ... nor as pending
    line = mig.unfinished_message(*cmp.unfinished[0])
    assert line.startswith(f"{tmp_path / 'm' / '0002_slow_index.sql'}: a no-transaction migration started at ")
    assert "by kill-test did not finish; the database may be half-applied" in line
    assert "--repair" in line and "rolled back" not in line and "\n" not in line
    # prepare_session set client_connection_check_interval: the server stops the orphaned statement by itself.
    wait_for(lambda: not sleepers(dsn), timeout=8)

    with psycopg.connect(dsn, autocommit=True) as conn:
        mig.repair_unfinished(conn, cmp.unfinished, "operator")
        row = conn.execute(f"SELECT status, applied_by FROM {mig.TRACKING_TABLE} WHERE version = 2").fetchone()  # noqa: S608
        assert row == ("applied", "kill-test (unfinished; recorded by operator with --repair)")
        mig.apply_one(conn, files[2], "test")
    cmp = state(dsn, files)
    assert cmp.unfinished == [] and cmp.pending == [] and cmp.changed == []
    assert [a.name for a in cmp.applied] == [m.name for m in files]


def test_failing_no_transaction_migration_is_unfinished_and_says_not_rolled_back(conn, tmp_path: Path) -> None:
    files = write(
        tmp_path / "m",
        {"0001_tx.sql": "CREATE TABLE gone (id int);\nSELECT 1 / 0;\n", "0002_notx.sql": NO_TX + "SELECT 1 / 0;\n"},
    )
    with pytest.raises(mig.MigrationError) as transactional:
        mig.apply_one(conn, files[0], "test")
    assert transactional.value.rolled_back is True
    assert "(rolled back; earlier migrations stay applied)" in str(transactional.value)
    assert "NOT rolled back" not in str(transactional.value)

    with pytest.raises(mig.MigrationError) as no_tx:
        mig.apply_one(conn, files[1], "test")
    error = no_tx.value
    assert error.rolled_back is False and error.sqlstate == "22012"
    assert str(error).startswith("0002_notx.sql: SQLSTATE 22012: division by zero (NOT rolled back")
    assert "may be half-applied" in str(error)

    cmp = mig.compare(files, mig.read_applied(conn))
    assert [m.name for m, _ in cmp.unfinished] == ["0002_notx.sql"]
    assert [m.name for m in cmp.pending] == ["0001_tx.sql"] and cmp.applied == []
    assert conn.execute("SELECT to_regclass('gone')").fetchone() == (None,)


def test_lock_timeout_names_the_holder(dsn: str, conn) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="other-runner-42") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (mig.LOCK_KEY,))
        pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(mig.LockTimeoutError) as caught:
            mig.acquire_lock(conn, 0.3)
        assert time.monotonic() - started < 3
        message = str(caught.value)
        assert message.startswith("another db.migrate holds the lock on this database; waited 0.3 s; ")
        assert f"held by pid {pid} (application_name 'other-runner-42', user " in message
        assert ", idle, since 20" in message and "(start of its last statement)" in message
        assert message.endswith("; last statement: SELECT pg_advisory_lock($1)")

        # A role that may not see other sessions' activity still gets the pid, and is told why not more.
        conn.execute("DROP ROLE IF EXISTS migration_safety_viewer")
        conn.execute("CREATE ROLE migration_safety_viewer")
        try:
            conn.execute("SET ROLE migration_safety_viewer")
            with pytest.raises(mig.LockTimeoutError) as hidden:
                mig.acquire_lock(conn, 0.2)
            assert f"held by pid {pid} " in str(hidden.value)
            assert "not visible to this role" in str(hidden.value)
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DROP ROLE migration_safety_viewer")
    mig.acquire_lock(conn, 2)  # released with the holder's session
    mig.release_lock(conn)


def test_lock_holder_that_cannot_be_read_does_not_fail(dsn: str) -> None:
    closed = psycopg.connect(dsn, autocommit=True)
    closed.close()
    assert mig.lock_holder(closed).startswith("the holder could not be read (")


def test_cancel_from_another_thread_stops_a_transactional_migration(dsn: str, conn, tmp_path: Path) -> None:
    files = write(tmp_path / "m", {"0001_slow.sql": "CREATE TABLE half (id int);\nSELECT pg_sleep(30);\n"})
    timer = threading.Timer(0.5, mig.cancel, [conn])
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(mig.MigrationError) as caught:
            mig.apply_one(conn, files[0], "test")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 3
    assert caught.value.rolled_back is True and caught.value.sqlstate == "57014"
    assert "cancelled" in str(caught.value) and "(rolled back;" in str(caught.value)
    assert sleepers(dsn) == []
    assert mig.read_applied(conn) == []
    assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
    # The cancel is sticky: nothing more starts on this connection, even between two statements.
    with pytest.raises(mig.MigrationError, match="cancelled before it started"):
        mig.apply_one(conn, files[0], "test")
    with pytest.raises(mig.LockTimeoutError, match="cancelled while waiting"):
        mig.acquire_lock(conn, 1)


def test_cancel_never_raises(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as idle:
        mig.cancel(idle)  # nothing running
        closed = psycopg.connect(dsn)
        closed.close()
        mig.cancel(closed)
        mig.cancel(object())


def test_ctrl_c_during_no_transaction_migration_leaves_it_unfinished(dsn: str, conn, tmp_path: Path) -> None:
    files = write(tmp_path / "m", {"0001_slow.sql": NO_TX + "SELECT pg_sleep(30);\n"})

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(0.5, os.kill, [os.getpid(), signal.SIGINT])
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(mig.MigrationError) as caught:
            mig.apply_one(conn, files[0], "test")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 4
    assert caught.value.rolled_back is False and "cancelled" in str(caught.value)
    assert "NOT rolled back" in str(caught.value)
    assert sleepers(dsn) == []
    with psycopg.connect(dsn, autocommit=True) as other:
        cmp = mig.compare(files, mig.read_applied(other))
    assert [m.name for m, _ in cmp.unfinished] == ["0001_slow.sql"] and cmp.pending == [] and cmp.applied == []


def test_old_tracking_table_is_upgraded_in_place(dsn: str, tmp_path: Path) -> None:
    files = write(
        tmp_path / "m",
        {
            "0001_a.sql": "CREATE TABLE a (id int);\n",
            "0002_b.sql": "CREATE TABLE b (id int);\n",
            "0003_index.sql": NO_TX + "CREATE INDEX CONCURRENTLY a_id ON a (id);\n",
        },
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(OLD_DDL)
        for m in files[:2]:
            conn.execute(f"CREATE TABLE {m.name[5]} (id int)")
            conn.execute(
                f"INSERT INTO {mig.TRACKING_TABLE} (version, name, checksum, applied_by, duration_ms) "  # noqa: S608
                "VALUES (%s, %s, %s, 'old', 1)",
                (m.version, m.name, m.checksum),
            )
        before = mig.compare(files, mig.read_applied(conn))  # read-only: the old format reads as applied
        assert [a.name for a in before.applied] == ["0001_a.sql", "0002_b.sql"] and before.unfinished == []
        conn.execute(mig.TRACKING_DDL)
        conn.execute(mig.TRACKING_DDL)  # idempotent
        rows = conn.execute(f"SELECT version, status, applied_by FROM {mig.TRACKING_TABLE} ORDER BY 1").fetchall()  # noqa: S608
        assert rows == [(1, "applied", "old"), (2, "applied", "old")]
        mig.apply_one(conn, files[2], "test")
        cmp = mig.compare(files, mig.read_applied(conn))
        assert [a.name for a in cmp.applied] == [m.name for m in files]
        assert cmp.pending == [] and cmp.unfinished == [] and cmp.changed == []
        assert conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'a'").fetchall() == [("a_id",)]
