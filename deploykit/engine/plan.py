"""Read actual state (all reads in parallel), resolve references, compare with the specs -> Plan."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from deploykit.azure.arm import ArmProvider
from deploykit.azure.plugins import plugin_for
from deploykit.azure.recovery import find_recoverable
from deploykit.engine.compare import diff_resource
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.engine.references import (
    ACTION,
    SENSITIVE,
    UNKNOWN,
    Unresolved,
    contains_unknown,
    dig,
    is_sensitive_path,
    refs_in,
    resolve,
)
from deploykit.errors import AzureOperationError
from deploykit.parallel import each
from deploykit.report import redact_value

READ_WORKERS = 16
# A read this run made answers a result check's first look at the resource while it is this young
# and the run has not written the resource since (a no-op's checks come seconds after its plan).
RECENT_READ_SECONDS = 60.0
FAILED_STATES = {"failed", "canceled", "cancelled"}  # ARM spells it Canceled; some providers Cancelled
TERMINAL_STATES = {"succeeded", *FAILED_STATES}
_UNREAD = object()


class StateCache:
    """What Azure holds for each address in this run: read once, updated by each apply.

    References resolve from here; `specs` covers the run's entries and the earlier steps'
    entries they may refer to (read only when referred to).
    """

    def __init__(self, provider: ArmProvider, specs: Mapping[str, ResourceSpec]) -> None:
        self.provider = provider
        self.specs = dict(specs)
        self._actual: dict[str, Any] = {}
        self._actions: dict[tuple[str, str], Any] = {}
        self._values: dict[str, tuple[Any, bool]] = {}  # plug-ins' values outside ARM: (value, seen while applying)
        self._recoverable: dict[str, str | None] = {}  # absent entries: why a soft-deleted one will be recovered
        self._reads: dict[str, tuple[str, float, Any]] = {}  # lower-case ARM id -> (owner address, when, state)
        self._written: dict[str, float] = {}  # address -> when this run's apply last set its state
        self._lock = threading.Lock()

    def read_all(self, addresses: Iterable[str], workers: int = READ_WORKERS, planned: Iterable[str] = ()) -> None:
        """One round of ARM reads; a type whose plug-in reads its state elsewhere is left to it.

        An absent entry of `planned` (what this plan may create) is also checked for a
        soft-deleted twin right after its read, in the same worker, not after the whole round.
        """
        probe = set(planned)
        todo = [a for a in dict.fromkeys(addresses) if a in self.specs and plugin_for(self.specs[a].type).arm_state]

        def read(address: str) -> tuple[dict[str, Any] | None, float]:
            sent = time.monotonic()
            actual = self._read(address)
            if actual is None and address in probe:
                self._probe_recoverable(address)
            return actual, sent

        for address, (actual, sent) in zip(todo, each(read, todo, workers, "read"), strict=True):
            self._put(address, actual, read_at=sent)

    def read_for_plan(self, specs: Sequence[ResourceSpec], workers: int = READ_WORKERS) -> None:
        """The plan's one round: every spec and every entry a spec refers to, absent specs probed."""
        self.read_all(plan_addresses(specs), workers, planned=[s.address for s in specs])

    def _probe_recoverable(self, address: str) -> None:
        """Ask early; a failure here is left to recoverable(), which asks again and reports it as planning does."""
        try:
            reason = find_recoverable(self.specs[address], self.provider)
        except AzureOperationError:
            return
        with self._lock:
            self._recoverable[address] = reason

    def recoverable(self, spec: ResourceSpec) -> str | None:
        """find_recoverable() for an absent entry, from the read round when it asked already."""
        with self._lock:
            if spec.address in self._recoverable:
                return self._recoverable[spec.address]
        return find_recoverable(spec, self.provider)

    def _read(self, address: str) -> dict[str, Any] | None:
        spec = self.specs[address]
        return self.provider.read(spec.id, spec.api_version)

    def read_child(self, address: str, resource_id: str, api_version: str) -> dict[str, Any] | None:
        """A read of something inside the entry (an app's revision), kept for recent_read() until the entry is written."""
        sent = time.monotonic()
        found = self.provider.read(resource_id, api_version)
        with self._lock:
            self._reads[resource_id.lower()] = (address, sent, found)
        return found

    def recent_read(self, resource_id: str, max_age: float = RECENT_READ_SECONDS) -> tuple[bool, dict[str, Any] | None]:
        """(True, state) when this run read the resource under `max_age` seconds ago and has written
        neither its entry nor anything the entry depends on since; else (False, None). Lets a
        result check skip re-reading what the plan read moments before (a no-op deploy's app
        health check), or the GET that ended the entry's own operation."""
        with self._lock:
            found = self._reads.get(resource_id.lower())
            if found is None:
                return False, None
            written = max((self._written.get(a, -1.0) for a in self._upstream(found[0])), default=-1.0)
        if written >= found[1] or time.monotonic() - found[1] > max_age:
            return False, None
        return True, found[2]

    def _upstream(self, address: str) -> set[str]:
        """The entry and everything it depends on, transitively (a new environment restarts its apps)."""
        seen, todo = {address}, [address]
        while todo:
            spec = self.specs.get(todo.pop())
            for parent in spec.depends_on if spec is not None else ():
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    def known(self, resource_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, state) when this run has read or applied the resource with this ARM id and the
        state is current; (False, None) otherwise. Lets other planners of the run (deploy's
        db.create) reuse the plan's reads instead of sending them again."""
        address = self._address_of(resource_id)
        with self._lock:
            found = self._actual.get(address, _UNREAD) if address is not None else _UNREAD
        return (False, None) if found is _UNREAD else (True, found)

    def remember(self, address: str, value: Any, applying: bool = False) -> None:
        """A value a plug-in read or wrote where it lives (a secret's, in its vault; None: absent).

        `applying`: written, or read just before writing, by this run's apply. Only those answer
        references while applying (`recall(..., applying=True)`): a value read while planning may
        have been rotated since (a prompt, a long wait), and a write-only field (the server's
        password) sent from it would undo the rotation unseen. Verify uses a fresh cache, so it
        still reads what Azure holds; a result check starts only from reads that recent_read allows.
        """
        with self._lock:
            self._values[address] = (value, applying)

    def recall(self, address: str, applying: bool = False) -> tuple[bool, Any]:
        """(True, value) when this run remembered one for the address (with `applying`, one seen
        while applying), else (False, None)."""
        with self._lock:
            found = self._values.get(address)
        if found is None or (applying and not found[1]):
            return False, None
        return True, found[0]

    def recall_by_id(self, resource_id: str) -> tuple[bool, Any]:
        """recall() for the entry with this ARM id, whenever it was seen (db.create connects with
        the admin password the steps read or wrote; it never writes it)."""
        address = self._address_of(resource_id)
        return self.recall(address) if address is not None else (False, None)

    def _address_of(self, resource_id: str) -> str | None:
        wanted = resource_id.lower()
        return next((a for a, spec in self.specs.items() if spec.id.lower() == wanted), None)

    def get(self, address: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._actual.get(address, _UNREAD)
        if found is _UNREAD:
            sent = time.monotonic()
            found = self._read(address)
            self._put(address, found, read_at=sent)
        return found  # type: ignore[return-value]

    def set(self, address: str, actual: dict[str, Any] | None, read_back: bool = False) -> None:
        """The entry's state now (an apply's result): its earlier reads no longer answer
        recent_read(). With `read_back` (the GET that ended a long-running operation) this state,
        read after the write, does."""
        self._put(address, actual)
        if read_back:
            self._put(address, actual, read_at=time.monotonic())

    def _put(self, address: str, actual: dict[str, Any] | None, read_at: float | None = None) -> None:
        """Store the entry's state: a read (sent at `read_at`) or, without it, a write made now."""
        with self._lock:
            self._actual[address] = actual
            self._actions = {k: v for k, v in self._actions.items() if k[0] != address}
            if read_at is not None:
                self._reads[self.specs[address].id.lower()] = (address, read_at, actual)
            else:
                self._written[address] = time.monotonic()

    def forget(self, address: str) -> None:
        with self._lock:
            self._actual.pop(address, None)
            self._written[address] = time.monotonic()

    def writing(self, address: str) -> None:
        """This run's apply starts on the entry: its earlier reads no longer answer recent_read(),
        even when the write then fails."""
        with self._lock:
            self._written[address] = time.monotonic()

    def lookup(self, address: str, path: str) -> Any:
        """A reference's value now; Unresolved when the entry does not exist (yet)."""
        value = self._value(address, path)
        if is_sensitive_path(path) and isinstance(value, str):
            redact_value(value)
        return value

    def _value(self, address: str, path: str) -> Any:
        plugin = plugin_for(self.specs[address].type)
        if plugin.read_value is not None:  # e.g. a secret's value: read where it lives (the vault)
            return plugin.read_value(self.specs[address], path, self)
        actual = self.get(address)
        if actual is None:
            raise Unresolved(f"{address} does not exist")
        action = ACTION.match(path)
        if not action:
            return dig(actual, path)
        name, rest = action.group(1), action.group(2)
        key = (address, name)
        with self._lock:
            result = self._actions.get(key, _UNREAD)
        if result is _UNREAD:
            spec = self.specs[address]
            result = self.provider.action(spec.id, name, spec.api_version)
            with self._lock:
                self._actions[key] = result
        return dig(result, rest) if rest else result

    def resolved(self, spec: ResourceSpec, strict: bool = False, skip: Iterable[str] = ()) -> dict[str, Any]:
        return resolve(spec.body, self.lookup, frozenset(skip), strict)


def compute_plan(
    specs: Sequence[ResourceSpec],
    provider: ArmProvider,
    workers: int = READ_WORKERS,
    context: Mapping[str, ResourceSpec] | None = None,
    cache: StateCache | None = None,
    read: bool = True,
) -> Plan:
    """One read per resource (and per entry referred to), all at once: a no-op costs one round.

    `read=False`: the caller has just made `cache.read_for_plan(specs)` (one round shared with
    what it needed first).
    """
    cache = cache or StateCache(provider, {**(context or {}), **{s.address: s for s in specs}})
    if read:
        cache.read_for_plan(specs, workers)
    return Plan(changes=tuple(each(lambda spec: plan_resource(spec, provider, cache), specs, workers, "plan")))


def plan_addresses(specs: Sequence[ResourceSpec]) -> list[str]:
    """What a plan reads: every spec and every entry a spec refers to."""
    referred = {address for spec in specs for address, _ in refs_in(spec.body)}
    return [*(s.address for s in specs), *sorted(referred)]


def offline_plan(specs: Sequence[ResourceSpec], why: str) -> Plan:
    """A plan made without reading Azure (dry run, no credentials): everything is assumed absent."""
    return Plan(
        changes=tuple(
            Change(s.address, s.type, s.id, Action.CREATE, f"state not read ({why}); assumed absent", create_diff(s.body))
            for s in specs
        ),
        state_read=False,
    )


def plan_resource(spec: ResourceSpec, provider: ArmProvider, cache: StateCache | None = None) -> Change:
    cache = cache or StateCache(provider, {spec.address: spec})
    plugin = plugin_for(spec.type)
    if plugin.plan is not None:
        return plugin.plan(spec, cache)
    return generic_plan(spec, cache)


def generic_plan(spec: ResourceSpec, cache: StateCache) -> Change:
    """Read, resolve references, compare: create, recover, wait, update or unchanged."""
    actual = cache.get(spec.address)
    # Write-only fields (a password from the vault) are resolved when applied, never while planning.
    body = cache.resolved(spec, skip=spec.write_only)
    if actual is None:
        recover_reason = cache.recoverable(spec)
        if recover_reason:
            return Change(spec.address, spec.type, spec.id, Action.RECOVER, recover_reason, create_diff(body, spec.write_only))
        return Change(spec.address, spec.type, spec.id, Action.CREATE, "does not exist", create_diff(body, spec.write_only))
    diff = diff_resource(spec.type, body, actual, spec.write_only)
    state = provisioning_state(actual)
    if not state_is_terminal(state):
        return Change(
            spec.address, spec.type, spec.id, Action.WAIT, f"provisioning state is {state}: an operation is in flight; waiting"
        )
    state = state.lower()
    if state in FAILED_STATES:
        return Change(spec.address, spec.type, spec.id, Action.UPDATE, f"provisioning state is {state}; re-applying", diff)
    if diff:
        return Change(spec.address, spec.type, spec.id, Action.UPDATE, _differs(spec, diff), _flag_create_only(spec, diff))
    return Change(
        spec.address, spec.type, spec.id, Action.UNCHANGED, f"matches: {_count_leaves(spec.body)} declared fields equal"
    )


def create_only_differences(spec: ResourceSpec, diff: Mapping[str, Any]) -> list[str]:
    return [path for path in diff if any(path == c or path.startswith(c + ".") for c in spec.create_only)]


def forces_new(spec: ResourceSpec) -> str:
    """'forces a new server': the resource noun from the type's last segment."""
    noun = spec.type.rsplit("/", 1)[-1]
    noun = noun.removeprefix("flexible")
    noun = noun[0].lower() + noun[1:]
    return f"forces a new {noun[:-2] if noun.endswith('sses') else noun.removesuffix('s')}"


def _differs(spec: ResourceSpec, diff: Mapping[str, Any]) -> str:
    fixed = create_only_differences(spec, diff)
    reason = f"differs in {', '.join(diff)}"
    if any(contains_unknown(d.get("new")) for d in diff.values()):
        reason += " (some values known after apply)"
    if fixed:
        reason += f"; {', '.join(fixed)} is create-only: {forces_new(spec)} (never done automatically)"
    return reason


def _flag_create_only(spec: ResourceSpec, diff: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    fixed = set(create_only_differences(spec, diff))
    return {(f"{path} ({forces_new(spec)})" if path in fixed else path): values for path, values in diff.items()}


def create_diff(body: Mapping[str, Any], hidden: Iterable[str] = (), prefix: str = "") -> dict[str, dict[str, Any]]:
    """A create's diff: every declared leaf, old None (the full body that will be sent).

    Write-only fields (passwords) show as "(sensitive)": their value is resolved only when applied.
    """
    hidden = tuple(hidden)
    out: dict[str, dict[str, Any]] = {}
    for key, value in body.items():
        path = f"{prefix}.{key}" if prefix else key
        if path in hidden and isinstance(value, str) and "${" in value:
            out[path] = {"old": None, "new": SENSITIVE}
        elif isinstance(value, Mapping) and value:
            out.update(create_diff(value, hidden, path))
        else:
            out[path] = {"old": None, "new": value}
    return out


def _count_leaves(value: object) -> int:
    if isinstance(value, dict):
        return sum(_count_leaves(v) for v in value.values()) or 1
    if isinstance(value, list):
        return sum(_count_leaves(v) for v in value) or 1
    return 1


def provisioning_state(actual: dict | None) -> str:
    """The resource's provisioningState as Azure spells it ('' when it has none)."""
    return str(((actual or {}).get("properties") or {}).get("provisioningState") or "")


def state_is_terminal(state: str) -> bool:
    """Succeeded, Failed, Canceled, or no state at all (resource groups, locks): nothing in flight."""
    return not state or state.lower() in TERMINAL_STATES


__all__ = ["SENSITIVE", "UNKNOWN", "StateCache", "compute_plan", "offline_plan", "plan_resource"]
