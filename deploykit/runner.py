"""Converge steps: load config, render, plan, show, confirm, apply, verify empty, report.

The one flow every step task, `deploy` and `plan` share (design.md: converge, then verify empty).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from deploykit.config import Platform, available_envs, load_platform
from deploykit.errors import ApplyError, AzureOperationError, UserError
from deploykit.model import Plan, ResourceSpec
from deploykit.paths import config_dir, display
from deploykit.playbook import render_playbook
from deploykit.report import Reporter, audit, summary_line
from deploykit.steps import STEPS
from deploykit.target import OpenTarget, open_target, sandbox_control, validate_target

PLACEHOLDER_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class RunOptions:
    """What every task is asked: which task, env and target, dry run, JSON, confirmation."""

    task: str
    env: str | None
    target: str = "sandbox"
    dry_run: bool = False
    as_json: bool = False
    yes: bool = False


def load_for(options: RunOptions, extra_envs: tuple[str, ...] = ()) -> Platform:
    """Check --target and --env, then load shared config plus that environment's file."""
    validate_target(options.target)
    envs = available_envs(config_dir())
    if options.env not in (*envs, *extra_envs):
        allowed = ", ".join((*extra_envs, *envs))
        raise UserError(f"--env: {options.env!r} is not an environment; allowed: {allowed}")
    return load_platform(config_dir(), [options.env] if options.env in envs else [])


def render_steps(platform: Platform, step_names: Sequence[str], env: str | None, subscription_id: str) -> list[ResourceSpec]:
    """Render each step's playbook for its scope; all steps together form one dependency graph."""
    specs: dict[str, ResourceSpec] = {}
    for name in step_names:
        step = STEPS.get(name)
        if step is None:
            raise UserError(f"config/{env}.yaml: steps: {name!r} is not a step; allowed: {', '.join(STEPS)}")
        envs = platform.envs if step.scope == "all" else ({env: platform.envs[env]} if env and step.scope == "env" else {})
        context = {"shared": platform.shared, "envs": envs, "env": platform.envs.get(env) if env else None}
        for spec in render_playbook(step.playbook, context, subscription_id, name):
            if spec.address in specs:
                raise UserError(f"{display(step.playbook)}: {spec.address}: address already used by {specs[spec.address].step}")
            specs[spec.address] = spec
    return list(specs.values())


def converge(options: RunOptions, step_names: Sequence[str] | None = None) -> int:
    """Plan and (unless dry-run) apply the steps; None means every step the env's config lists.

    Returns the exit status (0 ok, 1 apply failed).
    """
    validate_target(options.target)
    scopes = {STEPS[s].scope for s in step_names or () if s in STEPS}
    envs = [options.env] if options.env else (available_envs(config_dir()) if "all" in scopes else [])
    platform = load_platform(config_dir(), envs)
    if step_names is None:
        step_names = list(platform.envs[options.env].steps) if options.env else []
    reporter = Reporter(options.task, options.env, options.target, options.dry_run, options.as_json)
    with ExitStack() as stack:
        opened = _open(stack, platform, options, reporter)
        subscription = opened.provider.target.subscription_id if opened else PLACEHOLDER_SUBSCRIPTION
        specs = render_steps(platform, step_names, options.env, subscription)
        by_address = {s.address: s for s in specs}
        plan = _plan(specs, opened, options, reporter)
        where = f"{options.target}" + (f", env {options.env}" if options.env else "")
        reporter.show_plan(plan, f"Plan for {options.task} ({', '.join(step_names)}) on {where}")
        if options.dry_run or not plan.pending:
            if not plan.pending:
                reporter.info("No changes. Everything matches the desired state.")
            finish(reporter, opened, plan)
            return 0
        confirm(options, plan, reporter)
        from deploykit.apply import apply_plan

        outcomes = apply_plan(
            plan,
            by_address,
            opened.provider,
            on_done=lambda o: reporter.progress(o.change, o.ok, o.seconds, f"{o.error_code}: {o.error}" if not o.ok else None),
        )
        audit(
            options.task,
            options.env,
            options.target,
            [
                {
                    "address": o.change.address,
                    "type": o.change.type,
                    "id": o.change.id,
                    "action": o.change.action.value,
                    "result": "ok" if o.ok else "failed",
                    "error_code": o.error_code,
                    "changed_fields": sorted(o.change.diff),
                }
                for o in outcomes
            ],
        )
        failed = [o for o in outcomes if not o.ok]
        applied = {o.change.address for o in outcomes if o.ok}
        from deploykit.plan import compute_plan

        verify = compute_plan([by_address[a] for a in sorted(applied)], opened.provider)
        leftover = list(verify.pending)
        for change in leftover:
            reporter.warn(f"{change.address} did not converge: {change.reason}")
        errors = {o.change.address: f"{o.error_code}: {o.error}" for o in failed}
        finish(reporter, opened, plan, len(failed) + len(leftover), errors)
        return 1 if failed or leftover else 0


def _open(stack: ExitStack, platform: Platform, options: RunOptions, reporter: Reporter) -> OpenTarget | None:
    try:
        return stack.enter_context(open_target(platform, options.target))
    except UserError as exc:
        if options.dry_run and options.target == "azure":
            reporter.warn(f"planning without reading Azure: {exc}")
            return None
        raise


def _plan(specs: list[ResourceSpec], opened: OpenTarget | None, options: RunOptions, reporter: Reporter) -> Plan:
    from deploykit.plan import compute_plan, offline_plan

    if opened is None:
        return offline_plan(specs, "no Azure subscription or credentials")
    try:
        return compute_plan(specs, opened.provider)
    except AzureOperationError as exc:
        if exc.code == "AuthenticationFailed" and options.dry_run:
            reporter.warn(f"planning without reading Azure: {exc.message}")
            return offline_plan(specs, "no Azure credentials")
        if exc.code == "AuthenticationFailed":
            raise UserError(f"--target azure: no usable Azure credentials ({exc.message}); run `az login`") from None
        raise ApplyError(f"could not read current state: {exc}") from None


def confirm(options: RunOptions, plan: Plan, reporter: Reporter) -> None:
    """Real Azure and prod changes are confirmed by a person, or by --yes."""
    if options.yes or (options.target == "sandbox" and options.env != "prod"):
        return
    what = f"{len(plan.pending)} change(s) on {options.target}" + (f" for {options.env}" if options.env else "")
    if not sys.stdin.isatty():
        raise UserError(f"--yes: required to apply {what} without a terminal (nothing was changed)")
    reporter.console.print(f"Apply {what}? Type 'yes' to continue: ", end="")
    if input().strip().lower() != "yes":
        raise UserError("not confirmed; nothing was changed")


def finish(
    reporter: Reporter, opened: OpenTarget | None, plan: Plan, failed: int = 0, errors: dict[str, str] | None = None
) -> None:
    """Close a run: sandbox request counts, the failure line, and the --json document."""
    if opened is not None and opened.sandbox_url:
        counts = sandbox_control(
            opened.sandbox_url, str(opened.provider.target.connection_verify), "GET", f"/journal?since={opened.journal_start}"
        )["counts"]
        reporter.info(f"sandbox requests this run: {counts['requests']} ({counts['reads']} reads, {counts['writes']} writes)")
    if failed:
        reporter.info(f"Failed: {failed}. " + summary_line(plan.summary(failed=failed)))
    if reporter.as_json:
        changes = []
        for change in plan.changes:
            item = change.to_json()
            if errors and change.address in errors:
                item["error"] = errors[change.address]
            changes.append(item)
        reporter.emit_json(plan, changes, failed)
