"""User-assigned identities and role assignments, and the questions asked of them.

The container-app runtime asks `principal_has_role` whether an identity may read a vault's
secrets or pull from a registry; the engine lists a principal's assignments at a scope
(`list_assignments`) to find one made under another name.

Shapes: managed-identity/IdentityCreate.json, IdentityGet.json; role-assignment/*.json
(tests/data/arm-examples); errors from azure-facts.md 8 and the issue threads named beside them.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

from deploykit.sandbox.armtype import PRIVATE, ArmType, State, now_iso
from deploykit.sandbox.bodies import properties, stored_body
from deploykit.sandbox.ids import ArmError, ParsedId

SANDBOX_TENANT = "00000000-0000-0000-0000-000000000000"  # the sandbox's tenant (= its subscription id)
# Who the sandbox says made an assignment (createdBy/updatedBy: the caller's object id in Azure).
DEPLOYER_OBJECT_ID = "00000000-0000-0000-0000-00000000d3b1"
# Entra replication: an assignment without principalType to an identity younger than this fails
# with PrincipalNotFound (azure-facts.md 8). A constant, not a fault knob: the faults live in the
# HTTP front; tests use a fresh identity.
PRINCIPAL_REPLICATION_SECONDS = 30.0

IDENTITY_TYPE = "microsoft.managedidentity/userassignedidentities"
ASSIGNMENT_TYPE = "microsoft.authorization/roleassignments"
ASSIGNMENTS_SEGMENT = "/providers/microsoft.authorization/roleassignments/"
ROLE_DEFINITIONS = "/providers/Microsoft.Authorization/roleDefinitions/"
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
PRINCIPAL_FILTER = re.compile(r"^principalId\s+eq\s+'([^']*)'$", re.IGNORECASE)


# ---- identities --------------------------------------------------------------------------------
def _identity_created(body: dict[str, Any]) -> None:
    """IdentityCreate.json: the service gives the identity its ids once; they never change."""
    props = body.setdefault("properties", {})
    props.update(principalId=str(uuid.uuid4()), clientId=str(uuid.uuid4()), tenantId=SANDBOX_TENANT)
    body[PRIVATE] = {"created": time.time()}


def _identity_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """IdentityGet.json (and IdentityCreate.json) answer the id with a lower-case `resourcegroups`."""
    out["id"] = re.sub("/resourcegroups/", "/resourcegroups/", out["id"], count=1, flags=re.IGNORECASE)


IDENTITY = ArmType(
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    provisioning_state=False,  # IdentityGet.json has none
    defaults=MappingProxyType({"properties": {"isolationScope": "None"}}),
    read_only=("properties.principalId", "properties.clientId", "properties.tenantId"),
    on_create=_identity_created,
    computed=_identity_computed,
)


# ---- role assignments --------------------------------------------------------------------------
def scope_of(assignment_id: str) -> str:
    """The scope part of an assignment id, as spelled in it."""
    at = assignment_id.lower().rfind(ASSIGNMENTS_SEGMENT)
    return assignment_id[:at] if at >= 0 else assignment_id


def role_guid(role_definition_id: Any) -> str:
    return str(role_definition_id).rstrip("/").rsplit("/", 1)[-1].lower()


def _within(scope: str, outer: str) -> bool:
    """`scope` is `outer` or below it (a vault is within its group and subscription)."""
    scope, outer = scope.lower().rstrip("/"), outer.lower().rstrip("/")
    return scope == outer or scope.startswith(outer + "/")


def _same_scope(one: str, other: str) -> bool:
    return one.lower().rstrip("/") == other.lower().rstrip("/")


def _assignments(state: State) -> Iterable[dict[str, Any]]:
    return (r for r in state["resources"].values() if r["type"].lower() == ASSIGNMENT_TYPE)


def _identity_with_principal(state: State, principal: str) -> dict[str, Any] | None:
    for record in state["resources"].values():
        if record["type"].lower() == IDENTITY_TYPE and properties(record["body"]).get("principalId") == principal:
            return record
    return None


def _assignment_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    if not GUID.match(parsed.name):
        # azure-sdk-for-python#4621, pulumi-azure-nextgen#194: Azure's answer to a non-GUID name
        raise ArmError(
            400,
            "InvalidRoleAssignmentId",
            f"The role assignment ID '{parsed.name}' is not valid. The role assignment ID must be a GUID.",
        )
    props = properties(request)
    principal = str(props.get("principalId", ""))
    role = role_guid(props.get("roleDefinitionId", ""))
    scope = scope_of(parsed.id)
    for record in _assignments(state):
        other = properties(record["body"])
        if (
            record["id"].lower() != parsed.key
            and _same_scope(scope_of(record["id"]), scope)
            and str(other.get("principalId", "")).lower() == principal.lower()
            and role_guid(other.get("roleDefinitionId", "")) == role
        ):
            raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")  # azure-facts.md 8
    identity = _identity_with_principal(state, principal)
    if identity is not None and "principalType" not in props:
        age = time.time() - float(identity["body"].get(PRIVATE, {}).get("created", 0))
        if age < PRINCIPAL_REPLICATION_SECONDS:
            # Azure/avdaccelerator#99, Azure/azure-powershell#16551: the replication-delay answer
            raise ArmError(
                400,
                "PrincipalNotFound",
                f"Principal {principal.replace('-', '')} does not exist in the directory {SANDBOX_TENANT}. Check that you "
                "have the correct principal ID. If you are creating this principal and then immediately assigning a "
                "role, this error might be related to a replication delay. In this case, set the role assignment "
                "principalType property to a value, such as ServicePrincipal, User, or Group.  "
                "See https://aka.ms/docs-principaltype",
            )
    body = stored_body(ASSIGNMENT, existing["body"] if existing else None, request)
    out = body.setdefault("properties", {})
    # RoleAssignments_Get.json / _CreateFor*.json answer the provider-level role definition id.
    out["roleDefinitionId"] = ROLE_DEFINITIONS + role
    if identity is not None:
        out.setdefault("principalType", "ServicePrincipal")
    out.update(updatedOn=now_iso(), updatedBy=DEPLOYER_OBJECT_ID)
    return body


def _assignment_created(body: dict[str, Any]) -> None:
    body.setdefault("properties", {}).update(createdOn=now_iso(), createdBy=DEPLOYER_OBJECT_ID)


def _assignment_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """RoleAssignments_CreateForResource.json: properties.scope is the id's scope part."""
    out.setdefault("properties", {})["scope"] = scope_of(out["id"])


