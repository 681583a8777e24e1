"""The db.migrate and db.status tasks: plan every database read-only, refuse on drift, then
migrate databases in parallel (one connection each) under each database's advisory lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from deploykit.config import DatabaseConfig
from deploykit.db import migrations as mig
from deploykit.db.database import (
    DbContext,
    DbRequest,
    connect,
    databases_for,
    db_context,
    migrations_dir,
    read_only_context,
    role_name,
)
from deploykit.engine.flow import RunContext, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import ApplyError, UserError

MIGRATE_WORKERS = 8


@dataclass
class DbWork:
    db: DatabaseConfig
    folder: Path
    files: list[mig.Migration]
    comparison: mig.Comparison | None = None
    applied: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def _owner_role(db: DatabaseConfig) -> str | None:
    return role_name(db.owner) if db.owner else None


def _open(conninfo: str, db: DatabaseConfig) -> Any:
    """A connection to the database acting as its owner, so the objects migrations create belong to the app."""
    conn = connect(conninfo, db.name)
    owner = _owner_role(db)
    if owner:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    return conn


def collect(ctx: DbContext) -> list[DbWork]:
    """Find each database's folder and files: every naming mistake is found before any connection."""
    req = ctx.req
    if req.dir and not req.db:
        raise UserError("--dir: needs --db (a folder holds one database's migrations)")
    if req.baseline is not None and not req.db:
        raise UserError("--baseline: needs --db (adopt one database at a time)")
    work = []
    for db in databases_for(ctx.env_cfg, req.db):
        folder = migrations_dir(ctx, db)
        if not folder.exists():
            if req.db:
                raise UserError(f"--dir: {folder} does not exist")
            ctx.run.note(f"{db.name}: no folder {folder}; nothing to migrate")
            continue
        work.append(DbWork(db, folder, mig.discover(folder)))
    return work


def read_state(ctx: DbContext, work: list[DbWork], conninfo: str) -> None:
    """Read every tracking table (read-only) and compare it with the files."""
    with connect(conninfo) as admin:
        existing = {r[0] for r in admin.execute("SELECT datname FROM pg_database").fetchall()}
        roles = {r[0] for r in admin.execute("SELECT rolname FROM pg_roles").fetchall()}
    for item in work:
        if item.db.name not in existing:
            raise UserError(f"{item.db.name}: database does not exist yet; run `invoke db.create --env {ctx.req.env}` first")
        owner = _owner_role(item.db)
        if owner and owner not in roles:
            raise UserError(
                f"{item.db.name}: owner role {owner} does not exist yet; run `invoke db.create --env {ctx.req.env}` first"
            )
        with connect(conninfo, item.db.name) as conn:
            item.comparison = mig.compare(item.files, mig.read_applied(conn))


def _refuse_drift(ctx: DbContext, work: list[DbWork]) -> None:
    for item in work:
        cmp = item.comparison
        assert cmp is not None
        if cmp.missing:
            names = ", ".join(a.name for a in cmp.missing)
            raise UserError(
                f"{item.folder}: applied migrations are missing from the folder: {names} (restore them; nothing was applied)"
            )
        if cmp.unfinished and not ctx.req.repair:
            raise UserError(mig.unfinished_message(*cmp.unfinished[0]))
        if cmp.changed and not ctx.req.repair:
            migration, _ = cmp.changed[0]
            raise UserError(
                f"{migration.path}: already applied with a different checksum (edited after it ran); revert it, or "
                "after review re-record it with --repair (nothing was applied)"
            )


