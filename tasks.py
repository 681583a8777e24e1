"""Invoke entry: one task per runbook; flags in, one engine call, exit status out.

Heavy imports (Azure SDKs, the engine) happen inside tasks so `invoke --list` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from invoke import Collection, Exit, task

from deploykit.errors import ApplyError, UserError

HELP = {
    "env": "environment: beta or prod",
    "dry-run": "plan only: no writes anywhere; works without Azure credentials",
    "json": "print exactly one JSON object (the plan and results) on stdout",
    "target": "sandbox (default, local emulator) or azure (real, always explicit)",
    "yes": "apply without asking for confirmation",
    "name": "name of the secret (one of provider_secrets in config/shared.yaml)",
    "file": "read the secret value from this file instead of standard input",
}


def _help(*flags: str, **overrides: str) -> dict[str, str]:
    """The shared help text for just the flags a task has (Invoke rejects help for others)."""
    return {**{flag: HELP[flag] for flag in flags}, **overrides}


COMMON = ("target", "dry-run", "json", "yes")


def _exits(func: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes leave with one line and status 2; apply failures with status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = func(*args, **kwargs)
        except UserError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except ApplyError as exc:
            raise Exit(f"failed: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
        if code:
            raise Exit(code=code)

    return wrapper


def _converge(task_name: str, steps: list[str], env: str | None, target: str, dry_run: bool, json: bool, yes: bool) -> int:
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
    from deploykit.runner import steps_for_env

    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _converge("deploy", steps_for_env(env), env, target, dry_run, json, yes)


@task(name="plan", help=_help("env", "target", "json"))
@_exits
def plan_(c, env=None, target="sandbox", json=False):
    """Show what deploy would change (a dry run).

    Runbook: runbooks/plan.md.
    """
    from deploykit.runner import steps_for_env

    if not env:
        raise UserError("--env: required; allowed: beta, prod")
    return _converge("plan", steps_for_env(env), env, target, True, json, False)


@task(name="set", help=_help("name", "file", *COMMON, env="whose vault: shared (default), beta or prod"))
@_exits
def secrets_set(c, name, file=None, env="shared", target="sandbox", dry_run=False, json=False, yes=False):
    """Store a provider secret in a vault (stdin or --file).

    Runbook: runbooks/secrets.set.md. Never pass a value on the command line.
    """
    from deploykit.vault_secrets import SecretRequest, set_secret

    return set_secret(SecretRequest(name=name, file=file, env=env, target=target, dry_run=dry_run, as_json=json, yes=yes))


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


ns = Collection(step1, step2a, step2b, deploy, plan_)
ns.add_collection(Collection("secrets", secrets_set))
ns.add_collection(Collection("sandbox", sandbox_reset, sandbox_status))
ns.add_collection(Collection("runbooks", runbooks_check))
