"""Soft-deleted resources that hold a name: detect them while planning, recover them when applying.

Only Key Vault today (azure-facts.md 4): a deleted vault keeps its global name until purged, and a
normal PUT then fails with 409 ConflictError; a PUT with createMode=recover restores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploykit.azure.arm import ArmProvider
from deploykit.engine.model import ResourceSpec


def find_recoverable(spec: ResourceSpec, provider: ArmProvider) -> str | None:
    """Why this absent resource will be recovered rather than created, or None (per-type plug-in)."""
    plugin = PLUGINS.get(spec.type.lower())
    return plugin[0](spec, provider) if plugin else None


def recover(spec: ResourceSpec, provider: ArmProvider) -> None:
    """Restore the soft-deleted resource; the caller then PUTs the declared body."""
    PLUGINS[spec.type.lower()][1](spec, provider)


def _find_deleted_vault(spec: ResourceSpec, provider: ArmProvider) -> str | None:
    location = str(spec.body.get("location", "")).lower().replace(" ", "")
    deleted = provider.read_deleted_vault(spec.name, location)
    if deleted is None:
        return None
    purge = deleted.get("properties", {}).get("scheduledPurgeDate", "unknown")
    return f"soft-deleted vault found (scheduled purge {purge}); will recover it, then re-apply declared properties"


def _recover_vault(spec: ResourceSpec, provider: ArmProvider) -> None:
    props: dict[str, Any] = spec.body.get("properties", {})
    body = {
        "location": spec.body.get("location"),
        "properties": {"tenantId": props.get("tenantId"), "sku": props.get("sku"), "createMode": "recover"},
    }
    provider.put(spec, body)


# Types whose deleted resources keep their name (lower-case type -> (find, recover)).
PLUGINS: dict[str, tuple[Callable[[ResourceSpec, ArmProvider], str | None], Callable[[ResourceSpec, ArmProvider], None]]] = {
    "microsoft.keyvault/vaults": (_find_deleted_vault, _recover_vault),
}
