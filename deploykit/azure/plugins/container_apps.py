"""Container apps: after apply, each app's latest revision must be healthy (deploykit/azure/health.py).

ARM reports an app Succeeded even when its new revision never starts (azure-facts-2.md 3.3), so
the step's result is checked: revision state, then the app's own health endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deploykit.azure.plugins import TypePlugin

if TYPE_CHECKING:
    from deploykit.engine.model import ResourceSpec
    from deploykit.engine.plan import StateCache


def check(specs: list[ResourceSpec], cache: StateCache, ctx: Any) -> list[str]:
    from deploykit.azure.health import check_apps

    return check_apps(specs, cache, ctx)


PLUGIN = TypePlugin(check=check)
