"""Soft-deleted resources that hold a name: detect them while planning, recover them when applying.

Only Key Vault today (azure-facts.md 4): a deleted vault keeps its global name until purged, and a
normal PUT then fails with 409 ConflictError; a PUT with createMode=recover restores it.
"""

from __future__ import annotations

from typing import Any

from deploykit.arm import ArmProvider
from deploykit.model import ResourceSpec

VAULT_TYPE = "microsoft.keyvault/vaults"


def find_recoverable(spec: ResourceSpec, provider: ArmProvider) -> str | None:
    """Why this absent resource will be recovered rather than created, or None."""
    if spec.type.lower() != VAULT_TYPE:
        return None
    location = str(spec.body.get("location", "")).lower().replace(" ", "")
    deleted = provider.read_deleted_vault(spec.name, location)
    if deleted is None:
        return None
    purge = deleted.get("properties", {}).get("scheduledPurgeDate", "unknown")
    return f"soft-deleted vault found (scheduled purge {purge}); will recover it, then re-apply declared properties"


def recover(spec: ResourceSpec, provider: ArmProvider) -> None:
    """Restore the soft-deleted resource; the caller then PUTs the declared body."""
    props: dict[str, Any] = spec.body.get("properties", {})
    body = {
        "location": spec.body.get("location"),
        "properties": {"tenantId": props.get("tenantId"), "sku": props.get("sku"), "createMode": "recover"},
    }
    provider.put(spec, body)
