"""Long-running ARM operations that wait without a thread: send once, then one poll at a time.

azure-core's poller keeps a thread asleep per operation; at 64 operations in flight (a gateway
takes most of an hour) that is 64 threads doing nothing. Here a PUT is sent once, and the
engine's scheduler (engine/apply.py) calls `poll` when the operation is due: one GET of the
status monitor Azure named (Azure-AsyncOperation, else Location), or of the resource itself
when Azure named none but reports a provisioning state in flight. The delay before the next
poll is Azure's Retry-After when it sends one, else a back-off from the first interval to the
cap. Only plain HTTP is used, so the wait survives an SDK upgrade and a re-run can always
re-read the resource instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.utils import case_insensitive_dict

from deploykit.azure.arm import RETRY_AFTER_HEADERS, ArmProvider, backoff_delays
from deploykit.engine.model import ResourceSpec
from deploykit.engine.plan import FAILED_STATES, TERMINAL_STATES, provisioning_state
from deploykit.errors import AzureOperationError

# A status request that fails for a passing reason (throttled, unavailable, no connection) is
# asked again later, up to this many times in a row; the operation goes on at Azure meanwhile.
TRANSIENT_POLL_FAILURES = 5
# ARM does not promise read-after-write: a resource that is not found right after its PUT is
# taken as still being created for this many polls.
NOT_FOUND_GRACE_POLLS = 3
WAIT_LIMIT_SECONDS = 3 * 3600  # a VPN gateway takes most of an hour; nothing we manage takes three


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds Azure asks us to wait (Retry-After in seconds, or the -ms variants); None when absent or 0."""
    found = case_insensitive_dict(headers)
    for name in RETRY_AFTER_HEADERS:
        value = found.get(name)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                continue  # an HTTP date: rare on ARM; fall back to our back-off
            seconds = seconds / 1000 if name.endswith("-ms") else seconds
            return seconds if seconds > 0 else None  # 0 would mean polling without pause (azure-core: its interval)
    return None


def _state(body: Any) -> str:
    """The provisioning state, lower-cased, as the planner reads it ('' for a type without one)."""
    return provisioning_state(body).lower()


def _failed(spec: ResourceSpec, state: str) -> AzureOperationError:
    return AzureOperationError("ProvisioningFailed", f"{spec.address}: provisioning state is {state}")


@dataclass
class Operation:
    """One accepted PUT: where to ask how it is going, and when to ask next."""

    provider: ArmProvider
    spec: ResourceSpec
    monitor: str | None  # absolute status URL, or None: poll the resource itself
    by_location: bool  # the monitor is a Location URL (202 while running), not Azure-AsyncOperation
    delay: float
    result: dict[str, Any] | None = None
    done: bool = False
    read_back: bool = False  # `result` is a GET after the operation ended (not the PUT's own answer)
    _delays: Iterator[float] = field(default_factory=lambda: iter(()))
    _deadline: float = field(default_factory=lambda: time.monotonic() + WAIT_LIMIT_SECONDS)
    _transient: int = 0
    _not_found: int = 0

    def poll(self) -> bool:
        """One status request; True once the operation ended well (then `result` is the resource)."""
        if time.monotonic() > self._deadline:
            raise AzureOperationError(
                "OperationTimedOut", f"{self.spec.address}: still running after {WAIT_LIMIT_SECONDS // 3600} h"
            )
        try:
            finished = self._poll_once()
        except AzureOperationError as exc:
            passing = exc.code == "ConnectionFailed" or (exc.status is not None and (exc.status == 429 or exc.status >= 500))
            self._transient += 1
            if not passing or self._transient > TRANSIENT_POLL_FAILURES:
                raise
            self.delay = next(self._delays)
            return False
        self._transient = 0
        return finished

    def _poll_once(self) -> bool:
        if self.monitor is None:
            return self._settled(self.provider.read(self.spec.id, self.spec.api_version))
        status, headers, body = self.provider.send_raw("GET", self.monitor)
        if self.by_location:
            running = status == 202
        else:
            state = str((body or {}).get("status") or "").lower()
            if not state:
                raise AzureOperationError("BadResponse", f"{self.spec.address}: the operation's status has no 'status'")
            if state in FAILED_STATES:
                error = (body or {}).get("error") or {}
                raise AzureOperationError(error.get("code") or "OperationFailed", error.get("message") or f"operation {state}")
            running = state not in TERMINAL_STATES
        if running:
            wait = retry_after(headers)
            self.delay = wait if wait is not None else next(self._delays)
            return False
        return self._settled(self.provider.read(self.spec.id, self.spec.api_version))

    def _settled(self, actual: dict[str, Any] | None) -> bool:
        """Done when the resource reads back in a terminal state (a state-less type counts as terminal)."""
        if actual is None:
            self._not_found += 1
            if self._not_found > NOT_FOUND_GRACE_POLLS:
                raise AzureOperationError("ResourceNotFound", f"{self.spec.address}: not found after it was accepted")
            self.delay = next(self._delays)
            return False
        state = _state(actual)
        if state in FAILED_STATES:
            raise _failed(self.spec, state)
        if state and state not in TERMINAL_STATES:
            self.delay = next(self._delays)
            return False
        self.result, self.done, self.read_back = actual, True, True
        return True


def begin_put(provider: ArmProvider, spec: ResourceSpec, body: Mapping[str, Any], if_match: str | None = None) -> Operation:
    """Send the PUT; the Operation is already `done` when Azure answered synchronously."""
    headers = {"If-Match": if_match} if if_match else {}
    status, answer_headers, answer = provider.send_raw("PUT", spec.id, spec.api_version, body=body, headers=headers)
    found = case_insensitive_dict(answer_headers)
    target = provider.target
    delays = backoff_delays(float(target.polling_interval), float(target.polling_interval_max))
    monitor = found.get("azure-asyncoperation")
    by_location = False
    if not monitor and status == 202:
        monitor, by_location = found.get("location"), True
    state = _state(answer)
    if state in FAILED_STATES:
        raise _failed(spec, state)
    op = Operation(provider, spec, monitor, by_location, 0.0, _delays=delays)
    if monitor is None and status != 202 and (not state or state in TERMINAL_STATES):
        op.result, op.done = answer, True
        return op
    wait = retry_after(answer_headers)
    op.delay = wait if wait is not None else next(delays)
    return op
