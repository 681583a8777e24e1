"""Role assignments: satisfied when the same role is already assigned under another name.

Names are deterministic (references.assignment_name); an assignment of the same role to the
same principal at the same scope made by someone else (the portal, the CLI) has another name,
and Azure refuses a second one with 409 RoleAssignmentExists (azure-facts.md 8). That is the
desired state, so it plans and applies as unchanged with the reason. A principal Entra has not
replicated yet fails with PrincipalNotFound: retried with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deploykit.azure.plugins import TypePlugin
from deploykit.engine.model import Action, Change, ResourceSpec
from deploykit.engine.references import UNKNOWN
from deploykit.errors import AzureOperationError

if TYPE_CHECKING:
    from deploykit.engine.plan import StateCache

ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments/"
PRINCIPAL_RETRIES = (2.0, 4.0, 8.0, 16.0, 30.0)  # Entra replication of a new identity (about a minute)


def _role_guid(role_definition_id: str) -> str:
    return str(role_definition_id).rstrip("/").rsplit("/", 1)[-1].lower()


def existing_elsewhere(spec: ResourceSpec, body: Mapping[str, Any], cache: StateCache) -> str | None:
    """The name of an assignment of the same role to the same principal at this scope, if any."""
    props = body.get("properties") or {}
    principal = props.get("principalId")
    if not principal or principal is UNKNOWN:
        return None
    scope = spec.id.split(ASSIGNMENTS, 1)[0]
    found = cache.provider.list_at(scope + ASSIGNMENTS.rstrip("/"), spec.api_version, f"principalId eq '{principal}'")
    want = _role_guid(props.get("roleDefinitionId", ""))
    for item in found:
        item_props = item.get("properties") or {}
        same_scope = str(item_props.get("scope", "")).lower() == scope.lower()
        if same_scope and _role_guid(item_props.get("roleDefinitionId", "")) == want and item.get("name") != spec.name:
            return str(item.get("name"))
    return None


def plan(spec: ResourceSpec, cache: StateCache) -> Change:
    from deploykit.engine.plan import generic_plan

    change = generic_plan(spec, cache)
    if change.action is not Action.CREATE:
        return change
    other = existing_elsewhere(spec, cache.resolved(spec), cache)
    if other is None:
        return change
    return Change(
        spec.address,
        spec.type,
        spec.id,
        Action.UNCHANGED,
        f"this role is already assigned to this principal under another name ({other}); Azure allows one",
    )


def apply(change: Change, spec: ResourceSpec, cache: StateCache) -> Mapping[str, Any] | None:
    from deploykit.engine.runner import generic_apply

    for delay in (*PRINCIPAL_RETRIES, None):
        try:
            return generic_apply(change, spec, cache)
        except AzureOperationError as exc:
            if exc.code == "RoleAssignmentExists":
                return {"outcome": "unchanged: already assigned under another name (RoleAssignmentExists)"}
            if exc.code != "PrincipalNotFound" or delay is None:
                raise
            time.sleep(delay)
    return None


PLUGIN = TypePlugin(plan=plan, apply=apply)
