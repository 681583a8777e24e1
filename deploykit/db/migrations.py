"""Migration runs: ordered NNNN_description.sql files per database, tracked by content checksum.

Our own small runner (docs/migrations.md says why): one transaction per file (unless its first
line carries NO_TRANSACTION_MARKER), a session advisory lock with a bounded wait per database,
checksums over normalised text, and a dry run that writes nothing at all.

A no-transaction file cannot be rolled back, so its tracking row is committed as 'started' before
its SQL runs and turned 'applied' after: a kill, a cancel or an error in between leaves it
'started' (unfinished), and later runs refuse until a person checks it and records it (--repair).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import re
import socket
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from deploykit.errors import UserError

FILE_PATTERN = re.compile(r"^(\d{4,})_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql$")
NO_TRANSACTION_MARKER = "-- deploykit:no-transaction"
TRACKING_TABLE = "deploykit_migrations"
# One advisory lock key for every run on a database (advisory locks are per database).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"deploykit-migrations").digest()[:8], "big", signed=True)

APPLIED = "applied"
STARTED = "started"  # a no-transaction file whose SQL began but was not seen to finish

# Creates the table, and upgrades one made before the status column existed, in place: old rows
# become 'applied'. Idempotent; the ALTER (owner only, exclusive lock) runs only when needed.
TRACKING_DDL = f"""CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL,
    duration_ms integer NOT NULL,
    status      text NOT NULL DEFAULT '{APPLIED}' CHECK (status IN ('{APPLIED}', '{STARTED}'))
);
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = '{TRACKING_TABLE}'::regclass AND attname = 'status' AND NOT attisdropped
    ) THEN
        ALTER TABLE {TRACKING_TABLE}
            ADD COLUMN status text NOT NULL DEFAULT '{APPLIED}' CHECK (status IN ('{APPLIED}', '{STARTED}'));
    END IF;
END
$$"""  # noqa: S608 - constants only


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name
    path: Path
    sql: str  # normalised text
    checksum: str
    transactional: bool


@dataclass(frozen=True)
class Applied:
    """A tracking row. For a 'started' row, applied_at/applied_by say when and by whom it began."""

    version: int
    name: str
    checksum: str
    applied_at: Any
    applied_by: str
    status: str = APPLIED

    @property
    def finished(self) -> bool:
        return self.status == APPLIED


@dataclass
class Comparison:
    """Files against the tracking table."""

    pending: list[Migration]
    applied: list[Applied]  # finished rows only
    changed: list[tuple[Migration, Applied]]  # applied, but the file's checksum differs
    missing: list[Applied]  # recorded (finished or not), but the file is gone
    # No-transaction files that started and never finished: neither applied nor pending.
    unfinished: list[tuple[Migration, Applied]] = field(default_factory=list)


def normalise(raw: bytes) -> str:
    """LF line endings and no BOM, so a line-ending or editor change is not an edit."""
    text = raw.decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def discover(folder: Path) -> list[Migration]:
    """The folder's migrations in order; bad names and duplicate numbers are user errors."""
    if not folder.is_dir():
        raise UserError(f"--dir: {folder} is not a folder of migrations")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise UserError(f"{path}: not a migration name; allowed: NNNN_description.sql (digits, underscore, description)")
        version = int(match.group(1))
        if version in found:
            raise UserError(f"{path}: duplicate number {match.group(1)} (also {found[version].path.name})")
        text = normalise(path.read_bytes())
        first = text.split("\n", 1)[0].strip().lower()
        found[version] = Migration(version, path.name, path, text, checksum(text), first != NO_TRANSACTION_MARKER)
    return [found[v] for v in sorted(found)]


