"""Migration runs: ordered NNNN_description.sql files per database, tracked by content checksum.

Our own small runner (docs/migrations.md says why): one transaction per file (unless its first
line carries NO_TRANSACTION_MARKER), a session advisory lock with a bounded wait per database,
checksums over normalised text, and a dry run that writes nothing at all.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from deploykit.errors import UserError

FILE_PATTERN = re.compile(r"^(\d{4,})_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql$")
NO_TRANSACTION_MARKER = "-- deploykit:no-transaction"
TRACKING_TABLE = "deploykit_migrations"
# One advisory lock key for every run on a database (advisory locks are per database).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"deploykit-migrations").digest()[:8], "big", signed=True)

TRACKING_DDL = f"""CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL,
    duration_ms integer NOT NULL
)"""


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
    version: int
    name: str
    checksum: str
    applied_at: Any
    applied_by: str


@dataclass
class Comparison:
    """Files against the tracking table."""

    pending: list[Migration]
    applied: list[Applied]
    changed: list[tuple[Migration, Applied]]  # applied, but the file's checksum differs
    missing: list[Applied]  # applied, but the file is gone


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
    """Rows of the tracking table, or None when it does not exist (nothing applied yet)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"public.{TRACKING_TABLE}",)).fetchone()[0]
    if exists is None:
        return None
    rows = conn.execute(
        f"SELECT version, name, checksum, applied_at, applied_by FROM {TRACKING_TABLE} ORDER BY version"  # noqa: S608 - constant
    ).fetchall()
    return [Applied(*row) for row in rows]


def compare(files: list[Migration], applied: list[Applied] | None) -> Comparison:
    by_version = {a.version: a for a in applied or []}
    file_versions = {m.version for m in files}
    pending = [m for m in files if m.version not in by_version]
    changed = [
        (m, by_version[m.version]) for m in files if m.version in by_version and by_version[m.version].checksum != m.checksum
    ]
    missing = [a for a in applied or [] if a.version not in file_versions]
    return Comparison(pending, list(applied or []), changed, missing)


class LockTimeoutError(Exception):
    """Another runner held the database's migration lock for longer than the bounded wait."""


def acquire_lock(conn: Any, timeout: float) -> None:
    """Session-level advisory lock, polled so the wait is bounded and the failure message clear."""
    deadline = time.monotonic() + timeout
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        if time.monotonic() >= deadline:
            raise LockTimeoutError(f"another db.migrate holds the lock on this database; waited {timeout:g} s")
        time.sleep(0.1)


def release_lock(conn: Any) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


@dataclass
class MigrationError(Exception):
    """A migration failed; carries PostgreSQL's SQLSTATE and position for the report."""

    file: str
    sqlstate: str | None
    message: str
    position: str | None

    def __str__(self) -> str:
        where = f" at position {self.position}" if self.position else ""
        return f"{self.file}: SQLSTATE {self.sqlstate}{where}: {self.message}"


def apply_one(conn: Any, migration: Migration, applied_by: str) -> float:
    """Run one file and record it; a failure rolls the whole file back (unless non-transactional)."""
    start = time.perf_counter()
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql)
                _record(conn, migration, applied_by, start)
        else:
            conn.execute(migration.sql)  # e.g. CREATE INDEX CONCURRENTLY: must run outside a transaction
            _record(conn, migration, applied_by, start)
    except psycopg.Error as exc:
        diag = exc.diag
        raise MigrationError(
            migration.name, exc.sqlstate, diag.message_primary or str(exc).splitlines()[0], diag.statement_position
        ) from None
    return time.perf_counter() - start


def _record(conn: Any, migration: Migration, applied_by: str, start: float) -> None:
    conn.execute(
        f"INSERT INTO {TRACKING_TABLE} (version, name, checksum, applied_by, duration_ms) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
        (migration.version, migration.name, migration.checksum, applied_by, int((time.perf_counter() - start) * 1000)),
    )


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
                f"UPDATE {TRACKING_TABLE} SET checksum = %s, name = %s WHERE version = %s",  # noqa: S608
                (migration.checksum, migration.name, migration.version),
            )


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
