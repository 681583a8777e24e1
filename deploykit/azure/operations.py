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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.utils import case_insensitive_dict

from deploykit.azure.arm import RETRY_AFTER_HEADERS, ArmProvider, backoff_delays
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError

IN_FLIGHT_STATES = {"accepted", "creating", "updating", "provisioning", "deleting", "registeringdns", "inprogress", "running"}
FAILED = {"failed", "canceled", "cancelled"}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds Azure asks us to wait (Retry-After in seconds, or the -ms variants), or None."""
    found = case_insensitive_dict(headers)
    for name in RETRY_AFTER_HEADERS:
        value = found.get(name)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                continue  # an HTTP date: rare on ARM; fall back to our back-off
            return seconds / 1000 if name.endswith("-ms") else seconds
    return None


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
    _delays: Iterator[float] = field(default_factory=lambda: iter(()))

    def poll(self) -> bool:
        """One status request; True once the operation ended well (then `result` is the resource)."""
        if self.monitor is None:
            actual = self.provider.read(self.spec.id, self.spec.api_version)
            state = str(((actual or {}).get("properties") or {}).get("provisioningState") or "").lower()
            if state in FAILED:
                raise AzureOperationError("ProvisioningFailed", f"{self.spec.address}: provisioning state is {state}")
            if state not in IN_FLIGHT_STATES:
                self.result, self.done = actual, True
                return True
            self.delay = next(self._delays)
            return False
        status, headers, body = self.provider.send_raw("GET", self.monitor)
        if self.by_location:
            running = status == 202
        else:
            state = str((body or {}).get("status") or "").lower()
            if state in FAILED:
                error = (body or {}).get("error") or {}
                raise AzureOperationError(error.get("code") or "OperationFailed", error.get("message") or f"operation {state}")
            running = state not in {"succeeded"}
        if running:
            wait = retry_after(headers)
            self.delay = wait if wait is not None else next(self._delays)
            return False
        self.result, self.done = self.provider.read(self.spec.id, self.spec.api_version), True
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
    state = str(((answer or {}).get("properties") or {}).get("provisioningState") or "").lower()
    op = Operation(provider, spec, monitor, by_location, 0.0, _delays=delays)
    if monitor is None and state not in IN_FLIGHT_STATES:
        op.result, op.done = answer, True
        return op
    wait = retry_after(answer_headers)
    op.delay = wait if wait is not None else next(delays)
    return op
