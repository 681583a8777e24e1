"""Invoke entry: one task per runbook; flags in, one engine call, exit status out.

Numbered step tasks come from the registry (deploykit/steps.py). Heavy imports (Azure SDKs, the
engine) happen inside tasks so `invoke --list` stays fast. No task has short flags: a letter
must not mean different things in different tasks.
"""

from __future__ import annotations

import sys
from typing import Any

from invoke import Collection, Task, task

# Invoke turns bytecode writing off for its whole process (its --write-pyc, so that no tasks.pyc
# litters a project); then this package compiled from source on every command, 0.13 s each, in
# any clone only ever run through invoke. Back on before the package loads, unless the user asked
# Python for it (PYTHONDONTWRITEBYTECODE, -B).
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

from deploykit.cli import exits, install_fast_exit, install_parse_errors  # noqa: E402
from deploykit.engine.steps import STEPS, Step  # noqa: E402
from deploykit.errors import UserError  # noqa: E402

install_parse_errors()
install_fast_exit()

ENVS_HELP = "environment: beta or prod"
HELP = {
    "env": ENVS_HELP,
    "all": "every environment (prod included); step1 needs --env or --all",
    "dry-run": "plan only: no writes anywhere; works without Azure credentials",
    "json": "print exactly one JSON object (the plan and results) on stdout, also on failure",
    "target": "sandbox (default, local emulator) or azure (real, always explicit)",
    "yes": "apply without asking; required for prod or real Azure when there is no terminal",
    "exit-code": "exit 3 when changes are pending, 0 when there are none (for CI)",
    "name": "name of the secret (one of provider_secrets in config/shared.yaml)",
    "file": "read the secret value from this file instead of standard input",
    "certs-dir": "certificate folder, read from the current folder (default: certs/<env> in the project)",
    "client": "client certificate name (CN): 1-64 letters, digits, '.', '_', '-'",
    "admin-dsn": "admin connection string (else PGHOST/PGUSER/... or the environment's server)",
    "db": "one database (default: all of the environment's)",
    "dir": "that database's folder of NNNN_description.sql files (with --db), read from the current folder",
    "tag": "image tag to deploy (default: image_tag in config/<env>.yaml)",
    "ip": "public IPv4 address or CIDR (default: discovered, two services must agree)",
    "ttl": "how long the rule stays: 30m, 2h, 8h (default and maximum: whitelist in config/shared.yaml)",
    "services": "comma-separated: postgres, redis, vault, registry (default: config/shared.yaml whitelist)",
    "reason": "why, one line; kept in the audit log",
    "all-mine": "every rule you own, every address",
    "app": "one app (a name from apps in config/<env>.yaml)",
    "revision": "the revision to return to (default: the previous healthy one)",
    "force": "overwrite a target tag that holds a different digest (both digests are shown first)",
    "region": "Azure region of the prices (default: the location in config/shared.yaml)",
    "no-wait": "return once Azure has accepted each long operation (a re-run waits for them)",
}
COMMON = ("target", "dry-run", "json", "yes")
VPN_COMMON = ("env", "certs-dir", *COMMON)
VPN_ENV_HELP = "environment with a VPN gateway (a vpn: section in config/<env>.yaml): prod"


def _help(*flags: str, **overrides: str) -> dict[str, str]:
    """The shared help text for just the flags a task has (Invoke rejects help for others)."""
    return {**{flag: HELP[flag] for flag in flags}, **overrides}


def _vpn_help(*flags: str, **overrides: str) -> dict[str, str]:
    """_help for a vpn.* task (VPN_COMMON unless `flags`), --env naming the environments with a VPN."""
    return _help(*(flags or VPN_COMMON), env=VPN_ENV_HELP, **overrides)


def _task(name: str, help: dict[str, str]) -> Any:
    """@task with our conventions: no automatic short flags, our exit statuses.

    `name` is what an operator types (`vpn.client`): it names the task in errors and --json.
    Invoke gets its last part; the collection the task joins (below) adds the rest.
    """

    def decorate(func: Any) -> Task:
        return task(name=name.rsplit(".", 1)[-1], help=help, auto_shortflags=False)(exits(name)(func))

    return decorate


def _require_env(env: str | None) -> str:
    if not env:
        raise UserError(f"--env: required; allowed: beta, prod ({ENVS_HELP})")
    return env


