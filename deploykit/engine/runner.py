"""The planner for numbered steps and `deploy`: render playbooks, read what exists, compare.

Each pending resource gets an applier (PUT, recover, delete, or wait for an operation still in
flight); the one flow (flow.py) shows, confirms, applies, audits and verifies.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deploykit.azure.target import OpenTarget, credentials_error, validate_target
from deploykit.config import Platform, available_envs, load_platform
from deploykit.engine.apply import InFlight
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.plan import StateCache, compute_plan
from deploykit.engine.playbook import render_playbook
from deploykit.engine.steps import STEPS
from deploykit.errors import ApplyError, AzureOperationError, ResourceLockedError, UserError
from deploykit.paths import config_dir, display

PLACEHOLDER_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
APPLY_WORKERS = 16  # they only send requests (waits are parked), so more than cores: I/O, not CPU


def load_for(options: RunOptions, extra_envs: tuple[str, ...] = ()) -> Platform:
    """Check --target and --env, then load shared config plus that environment's file."""
    validate_target(options.target)
    envs = available_envs(config_dir())
    if options.env not in (*envs, *extra_envs):
        allowed = ", ".join((*extra_envs, *envs))
        raise UserError(f"--env: {options.env!r} is not an environment; allowed: {allowed}")
    return load_platform(config_dir(), [options.env] if options.env in envs else [])


def render_steps(
    platform: Platform,
    step_names: Sequence[str],
    env: str | None,
    subscription_id: str,
    context: dict[str, ResourceSpec] | None = None,
    values: Mapping[str, Any] | None = None,
) -> list[ResourceSpec]:
    """Render each step's playbook for its scope; all steps together form one dependency graph.

    Steps that come before the requested ones in the registry and belong to the environment
    are rendered too, into `context` when given: references and role-assignment scopes may
    name their entries (they are read when referred to, never planned).
    """
    for name in step_names:
        if name not in STEPS:
            raise UserError(f"config/{env}.yaml: steps: {name!r} is not a step; allowed: {', '.join(STEPS)}")
        listed = platform.envs[env].steps if env and env in platform.envs else None
        if STEPS[name].scope == "env" and listed is not None and name not in listed:
            raise UserError(
                f"{name} is not a step of {env}: config/{env}.yaml steps lists {', '.join(listed)}; nothing was changed"
            )
    requested = set(step_names)
    order = list(STEPS)
    last = max((order.index(n) for n in requested), default=-1)
    env_steps = set(platform.envs[env].steps) if env and env in platform.envs else set()
    earlier = [n for n in order[:last] if n not in requested and (n in env_steps or STEPS[n].scope != "env")]
    rendered: dict[str, ResourceSpec] = {}
    specs: dict[str, ResourceSpec] = {}
    values = {**_base_values(platform, env), **(values or {})}
    for name in sorted(requested | set(earlier), key=order.index):
        step = STEPS[name]
        envs = platform.envs if step.scope == "all" else ({env: platform.envs[env]} if env and step.scope == "env" else {})
        if step.scope == "env" and not envs:
            continue
        ctx = {"shared": platform.shared, "envs": envs, "env": platform.envs.get(env) if env else None, **values}
        for spec in render_playbook(step.playbook, ctx, subscription_id, name, rendered):
            if spec.address in rendered:
                raise UserError(
                    f"{display(step.playbook)}: {spec.address}: address already used by {rendered[spec.address].step}"
                )
            rendered[spec.address] = spec
            if name in requested:
                specs[spec.address] = spec
    if context is not None:
        context.update({a: s for a, s in rendered.items() if a not in specs})
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


