"""The sandbox's ARM state: resources, soft-deleted vaults, secrets, operations. Knows no HTTP.

Methods are named after the API's verbs; failures raise ArmError, which the HTTP front turns
into ARM error bodies in one place.
"""

from __future__ import annotations

import copy
import json
import os
import secrets as pysecrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deploykit.sandbox import providers

STATE_VERSION = 1


class ArmError(Exception):
    """An ARM error answer: HTTP status, Azure error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedId:
    """An ARM resource id split into what the store needs."""

    id: str
    subscription: str
    resource_group: str | None
    type: str  # e.g. Microsoft.KeyVault/vaults, Microsoft.Resources/resourceGroups
    name: str
    container: str | None  # the id that must exist first: parent, scope or group

    @property
    def key(self) -> str:
        return self.id.lower()


def parse_id(path: str) -> ParsedId:
    seg = [s for s in path.strip("/").split("/") if s]
    if len(seg) < 4 or seg[0].lower() != "subscriptions":
        raise ArmError(400, "InvalidResourceId", f"'{path}' is not a valid resource id")
    rid = "/" + "/".join(seg)
    rg = seg[3] if seg[2].lower() == "resourcegroups" else None
    if len(seg) == 4 and rg is not None:
        return ParsedId(rid, seg[1], rg, "Microsoft.Resources/resourceGroups", rg, None)
    lowered = [s.lower() for s in seg]
    if "providers" not in lowered:
        raise ArmError(400, "InvalidResourceId", f"'{path}' is not a valid resource id")
    p = len(lowered) - 1 - lowered[::-1].index("providers")
    rest = seg[p + 2 :]
    if len(rest) < 2 or len(rest) % 2:
        raise ArmError(400, "InvalidResourceType", f"'{path}' does not name a resource type and name")
    rtype = seg[p + 1] + "/" + "/".join(rest[0::2])
    container = "/" + "/".join(seg[:-2]) if len(rest) > 2 else "/" + "/".join(seg[:p])
    if container.lower() == f"/subscriptions/{seg[1]}".lower():
        container = None
    return ParsedId(rid, seg[1], rg, rtype, rest[-1], container)


class SandboxState:
    """Thread-safe state, persisted to one JSON file after each change (mode 0600: it holds secrets)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._data = self._empty()
        if path is not None and path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if loaded.get("version") == STATE_VERSION:
                self._data = loaded

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"version": STATE_VERSION, "resources": {}, "deleted_vaults": {}, "secrets": {}, "operations": {}}

    # ---- persistence -------------------------------------------------------------------
    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self._data, handle)
        os.replace(tmp, self._path)

    def reset(self) -> None:
        with self._lock:
            self._data = self._empty()
            self._save()

    # ---- resources ---------------------------------------------------------------------
    def get_resource(self, rid: str) -> dict[str, Any]:
        parsed = parse_id(rid)
        with self._lock:
            self._settle()
            record = self._data["resources"].get(parsed.key)
            if record is None:
                self._raise_not_found(parsed)
            return copy.deepcopy(record)

    def put_resource(self, rid: str, request: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Create or replace; returns (created, stored record). Async types stay 'busy' until settled."""
        parsed = parse_id(rid)
        tl = parsed.type.lower()
        with self._lock:
            self._settle()
            self._require_container(parsed)
            self._check_locks(parsed, "write", readonly_only=True)
            existing = self._data["resources"].get(parsed.key)
            if tl == "microsoft.resources/resourcegroups" and existing is not None:
                have, want = existing["body"].get("location", ""), request.get("location", "")
                if have.lower() != str(want).lower():
                    raise ArmError(
                        409,
                        "InvalidResourceGroupLocation",
                        f"Invalid resource group location '{want}'. The Resource group already exists in location '{have}'.",
                    )
            if tl == "microsoft.keyvault/vaults":
                recovered = self._vault_create_mode(parsed, existing, request)
                if recovered is not None:
                    return True, recovered
            self._check_global_name(parsed, existing)
            body = providers.stored_body(tl, existing["body"] if existing else None, request)
            record = {"id": existing["id"] if existing else parsed.id, "type": parsed.type, "body": body}
            self._data["resources"][parsed.key] = record
            self._save()
            return existing is None, copy.deepcopy(record)

    def delete_resource(self, rid: str) -> None:
        parsed = parse_id(rid)
        with self._lock:
            self._settle()
            if parsed.key not in self._data["resources"]:
                self._raise_not_found(parsed)
            self._check_locks(parsed, "delete")
            doomed = [k for k in self._data["resources"] if k == parsed.key or k.startswith(parsed.key + "/")]
            for key in doomed:
                record = self._data["resources"].pop(key)
                if record["type"].lower() == "microsoft.keyvault/vaults":
                    self._soft_delete_vault(record)
            self._save()

    def set_provisioning_state(self, rid: str, state: str) -> None:
        with self._lock:
            record = self._data["resources"].get(rid.lower())
            if record is not None:
                record["body"].setdefault("properties", {})["provisioningState"] = state
                self._save()

    def mutate(self, rid: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change stored fields directly (drift, as if someone used the portal): dotted path -> value."""
        with self._lock:
            record = self._data["resources"].get(rid.lower())
            if record is None:
                self._raise_not_found(parse_id(rid))
            for dotted, value in changes.items():
                node = record["body"]
                *parents, leaf = dotted.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
            self._save()
            return copy.deepcopy(record)

    def seed(self, rid: str, body: dict[str, Any]) -> None:
        """Store a body as-is (test fixtures such as an existing gateway); no checks, no defaults."""
        parsed = parse_id(rid)
        with self._lock:
            self._data["resources"][parsed.key] = {"id": parsed.id, "type": parsed.type, "body": copy.deepcopy(body)}
            self._save()

    def list_resources(self) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            return [copy.deepcopy(r) for r in self._data["resources"].values()]

    # ---- checks ------------------------------------------------------------------------
    def _raise_not_found(self, parsed: ParsedId) -> None:
        if parsed.type.lower() == "microsoft.resources/resourcegroups":
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.name}' could not be found.")
        if (
            parsed.resource_group
            and f"/subscriptions/{parsed.subscription}/resourcegroups/{parsed.resource_group}".lower()
            not in self._data["resources"]
        ):
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.resource_group}' could not be found.")
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{parsed.type}/{parsed.name}' under resource group '{parsed.resource_group}' was not found.",
        )

    def _require_container(self, parsed: ParsedId) -> None:
        if parsed.resource_group and parsed.type.lower() != "microsoft.resources/resourcegroups":
            rg_key = f"/subscriptions/{parsed.subscription}/resourcegroups/{parsed.resource_group}".lower()
            if rg_key not in self._data["resources"]:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parsed.resource_group}' could not be found.")
        if parsed.container and parsed.container.lower() not in self._data["resources"]:
            raise ArmError(
                404,
                "ParentResourceNotFound",
                f"Can not perform requested operation on nested resource. Parent resource '{parsed.container}' not found.",
            )

    def _check_locks(self, parsed: ParsedId, operation: str, readonly_only: bool = False) -> None:
        """Locks are inherited by everything below their scope (azure-facts.md 3.2)."""
        if parsed.type.lower() == "microsoft.authorization/locks":
            return
        for record in self._data["resources"].values():
            if record["type"].lower() != "microsoft.authorization/locks":
                continue
            level = record["body"].get("properties", {}).get("level", "")
            if readonly_only and level != "ReadOnly":
                continue
            scope = record["id"].lower().split("/providers/microsoft.authorization/locks/")[0]
            if parsed.key == scope or parsed.key.startswith(scope + "/"):
                raise ArmError(
                    409,
                    "ScopeLocked",
                    f"The scope '{parsed.id}' cannot perform {operation} operation because following scope(s) "
                    f"are locked: '{record['id'].split('/providers/Microsoft.Authorization/locks/')[0]}'. "
                    "Please remove the lock and try again.",
                )

    def _check_global_name(self, parsed: ParsedId, existing: dict[str, Any] | None) -> None:
        """Vault and registry names are DNS labels, unique across all of Azure."""
        tl = parsed.type.lower()
        if existing is not None or tl not in {"microsoft.keyvault/vaults", "microsoft.containerregistry/registries"}:
            return
        for record in self._data["resources"].values():
            if record["type"].lower() == tl and record["id"].rsplit("/", 1)[-1].lower() == parsed.name.lower():
                raise ArmError(409, "NameNotAvailable", f"The name '{parsed.name}' is already in use.")

    # ---- Key Vault soft delete (azure-facts.md 4) ----------------------------------------
    def _vault_create_mode(self, parsed: ParsedId, existing: dict | None, request: dict[str, Any]) -> dict | None:
        mode = str(request.get("properties", {}).get("createMode", "default")).lower()
        deleted = self._data["deleted_vaults"].get(parsed.name.lower())
        if existing is not None:
            return None
        if mode == "recover":
            if deleted is None:
                raise ArmError(
                    400,
                    "SoftDeletedVaultDoesNotExist",
                    f"A soft deleted vault with the given name '{parsed.name}' does not exist.",
                )
            del self._data["deleted_vaults"][parsed.name.lower()]
            record = {"id": parsed.id, "type": parsed.type, "body": deleted["body"]}
            self._data["resources"][parsed.key] = record
            self._save()
            return copy.deepcopy(record)
        if deleted is not None:
            raise ArmError(
                409,
                "ConflictError",
                "A vault with the same name already exists in deleted state. "
                f"You need to either recover or purge existing key vault '{parsed.name}'.",
            )
        return None

    def _soft_delete_vault(self, record: dict[str, Any]) -> None:
        body = record["body"]
        props = body.get("properties", {})
        days = int(props.get("softDeleteRetentionInDays", 90))
        deleted_at = datetime.now(UTC)
        name = record["id"].rsplit("/", 1)[-1]
        self._data["deleted_vaults"][name.lower()] = {
            "name": name,
            "vault_id": record["id"],
            "location": body.get("location", ""),
            "deletion_date": deleted_at.isoformat(),
            "purge_date": (deleted_at + timedelta(days=days)).isoformat(),
            "purge_protection": bool(props.get("enablePurgeProtection")),
            "tags": body.get("tags", {}),
            "body": body,
        }

    def get_deleted_vault(self, subscription: str, location: str, name: str) -> dict[str, Any]:
        """The shape of key-vault/getDeletedVault.json."""
        with self._lock:
            rec = self._data["deleted_vaults"].get(name.lower())
            if rec is None or rec["location"].lower().replace(" ", "") != location.lower():
                raise ArmError(404, "DeletedVaultNotFound", f"Deleted vault '{name}' not found in location '{location}'.")
            return {
                "id": f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/locations/{location}"
                f"/deletedVaults/{rec['name']}",
                "name": rec["name"],
                "type": "Microsoft.KeyVault/deletedVaults",
                "properties": {
                    "vaultId": rec["vault_id"],
                    "location": rec["location"],
                    "deletionDate": rec["deletion_date"],
                    "scheduledPurgeDate": rec["purge_date"],
                    "tags": rec["tags"],
                    "purgeProtectionEnabled": rec["purge_protection"],
                },
            }

    def purge_deleted_vault(self, location: str, name: str) -> None:
        with self._lock:
            rec = self._data["deleted_vaults"].get(name.lower())
            if rec is None:
                raise ArmError(404, "DeletedVaultNotFound", f"Deleted vault '{name}' not found.")
            if rec["purge_protection"]:
                raise ArmError(
                    409,
                    "PurgeProtectionEnabled",
                    f"Vault '{name}' has purge protection enabled and cannot be purged before {rec['purge_date']}.",
                )
            del self._data["deleted_vaults"][name.lower()]
            self._data["secrets"].pop(name.lower(), None)
            self._save()

    # ---- Key Vault data plane ------------------------------------------------------------
    def vault_exists(self, name: str) -> bool:
        with self._lock:
            return any(
                r["type"].lower() == "microsoft.keyvault/vaults" and r["id"].rsplit("/", 1)[-1].lower() == name.lower()
                for r in self._data["resources"].values()
            )

    def set_secret(self, vault: str, name: str, value: str, content_type: str | None, tags: dict | None) -> dict[str, Any]:
        with self._lock:
            versions = self._data["secrets"].setdefault(vault.lower(), {}).setdefault(name.lower(), [])
            now = int(time.time())
            entry = {
                "name": name,
                "version": pysecrets.token_hex(16),
                "value": value,
                "contentType": content_type,
                "tags": tags or {},
                "attributes": {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"},
            }
            versions.append(entry)
            self._save()
            return copy.deepcopy(entry)

    def get_secret(self, vault: str, name: str, version: str | None) -> dict[str, Any]:
        with self._lock:
            versions = self._data["secrets"].get(vault.lower(), {}).get(name.lower(), [])
            chosen = [v for v in versions if not version or v["version"] == version]
            if not chosen:
                raise ArmError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
            return copy.deepcopy(chosen[-1])

    def list_secrets(self, vault: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(v[-1]) for v in self._data["secrets"].get(vault.lower(), {}).values() if v]

    # ---- long-running operations -----------------------------------------------------------
    def start_operation(self, rid: str, seconds: float, failure: dict[str, str] | None, creating: bool) -> str:
        with self._lock:
            op_id = pysecrets.token_hex(8)
            self._data["operations"][op_id] = {
                "resource": rid.lower(),
                "ready_at": time.time() + max(0.0, seconds),
                "failure": failure,
                "status": "InProgress",
                "start": providers.now_iso(),
            }
            self.set_provisioning_state(rid, "Creating" if creating else "Updating")
            self._save()
            return op_id

    def get_operation(self, op_id: str) -> dict[str, Any]:
        with self._lock:
            self._settle()
            op = self._data["operations"].get(op_id)
            if op is None:
                raise ArmError(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
            return copy.deepcopy(op)

    def operation_remaining(self, op_id: str) -> float:
        with self._lock:
            op = self._data["operations"].get(op_id)
            return max(0.0, op["ready_at"] - time.time()) if op else 0.0

    def _settle(self) -> None:
        """Finish every operation whose time has come (lazily, on any access)."""
        now = time.time()
        changed = False
        for op in self._data["operations"].values():
            if op["status"] != "InProgress" or op["ready_at"] > now:
                continue
            op["status"] = "Failed" if op["failure"] else "Succeeded"
            op["end"] = providers.now_iso()
            record = self._data["resources"].get(op["resource"])
            if record is not None:
                record["body"].setdefault("properties", {})["provisioningState"] = op["status"]
            changed = True
        if changed:
            self._save()

    def counts(self) -> dict[str, Any]:
        with self._lock:
            by_type: dict[str, int] = {}
            for record in self._data["resources"].values():
                by_type[record["type"]] = by_type.get(record["type"], 0) + 1
            return {
                "resources": len(self._data["resources"]),
                "by_type": dict(sorted(by_type.items())),
                "deleted_vaults": sorted(r["name"] for r in self._data["deleted_vaults"].values()),
                "secrets": sum(len(v) for v in self._data["secrets"].values()),
            }