def read_applied(conn: Any) -> list[Applied] | None:
    """Rows of the tracking table (finished or not), or None when it does not exist (nothing applied yet).

    Read-only: a table in the old format (no status column) is read as all applied, not upgraded.
    """
    table, has_status = conn.execute(
        "SELECT t, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = t AND attname = 'status' AND NOT attisdropped) "
        "FROM to_regclass(%s) AS t",
        (f"public.{TRACKING_TABLE}",),
    ).fetchone()
    if table is None:
        return None
    status = "status" if has_status else f"'{APPLIED}'"
    rows = conn.execute(
        f"SELECT version, name, checksum, applied_at, applied_by, {status} FROM {TRACKING_TABLE} ORDER BY version"  # noqa: S608 - constant
    ).fetchall()
    return [Applied(*row) for row in rows]


def compare(files: list[Migration], applied: list[Applied] | None) -> Comparison:
    rows = list(applied or [])
    recorded = {a.version: a for a in rows}
    file_versions = {m.version for m in files}
    pending = [m for m in files if m.version not in recorded]
    done = [a for a in rows if a.finished]
    changed = [
        (m, recorded[m.version])
        for m in files
        if m.version in recorded and recorded[m.version].finished and recorded[m.version].checksum != m.checksum
    ]
    unfinished = [(m, recorded[m.version]) for m in files if m.version in recorded and not recorded[m.version].finished]
    missing = [a for a in rows if a.version not in file_versions]
    return Comparison(pending, done, changed, missing, unfinished)


def unfinished_message(migration: Migration, row: Applied) -> str:
    """The one-line refusal for a no-transaction migration that started and did not finish."""
    return (
        f"{migration.path}: a no-transaction migration started at {_when(row.applied_at)} by {row.applied_by} "
        "did not finish; the database may be half-applied. Check it by hand, then record it with --repair "
        "(nothing was applied)"
    )


def repair_unfinished(conn: Any, unfinished: list[tuple[Migration, Applied]], repaired_by: str) -> None:
    """--repair after a person checked a half-applied file by hand: record it applied, current checksum."""
    with conn.transaction():
        for migration, _ in unfinished:
            conn.execute(
                f"UPDATE {TRACKING_TABLE} SET status = '{APPLIED}', checksum = %s, name = %s, "  # noqa: S608 - constant
                f"applied_by = applied_by || %s WHERE version = %s AND status = '{STARTED}'",
                (
                    migration.checksum,
                    migration.name,
                    f" (unfinished; recorded by {repaired_by} with --repair)",
                    migration.version,
                ),
            )


def _when(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


class LockTimeoutError(Exception):
    """Another runner held the database's migration lock for longer than the bounded wait
    (or the wait was cancelled); the message names the holder when it can be read."""


def acquire_lock(conn: Any, timeout: float) -> None:
    """Session-level advisory lock, polled so the wait is bounded and the failure message clear."""
    deadline = time.monotonic() + timeout
    while True:
        if conn in _cancelled:
            raise LockTimeoutError("cancelled while waiting for the migration lock; nothing was applied")
        try:
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                return
        except psycopg.errors.QueryCanceled:
            raise LockTimeoutError("cancelled while waiting for the migration lock; nothing was applied") from None
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"another db.migrate holds the lock on this database; waited {timeout:g} s; {lock_holder(conn)}"
            )
        time.sleep(0.1)


# pg_advisory_lock(bigint) shows in pg_locks as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
_LOCK_CLASSID = (LOCK_KEY & 0xFFFFFFFFFFFFFFFF) >> 32
_LOCK_OBJID = LOCK_KEY & 0xFFFFFFFF

_HOLDER_SQL = """SELECT l.pid, a.application_name, a.usename, a.client_addr::text, a.state,
       a.xact_start, a.query_start, a.backend_start, a.query
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
ORDER BY l.pid"""


def lock_holder(conn: Any) -> str:
    """Who holds the migration lock, for the timeout message; never raises."""
    try:
        with conn.transaction():  # a savepoint when a transaction is open: a failure here changes nothing
            rows = conn.execute(_HOLDER_SQL, (_LOCK_CLASSID, _LOCK_OBJID)).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the holder could not be read ({first})"
    if not rows:
        return "the holder could not be found (it may have just released the lock)"
    return "; ".join(_describe_holder(*row) for row in rows)


