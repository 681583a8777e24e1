"""Small helpers shared by the step tests: render specs and plan them against a sandbox."""

from __future__ import annotations

import shutil
from pathlib import Path

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.config import available_envs, load_platform
from deploykit.engine.model import Plan, ResourceSpec
from deploykit.engine.plan import compute_plan
from deploykit.engine.runner import RunOptions, converge, render_steps
from deploykit.paths import config_dir


def specs_for(steps: list[str], env: str | None = "beta") -> list[ResourceSpec]:
    platform = load_platform(config_dir(), [env] if env else available_envs(config_dir()))
    return render_steps(platform, steps, env, SANDBOX_SUBSCRIPTION)


def plan_for(sandbox, steps: list[str], env: str | None = "beta") -> Plan:
    return compute_plan(specs_for(steps, env), sandbox.provider)


def run(steps: list[str], env: str | None = "beta", task: str = "test", dry_run: bool = False) -> int:
    return converge(RunOptions(task, env, "sandbox", dry_run=dry_run, yes=True, all_envs=env is None), steps)


def spec(steps: list[str], address: str, env: str | None = "beta") -> ResourceSpec:
    return next(s for s in specs_for(steps, env) if s.address == address)


def set_yaml_value(target: Path, path: list[str], value: object) -> None:
    """Set (or, with None, delete) one key of a YAML file, addressed by its key path."""
    import yaml

    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def copy_project(target: Path, *extra: str) -> Path:
    """A project of its own at `target`: the repository's config/ and playbooks/ (and `extra` folders) copied.

    Run from there, the CLI takes it as the project root (the nearest folder with config/shared.yaml).
    """
    from tests.conftest import REPO

    for folder in ("config", "playbooks", *extra):
        shutil.copytree(REPO / folder, target / folder)
    return target
