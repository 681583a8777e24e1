"""Invoke entry: one task per runbook; flags in, one engine call, exit status out.

Heavy imports (Azure SDKs, the engine) happen inside tasks so `invoke --list` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from invoke import Collection, Exit, task

from deploykit.errors import ApplyError, DeployKitError, UserError

HELP = {
    "env": "environment: beta or prod",
    "dry-run": "plan only: no writes anywhere; works without Azure credentials",
    "json": "print exactly one JSON object (the plan and results) on stdout",
    "target": "sandbox (default, local emulator) or azure (real, always explicit)",
    "yes": "apply without asking for confirmation",
    "name": "name of the secret (one of provider_secrets in config/shared.yaml)",
    "file": "read the secret value from this file instead of standard input",
    "certs-dir": "certificate folder (default certs/<env>)",
    "client": "client certificate name (CN): 1-64 letters, digits, '.', '_', '-'",
    "admin-dsn": "admin connection string (else PGHOST/PGUSER/... or the environment's server)",
    "db": "one database (default: all of the environment's)",
    "dir": "that database's folder of NNNN_description.sql files (with --db)",
}


def _help(*flags: str, **overrides: str) -> dict[str, str]:
    """The shared help text for just the flags a task has (Invoke rejects help for others)."""
    return {**{flag: HELP[flag] for flag in flags}, **overrides}


COMMON = ("target", "dry-run", "json", "yes")
VPN_COMMON = ("env", "certs-dir", *COMMON)


def _exits(func: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes leave with one line and status 2; apply failures with status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = func(*args, **kwargs)
        except UserError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except (ApplyError, DeployKitError) as exc:
            # An Azure call that failed outside a plan's own reporting: Azure's code and message, status 1.
            raise Exit(f"failed: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
        if code:
            raise Exit(code=code)

    return wrapper


def _converge(task_name: str, steps: list[str] | None, env: str | None, target: str, dry_run: bool, json: bool, yes: bool) -> int:
    from deploykit.runner import RunOptions, converge

    return converge(RunOptions(task_name, env, target, dry_run, json, yes), steps)


@task(help=_help("env", *COMMON))
@_exits
def step1(c, env=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Step 1: resource groups, tags and data-group locks.

    Runbook: runbooks/step1.md. Without --env: shared, beta and prod groups.
    """
    return _converge("step1", ["step1"], env, target, dry_run, json, yes)


@task(help=_help(*COMMON))
@_exits
def step2a(c, target="sandbox", dry_run=False, json=False, yes=False):
    """Step 2a: shared Key Vault (RBAC, soft delete, purge).

    Runbook: runbooks/step2a.md. Recovers a soft-deleted vault of the same name.
    """
    return _converge("step2a", ["step2a"], None, target, dry_run, json, yes)


@task(help=_help(*COMMON))
@_exits
def step2b(c, target="sandbox", dry_run=False, json=False, yes=False):
    """Step 2b: shared container registry (Premium).

    Runbook: runbooks/step2b.md.
    """
    return _converge("step2b", ["step2b"], None, target, dry_run, json, yes)


