"""db.create: databases, one login role per owning app, ownership, PUBLIC revoked, shared grants,
extensions. Plain PostgreSQL through psycopg; every identifier quoted with psycopg.sql.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from deploykit.azure.api_versions import api_version
from deploykit.azure.arm import read_secret, read_secrets, translated_errors
from deploykit.azure.plugins.secrets import secret_change
from deploykit.config import DatabaseConfig, EnvConfig, Platform
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.engine.runner import load_for
from deploykit.engine.steps import run_first
from deploykit.errors import ApplyError, UserError
from deploykit.parallel import each
from deploykit.paths import given_path, under_root
from deploykit.report import Reporter, redact_value

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
INSIDE_READ_WORKERS = 8  # at most this many connections at once while planning, well inside any SKU's limit
APPLY_WORKERS = 8  # appliers at once, each on its own admin connection (AdminSessions)
ALLOW_LIST_TYPE = "Microsoft.DBforPostgreSQL/flexibleServers/configurations"
VAULT_TYPE = "Microsoft.KeyVault/vaults"


@dataclass(frozen=True)
class DbRequest(RunOptions):
    admin_dsn: str | None = None
    db: str | None = None
    dir: str | None = None
    show_sql: bool = False
    repair: bool = False
    lock_timeout: float = 60.0
    baseline: int | None = None


def role_name(app: str) -> str:
    """auth-api -> auth_api: a plain identifier an operator can type in psql."""
    return app.replace("-", "_")


def role_secret(app: str) -> str:
    return f"pg-role-{app}-password"


@dataclass
class DbContext:
    """Config and the run, and lazily: the Azure target (vault, ARM) and the admin connection string."""

    req: DbRequest
    run: RunContext
    platform: Platform
    env_cfg: EnvConfig
    _admin: str | None = None
    _vault: Any | None = None
    _endpoint: tuple[str, int] | None = None

    @property
    def reporter(self) -> Reporter:
        return self.run.reporter

    @property
    def notes(self) -> list[str]:
        return self.run.notes

    def provider(self) -> Any:
        return self.run.provider()

    def read_arm(self, resource_id: str, version: str) -> dict[str, Any] | None:
        """A resource's ARM state: as this run's steps read or applied it when they did, else read now."""
        state = self.run.state
        if state is not None:
            found, actual = state.known(resource_id)
            if found:
                return actual
        return self.provider().read(resource_id, version)

    def vault(self) -> Any | None:
        """SecretClient for the env vault, or None when it does not exist yet (kept once found)."""
        if self._vault is None:
            vault_id = self.provider().vault_id(self.platform, self.req.env)
            self._vault = self.provider().client_for_vault(self.read_arm(vault_id, api_version(VAULT_TYPE)))
        return self._vault

    def secret(self, vault: Any, name: str) -> str | None:
        """A secret of the env vault: as this run's steps read or stored it when they did, else read now."""
        state = self.run.state
        if state is not None:
            vault_id = self.provider().vault_id(self.platform, self.req.env)
            found, value = state.recall_by_id(f"{vault_id}/secrets/{name}")
            if found:
                return value
        return read_secret(vault, name)

    def endpoint(self) -> tuple[str, int] | None:
        """The server's host and port (kept once found), or None while it does not exist."""
        if self._endpoint is None:
            self._endpoint = server_endpoint(self)
        return self._endpoint

    def admin_conninfo(self) -> str:
        if self._admin is None:
            self._admin = resolve_admin(self)
        return self._admin


def databases_for(env_cfg: EnvConfig, name: str | None) -> list[DatabaseConfig]:
    if name is None:
        return list(env_cfg.databases)
    match = [d for d in env_cfg.databases if d.name == name]
    if not match:
        raise UserError(
            f"--db: {name!r} is not a database of {env_cfg.env}; allowed: {', '.join(d.name for d in env_cfg.databases)}"
        )
    return match


def db_context(run_ctx: RunContext) -> DbContext:
    req: DbRequest = run_ctx.options  # type: ignore[assignment]
    run_ctx.platform = platform = load_for(req)
    return DbContext(req, run_ctx, platform, platform.envs[req.env or ""])


