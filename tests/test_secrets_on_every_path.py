"""Secrets on every path: a canary pushed through secrets.set, db.create and vpn.client while the
sandbox's vault fails (one 503, then separately persistent 429s) appears in no stdout, stderr,
--json, audit line, sandbox journal or PostgreSQL server log; the single 503 is retried to success.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from tests.conftest import run_invoke

PERSISTENT = 1000


def vault_fault(sandbox, path_contains: str, status: int, count: int) -> None:
    """Fail PUTs of matching vault secrets: `count` times, answering `status` (Retry-After-Ms: 10, so
    the client's retries are quick; Retry-After: 0 would fall back to its exponential back-off)."""
    rule = {"method": "PUT", "path_contains": path_contains, "status": status, "retry_after_ms": 10, "count": count}
    sandbox.faults(rules=[rule])


def everything_printed(results, audit_dir: Path, sandbox, pg_admin: str | None = None) -> list[str]:
    texts = [r.stdout + r.stderr for r in results]
    audit = audit_dir / "audit.jsonl"
    texts.append(audit.read_text() if audit.exists() else "")
    texts.append(json.dumps(sandbox.control("GET", "/journal?since=0")["entries"]))
    if pg_admin:
        data_dir = Path(parse_qs(urlsplit(pg_admin).query)["host"][0])
        texts.append((data_dir / "log").read_text(errors="replace"))
    return texts


def vault_secret(sandbox, vault_id: str, name: str) -> str | None:
    from deploykit.azure.arm import read_secret

    uri = sandbox.provider.read(vault_id, "2026-05-15")["properties"]["vaultUri"]
    return read_secret(sandbox.provider.secret_client(uri), name)


@pytest.fixture()
def shared_vault(sandbox) -> str:
    for step in ("step1", "step2a"):
        args = [step, "--env", "beta"] if step == "step1" else [step]
        assert run_invoke(*args, env=sandbox.env()).returncode == 0
    from tests.helpers import spec

    return spec(["step2a"], "kv.shared").id


@pytest.mark.parametrize(("status", "count", "code"), [(503, 1, 0), (429, PERSISTENT, 1)], ids=["one-503", "persistent-429"])
def test_secrets_set_canary(sandbox, shared_vault: str, audit_dir: Path, status: int, count: int, code: int) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    vault_fault(sandbox, "/secrets/openai-api-key", status, count)
    env = {**sandbox.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    results = [
        run_invoke("secrets.set", "--name", "openai-api-key", env=env, stdin=canary + "\n"),
        run_invoke("secrets.set", "--name", "openai-api-key", "--json", env=env, stdin=canary + "\n"),
    ]
    assert [r.returncode for r in results] == [code, 0 if code == 0 else code], [r.stderr for r in results]
    json.loads(results[1].stdout)  # one JSON object, also on failure
    sandbox.control("DELETE", "/faults")
    assert (vault_secret(sandbox, shared_vault, "openai-api-key") == canary) == (code == 0)
    for text in everything_printed(results, audit_dir, sandbox):
        assert canary not in text


@pytest.mark.parametrize(("status", "count", "code"), [(503, 1, 0), (429, PERSISTENT, 1)], ids=["one-503", "persistent-429"])
def test_db_create_role_passwords(beta_vault, pg_admin: str, audit_dir: Path, status: int, count: int, code: int) -> None:
    vault_id = beta_vault.seed_vault("rg-trading-beta-data", "kv-trading-beta")
    with psycopg.connect(pg_admin, autocommit=True) as conn:  # log every statement the task sends
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        vault_fault(beta_vault, "/secrets/pg-role-", status, count)
        env = {**beta_vault.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
        args = ("db.create", "--env", "beta", "--admin-dsn", pg_admin, "--db", "sigmatiq_core", "--json")
        results = [run_invoke(*args, env=env)]
        assert results[0].returncode == code, results[0].stdout + results[0].stderr
        document = json.loads(results[0].stdout)
        failed = [c for c in document["changes"] if c.get("result") == "failed"]
        # One role's vault write fails; its database and its database URL are then not attempted.
        expected = ["role.native_api", "db.sigmatiq_core", "secret.database-url-native-api"]
        assert [c["address"] for c in failed] == ([] if code == 0 else expected)
        beta_vault.control("DELETE", "/faults")
        results.append(run_invoke(*args, env=env))  # converges afterwards either way
        assert results[1].returncode == 0, results[1].stdout + results[1].stderr
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET log_statement")
            conn.execute("SELECT pg_reload_conf()")
    passwords = [vault_secret(beta_vault, vault_id, "pg-role-native-api-password") or ""]
    assert all(len(p) >= 32 for p in passwords)
    texts = everything_printed(results, audit_dir, beta_vault, pg_admin)
    assert any("CREATE ROLE" in t for t in texts), "the server log should show the statements"
    for secret in passwords:
        for text in texts:
            assert secret not in text


@pytest.mark.parametrize(
    ("status", "count", "stored"), [(503, 1, "vault"), (429, PERSISTENT, "file")], ids=["one-503", "persistent-429"]
)
def test_vpn_client_pfx_password(beta_vault, tmp_path: Path, audit_dir: Path, status: int, count: int, stored: str) -> None:
    vault_id = beta_vault.seed_vault("rg-trading-prod-data", "kv-trading-prod")
    certs = tmp_path / "certs"
    env = {**beta_vault.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    results = [run_invoke("vpn.root", "--env", "prod", "--yes", "--certs-dir", str(certs), env=env)]
    vault_fault(beta_vault, "/secrets/vpn-client-", status, count)
    client = ("vpn.client", "--env", "prod", "--yes", "--certs-dir", str(certs), "--name", "ines")
    results.append(run_invoke(*client, "--json", env=env))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    beta_vault.control("DELETE", "/faults")
    if stored == "vault":
        password = vault_secret(beta_vault, vault_id, "vpn-client-ines-pfx-password") or ""
        assert not (certs / "clients" / "ines.pfx.pass").exists()
    else:
        [pass_file] = list(certs.rglob("ines.pfx.pass"))
        assert pass_file.stat().st_mode & 0o777 == 0o600
        password = pass_file.read_text()
    assert len(password) >= 24
    for text in everything_printed(results, audit_dir, beta_vault):
        assert password not in text