def _tag(value: Any) -> str | None:
    """An image tag as Docker allows it: 1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-'."""
    import re

    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", value):
        raise UserError(f"--tag: {value!r} is not an image tag; allowed: 1-128 letters, digits, '_', '.', '-' (not first)")
    return value


def _number(flag: str, value: Any, low: float, high: float, kind: type = float) -> Any:
    """A numeric flag, parsed strictly: one line naming the flag and the allowed range otherwise."""
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag}: {value!r} is not a number; allowed: {low:g} to {high:g}") from None
    if not low <= number <= high:
        raise UserError(f"{flag}: {value!r} is out of range; allowed: {low:g} to {high:g}")
    return number


def _options(task_name: str, env: str | None, target: str, dry_run: bool, json: bool, yes: bool, **more: Any) -> Any:
    from deploykit.engine.flow import RunOptions

    return RunOptions(task_name, env, target, dry_run, json, yes, **more)


def _converge(options: Any, steps: list[str] | None) -> int:
    from deploykit.engine.runner import converge

    return converge(options, steps)


# ---- numbered steps, from the registry --------------------------------------------------------
def _step_task(step: Step) -> Task:
    """A step's task: its flags follow from its scope (all environments, shared, or one env)."""
    doc = f"Step {step.name.removeprefix('step')}: {step.title}.\n\n    Runbook: runbooks/{step.name}.md."
    if step.scope == "shared":

        def shared_body(c, target="sandbox", dry_run=False, json=False, yes=False, no_wait=False):
            return _converge(_options(step.name, None, target, dry_run, json, yes, no_wait=no_wait), [step.name])

        body, flags = shared_body, (*COMMON, "no-wait")
    elif step.scope == "all":

        def all_body(c, env=None, all=False, target="sandbox", dry_run=False, json=False, yes=False, no_wait=False):
            if bool(env) == bool(all):
                raise UserError("--env: give one environment (beta or prod), or --all for every environment")
            return _converge(_options(step.name, env, target, dry_run, json, yes, all_envs=all, no_wait=no_wait), [step.name])

        body, flags = all_body, ("env", "all", *COMMON, "no-wait")
    elif step.uses_tag:

        def tag_body(c, env=None, tag=None, target="sandbox", dry_run=False, json=False, yes=False, no_wait=False):
            return _converge(
                _options(step.name, _require_env(env), target, dry_run, json, yes, tag=_tag(tag), no_wait=no_wait), [step.name]
            )

        body, flags = tag_body, ("env", "tag", *COMMON, "no-wait")
    else:

        def env_body(c, env=None, target="sandbox", dry_run=False, json=False, yes=False, no_wait=False):
            return _converge(_options(step.name, _require_env(env), target, dry_run, json, yes, no_wait=no_wait), [step.name])

        body, flags = env_body, ("env", *COMMON, "no-wait")
    body.__name__ = body.__qualname__ = step.name
    body.__doc__ = doc
    return _task(step.name, _help(*flags))(body)


STEP_TASKS = [_step_task(step) for step in STEPS.values()]


@_task("deploy", _help("env", "tag", *COMMON, "no-wait"))
def deploy(c, env=None, tag=None, target="sandbox", dry_run=False, json=False, yes=False, no_wait=False):
    """Converge every step of an environment, in order, with its databases and health checks.

    Runbook: runbooks/deploy.md. The steps are listed in config/<env>.yaml.
    """
    from deploykit.deploy import deploy as run_deploy

    return run_deploy(_options("deploy", _require_env(env), target, dry_run, json, yes, tag=_tag(tag), no_wait=no_wait))


@_task("plan", _help("env", "target", "json", "exit-code"))
def plan_(c, env=None, target="sandbox", json=False, exit_code=False):
    """Show what deploy would change (a dry run).

    Runbook: runbooks/plan.md. --exit-code: 3 when changes are pending.
    """
    from deploykit.deploy import deploy as run_deploy

    return run_deploy(_options("plan", _require_env(env), target, True, json, False, exit_code=exit_code))


@_task("drift", _help("env", "target", "json"))
def drift(c, env=None, target="sandbox", json=False):
    """Compare Azure with every declared step: changed fields and undeclared resources (never applied).

    Runbook: runbooks/drift.md. Exit 0: no drift; 3: drift found (for a scheduled CI job).
    """
    from deploykit.drift import drift as run_drift

    return run_drift(_options("drift", _require_env(env), target, True, json, False, exit_code=True))


