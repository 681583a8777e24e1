"""The registry of numbered steps: one line each. A step is this line, its playbook, task and runbook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deploykit.paths import playbook_dir


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    scope: Literal["all", "shared", "env"]  # all: shared + environments; shared: no --env; env: one env
    uses_tag: bool = False  # deploys images: takes --tag (default: the env's image_tag)

    @property
    def playbook(self) -> Path:
        return playbook_dir() / f"{self.name}.yaml.j2"


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step("step1", "resource groups, tags and locks", "all"),
        Step("step2a", "shared Key Vault", "shared"),
        Step("step2b", "shared container registry", "shared"),
        Step("step3", "env data: vault, PostgreSQL, Redis, connection secrets", "env"),
        Step("step4", "app infrastructure: identity, App Configuration, Container Apps environment, roles", "env"),
        Step("step5", "the apps, then their health verified", "env", uses_tag=True),
        Step("step6", "private network: VNet, NSGs, VPN gateway, DNS resolver, private DNS zones", "env"),
        Step("step7", "private data: vault, PostgreSQL, Redis behind private endpoints, connection secrets", "env"),
        Step("step8", "app infrastructure inside the VNet: identity, App Configuration, environment, roles", "env"),
        Step("step9", "the apps from promoted images, then their health verified", "env", uses_tag=True),
    )
}


def run_first(step: str) -> str:
    """What to tell an operator whose task needs what a step creates (true before and after it exists)."""
    if step in STEPS:
        return f"run `invoke {step}` first"
    return f"{step} creates it, and this version has no `invoke {step}` yet; create it by hand or upgrade"