@task(help=_help("env", *COMMON))
@_exits
def deploy(c, env=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Converge every step of an environment, in order.

    Runbook: runbooks/deploy.md. The steps are listed in config/<env>.yaml.
    """
    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _converge("deploy", None, env, target, dry_run, json, yes)


@task(name="plan", help=_help("env", "target", "json"))
@_exits
def plan_(c, env=None, target="sandbox", json=False):
    """Show what deploy would change (a dry run).

    Runbook: runbooks/plan.md.
    """
    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _converge("plan", None, env, target, True, json, False)


@task(name="set", help=_help("name", "file", *COMMON, env="whose vault: shared (default), beta or prod"))
@_exits
def secrets_set(c, name, file=None, env="shared", target="sandbox", dry_run=False, json=False, yes=False):
    """Store a provider secret in a vault (stdin or --file).

    Runbook: runbooks/secrets.set.md. Never pass a value on the command line.
    """
    from deploykit.vault_secrets import SecretRequest, set_secret

    return set_secret(
        SecretRequest(task="secrets.set", name=name, file=file, env=env, target=target, dry_run=dry_run, as_json=json, yes=yes)
    )


@task(name="reset", help=_help("yes"))
@_exits
def sandbox_reset(c, yes=False):
    """Empty the local sandbox (resources, secrets, journal).

    Runbook: runbooks/sandbox.reset.md.
    """
    from deploykit.sandbox_tasks import reset

    return reset()


@task(name="status", help=_help("json"))
@_exits
def sandbox_status(c, json=False):
    """Show what the local sandbox holds and the last run.

    Runbook: runbooks/sandbox.status.md.
    """
    from deploykit.sandbox_tasks import status

    return status(as_json=json)


@task(name="check")
@_exits
def runbooks_check(c):
    """Check every task has a runbook and runbooks are valid.

    Runbook: runbooks/runbooks.check.md. Runs shellcheck on bash blocks.
    """
    from deploykit.runbooks import check_runbooks

    return check_runbooks(ns)


def _vpn(action: str, **fields: Any) -> int:
    from deploykit import vpn

    return getattr(vpn, action)(vpn.VpnRequest(**fields))


@task(
    name="root",
    help=_help(
        *VPN_COMMON,
        rotate="issue a new root; the old one stays trusted until retired",
        retire="remove a previous root (by serial) from the trusted list",
        **{
            "to-vault": "store the root key and certificate in the env vault",
            "from-vault": "restore the root key and certificate from the env vault",
        },
    ),
)
@_exits
def vpn_root(
    c,
    env="prod",
    certs_dir=None,
    rotate=False,
    retire=None,
    to_vault=False,
    from_vault=False,
    target="sandbox",
    dry_run=False,
    json=False,
    yes=False,
):
    """Create (once) or rotate the P2S VPN root CA.

    Runbook: runbooks/vpn.root.md.
    """
    return _vpn(
        "root",
        task="vpn.root",
        env=env,
        certs_dir=certs_dir,
        rotate=rotate,
        retire=retire,
        to_vault=to_vault,
        from_vault=from_vault,
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


@task(name="client", help=_help(*VPN_COMMON, name=HELP["client"], legacy="PKCS#12 with 3DES/SHA-1 for older macOS, iOS, Windows"))
@_exits
def vpn_client(c, name, env="prod", certs_dir=None, legacy=False, target="sandbox", dry_run=False, json=False, yes=False):
    """Issue or renew a VPN client certificate and .pfx.

    Runbook: runbooks/vpn.client.md.
    """
    return _vpn(
        "client",
        task="vpn.client",
        env=env,
        name=name,
        certs_dir=certs_dir,
        legacy=legacy,
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


@task(name="revoke", help=_help(*VPN_COMMON, name=HELP["client"]))
@_exits
def vpn_revoke(c, name, env="prod", certs_dir=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Revoke a client certificate (locally and on the gateway).

    Runbook: runbooks/vpn.revoke.md.
    """
    return _vpn(
        "revoke",
        task="vpn.revoke",
        env=env,
        name=name,
        certs_dir=certs_dir,
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


@task(name="list", help=_help("env", "certs-dir", "json"))
@_exits
def vpn_list(c, env="prod", certs_dir=None, json=False):
    """List client certificates with their status.

    Runbook: runbooks/vpn.list.md.
    """
    return _vpn("list_certificates", task="vpn.list", env=env, certs_dir=certs_dir, as_json=json)


@task(
    name="profile",
    help=_help(*VPN_COMMON, name=HELP["client"], **{"gateway-address": "the gateway's public address, when it cannot be read"}),
)
@_exits
def vpn_profile(
    c, name, env="prod", certs_dir=None, gateway_address=None, target="sandbox", dry_run=False, json=False, yes=False
):
    """Render OpenVPN/strongSwan profiles and fetch the package.

    Runbook: runbooks/vpn.profile.md.
    """
    return _vpn(
        "profile",
        task="vpn.profile",
        env=env,
        name=name,
        certs_dir=certs_dir,
        gateway_address=gateway_address,
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


def _number(flag: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{flag}: {value!r} is not a migration number") from None


def _db(module: str, action: str, **fields: Any) -> int:
    import importlib

    from deploykit.database import DbRequest

    return getattr(importlib.import_module(f"deploykit.{module}"), action)(DbRequest(**fields))


@task(name="create", help=_help("env", "admin-dsn", "db", *COMMON))
@_exits
def db_create(c, env=None, admin_dsn=None, db=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Create databases and least-privilege app roles.

    Runbook: runbooks/db.create.md. Role passwords live in the env vault.
    """
    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _db(
        "database",
        "create",
        task="db.create",
        env=env,
        admin_dsn=admin_dsn,
        db=db,
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


@task(
    name="migrate",
    help=_help(
        "env",
        "admin-dsn",
        "db",
        "dir",
        *COMMON,
        **{
            "show-sql": "with --dry-run: print the SQL of pending files",
            "repair": "re-record checksums of deliberately edited, applied files",
            "lock-timeout": "seconds to wait for another runner's lock (default 60)",
            "baseline": "adopt a database migrated by another tool: record files up to this number as applied",
        },
    ),
)
@_exits
def db_migrate(
    c,
    env=None,
    admin_dsn=None,
    db=None,
    dir=None,
    show_sql=False,
    repair=False,
    lock_timeout=60.0,
    baseline=None,
    target="sandbox",
    dry_run=False,
    json=False,
    yes=False,
):
    """Apply pending SQL migrations, one transaction each.

    Runbook: runbooks/db.migrate.md.
    """
    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _db(
        "migration_runs",
        "migrate",
        task="db.migrate",
        env=env,
        admin_dsn=admin_dsn,
        db=db,
        dir=dir,
        show_sql=show_sql,
        repair=repair,
        lock_timeout=float(lock_timeout),
        baseline=_number("--baseline", baseline),
        target=target,
        dry_run=dry_run,
        as_json=json,
        yes=yes,
    )


@task(name="status", help=_help("env", "admin-dsn", "db", "dir", "target", "json"))
@_exits
def db_status(c, env=None, admin_dsn=None, db=None, dir=None, target="sandbox", json=False):
    """Show applied and pending migrations and drift.

    Runbook: runbooks/db.status.md.
    """
    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _db(
        "migration_runs",
        "status",
        task="db.status",
        env=env,
        admin_dsn=admin_dsn,
        db=db,
        dir=dir,
        target=target,
        as_json=json,
        dry_run=True,  # read-only: reported as a dry run in --json
    )


ns = Collection(step1, step2a, step2b, deploy, plan_)
ns.add_collection(Collection("db", db_create, db_migrate, db_status))
ns.add_collection(Collection("vpn", vpn_root, vpn_client, vpn_revoke, vpn_list, vpn_profile))
ns.add_collection(Collection("secrets", secrets_set))
ns.add_collection(Collection("sandbox", sandbox_reset, sandbox_status))
ns.add_collection(Collection("runbooks", runbooks_check))
