"""The shape of one emulated ARM type (`ArmType`) and the hook signatures it can name.

Kept apart from the table (providers.py) so per-type modules (apps.py, ...) can define their
entries and hooks without importing the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deploykit.sandbox.ids import ParsedId

# The hooks see the store's data (sections "resources", "deleted_vaults", "secrets") inside the
# store's transaction, so whatever they change is saved with the PUT or DELETE that called them.
# The store logs a transaction's changes entry by entry (store.SandboxState): a hook may add,
# replace or remove entries of any section, but may change in place only the record it is
# given (an action's record, a PUT's new body); an in-place change elsewhere would stay in
# memory and never reach the state file.
State = dict[str, Any]
# Before a PUT: raise ArmError to refuse it, or return a body to store instead of the request's.
# It may also rewrite values in the request the way the service does (a Key Vault IP rule
# `1.2.3.4` is stored as `1.2.3.4/32`) before the request is stored as usual.
PutHook = Callable[[State, ParsedId, "dict[str, Any] | None", "dict[str, Any]"], "dict[str, Any] | None"]
# After a DELETE took the record out of "resources".
DeleteHook = Callable[[State, "dict[str, Any]"], None]
# When a resource is created: add the read-only fields the service computes once.
CreateHook = Callable[["dict[str, Any]"], None]
# When a resource is shown: fill the read-only fields derived from the body or the endpoint.
# The second argument gives a Key Vault's data-plane URL by vault name (None without a server).
PresentHook = Callable[["dict[str, Any]", "Callable[[str], str] | None"], None]

# POST {id}/{action}: sees the store's data, the stored record and the request body (or None);
# returns the response body. Runs inside the store's write transaction.
ActionHook = Callable[[State, "dict[str, Any]", "dict[str, Any] | None"], Any]
# After a PUT stored the body, for a type backed by a real service (a PostgreSQL cluster per
# flexible server, pgcluster.py): sees the sandbox's state folder, the id, the stored body (which
# it may complete, e.g. with PRIVATE data) and the request with its write-only fields (passwords).
# It runs inside the PUT's transaction, so it does only the cheap part there and returns the
# slow part (the backing work: initdb, start, the admin login) as a zero-argument callable, or
# None when there is nothing to do. The store runs that work in a background thread for a
# long-running type, whose operation stays InProgress until the work is done (Failed with the
# ArmError it raised), as Azure's creation runs inside its operation; for any other type at
# once, inside the PUT. The work must not touch the store's data: it runs outside the transaction.
BackingWork = Callable[[], None]
BackingHook = Callable[[Path, ParsedId, "dict[str, Any]", "dict[str, Any]", bool], "BackingWork | None"]
# A child Azure always has, though nobody created it (every server parameter of a PostgreSQL
# server): the body a GET answers for this name, or None when the name is unknown.
ImpliedHook = Callable[[str], "dict[str, Any] | None"]
# A child kept elsewhere in the store (a vault's secrets live in its data plane, vaultsecrets.py):
# ARM reads are views of it, and its PUT (a before_put that writes there and returns the view's
# body) stores no record. Given the store's data, the parent's record and a name (None: every
# child), the bodies a GET or a list answers, keyed by name as first written; absent: no key.
ViewHook = Callable[[State, "dict[str, Any]", "str | None"], "dict[str, dict[str, Any]]"]

PROVISIONING_STATE = "properties.provisioningState"
# Sandbox-private data kept in a stored body (generated keys, a creation time, a cluster folder):
# never accepted from a request, kept across PUTs, never shown in an answer.
PRIVATE = "_sandbox"


@dataclass(frozen=True)
class ArmType:
    """One emulated ARM type: how Azure spells it and what its provider adds, keeps and drops."""

    name: str  # canonical casing, as Azure answers `type`
    long_running: bool = False  # PUT answers 201/200 + Azure-AsyncOperation (azure-facts.md 9)
    global_name: bool = False  # the name is a DNS label unique across Azure
    provisioning_state: bool = True  # the provider reports properties.provisioningState
    display_location: bool = False  # answers "Central US" rather than "centralus" (azure-facts.md 2.2)
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # filled where a PUT omits
    read_only: tuple[str, ...] = ()  # computed by the service: ignored in a PUT body, kept across PUTs
    write_only: tuple[str, ...] = ()  # accepted on PUT, never returned (azure-facts.md 2.5)
    recase: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # path -> str method (2.4)
    kept_when_omitted: tuple[str, ...] = ()  # child collections a PUT without them leaves alone
    lock: bool = False  # a management lock: its level applies to everything under its scope
    serves_secrets: bool = False  # has a secrets data plane (one sandbox port per vault)
    before_put: PutHook | None = None
    after_delete: DeleteHook | None = None
    on_create: CreateHook | None = None
    computed: PresentHook | None = None
    # POST {resource id}/{action} (listKeys, ...): lower-cased action name -> hook (below)
    actions: Mapping[str, ActionHook] = field(default_factory=lambda: MappingProxyType({}))
    # After a PUT stored the body: the real service behind it; returns the backing work (BackingHook)
    after_put: BackingHook | None = None
    implied: ImpliedHook | None = None
    view: ViewHook | None = None
    created_status: int = 201  # a PUT that creates answers this; 200 where the provider does (keyValues)
    # Every stored version gets a new opaque top-level `etag` (read-only), answered in the body
    # and as the ETag header of a GET; a PUT or DELETE with If-Match must name the current one.
    etag: bool = False

    @property
    def key(self) -> str:
        return self.name.lower()

    def read_only_paths(self) -> tuple[str, ...]:
        """Paths a PUT body cannot set: the service computes them (an etag a client sends is ignored)."""
        return ((PROVISIONING_STATE,) if self.provisioning_state else ()) + (("etag",) if self.etag else ()) + self.read_only


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