def _describe_holder(
    pid: int, app: Any, user: Any, client: Any, state: Any, xact_start: Any, query_start: Any, backend_start: Any, query: Any
) -> str:
    who = ", ".join(
        part
        for part in (
            f"application_name '{app}'" if app else "no application_name",
            f"user {user}" if user else None,
            f"from {client}" if client else None,
        )
        if part
    )
    text = f"held by pid {pid} ({who})"
    if query == "<insufficient privilege>" or (query is None and state is None):
        return text + "; its activity is not visible to this role (needs pg_read_all_stats or the same role)"
    which = "current" if state == "active" else "last"
    text += f", {state or 'state unknown'}"
    if xact_start is not None:
        text += f", in a transaction since {_when(xact_start)}"
    elif query_start is not None:
        text += f", since {_when(query_start)} (start of its {which} statement)"
    elif backend_start is not None:
        text += f", connected since {_when(backend_start)}"
    statement = _first_line(query or "")
    if statement:
        text += f"; {which} statement: {statement}"
    return text


def _first_line(sql: str, limit: int = 100) -> str:
    """The first line that is not blank or a comment (else the first line), cut to about `limit` characters."""
    lines = [line.strip() for line in sql.splitlines() if line.strip()]
    line = next((li for li in lines if not li.startswith("--")), lines[0] if lines else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def release_lock(conn: Any) -> None:
    """Release the lock; a cancel() that lands on the unlock itself does not stop it (one retry),
    and closing the connection releases a session lock anyway."""
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.errors.QueryCanceled:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


ROLLED_BACK = "rolled back; earlier migrations stay applied"
NOT_ROLLED_BACK = (
    "NOT rolled back: a no-transaction migration, recorded as unfinished; the database may be half-applied. "
    "Check it by hand, then record it with --repair, or undo it by hand and delete its row"
)


@dataclass
class MigrationError(Exception):
    """A migration failed; carries PostgreSQL's SQLSTATE and position for the report, and whether
    the file was rolled back (transactional, or nothing ran) or may be half-applied."""

    file: str
    sqlstate: str | None
    message: str
    position: str | None
    rolled_back: bool = True

    def __str__(self) -> str:
        where = f" at position {self.position}" if self.position else ""
        outcome = ROLLED_BACK if self.rolled_back else NOT_ROLLED_BACK
        return f"{self.file}: SQLSTATE {self.sqlstate}{where}: {self.message} ({outcome})"


CANCELLED_SQLSTATE = "57014"  # query_canceled


def apply_one(conn: Any, migration: Migration, applied_by: str) -> float:
    """Run one file and record it. A transactional file is all or nothing. A no-transaction file is
    recorded 'started' (committed) first and 'applied' after; any failure, cancel or kill in between
    leaves it 'started'. Ctrl-C and cancel() become MigrationError("cancelled")."""
    start = time.perf_counter()
    if conn in _cancelled:
        raise MigrationError(migration.name, CANCELLED_SQLSTATE, "cancelled before it started", None, rolled_back=True)
    if migration.transactional:
        try:
            with conn.transaction():
                conn.execute(migration.sql)
                _record(conn, migration, applied_by, start)
        except KeyboardInterrupt:
            cancel(conn)  # psycopg cancels a statement it was waiting on; this covers the rest
            raise MigrationError(migration.name, CANCELLED_SQLSTATE, "cancelled (interrupted)", None, rolled_back=True) from None
        except psycopg.Error as exc:
            raise _failure(migration, exc, rolled_back=True) from None
        return time.perf_counter() - start
    try:
        _mark_started(conn, migration, applied_by)
    except KeyboardInterrupt:
        cancel(conn)
        raise MigrationError(migration.name, CANCELLED_SQLSTATE, "cancelled (interrupted)", None, rolled_back=True) from None
    except psycopg.Error as exc:  # the SQL did not start
        raise _failure(migration, exc, rolled_back=True) from None
    try:
        conn.execute(migration.sql)  # e.g. CREATE INDEX CONCURRENTLY: must run outside a transaction
        conn.execute(
            f"UPDATE {TRACKING_TABLE} SET status = '{APPLIED}', duration_ms = %s WHERE version = %s",  # noqa: S608 - constant
            (int((time.perf_counter() - start) * 1000), migration.version),
        )
    except KeyboardInterrupt:
        cancel(conn)
        raise MigrationError(migration.name, CANCELLED_SQLSTATE, "cancelled (interrupted)", None, rolled_back=False) from None
    except psycopg.Error as exc:
        raise _failure(migration, exc, rolled_back=False) from None
    return time.perf_counter() - start


def _failure(migration: Migration, exc: psycopg.Error, rolled_back: bool) -> MigrationError:
    diag = exc.diag
    message = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.errors.QueryCanceled):
        message = f"cancelled ({message})"
    return MigrationError(migration.name, exc.sqlstate, message, diag.statement_position, rolled_back=rolled_back)