def _plan(work: list[DbWork], baseline: int | None = None) -> Plan:
    changes = []
    for item in work:
        cmp = item.comparison
        assert cmp is not None
        address = f"migrations.{item.db.name}"
        if cmp.pending or cmp.changed or cmp.unfinished:
            adopted = [m.name for m in cmp.pending if baseline is not None and m.version <= baseline]
            run = [m.name for m in cmp.pending if baseline is None or m.version > baseline]
            reason = f"{len(run)} pending: " + ", ".join(run)
            if adopted:
                reason += f"; baseline: record {', '.join(adopted)} as applied without running them"
            if cmp.changed:
                reason += f"; re-record {len(cmp.changed)} checksum(s) (--repair)"
            if cmp.unfinished:
                reason += f"; record {len(cmp.unfinished)} unfinished no-transaction file(s) as applied (--repair)"
            # What the run will do, each part under its own key (the plan table shows them all):
            # `pending` is what runs; files only recorded (--baseline, --repair) are named apart.
            parts = {
                "pending": run,
                "recorded without running (--baseline)": adopted,
                "checksum re-recorded (--repair)": [m.name for m, _ in cmp.changed],
                "recorded as applied (--repair)": [m.name for m, _ in cmp.unfinished],
            }
            shown = {key: names for key, names in parts.items() if names} or {"pending": run}
            diff = {key: {"old": None, "new": names} for key, names in shown.items()}
            changes.append(Change(address, "postgresql/migrations", str(item.folder), Action.UPDATE, reason, diff))
        else:
            last = cmp.applied[-1].name if cmp.applied else "none"
            changes.append(
                Change(
                    address,
                    "postgresql/migrations",
                    str(item.folder),
                    Action.UNCHANGED,
                    f"all {len(cmp.applied)} applied (last {last})",
                )
            )
    return Plan(tuple(changes))


NOTHING_TO_MIGRATE = "Nothing to migrate: no database has a migrations folder."


def migrate(req: DbRequest) -> int:
    return run(req, _plan_migrate)


def _plan_migrate(run_ctx: RunContext) -> Work:
    return migrate_work(db_context(run_ctx))


def migrate_work(ctx: DbContext) -> Work:
    """Each database's pending migrations, one change per database (run in parallel, each in order)."""
    run_ctx = ctx.run
    req = ctx.req
    work = collect(ctx)
    conninfo = ctx.admin_conninfo()
    read_state(ctx, work, conninfo)
    _refuse_drift(ctx, work)
    plan = _plan(work, req.baseline)
    if req.show_sql:
        for item in work:
            for migration in item.comparison.pending:  # type: ignore[union-attr]
                ctx.run.note(f"-- {item.db.name}: {migration.name}\n{migration.sql}")
    running: dict[int, Any] = {}  # connections with a statement in flight, cancelled on Ctrl-C
    run_ctx.cancel_hooks.append(lambda: [mig.cancel(conn) for conn in list(running.values())])
    by_address = {f"migrations.{w.db.name}": w for w in work}
    appliers = {c.address: _applier(ctx, by_address[c.address], conninfo, running) for c in plan.pending}

    def verify() -> Plan:
        fresh = collect(ctx)
        read_state(ctx, fresh, conninfo)
        return _plan(fresh)

    return Work(
        f"Plan for db.migrate on {req.env}",
        plan,
        appliers,
        workers=MIGRATE_WORKERS,
        verify=verify,
        no_changes="No changes: every migration is applied." if work else NOTHING_TO_MIGRATE,
    )


def _applier(ctx: DbContext, item: DbWork, conninfo: str, running: dict[int, Any]) -> Any:
    def apply() -> dict[str, Any]:
        _run(ctx, item, conninfo, running)
        if item.error:
            done = f"; applied before it: {', '.join(item.applied)}" if item.applied else ""
            raise ApplyError(item.error + done)
        return {"applied": item.applied}

    return apply