@contextmanager
def read_only_context(req: DbRequest) -> Iterator[DbContext]:
    """For db.status: the same context, no plan or apply."""
    with ExitStack() as stack:
        yield db_context(RunContext(req, Reporter(req.task, req.env, req.target, True, req.as_json), stack))


def sql_errors(func: Callable[[], Any]) -> Callable[[], Any]:
    """An applier whose PostgreSQL errors become ApplyError with SQLSTATE and the first line."""

    @functools.wraps(func)
    def wrapper() -> Any:
        try:
            return func()
        except psycopg.Error as exc:
            state = f"SQLSTATE {exc.sqlstate}: " if getattr(exc, "sqlstate", None) else ""
            raise ApplyError(f"{state}{_first_line(exc)}") from None

    return wrapper


# ---- connections ------------------------------------------------------------------------------
def resolve_admin(ctx: DbContext) -> str:
    """--admin-dsn, else the libpq variables (PGHOST...), else the environment's own server."""
    if ctx.req.admin_dsn:
        try:
            params = conninfo_to_dict(ctx.req.admin_dsn)
        except Exception:  # psycopg.ProgrammingError; its message may echo the DSN, so not shown
            raise UserError(
                "--admin-dsn: not a valid PostgreSQL connection string (key=value pairs or a postgresql:// URI)"
            ) from None
        if params.get("password"):
            redact_value(str(params["password"]))
        return ctx.req.admin_dsn
    if os.environ.get("PGHOST"):
        if os.environ.get("PGPASSWORD"):
            redact_value(os.environ["PGPASSWORD"])
        return ""  # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE itself
    return server_conninfo(ctx)


def server_endpoint(ctx: DbContext) -> tuple[str, int] | None:
    """The server's host and port from its ARM resource (None when it does not exist).

    Azure's FQDN takes port 5432; the sandbox's servers are on loopback and their FQDN carries
    the port (`127.0.0.1:54012`), so the same code reaches both.
    """
    actual = ctx.read_arm(server_id(ctx), api_version("Microsoft.DBforPostgreSQL/flexibleServers"))
    fqdn = ((actual or {}).get("properties") or {}).get("fullyQualifiedDomainName")
    if not fqdn:
        return None
    host, _, port = str(fqdn).rpartition(":") if ":" in str(fqdn) else (str(fqdn), "", "5432")
    return host, int(port)


def server_id(ctx: DbContext) -> str:
    group = ctx.env_cfg.resource_groups["data"].name
    return ctx.provider().resource_id(group, f"Microsoft.DBforPostgreSQL/flexibleServers/{ctx.env_cfg.postgres.name}")


def server_conninfo(ctx: DbContext) -> str:
    """The admin connection as on Azure: the server's FQDN, the admin login, the password from the env vault."""
    pg = ctx.env_cfg.postgres
    endpoint = ctx.endpoint()
    if endpoint is None:
        raise UserError(f"server {pg.name} does not exist yet; {run_first('step3')} (nothing was changed)")
    vault = ctx.vault()
    if vault is None:
        raise UserError(f"vault {ctx.env_cfg.key_vault.name} does not exist yet; {run_first('step3')}")
    password = ctx.secret(vault, pg.admin_password_secret)
    if password is None:
        raise UserError(f"{pg.admin_password_secret} is not in {ctx.env_cfg.key_vault.name}; {run_first('step3')}")
    redact_value(password)
    host, port = endpoint
    return make_conninfo(
        host=host,
        port=str(port),
        user=pg.admin_login,
        password=password,
        dbname="postgres",
        sslmode="require",
        connect_timeout=15,
    )


