"""`deploy`: every step of an environment, its databases and migrations, one plan, one graph.

The steps plan as usual. db.create and db.migrate join the same graph after the server's step
(3 in beta, 7 in prod: they need the server, its admin password, the extension allow-list and,
on a private network, its private endpoint) and before the apps (which read
the database URLs db.create writes). When the server already exists their own changes are
planned and shown; on a fresh environment each is one deferred change, planned and applied
once the server exists. The apps' health is checked last, by the steps' own checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deploykit.azure.arm import READING
from deploykit.config import EnvConfig
from deploykit.engine.flow import RunContext, RunOptions, Work, apply_deferred, merge, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.engine.runner import plan_steps
from deploykit.parallel import import_meanwhile

APP_TYPE = "microsoft.app/containerapps"


def deploy(options: RunOptions) -> int:
    return run(options, plan_deploy)


def plan_deploy(ctx: RunContext) -> Work:
    # Needed once the plan's reads are back (the plan's table, db.create's psycopg) or the vault
    # exists: 0.15 s of imports, done while the reads are in flight.
    import_meanwhile("rich.console", "rich.table", "deploykit.db.database", "azure.keyvault.secrets", after=READING)
    steps = plan_steps(ctx, None)
    options = ctx.options
    env = ctx.platform.envs[options.env or ""] if ctx.platform else None
    by_address = steps.plan.by_address()
    if env is None or not steps.plan.state_read or f"pg.{env.env}" not in by_address:
        return steps  # no server among the steps (step 3 in beta, step 7 in prod): no databases
    from deploykit.db.database import DbContext, DbRequest

    request = DbRequest(options.task, options.env, options.target, options.dry_run, options.as_json, options.yes)
    db = DbContext(request, ctx, ctx.platform, env)  # type: ignore[arg-type]
    inputs = [a for a in db_inputs(env) if a in by_address]
    server_ready = all(by_address[a].action is Action.UNCHANGED for a in inputs)
    create = _create_work(db, server_ready)
    migrate = _migrate_work(db, server_ready and not create.plan.pending)
    db_addresses = [c.address for c in (*create.plan.changes, *migrate.plan.changes)]
    extra: dict[str, tuple[str, ...]] = {c.address: tuple(inputs) for c in create.plan.changes}
    for change in migrate.plan.changes:
        extra[change.address] = (*inputs, *(c.address for c in create.plan.changes))
    for change in steps.plan.changes:
        if change.type.lower() == APP_TYPE:
            extra[change.address] = tuple(db_addresses)
    title = steps.title.replace(" (", " (db.create, db.migrate, ", 1)  # `Plan for deploy (` or `Plan for plan (`
    work = merge(title, [steps, create, migrate], extra)
    work.no_changes = "No changes: every step, database and migration matches the desired state."
    return work


def db_inputs(env: EnvConfig) -> tuple[str, ...]:
    """What the databases wait for: the server, its password and extension allow-list; on a
    private network also the server's private endpoint and its DNS record (the only way in)."""
    e = env.env
    return (f"pg.{e}", f"secret.{e}.{env.postgres.admin_password_secret}", f"pg.{e}.azure-extensions", f"pe.{e}.pg.zones")


def _create_work(db: Any, server_ready: bool) -> Work:
    from deploykit.db.database import create_work

    if server_ready:
        return create_work(db)
    return _deferred(
        db.run,
        "db.create",
        "postgresql/databases",
        db.env_cfg.postgres.name,
        f"{len(db.env_cfg.databases)} databases, their owners' roles and database URLs: planned once the server exists",
        lambda: create_work(db),
    )


def _migrate_work(db: Any, databases_ready: bool) -> Work:
    from deploykit.db.database import migrations_dir
    from deploykit.db.migration_runs import migrate_work

    with_folders = [d.name for d in db.env_cfg.databases if migrations_dir(db, d).exists()]
    if not with_folders:
        db.run.note(f"db.migrate: no migrations folders under {db.env_cfg.migrations_root}/; nothing to migrate")
        return Work("db.migrate", Plan(()))
    if databases_ready:
        return migrate_work(db)
    return _deferred(
        db.run,
        "db.migrate",
        "postgresql/migrations",
        ", ".join(with_folders),
        f"migrations of {', '.join(with_folders)}: planned once the databases exist",
        lambda: migrate_work(db),
    )


def _deferred(ctx: RunContext, address: str, kind: str, target: str, reason: str, make: Any) -> Work:
    change = Change(address, kind, target, Action.CREATE, reason)
    return Work(address, Plan((change,)), {address: lambda: apply_deferred(ctx, address, make)})


__all__: Sequence[str] = ["APP_TYPE", "db_inputs", "deploy", "plan_deploy"]
