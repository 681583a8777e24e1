"""The small frozen core types: resource spec, change, plan. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    CREATE = "create"
    RECOVER = "recover"  # a soft-deleted resource is restored, then its declared state re-applied
    UPDATE = "update"
    DELETE = "delete"
    WAIT = "wait"  # an operation is still in flight (Creating, Updating, ...): wait for it, then converge
    UNCHANGED = "unchanged"


# Actions that are work for the apply phase; UNCHANGED is the only read-only outcome.
WRITES = frozenset({Action.CREATE, Action.RECOVER, Action.UPDATE, Action.DELETE, Action.WAIT})


@dataclass(frozen=True)
class ResourceSpec:
    """One desired ARM resource, as rendered from a playbook."""

    address: str  # stable handle within a plan, e.g. "kv.shared"
    type: str  # ARM type, e.g. Microsoft.KeyVault/vaults
    api_version: str
    id: str  # full ARM resource id
    body: Mapping[str, Any]  # what is PUT: location, sku, properties, tags, ...
    step: str
    depends_on: tuple[str, ...] = ()
    write_only: tuple[str, ...] = ()  # dotted paths sent on create/update, never compared
    create_only: tuple[str, ...] = ()  # dotted paths sent on create only; a difference forces a new resource

    @property
    def name(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Change:
    """The planned outcome for one resource; unchanged ones carry the reason why."""

    address: str
    type: str
    id: str
    action: Action
    reason: str
    diff: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path -> {"old", "new"}

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "id": self.id,
            "action": self.action.value,
            "reason": self.reason,
            "diff": {path: dict(values) for path, values in self.diff.items()},
        }


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    state_read: bool = True  # False when planned without reading Azure (no credentials)

    def summary(self, failed: int = 0) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "wait": 0, "unchanged": 0, "failed": failed}
        for change in self.changes:
            key = "create" if change.action is Action.RECOVER else change.action.value
            counts[key] += 1
        return counts

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action in WRITES)

    def by_address(self) -> dict[str, Change]:
        return {c.address: c for c in self.changes}