def plan_steps(ctx: RunContext, step_names: Sequence[str] | None, values: Mapping[str, Any] | None = None) -> Work:
    options = ctx.options
    validate_target(options.target)
    scopes = {STEPS[s].scope for s in step_names or () if s in STEPS}
    envs = [options.env] if options.env else (available_envs(config_dir()) if "all" in scopes and options.all_envs else [])
    ctx.platform = load_platform(config_dir(), envs)
    if step_names is None:
        step_names = list(ctx.platform.envs[options.env].steps) if options.env else []
    opened = _open(ctx)
    subscription = opened.provider.target.subscription_id if opened else PLACEHOLDER_SUBSCRIPTION
    context: dict[str, ResourceSpec] = {}
    specs = render_steps(ctx.platform, step_names, options.env, subscription, context, template_values(ctx, values))
    where = options.target + (f", env {options.env}" if options.env else ", every environment" if options.all_envs else "")
    title = f"Plan for {options.task} ({', '.join(step_names)}) on {where}"
    if opened is None:
        return Work(title, _plan(specs, None, ctx, None))
    cache = StateCache(opened.provider, {**context, **{s.address: s for s in specs}})
    ctx.state = cache
    read = _read_for_plan(specs, cache)
    if read and not options.tag:  # an explicit --tag sets images; otherwise what releases put there stays
        import contextlib

        from deploykit.engine.kept import keep_running_values

        with contextlib.suppress(AzureOperationError):  # the plan below reads the same state and reports it
            specs = keep_running_values(specs, cache)
    plan = _plan(specs, opened, ctx, cache, read=not read)
    _require_earlier_steps(plan, specs, context, cache, options.dry_run)
    return converge_work(title, specs, plan, cache, context, ctx)