def connect(conninfo: str, dbname: str | None = None, autocommit: bool = True):
    target = make_conninfo(conninfo, dbname=dbname) if dbname else conninfo
    try:
        return psycopg.connect(target, autocommit=autocommit, connect_timeout=15)
    except psycopg.OperationalError as exc:
        where = f"database {dbname}" if dbname else "the admin database"
        raise ApplyError(f"could not connect to {where}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ---- db.create ---------------------------------------------------------------------------------
@dataclass
class ServerState:
    roles: dict[str, dict[str, Any]]
    databases: dict[str, dict[str, Any]]
    is_superuser: bool
    admin: str


def read_server(conn: Any, dbs: list[DatabaseConfig], roles: list[str]) -> ServerState:
    cur = conn.cursor()
    admin, is_super = cur.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    role_rows = cur.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = ANY(%s)", (roles,)
    ).fetchall()
    db_rows = cur.execute(
        "SELECT datname, pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT'),"
        " has_database_privilege('public', datname, 'TEMPORARY') FROM pg_database WHERE datname = ANY(%s)",
        ([d.name for d in dbs],),
    ).fetchall()
    return ServerState(
        roles={r[0]: {"login": r[1], "superuser": r[2], "createdb": r[3], "createrole": r[4]} for r in role_rows},
        databases={r[0]: {"owner": r[1], "public_connect": r[2], "public_temp": r[3]} for r in db_rows},
        is_superuser=bool(is_super),
        admin=admin,
    )


def read_inside(conninfo: str, db: DatabaseConfig, shared_roles: list[str], creator: str) -> dict[str, Any]:
    """Extensions and shared read/write grants, read inside the database itself."""
    with connect(conninfo, db.name) as conn:
        cur = conn.cursor()
        extensions = {r[0] for r in cur.execute("SELECT extname FROM pg_extension").fetchall()}
        grants = {}
        for role in shared_roles:
            grants[role] = bool(
                cur.execute(
                    """SELECT has_database_privilege(%(r)s, current_database(), 'CONNECT')
                      AND has_schema_privilege(%(r)s, 'public', 'USAGE')
                      AND NOT EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public' AND NOT (
                          has_table_privilege(%(r)s, format('%%I.%%I', t.schemaname, t.tablename), 'SELECT')
                          AND has_table_privilege(%(r)s, format('%%I.%%I', t.schemaname, t.tablename), 'INSERT')
                          AND has_table_privilege(%(r)s, format('%%I.%%I', t.schemaname, t.tablename), 'UPDATE')
                          AND has_table_privilege(%(r)s, format('%%I.%%I', t.schemaname, t.tablename), 'DELETE')))
                      AND EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
                          WHERE d.defaclrole = %(c)s::regrole AND d.defaclnamespace = 'public'::regnamespace
                            AND d.defaclobjtype = 'r' AND a.grantee = %(r)s::regrole AND a.privilege_type = 'DELETE')""",
                    {"r": role, "c": creator},
                ).fetchone()[0]
            )
        return {"extensions": extensions, "grants": grants}


def _read_each_inside(conninfo: str, dbs: list[DatabaseConfig], owners: dict[str, str]) -> dict[str, dict[str, Any]]:
    """read_inside for every database at once: one connection each, so one round, not one per database."""

    def read(db: DatabaseConfig) -> dict[str, Any]:
        return read_inside(conninfo, db, [role_name(a) for a in db.shared_with], owners[db.name])

    return dict(zip([db.name for db in dbs], each(read, dbs, INSIDE_READ_WORKERS, "db-read"), strict=True))