def _run(ctx: DbContext, item: DbWork, conninfo: str, running: dict[int, Any]) -> None:
    """Migrate one database: lock, re-read (another runner may have gone first), apply in order."""
    started = time.perf_counter()
    applied_by = mig.who()
    try:
        with _open(conninfo, item.db) as conn:
            mig.prepare_session(conn, applied_by)
            running[id(conn)] = conn
            try:
                mig.acquire_lock(conn, ctx.req.lock_timeout)
                try:
                    conn.execute(mig.TRACKING_DDL)
                    cmp = mig.compare(item.files, mig.read_applied(conn))
                    if cmp.unfinished and ctx.req.repair:
                        mig.repair_unfinished(conn, cmp.unfinished, applied_by)
                        ctx.reporter.info(f"  {item.db.name}: recorded " + ", ".join(m.name for m, _ in cmp.unfinished))
                    elif cmp.unfinished:
                        raise mig.MigrationError(cmp.unfinished[0][0].name, None, "unfinished (another runner?)", None)
                    if cmp.changed and ctx.req.repair:
                        mig.repair(conn, cmp.changed)
                        ctx.reporter.info(f"  {item.db.name}: re-recorded " + ", ".join(m.name for m, _ in cmp.changed))
                    elif cmp.changed:
                        raise mig.MigrationError(
                            cmp.changed[0][0].name, None, "checksum changed while waiting for the lock", None
                        )
                    baseline = ctx.req.baseline
                    adopted = [m for m in cmp.pending if baseline is not None and m.version <= baseline]
                    if adopted:
                        mig.record_baseline(conn, adopted, applied_by)
                        ctx.reporter.info(f"  baseline {item.db.name}: recorded " + ", ".join(m.name for m in adopted))
                    for migration in [m for m in cmp.pending if m not in adopted]:
                        seconds = mig.apply_one(conn, migration, applied_by)
                        item.applied.append(migration.name)
                        ctx.reporter.info(f"  ok {item.db.name} {migration.name} ({seconds * 1000:.0f} ms)")
                finally:
                    mig.release_lock(conn)
            finally:
                running.pop(id(conn), None)
    except mig.MigrationError as exc:
        item.error = str(exc)
    except mig.LockTimeoutError as exc:
        item.error = str(exc)
    item.seconds = time.perf_counter() - started


def status(req: DbRequest) -> int:
    with read_only_context(req) as ctx:
        work = collect(ctx)
        conninfo = ctx.admin_conninfo()
        read_state(ctx, work, conninfo)
        rows = []
        for item in work:
            cmp = item.comparison
            assert cmp is not None
            last = cmp.applied[-1] if cmp.applied else None
            rows.append(
                {
                    "database": item.db.name,
                    "folder": str(item.folder),
                    "applied": len(cmp.applied),
                    "pending": [m.name for m in cmp.pending],
                    "last_applied": {"name": last.name, "at": str(last.applied_at), "by": last.applied_by} if last else None,
                    "checksum_drift": [m.name for m, _ in cmp.changed],
                    "unfinished": [m.name for m, _ in cmp.unfinished],
                    "missing_files": [a.name for a in cmp.missing],
                }
            )
        if req.as_json:
            plan = _plan(work)
            ctx.reporter.emit_json(plan, [c.to_json() for c in plan.changes], extra={"databases": rows})
            return 0
        from rich.table import Table

        table = Table(title=f"Migrations on {req.env} ({req.target})", title_justify="left")
        for column in ("database", "applied", "pending", "last applied", "drift"):
            table.add_column(column)
        for row in rows:
            last = row["last_applied"]
            drift = ", ".join(
                [
                    *(f"UNFINISHED {n} (may be half-applied)" for n in row["unfinished"]),
                    *(f"changed {n}" for n in row["checksum_drift"]),
                    *(f"missing {n}" for n in row["missing_files"]),
                ]
            )
            table.add_row(
                row["database"],
                str(row["applied"]),
                str(len(row["pending"])),
                f"{last['name']} at {last['at'][:19]} by {last['by']}" if last else "-",
                drift or "none",
            )
        if rows:
            ctx.reporter.console.print(table)
        for note in ctx.notes:
            ctx.reporter.info(note)
        if not rows:
            ctx.reporter.info(NOTHING_TO_MIGRATE)
        return 0
