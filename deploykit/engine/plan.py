"""Read actual state (all reads in parallel) and compare it with the specs -> Plan."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from deploykit.azure.arm import ArmProvider
from deploykit.azure.recovery import find_recoverable
from deploykit.engine.compare import diff_resource
from deploykit.engine.model import Action, Change, Plan, ResourceSpec

READ_WORKERS = 16
FAILED_STATES = {"failed", "canceled"}
TERMINAL_STATES = {"succeeded", *FAILED_STATES}


def compute_plan(specs: Sequence[ResourceSpec], provider: ArmProvider, workers: int = READ_WORKERS) -> Plan:
    """One read per resource, all at once: a no-op run costs about one round of latency."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(specs) or 1))) as pool:
        changes = tuple(pool.map(lambda spec: plan_resource(spec, provider), specs))
    return Plan(changes=changes)


def offline_plan(specs: Sequence[ResourceSpec], why: str) -> Plan:
    """A plan made without reading Azure (dry run, no credentials): everything is assumed absent."""
    return Plan(
        changes=tuple(Change(s.address, s.type, s.id, Action.CREATE, f"state not read ({why}); assumed absent") for s in specs),
        state_read=False,
    )


def plan_resource(spec: ResourceSpec, provider: ArmProvider) -> Change:
    actual = provider.read(spec.id, spec.api_version)
    if actual is None:
        recover_reason = find_recoverable(spec, provider)
        if recover_reason:
            return Change(spec.address, spec.type, spec.id, Action.RECOVER, recover_reason)
        return Change(spec.address, spec.type, spec.id, Action.CREATE, "does not exist")
    diff = diff_resource(spec.type, spec.body, actual, spec.write_only)
    state = provisioning_state(actual)
    if not state_is_terminal(state):
        return Change(
            spec.address, spec.type, spec.id, Action.WAIT, f"provisioning state is {state}: an operation is in flight; waiting"
        )
    state = state.lower()
    if state in FAILED_STATES:
        return Change(spec.address, spec.type, spec.id, Action.UPDATE, f"provisioning state is {state}; re-applying", diff)
    if diff:
        fields = ", ".join(diff)
        return Change(spec.address, spec.type, spec.id, Action.UPDATE, f"differs in {fields}", diff)
    return Change(
        spec.address, spec.type, spec.id, Action.UNCHANGED, f"matches: {_count_leaves(spec.body)} declared fields equal"
    )


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
