"""Per-type plug-ins: what a resource type needs beyond read, compare and PUT, looked up by type.

The engine asks `plugin_for(spec.type)` and knows no type by name. A plug-in may plan a type
itself (a secret's value is compared through the vault's data plane, never shown), apply it
(a role assignment that exists under another name is satisfied, not failed), supply a
reference's value (a secret's value), or ask that writes under one parent go one at a time
(PostgreSQL server parameters: parallel writes fail with ServerBusy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploykit.engine.model import Change, ResourceSpec
    from deploykit.engine.plan import StateCache


@dataclass(frozen=True)
class TypePlugin:
    plan: Callable[[ResourceSpec, StateCache], Change] | None = None
    apply: Callable[[Change, ResourceSpec, StateCache], Mapping[str, Any] | None] | None = None
    read_value: Callable[[ResourceSpec, str, StateCache], Any] | None = None
    serial_per_parent: bool = False
    # False: the plan reads this type where it lives (a secret's value, in the vault's data
    # plane), so the plan's read round sends no ARM GET for it; a reference to another field
    # still reads ARM when it is needed.
    arm_state: bool = True
    # After apply (and on a no-op run): problems with this type's resources that ARM state does
    # not show (an app whose new revision never became healthy). Gets every spec of the type and
    # the run's own StateCache: its get() may be of any age; use recent_read() or the provider
    # for live state.
    check: Callable[[list[ResourceSpec], StateCache, Any], list[str]] | None = None


GENERIC = TypePlugin()


@cache
def _table() -> dict[str, TypePlugin]:
    from deploykit.azure.plugins import container_apps, role_assignments, secrets

    return {
        "microsoft.keyvault/vaults/secrets": secrets.PLUGIN,
        "microsoft.authorization/roleassignments": role_assignments.PLUGIN,
        "microsoft.dbforpostgresql/flexibleservers/configurations": TypePlugin(serial_per_parent=True),
        "microsoft.app/containerapps": container_apps.PLUGIN,
    }


def plugin_for(resource_type: str) -> TypePlugin:
    return _table().get(resource_type.lower(), GENERIC)