# ---- secrets ---------------------------------------------------------------------------------
@_task("secrets.set", _help("name", "file", *COMMON, env="whose vault: shared (default), beta or prod"))
def secrets_set(c, name, file=None, env="shared", target="sandbox", dry_run=False, json=False, yes=False):
    """Store a provider secret in a vault (stdin or --file).

    Runbook: runbooks/secrets.set.md. Never pass a value on the command line.
    """
    from deploykit.vault_secrets import SecretRequest, set_secret

    return set_secret(SecretRequest("secrets.set", env, target, dry_run, json, yes, name=name, file=file))


# ---- the sandbox -------------------------------------------------------------------------------
@_task("sandbox.reset", _help("dry-run", "json", "yes"))
def sandbox_reset(c, dry_run=False, json=False, yes=False):
    """Empty the local sandbox (resources, secrets, journal).

    Runbook: runbooks/sandbox.reset.md. Always recovers, even from a corrupt state file.
    """
    from deploykit.sandbox_tasks import reset

    return reset(_options("sandbox.reset", None, "sandbox", dry_run, json, yes))


@_task("sandbox.status", _help("json"))
def sandbox_status(c, json=False):
    """Show what the local sandbox holds and the last run.

    Runbook: runbooks/sandbox.status.md.
    """
    from deploykit.sandbox_tasks import status

    return status(as_json=json)


@_task("runbooks.check", {})
def runbooks_check(c):
    """Check every task has a runbook and runbooks are valid.

    Runbook: runbooks/runbooks.check.md. Runs shellcheck on bash blocks.
    """
    from deploykit.runbooks import check_runbooks

    return check_runbooks(ns)


# ---- VPN certificates --------------------------------------------------------------------------
def _vpn(action: str, task_name: str, env: str | None, target: str, dry_run: bool, json: bool, yes: bool, **fields: Any) -> int:
    from deploykit.vpn import p2s as vpn

    request = vpn.VpnRequest(task_name, _require_env(env), target, dry_run, json, yes, **fields)
    return getattr(vpn, action)(request)