def _record(conn: Any, migration: Migration, applied_by: str, start: float) -> None:
    conn.execute(
        f"INSERT INTO {TRACKING_TABLE} (version, name, checksum, applied_by, duration_ms) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
        (migration.version, migration.name, migration.checksum, applied_by, int((time.perf_counter() - start) * 1000)),
    )


def _mark_started(conn: Any, migration: Migration, applied_by: str) -> None:
    """Committed before the SQL runs, so a kill leaves a trace."""
    with conn.transaction():
        conn.execute(
            f"INSERT INTO {TRACKING_TABLE} (version, name, checksum, applied_by, duration_ms, status) "  # noqa: S608 - constant
            f"VALUES (%s, %s, %s, %s, 0, '{STARTED}')",
            (migration.version, migration.name, migration.checksum, applied_by),
        )


# Connections cancel() was called on: apply_one and acquire_lock start nothing more on them, so a
# cancel that lands between two statements still stops the run.
_cancelled: weakref.WeakSet[Any] = weakref.WeakSet()


def cancel(conn: Any) -> None:
    """Cancel the statement running on `conn`, from any thread, and mark the connection cancelled.
    Never raises (the connection may be idle, closed or broken)."""
    with contextlib.suppress(TypeError):  # not weak-referenceable: only the running statement is cancelled
        _cancelled.add(conn)
    with contextlib.suppress(Exception):  # best effort by contract
        if hasattr(conn, "cancel_safe"):
            conn.cancel_safe(timeout=5.0)
        else:
            conn.cancel()


def prepare_session(conn: Any, applied_by: str) -> None:
    """Optional, once per migration connection (autocommit): name the session, so a lock-timeout
    message on another runner says who holds the lock, and (PostgreSQL 14+) have the server abort
    a running statement within seconds when this client dies instead of running it to the end."""
    host = socket.gethostname().split(".")[0]
    conn.execute("SELECT set_config('application_name', %s, false)", (f"deploykit db.migrate {applied_by}@{host}"[:63],))
    if conn.info.server_version >= 140000:
        conn.execute("SET client_connection_check_interval = '2s'")


def record_baseline(conn: Any, migrations: list[Migration], applied_by: str) -> None:
    """Adopt a database migrated by another tool: record files as applied without running them."""
    with conn.transaction():
        for migration in migrations:
            conn.execute(
                f"INSERT INTO {TRACKING_TABLE} (version, name, checksum, applied_by, duration_ms) VALUES (%s, %s, %s, %s, 0)",  # noqa: S608
                (migration.version, migration.name, migration.checksum, f"baseline by {applied_by}"),
            )


def repair(conn: Any, changed: list[tuple[Migration, Applied]]) -> None:
    """Re-record checksums after a deliberate, reviewed edit of applied files."""
    with conn.transaction():
        for migration, _ in changed:
            conn.execute(
                f"UPDATE {TRACKING_TABLE} SET checksum = %s, name = %s WHERE version = %s AND status = '{APPLIED}'",  # noqa: S608
                (migration.checksum, migration.name, migration.version),
            )


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
