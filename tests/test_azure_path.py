"""The real-Azure code path (an "azure" Target: shared credential, Azure's polling) against the sandbox.

A counting credential stands in for Azure AD (each token costs a pause, like an Azure CLI
process start); everything else is ours and the SDK's, over HTTPS to the sandbox.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

from deploykit.azure.arm import ArmProvider, LroPolling, Target, backoff_delays, read_secret
from deploykit.azure.credentials import SharedTokenCredential
from deploykit.azure.target import AZURE_POLLING_INTERVAL, AZURE_POLLING_INTERVAL_MAX, SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.engine.plan import compute_plan
from deploykit.engine.runner import apply_plan
from tests.helpers import specs_for

ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"


class CountingCredential:
    """Azure AD's stand-in: counts acquisitions per scope; each one takes `pause` seconds."""

    def __init__(self, pause: float = 0.3, lifetime: int = 3600) -> None:
        self.pause = pause
        self.lifetime = lifetime
        self.acquired: Counter[str] = Counter()
        self.options: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _issue(self, scopes: tuple[str, ...], options: dict[str, Any]) -> tuple[str, int]:
        time.sleep(self.pause)
        with self._lock:
            self.acquired[scopes[0]] += 1
            self.options.append(options)
            return f"token-{sum(self.acquired.values())}", int(time.time()) + self.lifetime

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(*self._issue(scopes, kwargs))

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(*self._issue(scopes, dict(options or {})))


class GetTokenOnly:
    """A credential implementing only the older TokenCredential protocol."""

    def __init__(self) -> None:
        self.inner = CountingCredential(pause=0.0)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.inner.get_token(*scopes, **kwargs)


def azure_provider(sandbox, credential: Any) -> ArmProvider:
    """The provider `--target azure` builds, pointed at the sandbox (its CA; vault hosts are 127.0.0.1)."""
    return ArmProvider(
        Target(
            name="azure",
            arm_endpoint=sandbox.url,
            credential=credential,
            subscription_id=SANDBOX_SUBSCRIPTION,
            credential_scope=ARM_SCOPE,
            connection_verify=sandbox.ca,
            polling_interval=AZURE_POLLING_INTERVAL,
            polling_interval_max=AZURE_POLLING_INTERVAL_MAX,
            verify_challenge_resource=False,
        )
    )


def test_parallel_plan_apply_takes_one_token_per_scope_and_notices_an_lro_without_retry_after(sandbox) -> None:
    lro_seconds = 1.0
    sandbox.control("PUT", "/faults", {"lro_seconds": lro_seconds, "lro_retry_after": False})
    counting = CountingCredential()
    provider = azure_provider(sandbox, SharedTokenCredential(counting))
    specs = specs_for(["step1", "step2a", "step2b"])  # 3 groups, a vault and a registry (both async)

    plan = compute_plan(specs, provider)
    assert len(plan.pending) == len(specs) == 5
    start = time.perf_counter()
    outcomes = apply_plan(plan, {s.address: s for s in specs}, provider)
    applied = time.perf_counter() - start

    assert [o.error for o in outcomes if not o.ok] == []
    assert applied < lro_seconds + 4, f"apply took {applied:.1f} s for a {lro_seconds} s operation"
    statuses = [e for e in sandbox.control("GET", "/journal?since=0")["entries"] if "operationStatuses" in e["path"]]
    assert statuses, "the async resources were polled through their operation status"
    assert compute_plan(specs, provider).pending == ()

    # The Key Vault data plane, several clients at once: its scope too is asked for once.
    vault_uri = provider.read(next(s.id for s in specs if s.address == "kv.shared"), "2026-05-15")["properties"]["vaultUri"]
    provider.secret_client(vault_uri).set_secret("probe", "v")
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: read_secret(provider.secret_client(vault_uri), "probe"), range(8)))
    assert values == ["v"] * 8

    assert counting.acquired == {ARM_SCOPE: 1, VAULT_SCOPE: 1}