@_task(
    "vpn.root",
    _vpn_help(
        rotate="issue a new root; the old one stays trusted until retired",
        retire="remove a previous root (by serial) from the trusted list",
        **{
            "to-vault": "store the root key and certificate in the env vault",
            "from-vault": "restore the root key and certificate from the env vault",
        },
    ),
)
def vpn_root(
    c,
    env=None,
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
    if sum(map(bool, (rotate, retire, to_vault, from_vault))) > 1:
        raise UserError("--rotate, --retire, --to-vault, --from-vault: give at most one")
    return _vpn(
        "root",
        "vpn.root",
        env,
        target,
        dry_run,
        json,
        yes,
        certs_dir=certs_dir,
        rotate=rotate,
        retire=retire,
        to_vault=to_vault,
        from_vault=from_vault,
    )


@_task(
    "vpn.client",
    _vpn_help(name=HELP["client"], legacy="PKCS#12 with 3DES/SHA-1 for older macOS, iOS, Windows"),
)
def vpn_client(c, name, env=None, certs_dir=None, legacy=False, target="sandbox", dry_run=False, json=False, yes=False):
    """Issue or renew a VPN client certificate and .pfx.

    Runbook: runbooks/vpn.client.md.
    """
    return _vpn("client", "vpn.client", env, target, dry_run, json, yes, name=name, certs_dir=certs_dir, legacy=legacy)


@_task("vpn.revoke", _vpn_help(name=HELP["client"]))
def vpn_revoke(c, name, env=None, certs_dir=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Revoke a client certificate (locally and on the gateway).

    Runbook: runbooks/vpn.revoke.md.
    """
    return _vpn("revoke", "vpn.revoke", env, target, dry_run, json, yes, name=name, certs_dir=certs_dir)


@_task("vpn.list", _vpn_help("env", "certs-dir", "json"))
def vpn_list(c, env=None, certs_dir=None, json=False):
    """List client certificates with their status.

    Runbook: runbooks/vpn.list.md.
    """
    return _vpn("list_certificates", "vpn.list", env, "sandbox", True, json, False, certs_dir=certs_dir)


@_task(
    "vpn.profile",
    _vpn_help(name=HELP["client"], **{"gateway-address": "the gateway's public address, when it cannot be read"}),
)
def vpn_profile(c, name, env=None, certs_dir=None, gateway_address=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Render OpenVPN/strongSwan profiles and fetch the package.

    Runbook: runbooks/vpn.profile.md.
    """
    return _vpn(
        "profile",
        "vpn.profile",
        env,
        target,
        dry_run,
        json,
        yes,
        name=name,
        certs_dir=certs_dir,
        gateway_address=gateway_address,
    )


# ---- databases ---------------------------------------------------------------------------------
def _db(
    module: str, action: str, task_name: str, env: str | None, target: str, dry_run: bool, json: bool, yes: bool, **fields: Any
) -> int:
    import importlib

    from deploykit.db.database import DbRequest

    request = DbRequest(task_name, _require_env(env), target, dry_run, json, yes, **fields)
    return getattr(importlib.import_module(f"deploykit.db.{module}"), action)(request)


@_task("db.create", _help("env", "admin-dsn", "db", *COMMON))
def db_create(c, env=None, admin_dsn=None, db=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Create databases and least-privilege app roles.

    Runbook: runbooks/db.create.md. Role passwords live in the env vault.
    """
    return _db("database", "create", "db.create", env, target, dry_run, json, yes, admin_dsn=admin_dsn, db=db)


@_task(
    "db.migrate",
    _help(
        "env",
        "admin-dsn",
        "db",
        "dir",
        *COMMON,
        **{
            "show-sql": "with --dry-run: print the SQL of pending files",
            "repair": "after checking by hand: re-record edited files' checksums, or a half-applied no-transaction file",
            "lock-timeout": "seconds to wait for another runner's lock (default 60; 0 to 3600)",
            "baseline": "adopt a database migrated by another tool: record files up to this number as applied",
        },
    ),
)
def db_migrate(
    c,
    env=None,
    admin_dsn=None,
    db=None,
    dir=None,
    show_sql=False,
    repair=False,
    lock_timeout=None,
    baseline=None,
    target="sandbox",
    dry_run=False,
    json=False,
    yes=False,
):
    """Apply pending SQL migrations, one transaction each.

    Runbook: runbooks/db.migrate.md.
    """
    timeout = _number("--lock-timeout", lock_timeout, 0, 3600)
    return _db(
        "migration_runs",
        "migrate",
        "db.migrate",
        env,
        target,
        dry_run,
        json,
        yes,
        admin_dsn=admin_dsn,
        db=db,
        dir=dir,
        show_sql=show_sql,
        repair=repair,
        lock_timeout=60.0 if timeout is None else timeout,
        baseline=_number("--baseline", baseline, 0, 9999, int),
    )


@_task("db.status", _help("env", "admin-dsn", "db", "dir", "target", "json"))
def db_status(c, env=None, admin_dsn=None, db=None, dir=None, target="sandbox", json=False):
    """Show applied and pending migrations and drift.

    Runbook: runbooks/db.status.md.
    """
    # Read-only: reported as a dry run in --json.
    return _db("migration_runs", "status", "db.status", env, target, True, json, False, admin_dsn=admin_dsn, db=db, dir=dir)


# ---- operator IP whitelisting ------------------------------------------------------------------
def _whitelist(
    action: str, task_name: str, env: str | None, target: str, dry_run: bool, json: bool, yes: bool, **fields: Any
) -> int:
    from deploykit.whitelist import commands

    request = commands.WhitelistRequest(task_name, _require_env(env), target, dry_run, json, yes, **fields)
    return getattr(commands, action)(request)


@_task("whitelist.add", _help("env", "ip", "ttl", "services", "reason", *COMMON))
def whitelist_add(
    c, env=None, ip=None, ttl=None, services=None, reason=None, target="sandbox", dry_run=False, json=False, yes=False
):
    """Let your public address in to beta's data services for a limited time.

    Runbook: runbooks/whitelist.add.md.
    """
    return _whitelist("add", "whitelist.add", env, target, dry_run, json, yes, ip=ip, ttl=ttl, services=services, reason=reason)


@_task("whitelist.list", _help("env", "target", "json"))
def whitelist_list(c, env=None, target="sandbox", json=False):
    """Every operator rule: owner, address, expiry, time left; manual rules apart.

    Runbook: runbooks/whitelist.list.md.
    """
    return _whitelist("list_rules", "whitelist.list", env, target, True, json, False)


@_task("whitelist.remove", _help("env", "ip", "services", "all-mine", *COMMON))
def whitelist_remove(c, env=None, ip=None, services=None, all_mine=False, target="sandbox", dry_run=False, json=False, yes=False):
    """Close your own rules: one address, or all of them.

    Runbook: runbooks/whitelist.remove.md.
    """
    return _whitelist("remove", "whitelist.remove", env, target, dry_run, json, yes, ip=ip, services=services, all_mine=all_mine)


@_task("whitelist.prune", _help("env", *COMMON))
def whitelist_prune(c, env=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Remove every expired operator rule (safe to schedule: exit 0 when nothing expired).

    Runbook: runbooks/whitelist.prune.md.
    """
    return _whitelist("prune", "whitelist.prune", env, target, dry_run, json, yes)


# ---- releases ----------------------------------------------------------------------------------
def _release(
    action: str, task_name: str, env: str | None, target: str, dry_run: bool, json: bool, yes: bool, **fields: Any
) -> int:
    from deploykit.release import commands

    request = commands.ReleaseRequest(task_name, env, target, dry_run, json, yes, **fields)
    return getattr(commands, action)(request)


@_task("release", _help("env", "app", "tag", *COMMON))
def release(c, env=None, app=None, tag=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Ship one app's image tag: its migrations, a new revision pinned to the digest, health verified.

    Runbook: runbooks/release.md. An unhealthy revision leaves (or returns) traffic to the previous one: exit 1.
    """
    return _release("release", "release", _require_env(env), target, dry_run, json, yes, app=app, tag=_tag(tag))


@_task("release.rollback", _help("env", "app", "revision", *COMMON))
def release_rollback(c, env=None, app=None, revision=None, target="sandbox", dry_run=False, json=False, yes=False):
    """Return an app's traffic to its previous healthy revision (or the one named), then verify it.

    Runbook: runbooks/release.rollback.md.
    """
    return _release("rollback", "release.rollback", _require_env(env), target, dry_run, json, yes, app=app, revision=revision)


@_task("release.status", _help("env", "target", "json"))
def release_status(c, env=None, target="sandbox", json=False):
    """Per app: serving revision, image and digest, health, replicas, traffic, who released it and when.

    Runbook: runbooks/release.status.md.
    """
    return _release("status", "release.status", _require_env(env), target, True, json, False)


@_task("release.promote", _help("app", "tag", "force", *COMMON, all="every app in config/prod.yaml"))
def release_promote(c, app=None, tag=None, all=False, force=False, target="sandbox", dry_run=False, json=False, yes=False):
    """Copy beta's image to prod's tag in the shared registry, by digest (importImage, never rebuilt).

    Runbook: runbooks/release.promote.md. A different digest already at the target is refused without --force.
    """
    return _release(
        "promote", "release.promote", "prod", target, dry_run, json, yes, app=app, tag=_tag(tag), all=all, force=force
    )


# ---- cost ----------------------------------------------------------------------------------------
@_task("cost", _help("env", "json"))
def cost_estimate(c, env=None, json=False):
    """A monthly estimate per resource from the SKUs the playbooks declare and the shipped price table.

    Runbook: runbooks/cost.md.
    """
    from deploykit.cost.commands import estimate

    return estimate(_require_env(env), as_json=json)


@_task("cost.refresh", _help("region", "dry-run", "json", "yes"))
def cost_refresh(c, region=None, dry_run=False, json=False, yes=False):
    """Rebuild the price table from the Azure Retail Prices API for the configured region.

    Runbook: runbooks/cost.refresh.md. A filter matching no row, or several, fails loudly.
    """
    from deploykit.cost.commands import refresh

    return refresh(region=region, dry_run=dry_run, as_json=json, yes=yes)


def _default(name: str, body: Task, *more: Task) -> Collection:
    """A collection whose first task is also the collection's own name (`invoke release`)."""
    collection = Collection(name)
    collection.add_task(body, default=True)
    for other in more:
        collection.add_task(other)
    return collection


ns = Collection(*STEP_TASKS, deploy, plan_, drift)
ns.add_collection(Collection("db", db_create, db_migrate, db_status))
ns.add_collection(Collection("vpn", vpn_root, vpn_client, vpn_revoke, vpn_list, vpn_profile))
ns.add_collection(Collection("secrets", secrets_set))
ns.add_collection(Collection("whitelist", whitelist_add, whitelist_list, whitelist_remove, whitelist_prune))
ns.add_collection(Collection("sandbox", sandbox_reset, sandbox_status))
ns.add_collection(Collection("runbooks", runbooks_check))
ns.add_collection(_default("release", release, release_rollback, release_status, release_promote))
ns.add_collection(_default("cost", cost_estimate, cost_refresh))
