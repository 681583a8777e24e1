"""db.create against a real PostgreSQL: databases, least-privilege roles, isolation, no secrets shown."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.db import database
from deploykit.db.database import DbRequest
from tests.conftest import run_invoke

OWNED = {
    "auth_api": ["sigmatiq_auth"],
    "native_api": ["sigmatiq_core", "sigmatiq_signals"],
    "pilot_api": ["sigmatiq_pilot"],
    "card_api": ["sigmatiq_cards"],
    "sim_api": ["sigmatiq_paper"],
}
ALL_DBS = [
    "sigmatiq_auth",
    "sigmatiq_core",
    "sigmatiq_backfill",
    "sigmatiq_research",
    "sigmatiq_pilot",
    "sigmatiq_cards",
    "sigmatiq_paper",
    "sigmatiq_signals",
]
DATA_RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-data"
VAULT = f"{DATA_RG}/providers/Microsoft.KeyVault/vaults/kv-trading-beta"


def create(admin: str, **extra) -> int:
    return database.create(DbRequest(task="db.create", env="beta", admin_dsn=admin, yes=True, **extra))


def role_password(sandbox, role: str) -> str:
    uri = sandbox.provider.read(VAULT, "2026-05-15")["properties"]["vaultUri"]
    return sandbox.provider.secret_client(uri).get_secret(f"pg-role-{role.replace('_', '-')}-password").value


def connect_as(admin: str, role: str, password: str, db: str) -> psycopg.Connection:
    params = conninfo_to_dict(admin)
    return psycopg.connect(make_conninfo(host=params["host"], port=params.get("port"), user=role, password=password, dbname=db))


def test_create_twice_second_run_changes_nothing(pg_admin: str, beta_vault, capsys) -> None:
    assert create(pg_admin) == 0
    with psycopg.connect(pg_admin) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sigmatiq%%'")}
    assert names == set(ALL_DBS)
    capsys.readouterr()
    assert create(pg_admin) == 0
    out = capsys.readouterr().out
    # Every role, every database, and one database URL per app: all unchanged.
    expected = len(OWNED) + len(ALL_DBS) + len(OWNED)
    assert "No changes" in out and f"0 create, 0 update, 0 delete, {expected} unchanged" in out


def test_each_role_reaches_its_own_databases_only(pg_admin: str, beta_vault) -> None:
    assert create(pg_admin) == 0
    for role, own in OWNED.items():
        password = role_password(beta_vault, role)
        for db in ALL_DBS:
            allowed = db in own or db == "sigmatiq_backfill"
            if allowed:
                with connect_as(pg_admin, role, password, db) as conn:
                    assert conn.execute("SELECT current_user").fetchone()[0] == role
            else:
                with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                    connect_as(pg_admin, role, password, db)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect_as(pg_admin, role, "not-the-password", own[0])


def test_roles_are_owners_and_nothing_more(pg_admin: str, beta_vault) -> None:
    assert create(pg_admin) == 0
    with psycopg.connect(pg_admin) as conn:
        owners = dict(
            conn.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE 'sigmatiq%%'").fetchall()
        )
        attrs = conn.execute(
            "SELECT bool_or(rolsuper OR rolcreatedb OR rolcreaterole) FROM pg_roles WHERE rolname = ANY(%s)", (list(OWNED),)
        ).fetchone()[0]
    assert attrs is False
    for role, own in OWNED.items():
        assert all(owners[db] == role for db in own)
    assert owners["sigmatiq_backfill"] == owners["sigmatiq_research"] == "postgres"


def test_shared_database_grants_read_write_on_later_tables(pg_admin: str, beta_vault) -> None:
    assert create(pg_admin) == 0
    with psycopg.connect(make_conninfo(pg_admin, dbname="sigmatiq_backfill"), autocommit=True) as admin:
        admin.execute("CREATE TABLE quotes (symbol text PRIMARY KEY, price numeric)")
    with connect_as(pg_admin, "sim_api", role_password(beta_vault, "sim_api"), "sigmatiq_backfill") as conn:
        conn.execute("INSERT INTO quotes VALUES ('MSFT', 1)")
        assert conn.execute("SELECT count(*) FROM quotes").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE quotes")


def test_extensions_need_the_azure_allowlist_step3_sets(pg_admin: str, beta_vault) -> None:
    """On an Azure server an extension must be allow-listed first (step 3 does it); db.create checks."""
    server = f"{DATA_RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers/psql-trading-beta"
    beta_vault.control("POST", "/seed", {"id": server, "body": {"location": "centralus", "properties": {"state": "Ready"}}})
    refused = run_invoke("db.create", "--env", "beta", "--admin-dsn", pg_admin, env=beta_vault.env())
    assert refused.returncode == 2
    assert "VECTOR" in refused.stderr and "azure.extensions" in refused.stderr and "invoke step3" in refused.stderr
    beta_vault.control(
        "POST", "/seed", {"id": f"{server}/configurations/azure.extensions", "body": {"properties": {"value": "vector"}}}
    )
    assert create(pg_admin) == 0
    with psycopg.connect(make_conninfo(pg_admin, dbname="sigmatiq_research")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 1


def test_missing_vault_stops_before_changing_anything(pg_admin: str, sandbox) -> None:
    result = run_invoke("db.create", "--env", "beta", "--admin-dsn", pg_admin, env=sandbox.env())
    assert result.returncode == 2
    assert "kv-trading-beta does not exist yet" in result.stderr and "invoke step3" in result.stderr
    with psycopg.connect(pg_admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'sigmatiq%%'").fetchone()[0] == 0


def test_no_password_reaches_output(pg_admin: str, beta_vault, audit_dir) -> None:
    env = {**beta_vault.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    runs = [run_invoke("db.create", "--env", "beta", "--admin-dsn", pg_admin, "--json", env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    passwords = [role_password(beta_vault, role) for role in OWNED]
    texts = [r.stdout + r.stderr for r in runs] + [(audit_dir / "audit.jsonl").read_text()]
    assert not any(p in t for p in passwords for t in texts)


def test_libpq_environment_variables_are_used(pg_admin: str, beta_vault) -> None:
    params = conninfo_to_dict(pg_admin)
    env = {**beta_vault.env(), "PGHOST": params["host"], "PGUSER": "postgres", "PGDATABASE": "postgres"}
    if params.get("port"):
        env["PGPORT"] = str(params["port"])
    result = run_invoke("db.create", "--env", "beta", "--db", "sigmatiq_core", env=env)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(pg_admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'sigmatiq_core'").fetchone()[0] == 1


def test_unknown_database_is_a_user_error(pg_admin: str, beta_vault) -> None:
    result = run_invoke("db.create", "--env", "beta", "--admin-dsn", pg_admin, "--db", "sigmatiq_nope", env=beta_vault.env())
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --db: 'sigmatiq_nope' is not a database of beta; allowed: sigmatiq_auth")


def test_a_password_that_cannot_be_read_is_never_overwritten(pg_admin: str, beta_vault) -> None:
    uri = beta_vault.provider.read(VAULT, "2026-05-15")["properties"]["vaultUri"]
    beta_vault.provider.secret_client(uri).set_secret("pg-role-auth-api-password", "kept-as-is")
    beta_vault.faults(
        rules=[{"method": "GET", "path_contains": "pg-role-auth-api-password", "status": 403, "code": "Forbidden", "count": 5}]
    )
    result = run_invoke("db.create", "--env", "beta", "--admin-dsn", pg_admin, "--db", "sigmatiq_auth", env=beta_vault.env())
    assert result.returncode == 1, result.stderr
    assert "Forbidden" in result.stderr  # the plan could not read it: nothing was applied
    beta_vault.control("DELETE", "/faults")
    assert role_password(beta_vault, "auth_api") == "kept-as-is"
