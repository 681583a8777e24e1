"""The planner for numbered steps and `deploy`: render playbooks, read what exists, compare.

Each pending resource gets an applier (PUT, recover, delete, or wait for an operation still in
flight); the one flow (flow.py) shows, confirms, applies, audits and verifies.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from deploykit.azure.target import OpenTarget, validate_target
from deploykit.config import Platform, available_envs, load_platform
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.playbook import render_playbook
from deploykit.engine.steps import STEPS
from deploykit.errors import ApplyError, AzureOperationError, ResourceLockedError, UserError
from deploykit.paths import config_dir, display

PLACEHOLDER_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
APPLY_WORKERS = 8
WAIT_LIMIT_SECONDS = 3 * 3600  # a VPN gateway takes most of an hour; nothing we manage takes three


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
    _refuse_cycles(specs)
    return list(specs.values())


def _refuse_cycles(specs: Mapping[str, ResourceSpec]) -> None:
    """A dependency cycle is a playbook mistake: refused before anything is planned or sent."""
    import graphlib

    graph = {a: [d for d in s.depends_on if d in specs] for a, s in specs.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        steps = sorted({specs[a].step for a in exc.args[1]})
        raise UserError(f"playbooks ({', '.join(steps)}): depends_on forms a cycle: {cycle}; allowed: no cycles") from None


def converge(options: RunOptions, step_names: Sequence[str] | None = None) -> int:
    """Plan and (unless dry-run) apply the steps; None means every step the env's config lists."""
    return run(options, functools.partial(plan_steps, step_names=step_names))


def plan_steps(ctx: RunContext, step_names: Sequence[str] | None) -> Work:
    options = ctx.options
    validate_target(options.target)
    scopes = {STEPS[s].scope for s in step_names or () if s in STEPS}
    envs = [options.env] if options.env else (available_envs(config_dir()) if "all" in scopes and options.all_envs else [])
    ctx.platform = load_platform(config_dir(), envs)
    if step_names is None:
        step_names = list(ctx.platform.envs[options.env].steps) if options.env else []
    opened = _open(ctx)
    subscription = opened.provider.target.subscription_id if opened else PLACEHOLDER_SUBSCRIPTION
    specs = render_steps(ctx.platform, step_names, options.env, subscription)
    by_address = {s.address: s for s in specs}
    plan = _plan(specs, opened, ctx)
    where = options.target + (f", env {options.env}" if options.env else ", every environment" if options.all_envs else "")
    title = f"Plan for {options.task} ({', '.join(step_names)}) on {where}"
    if opened is None:
        return Work(title, plan)
    provider = opened.provider
    pending = [c.address for c in plan.pending]

    def verify() -> Plan:
        from deploykit.engine.plan import compute_plan

        return compute_plan([by_address[a] for a in pending], provider)

    return Work(
        title,
        plan,
        appliers={c.address: functools.partial(apply_resource, c, by_address[c.address], provider) for c in plan.pending},
        depends_on={a: s.depends_on for a, s in by_address.items()},
        workers=APPLY_WORKERS,
        verify=verify,
    )


def _open(ctx: RunContext) -> OpenTarget | None:
    try:
        return ctx.target()
    except UserError as exc:
        if ctx.options.dry_run and ctx.options.target == "azure":
            ctx.reporter.warn(f"planning without reading Azure: {exc}")
            return None
        raise


def _plan(specs: list[ResourceSpec], opened: OpenTarget | None, ctx: RunContext) -> Plan:
    from deploykit.engine.plan import compute_plan, offline_plan

    if opened is None:
        return offline_plan(specs, "no Azure subscription or credentials")
    try:
        return compute_plan(specs, opened.provider)
    except AzureOperationError as exc:
        if exc.code == "AuthenticationFailed" and ctx.options.dry_run:
            ctx.reporter.warn(f"planning without reading Azure: {exc.message}")
            return offline_plan(specs, "no Azure credentials")
        if exc.code == "AuthenticationFailed":
            raise UserError(f"--target azure: no usable Azure credentials ({exc.message}); run `az login`") from None
        raise ApplyError(f"could not read current state: {exc}") from None


def apply_resource(change: Change, spec: ResourceSpec, provider: Any) -> Mapping[str, Any] | None:
    """Make one resource match its spec; errors keep Azure's code, with a hint where we have one."""
    from deploykit.azure.recovery import recover
    from deploykit.engine.plan import plan_resource

    try:
        if change.action is Action.WAIT:
            state = wait_for_operation(spec, provider)
            if plan_resource(spec, provider).action is Action.UNCHANGED:
                return {"waited_for": state}
        if change.action is Action.RECOVER:
            recover(spec, provider)
        if change.action is Action.DELETE:
            provider.delete(spec.id, spec.api_version)
        else:
            provider.put(spec, spec.body)
    except ResourceLockedError as exc:
        raise ResourceLockedError(exc.code, f"blocked by a management lock (never lifted automatically): {exc.message}") from None
    except AzureOperationError as exc:
        if exc.code == "ResourceGroupNotFound":
            raise AzureOperationError(exc.code, exc.message + " (run step1 first: the resource group is missing)") from None
        raise
    return None


def wait_for_operation(spec: ResourceSpec, provider: Any) -> str:
    """Poll until the resource's provisioning state is terminal (after a killed run, say)."""
    from deploykit.azure.arm import backoff_delays
    from deploykit.engine.plan import provisioning_state, state_is_terminal

    delays = backoff_delays(max(0.2, float(provider.target.polling_interval)), float(provider.target.polling_interval_max))
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        actual = provider.read(spec.id, spec.api_version)
        state = provisioning_state(actual)
        if actual is None or state_is_terminal(state):
            return state or "gone"
        if time.monotonic() > deadline:
            raise ApplyError(f"{spec.address}: still {state} after {WAIT_LIMIT_SECONDS // 3600} h; check it in the portal")
        time.sleep(next(delays))


def apply_plan(plan: Plan, specs: Mapping[str, ResourceSpec], provider: Any, workers: int = APPLY_WORKERS) -> list[Any]:
    """Apply a plan's ARM changes over their graph, without the flow (benchmarks and engine tests)."""
    import threading

    from deploykit.engine.apply import execute

    appliers = {c.address: functools.partial(apply_resource, c, specs[c.address], provider) for c in plan.pending}
    depends_on = {a: s.depends_on for a, s in specs.items()}
    return execute(plan.pending, appliers, depends_on, workers, lambda outcome: None, threading.Event()).outcomes