def test_without_retry_after_polls_back_off_and_with_it_follow_azure(sandbox) -> None:
    provider = azure_provider(sandbox, SharedTokenCredential(CountingCredential(pause=0.0)))
    group = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-poll"
    provider.put(
        ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", group, {}, "t"), {"location": "centralus"}
    )

    def create_registry(name: str, **faults: Any) -> list[float]:
        """The gaps between the registry's PUT and each status poll, as the sandbox saw them."""
        sandbox.control("PUT", "/faults", faults)
        mark = sandbox.journal_mark()
        rid = f"{group}/providers/Microsoft.ContainerRegistry/registries/{name}"
        spec = ResourceSpec("acr", "Microsoft.ContainerRegistry/registries", "2025-11-01", rid, {}, "t")
        provider.put(spec, {"location": "centralus", "sku": {"name": "Basic"}})
        entries = sandbox.control("GET", f"/journal?since={mark}")["entries"]
        times = [e["t"] for e in entries if e["method"] == "PUT" or "operationStatuses" in e["path"]]
        return [b - a for a, b in itertools.pairwise(times)]

    # No Retry-After: the first status poll comes at once (azure-core), then 1 s, 1.5 s, 2.25 s...
    gaps = create_registry("acrnoretry", lro_seconds=4.0, lro_retry_after=False)
    assert 3 <= len(gaps) <= 5, gaps
    waits = gaps[1:]
    assert 0.8 < waits[0] < 1.6, gaps
    assert all(later > earlier + 0.3 for earlier, later in itertools.pairwise(waits)), gaps

    # Retry-After-Ms: 100 from the sandbox is honoured, not replaced by our backoff.
    gaps = create_registry("acrretry", lro_seconds=1.0, poll_ms=100)
    assert len(gaps) >= 6 and max(gaps) < 0.6, gaps


def test_backoff_schedule_and_retry_after_precedence() -> None:
    delays = backoff_delays(1.0, 15.0)
    schedule = [next(delays) for _ in range(10)]
    assert schedule[:4] == [1.0, 1.5, 2.25, 3.375] and schedule[-3:] == [15.0] * 3
    polling = LroPolling(AZURE_POLLING_INTERVAL, AZURE_POLLING_INTERVAL_MAX)
    assert polling.next_delay({"Retry-After": "7"}) is None  # azure-core's parsing of it applies
    assert polling.next_delay({"x-ms-retry-after-ms": "250"}) is None
    assert [polling.next_delay({}) for _ in range(3)] == [1.0, 1.5, 2.25]
    waits, slept = backoff_delays(AZURE_POLLING_INTERVAL, AZURE_POLLING_INTERVAL_MAX), 0.0
    polls = 0
    while slept < 45 * 60:  # a 45-minute VPN gateway without Retry-After
        slept, polls = slept + next(waits), polls + 1
    assert polls < 200


def test_shared_credential_reuses_renews_and_honours_claims() -> None:
    counting = CountingCredential(pause=0.05)
    shared = SharedTokenCredential(counting)
    with ThreadPoolExecutor(16) as pool:
        tokens = set(pool.map(lambda _: shared.get_token_info(ARM_SCOPE).token, range(32)))
    assert len(tokens) == 1 and counting.acquired[ARM_SCOPE] == 1
    assert shared.get_token(ARM_SCOPE).token in tokens  # both protocols share the cache

    # A CAE claims challenge always reaches Azure AD, and its token replaces the cached one.
    fresh = shared.get_token_info(ARM_SCOPE, options={"claims": '{"access_token": {}}'}).token
    assert fresh not in tokens and counting.acquired[ARM_SCOPE] == 2
    assert shared.get_token(ARM_SCOPE).token == fresh

    # Another tenant or CAE setting is another token; a token near expiry is renewed.
    shared.get_token(ARM_SCOPE, tenant_id="other")
    shared.get_token_info(ARM_SCOPE, options={"enable_cae": True})
    assert counting.acquired[ARM_SCOPE] == 4
    short = SharedTokenCredential(CountingCredential(pause=0.0, lifetime=1))
    first = short.get_token(VAULT_SCOPE).token
    time.sleep(0.6)
    assert short.get_token(VAULT_SCOPE).token != first

    older = GetTokenOnly()
    wrapped = SharedTokenCredential(older)
    assert wrapped.get_token_info(VAULT_SCOPE).token == wrapped.get_token(VAULT_SCOPE).token
    assert older.inner.acquired[VAULT_SCOPE] == 1