ASSIGNMENT = ArmType(
    "Microsoft.Authorization/roleAssignments",
    provisioning_state=False,  # synchronous, no provisioningState (role-assignment/*.json)
    read_only=("properties.scope", "properties.createdOn", "properties.createdBy"),
    before_put=_assignment_before_put,
    on_create=_assignment_created,
    computed=_assignment_computed,
)

TYPES: tuple[ArmType, ...] = (IDENTITY, ASSIGNMENT)


# ---- questions -----------------------------------------------------------------------------------
def parse_filter(text: str | None) -> tuple[str | None, bool]:
    """(principal id, atScope()) from a roleAssignments $filter such as "atScope() and principalId eq 'x'"."""
    principal, at_scope = None, False
    for clause in re.split(r"\s+and\s+", (text or "").strip(), flags=re.IGNORECASE):
        if not clause:
            continue
        if clause.replace(" ", "").lower() == "atscope()":
            at_scope = True
        elif match := PRINCIPAL_FILTER.match(clause.strip()):
            principal = match.group(1)
        else:
            raise ArmError(400, "InvalidFilterInQueryString", f"The filter '{text}' is not supported.")
    return principal, at_scope


def list_assignments(state: State, scope: str, principal: str | None, at_scope: bool) -> list[dict[str, Any]]:
    """Records of the assignments a list at `scope` answers (Role Assignments - List For Scope).

    atScope(): those at or above the scope. Otherwise at, above or below it; a principal id
    (principalId eq) narrows to that principal.
    """
    found = []
    for record in _assignments(state):
        where = scope_of(record["id"])
        if not (_within(scope, where) or (not at_scope and _within(where, scope))):
            continue
        if principal is not None and str(properties(record["body"]).get("principalId", "")).lower() != principal.lower():
            continue
        found.append(record)
    return found


def has_role(state: State, principal_id: str, scope_id: str, role_guids: Iterable[str]) -> bool:
    """An assignment of one of these roles to the principal at the scope or any scope above it."""
    wanted = {role_guid(g) for g in role_guids}
    for record in _assignments(state):
        props = properties(record["body"])
        if (
            str(props.get("principalId", "")).lower() == principal_id.lower()
            and role_guid(props.get("roleDefinitionId", "")) in wanted
            and _within(scope_id, scope_of(record["id"]))
        ):
            return True
    return False
