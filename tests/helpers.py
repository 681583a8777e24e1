"""Small helpers shared by the step tests: render specs and plan them against a sandbox."""

from __future__ import annotations

from deploykit.config import available_envs, load_platform
from deploykit.model import Plan, ResourceSpec
from deploykit.paths import config_dir
from deploykit.plan import compute_plan
from deploykit.runner import RunOptions, converge, render_steps
from deploykit.target import SANDBOX_SUBSCRIPTION


def specs_for(steps: list[str], env: str | None = "beta") -> list[ResourceSpec]:
    platform = load_platform(config_dir(), [env] if env else available_envs(config_dir()))
    return render_steps(platform, steps, env, SANDBOX_SUBSCRIPTION)


def plan_for(sandbox, steps: list[str], env: str | None = "beta") -> Plan:
    return compute_plan(specs_for(steps, env), sandbox.provider)


def run(steps: list[str], env: str | None = "beta", task: str = "test", dry_run: bool = False) -> int:
    return converge(RunOptions(task, env, "sandbox", dry_run=dry_run, yes=True, all_envs=env is None), steps)


def spec(steps: list[str], address: str, env: str | None = "beta") -> ResourceSpec:
    return next(s for s in specs_for(steps, env) if s.address == address)