def plan_create(ctx: DbContext, conninfo: str) -> tuple[Plan, dict[str, Any]]:
    dbs = databases_for(ctx.env_cfg, ctx.req.db)
    apps = sorted({a for d in dbs for a in [d.owner, *d.shared_with] if a})
    roles = [role_name(a) for a in apps]
    with connect(conninfo) as conn:
        state = read_server(conn, dbs, roles)
    changes: list[Change] = []
    for app in apps:
        role = role_name(app)
        have = state.roles.get(role)
        address = f"role.{role}"
        if have is None:
            changes.append(Change(address, "postgresql/role", role, Action.CREATE, f"login role for {app} does not exist"))
        elif not have["login"] or have["superuser"] or have["createdb"] or have["createrole"]:
            diff = {
                k: {"old": have[k], "new": k == "login"}
                for k in ("login", "superuser", "createdb", "createrole")
                if have[k] != (k == "login")
            }
            changes.append(
                Change(address, "postgresql/role", role, Action.UPDATE, "attributes differ from least privilege", diff)
            )
        else:
            changes.append(
                Change(address, "postgresql/role", role, Action.UNCHANGED, "exists: login, no superuser, createdb or createrole")
            )
    owners = {db.name: role_name(db.owner) if db.owner else state.admin for db in dbs}
    existing = [db for db in dbs if db.name in state.databases]
    inside = _read_each_inside(conninfo, existing, owners)
    for db in dbs:
        want_owner = owners[db.name]
        have = state.databases.get(db.name)
        address = f"db.{db.name}"
        if have is None:
            changes.append(Change(address, "postgresql/database", db.name, Action.CREATE, f"does not exist; owner {want_owner}"))
            continue
        diff: dict[str, dict[str, Any]] = {}
        if have["owner"] != want_owner:
            diff["owner"] = {"old": have["owner"], "new": want_owner}
        if have["public_connect"] or have["public_temp"]:
            diff["public"] = {"old": "CONNECT, TEMPORARY granted", "new": "revoked"}
        missing_ext = sorted(set(db.extensions) - inside[db.name]["extensions"])
        if missing_ext:
            diff["extensions"] = {"old": sorted(set(db.extensions) & inside[db.name]["extensions"]), "new": sorted(db.extensions)}
        for role, ok in inside[db.name]["grants"].items():
            if not ok:
                diff[f"grants.{role}"] = {"old": None, "new": "read/write on schema public"}
        if diff:
            changes.append(Change(address, "postgresql/database", db.name, Action.UPDATE, "differs in " + ", ".join(diff), diff))
        else:
            changes.append(
                Change(
                    address,
                    "postgresql/database",
                    db.name,
                    Action.UNCHANGED,
                    f"owner {want_owner}, PUBLIC revoked, extensions and grants in place",
                )
            )
    return Plan(tuple(changes)), {"state": state, "dbs": dbs, "apps": apps, "passwords": {}}


def create(req: DbRequest) -> int:
    return run(req, _plan_create)


def _plan_create(run_ctx: RunContext) -> Work:
    return create_work(db_context(run_ctx))


def create_work(ctx: DbContext) -> Work:
    """Roles, databases, grants and extensions, then one database URL secret per app."""
    req = ctx.req
    dbs = databases_for(ctx.env_cfg, req.db)  # an unknown --db is a user error before anything else
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="db-plan") as pool:
        # Independent reads side by side: the vault and the server (ARM), then the server's
        # roles and databases (SQL) beside its extension allow-list (ARM).
        server = pool.submit(ctx.endpoint) if not (req.admin_dsn or os.environ.get("PGHOST")) else None
        vault = ctx.vault()
        if server is not None:
            server.result()
        if vault is None:
            raise UserError(
                f"vault {ctx.env_cfg.key_vault.name} does not exist yet: role passwords are stored there; "
                f"{run_first('step3')} (nothing was changed)"
            )
        conninfo = ctx.admin_conninfo()
        allowed = pool.submit(require_allowed_extensions, ctx, dbs)
        plan, facts = plan_create(ctx, conninfo)
        allowed.result()
    urls = database_urls(ctx, vault, conninfo, facts["apps"], facts["passwords"])
    changes = list(plan.changes) + [change for change, _ in urls.values()]
    admin = AdminSessions(ctx.run.stack, conninfo)
    appliers: dict[str, Any] = {}
    depends_on: dict[str, tuple[str, ...]] = {}
    for change in plan.pending:
        appliers[change.address] = sql_errors(functools.partial(_apply_change, admin, conninfo, vault, change, facts))
        if change.type == "postgresql/database":
            db = next(d for d in facts["dbs"] if d.name == change.id)
            depends_on[change.address] = tuple(f"role.{role_name(a)}" for a in (db.owner, *db.shared_with) if a)
    # A URL is written once what it names exists: its role (and password) and its database.
    url_inputs = {
        f"secret.{ctx.env_cfg.connection_secrets.database_url_for(a)}": (f"role.{role_name(a)}", f"db.{db.name}")
        for a in facts["apps"]
        if (db := app_database(ctx.env_cfg, a)) is not None
    }
    for address, (change, apply) in urls.items():
        if change.action is not Action.UNCHANGED:
            appliers[address] = apply
            depends_on[address] = url_inputs[address]
    # A database waits for its roles, a URL for its role and database; the rest runs side by side.

    def verify() -> Plan:
        again, _ = plan_create(ctx, conninfo)
        fresh = database_urls(ctx, vault, conninfo, facts["apps"])
        return Plan(again.changes + tuple(change for change, _ in fresh.values()))

    return Work(
        f"Plan for db.create on {req.env} ({req.target})",
        Plan(tuple(changes)),
        appliers,
        depends_on,
        workers=APPLY_WORKERS,
        verify=verify,
        no_changes="No changes: every database, role, grant and database URL is in place.",
    )