def template_values(ctx: RunContext, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """This run's values for the templates: --tag overrides the env's image_tag."""
    return {**({"tag": ctx.options.tag} if ctx.options.tag else {}), **(extra or {})}


def _base_values(platform: Platform, env: str | None) -> dict[str, Any]:
    """What playbooks see besides config: role definition ids by name, the image tag."""
    from deploykit.config import parse_yaml, read_text_file
    from deploykit.paths import playbook_dir

    roles_file = playbook_dir() / "roles.yaml"
    roles = parse_yaml(read_text_file(roles_file, display(roles_file)), display(roles_file)) or {}
    env_cfg = platform.envs.get(env or "")
    return {"roles": roles, "tag": env_cfg.image_tag if env_cfg else "latest", "vpn_certificates": _vpn_certificates(env_cfg)}


def _vpn_certificates(env_cfg: Any) -> dict[str, Any] | None:
    """The gateway's roots and revocations from certs/<env>/index.json; None without one (left alone)."""
    if env_cfg is None or env_cfg.vpn is None or env_cfg.network is None:
        return None
    from deploykit.paths import certs_dir
    from deploykit.vpn.gateway_lists import declared_lists
    from deploykit.vpn.pki import CertStore

    return declared_lists(CertStore(certs_dir() / env_cfg.env))


def converge_work(
    title: str,
    specs: Sequence[ResourceSpec],
    plan: Plan,
    cache: StateCache,
    context: Mapping[str, ResourceSpec],
    ctx: RunContext | None = None,
) -> Work:
    """Appliers for the plan's pending changes over the specs' graph, and a verify that re-plans."""
    by_address = {s.address: s for s in specs}
    pending = [c.address for c in plan.pending]

    def verify() -> Plan:
        fresh = StateCache(cache.provider, {**context, **by_address})
        return compute_plan([by_address[a] for a in pending], cache.provider, cache=fresh)

    return Work(
        title,
        plan,
        appliers={c.address: functools.partial(apply_resource, c, by_address[c.address], cache) for c in plan.pending},
        depends_on=dependencies(specs),
        workers=APPLY_WORKERS,
        verify=verify,
        checks=_type_checks(specs, cache, ctx),
    )


def _type_checks(specs: Sequence[ResourceSpec], cache: StateCache, ctx: RunContext | None) -> Any:
    """The plug-ins' result checks (apps' health) over every spec of their type in this run."""
    from deploykit.azure.plugins import plugin_for

    by_type: dict[str, list[ResourceSpec]] = {}
    for spec in specs:
        if plugin_for(spec.type).check is not None:
            by_type.setdefault(spec.type, []).append(spec)
    if not by_type:
        return None

    def run_checks() -> list[str]:
        # The run's own cache: a check may start from a read recent_read allows (a no-op's apps
        # read moments ago, the GET that ended an app's operation); anything else it reads live.
        return [p for kind, group in by_type.items() for p in plugin_for(kind).check(group, cache, ctx)]  # type: ignore[misc]

    return run_checks


def dependencies(specs: Sequence[ResourceSpec]) -> dict[str, tuple[str, ...]]:
    """Each spec's depends_on, plus one-at-a-time chains where the type asks for it (ServerBusy)."""
    from deploykit.azure.plugins import plugin_for

    graph = {s.address: tuple(s.depends_on) for s in specs}
    previous: dict[str, str] = {}
    for spec in specs:
        if plugin_for(spec.type).serial_per_parent:
            parent = spec.id.lower().rsplit("/", 2)[0]
            if parent in previous:
                graph[spec.address] = (*graph[spec.address], previous[parent])
            previous[parent] = spec.address
    return graph


def _require_earlier_steps(
    plan: Plan, specs: Sequence[ResourceSpec], context: Mapping[str, ResourceSpec], cache: StateCache, dry_run: bool
) -> None:
    """A reference to an earlier step's entry that does not exist: run that step first."""
    from deploykit.engine.references import refs_in
    from deploykit.engine.steps import run_first

    if dry_run or not plan.pending:
        return
    for spec in specs:
        for address, _ in sorted(refs_in(spec.body)):
            if address in context and cache.get(address) is None:
                other = context[address]
                raise UserError(
                    f"{spec.address} needs {address} ({other.name}, {other.step}), which does not exist; {run_first(other.step)}"
                )


def _open(ctx: RunContext) -> OpenTarget | None:
    try:
        return ctx.target()
    except UserError as exc:
        if ctx.options.dry_run and ctx.options.target == "azure":
            ctx.reporter.warn(f"planning without reading Azure: {exc}")
            return None
        raise


def _read_for_plan(specs: Sequence[ResourceSpec], cache: StateCache) -> bool:
    """The plan's one round of reads, before kept values are taken from it; False when it failed
    (the plan then reads again and reports the error its own way)."""
    try:
        cache.read_for_plan(specs)
    except AzureOperationError:
        return False
    return True


def _plan(
    specs: list[ResourceSpec], opened: OpenTarget | None, ctx: RunContext, cache: StateCache | None, read: bool = True
) -> Plan:
    from deploykit.engine.plan import compute_plan, offline_plan

    if opened is None:
        return offline_plan(specs, "no Azure subscription or credentials")
    try:
        return compute_plan(specs, opened.provider, cache=cache, read=read)
    except AzureOperationError as exc:
        if exc.code == "AuthenticationFailed" and ctx.options.dry_run:
            ctx.reporter.warn(f"planning without reading Azure: {exc.message}")
            return offline_plan(specs, "no Azure credentials")
        if exc.code == "AuthenticationFailed":
            raise credentials_error(exc) from None
        raise ApplyError(f"could not read current state: {exc}") from None


def apply_resource(change: Change, spec: ResourceSpec, cache: StateCache) -> InFlight | Mapping[str, Any] | None:
    """Make one resource match its spec; errors keep Azure's code, with a hint where we have one.

    An operation Azure accepted but has not finished comes back as an InFlight, whose checks
    get the same hints.
    """
    from deploykit.azure.plugins import plugin_for

    plugin = plugin_for(spec.type)
    cache.writing(spec.address)
    if plugin.apply is not None:
        return _hinted(lambda: plugin.apply(change, spec, cache))
    return _hinted(lambda: generic_apply(change, spec, cache))


def _hinted(call: Callable[[], Any]) -> Any:
    """Run an applier or an in-flight check, adding our hints to Azure's errors."""
    try:
        result = call()
    except ResourceLockedError as exc:
        raise ResourceLockedError(exc.code, f"blocked by a management lock (never lifted automatically): {exc.message}") from None
    except AzureOperationError as exc:
        if exc.code == "ResourceGroupNotFound":
            raise AzureOperationError(exc.code, exc.message + " (run step1 first: the resource group is missing)") from None
        if exc.code == "PreconditionFailed":
            raise AzureOperationError(exc.code, exc.message + " (someone wrote it while this run applied; run again)") from None
        raise
    if isinstance(result, InFlight):
        return InFlight(lambda: _hinted(result.check), result.delay)
    return result


def generic_apply(change: Change, spec: ResourceSpec, cache: StateCache) -> InFlight | Mapping[str, Any] | None:
    """PUT (after recovering or waiting where planned) the body with references resolved now."""
    if change.action is Action.WAIT:
        return _wait_then_write(change, spec, cache)
    return _write(change, spec, cache)


def _write(change: Change, spec: ResourceSpec, cache: StateCache) -> InFlight | Mapping[str, Any] | None:
    from deploykit.azure.recovery import recover
    from deploykit.engine.compare import keep_undeclared, rules_for
    from deploykit.engine.plan import create_only_differences, forces_new
    from deploykit.engine.references import Unresolved

    provider = cache.provider
    if change.action is Action.RECOVER:
        recover(spec, provider)
    if change.action is Action.DELETE:
        provider.delete(spec.id, spec.api_version)
        cache.set(spec.address, None)
        return None
    fixed = create_only_differences(spec, {p.split(" (", 1)[0]: v for p, v in change.diff.items()})
    if fixed and change.action is Action.UPDATE:
        raise ApplyError(
            f"{spec.address}: {', '.join(fixed)} is create-only and differs: {forces_new(spec)}; "
            "this tool never replaces it (see the step's runbook: Rollback)"
        )
    try:
        body = cache.resolved(spec, strict=True)
    except Unresolved as exc:
        raise ApplyError(f"{spec.address}: a referenced value is still unknown ({exc})") from None
    if_match = None
    if change.action is Action.UPDATE:
        body = _without(body, spec.create_only)  # create-only fields are never re-sent
        rules = rules_for(spec.type)
        if rules.kept_from_actual or rules.extra_items_kept:
            # Read again now: another task (whitelist.add) may have written since the plan was read.
            current = provider.read(spec.id, spec.api_version)
            body = keep_undeclared(spec.type, body, current)
            if_match = (current or {}).get("etag")
    return _put(spec, body, cache, if_match)


def _put(spec: ResourceSpec, body: Mapping[str, Any], cache: StateCache, if_match: str | None) -> InFlight | None:
    """Send the PUT; while Azure works on it, the scheduler polls it (no worker waits)."""
    from deploykit.azure.operations import begin_put

    operation = begin_put(cache.provider, spec, body, if_match)

    def check() -> InFlight | None:
        if operation.done or operation.poll():
            cache.set(spec.address, operation.result, read_back=operation.read_back)
            return None
        return InFlight(check, operation.delay)

    if operation.done:
        return check()
    return InFlight(check, operation.delay)


def _without(body: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    out = dict(body)
    for path in paths:
        head, _, rest = path.partition(".")
        if head in out and rest and isinstance(out[head], Mapping):
            out[head] = _without(out[head], [rest])
        elif not rest:
            out.pop(head, None)
    return out


def _wait_then_write(change: Change, spec: ResourceSpec, cache: StateCache) -> InFlight | Mapping[str, Any] | None:
    """An operation found in flight (a killed run's): re-read until it ends, then converge (never resend first)."""
    from deploykit.azure.arm import backoff_delays
    from deploykit.azure.operations import WAIT_LIMIT_SECONDS
    from deploykit.engine.plan import plan_resource, provisioning_state, state_is_terminal

    provider = cache.provider
    delays = backoff_delays(max(0.2, float(provider.target.polling_interval)), float(provider.target.polling_interval_max))
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS

    def check() -> InFlight | Mapping[str, Any] | None:
        actual = provider.read(spec.id, spec.api_version)
        state = provisioning_state(actual)
        if actual is not None and not state_is_terminal(state):
            if time.monotonic() > deadline:
                raise ApplyError(f"{spec.address}: still {state} after {WAIT_LIMIT_SECONDS // 3600} h; check it in the portal")
            return InFlight(check, next(delays))
        cache.forget(spec.address)
        again = plan_resource(spec, provider, cache)
        if again.action is Action.UNCHANGED:
            return {"waited_for": state or "gone"}
        return _write(again, spec, cache)

    return check()


def apply_plan(
    plan: Plan, specs: Mapping[str, ResourceSpec], provider: Any, workers: int = APPLY_WORKERS, in_flight: int | None = None
) -> list[Any]:
    """Apply a plan's ARM changes over their graph, without the flow (benchmarks and engine tests)."""
    import threading

    from deploykit.engine.apply import execute, in_flight_limit

    cache = StateCache(provider, specs)
    appliers = {c.address: functools.partial(apply_resource, c, specs[c.address], cache) for c in plan.pending}
    depends_on = dependencies(list(specs.values()))
    limit = in_flight if in_flight is not None else in_flight_limit()
    return execute(
        plan.pending, appliers, depends_on, workers, lambda outcome: None, threading.Event(), in_flight_limit=limit
    ).outcomes