def app_database(env_cfg: EnvConfig, app: str) -> DatabaseConfig | None:
    """The database an app's URL points at: the first it owns, else the first shared with it."""
    owned = [d for d in env_cfg.databases if d.owner == app]
    shared = [d for d in env_cfg.databases if app in d.shared_with]
    return (owned or shared or [None])[0]


def database_urls(
    ctx: DbContext, vault: Any, conninfo: str, apps: list[str], stored: dict[str, str] | None = None
) -> dict[str, tuple[Change, Any]]:
    """One `database-url-<app>` secret per app: its own role, its own password, the server's FQDN.

    `stored`: role passwords this run has just stored (app -> password), so a URL written after
    its role need not read the password back from the vault.
    """
    stored = {} if stored is None else stored
    endpoint = ctx.endpoint() if ctx.req.target == "azure" or not ctx.req.admin_dsn else None
    if endpoint is None:  # --admin-dsn or PGHOST: the apps reach the server the operator named
        params = conninfo_to_dict(conninfo) if conninfo else {}
        endpoint = (str(params.get("host") or os.environ.get("PGHOST") or "localhost"), int(params.get("port") or 5432))
    names = ctx.env_cfg.connection_secrets
    vault_id = ctx.provider().vault_id(ctx.platform, ctx.req.env or "")
    wanted = {app: db for app in apps if (db := app_database(ctx.env_cfg, app)) is not None}
    values = read_secrets(vault, [n for app in wanted for n in (names.database_url_for(app), role_secret(app))])
    out: dict[str, tuple[Change, Any]] = {}
    for app, db in wanted.items():
        name = names.database_url_for(app)
        address = f"secret.{name}"

        def url(password: str | None, app: str = app, db: DatabaseConfig = db) -> str | None:
            if password is None:
                return None
            redact_value(password)
            host, port = endpoint
            value = f"postgresql://{role_name(app)}:{quote(password, safe='')}@{host}:{port}/{db.name}?sslmode=require"
            redact_value(value)
            return value

        current = values[name]
        if current is not None:
            redact_value(current)
        change = secret_change(
            address,
            f"{vault_id}/secrets/{name}",
            current,
            url(values[role_secret(app)]),
            f"{db.name} as {role_name(app)}",
            "known after the role is created",
        )

        def apply(name: str = name, url: Any = url, app: str = app) -> dict[str, Any]:
            value = url(stored.get(app) or read_secret(vault, role_secret(app)))
            if value is None:
                raise ApplyError(f"{name}: the role's password is not in the vault")
            with translated_errors(name):
                vault.set_secret(name, value, content_type="text/plain")
            return {"value": "(not recorded)"}

        out[address] = (change, apply)
    return out


class AdminSessions:
    """Admin connections of one apply: each applier borrows one, opened on demand and reused.

    Appliers run side by side (up to APPLY_WORKERS), so roles are created and databases made
    at once instead of one after another on a single connection.
    """

    def __init__(self, stack: ExitStack, conninfo: str) -> None:
        self._stack, self._conninfo = stack, conninfo
        self._lock = threading.Lock()
        self._idle: list[Any] = []

    @contextmanager
    def use(self) -> Iterator[Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self._conninfo)
            with self._lock:
                self._stack.callback(conn.close)
        try:
            yield conn
        except BaseException:
            conn.close()  # it may be broken (a dropped connection): the next applier opens its own
            raise
        with self._lock:
            self._idle.append(conn)


def _apply_change(admin: AdminSessions, conninfo: str, vault: Any, change: Change, facts: dict[str, Any]) -> None:
    if change.type == "postgresql/role":
        app = next(a for a in facts["apps"] if role_name(a) == change.id)
        _apply_role(admin, vault, app, change, facts)
    else:
        db = next(d for d in facts["dbs"] if d.name == change.id)
        _apply_database(admin, conninfo, db, change, facts["state"])


def _apply_role(admin: AdminSessions, vault: Any, app: str, change: Change, facts: dict[str, Any]) -> None:
    role = role_name(app)
    password = _role_password(vault, app)
    facts["passwords"][app] = password  # the URL's apply takes it from here
    state: ServerState = facts["state"]
    ident = sql.Identifier(role)
    with admin.use() as conn:
        # The SCRAM verifier is computed here, as `psql \password` does: the password itself never
        # travels as SQL text, so a failing statement cannot put it in the server log.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        attrs = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(sql.Literal(verifier))
        verb = "CREATE" if change.action is Action.CREATE else "ALTER"
        conn.execute(sql.SQL(verb + " ROLE {} WITH ").format(ident) + attrs)
        if not state.is_superuser:
            # Azure's admin is not a superuser: to hand a database to the role it must be a member.
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))


def _role_password(vault: Any, app: str) -> str:
    """The role's password from the env vault; generated and stored only when absent.

    Read again here, not taken from the plan: another run may have stored one since, and
    replacing it would leave the vault and the role with different passwords.
    """
    name = role_secret(app)
    password = read_secret(vault, name)  # a read failure raises: never overwrite a password we could not see
    if not password:
        password = secrets.token_urlsafe(32)
        redact_value(password)
        with translated_errors(name):
            vault.set_secret(name, password, content_type="text/plain")
    redact_value(password)
    return password


def _apply_database(admin: AdminSessions, conninfo: str, db: DatabaseConfig, change: Change, state: ServerState) -> None:
    owner = role_name(db.owner) if db.owner else state.admin
    name = sql.Identifier(db.name)
    with admin.use() as conn:
        if change.action is Action.CREATE:
            # CREATE DATABASE cannot run inside a transaction: the connection is in autocommit mode.
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, sql.Identifier(owner)))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, sql.Identifier(owner)))
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(name))
        for app in db.shared_with:
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(name, sql.Identifier(role_name(app))))
    with connect(conninfo, db.name) as inner:
        for extension in db.extensions:
            inner.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
        for app in db.shared_with:
            role = sql.Identifier(role_name(app))
            privileges = sql.SQL(", ").join(sql.SQL(p) for p in TABLE_PRIVILEGES)
            inner.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            inner.execute(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA public TO {}").format(privileges, role))
            inner.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
            # Tables that migrations create later (as the owner, or the admin) are shared too.
            for kind, grant in ((sql.SQL("TABLES"), privileges), (sql.SQL("SEQUENCES"), sql.SQL("USAGE, SELECT"))):
                inner.execute(
                    sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT {} ON {} TO {}").format(
                        sql.Identifier(owner), grant, kind, role
                    )
                )


def require_allowed_extensions(ctx: DbContext, dbs: list[DatabaseConfig]) -> None:
    """On Azure an extension must be allow-listed (server parameter azure.extensions, step 3) first."""
    wanted = sorted({e.upper() for d in dbs for e in d.extensions})
    if not wanted:
        return
    current = ctx.read_arm(f"{server_id(ctx)}/configurations/azure.extensions", api_version(ALLOW_LIST_TYPE))
    if current is None:
        if ctx.endpoint() is None:
            return  # no Azure server: the operator's own PostgreSQL (--admin-dsn, PGHOST) has no allow-list
        current = {}
    have = {v.strip().upper() for v in str((current.get("properties") or {}).get("value", "")).split(",") if v.strip()}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise UserError(
            f"extensions {', '.join(missing)} are not allowed on {ctx.env_cfg.postgres.name} (server parameter "
            f"azure.extensions); {run_first('step3')} (nothing was changed)"
        )


def migrations_dir(ctx: DbContext, db: DatabaseConfig) -> Path:
    return given_path(ctx.req.dir) if ctx.req.dir else under_root(ctx.env_cfg.migrations_root) / db.migrations_folder
