"""The real-Azure code path (an "azure" Target) against an in-process sandbox.

(1) token acquisitions for a fresh 5-resource plan + apply (steps 1, 2a, 2b of beta), each
    acquisition costing --token-seconds like an Azure CLI process start: a plain credential
    (azure-core caches per client pipeline, without a lock) against SharedTokenCredential;
(2) the lag from a long-running operation's end to the engine noticing it, when the status
    answers carry Retry-After and when they do not: the old fixed 30 s polling against the
    backoff (1 s, x1.5, cap 15 s).

Run: python benchmarks/bench_azure_path.py [--runs 3] [--token-seconds 0.5] [--lro-seconds 1 5 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)

from azure.core.credentials import AccessToken, AccessTokenInfo  # noqa: E402

from deploykit.azure.arm import ArmProvider, Target  # noqa: E402
from deploykit.azure.credentials import SharedTokenCredential  # noqa: E402
from deploykit.azure.target import (  # noqa: E402
    AZURE_POLLING_INTERVAL,
    AZURE_POLLING_INTERVAL_MAX,
    SANDBOX_SUBSCRIPTION,
    sandbox_control,
)
from deploykit.config import load_platform  # noqa: E402
from deploykit.engine.model import ResourceSpec  # noqa: E402
from deploykit.engine.plan import compute_plan  # noqa: E402
from deploykit.engine.runner import apply_plan, render_steps  # noqa: E402
from deploykit.paths import config_dir  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402

STEPS = ["step1", "step2a", "step2b"]
SCOPE = "https://management.azure.com/.default"
OLD_POLLING = 30.0  # azure-core's default polling_interval, which the azure target used to keep


class CountingCredential:
    """Azure AD's stand-in: counts acquisitions; each takes `pause` seconds (an `az` process start)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.acquired: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _issue(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        time.sleep(self.pause)
        with self._lock:
            self.acquired[scopes[0]] += 1
        return "token", int(time.time()) + 3600

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(*self._issue(scopes))

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(*self._issue(scopes))


class Bench:
    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.ca = str(server.cert_path)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        return sandbox_control(self.server.url, self.ca, method, path, body)

    def provider(
        self, credential: Any, first: float = AZURE_POLLING_INTERVAL, cap: float = AZURE_POLLING_INTERVAL_MAX
    ) -> ArmProvider:
        return ArmProvider(
            Target(
                name="azure",
                arm_endpoint=self.server.url,
                credential=credential,
                subscription_id=SANDBOX_SUBSCRIPTION,
                credential_scope=SCOPE,
                connection_verify=self.ca,
                polling_interval=first,
                polling_interval_max=cap,
            )
        )

    def deploy(self, credential: Any, specs: list[ResourceSpec]) -> float:
        """A fresh plan + apply of the specs; returns wall seconds."""
        self.control("POST", "/reset")
        self.control("PUT", "/faults", {"lro_seconds": 0.5, "poll_ms": 100})
        provider = self.provider(credential)
        start = time.perf_counter()
        plan = compute_plan(specs, provider)
        outcomes = apply_plan(plan, {s.address: s for s in specs}, provider)
        wall = time.perf_counter() - start
        failed = [o.error for o in outcomes if not o.ok]
        if failed or len(outcomes) != len(specs):
            raise SystemExit(f"deploy failed: {failed}")
        return wall

    def lag(self, lro: float, retry_after: bool, first: float, cap: float) -> tuple[float, int]:
        """Seconds from the operation's end to put() returning, and the status polls it took."""
        self.control("POST", "/reset")
        provider = self.provider(CountingCredential(0.0), first, cap)
        group = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-bench"
        provider.put(
            ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", group, {}, "b"), {"location": "centralus"}
        )
        self.control("PUT", "/faults", {"lro_seconds": lro, "poll_ms": 100, "lro_retry_after": retry_after})
        mark = self.control("GET", "/journal?since=999999999")["last"]
        rid = f"{group}/providers/Microsoft.ContainerRegistry/registries/acrbench"
        provider.put(
            ResourceSpec("acr", "Microsoft.ContainerRegistry/registries", "2025-11-01", rid, {}, "b"),
            {"location": "centralus", "sku": {"name": "Basic"}},
        )
        noticed = time.time()
        entries = self.control("GET", f"/journal?since={mark}")["entries"]
        put_at = next(e["t"] for e in entries if e["method"] == "PUT")
        polls = sum("operationStatuses" in e["path"] for e in entries)
        return noticed - (put_at + lro), polls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--token-seconds", type=float, default=0.5)
    parser.add_argument("--lro-seconds", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="bench")
        bench = Bench(server)
        specs = render_steps(load_platform(config_dir(), ["beta"]), STEPS, "beta", SANDBOX_SUBSCRIPTION)
        tokens: dict[str, list[tuple[int, float]]] = {"plain credential": [], "SharedTokenCredential": []}
        for _ in range(args.runs):
            for label, wrap in (("plain credential", False), ("SharedTokenCredential", True)):
                counting = CountingCredential(args.token_seconds)
                wall = bench.deploy(SharedTokenCredential(counting) if wrap else counting, specs)
                tokens[label].append((counting.acquired[SCOPE], wall))
        now = (AZURE_POLLING_INTERVAL, AZURE_POLLING_INTERVAL_MAX)
        cases = [
            ("Retry-After-Ms: 100 (the sandbox)", True, now),
            ("no Retry-After, fixed 30 s (before)", False, (OLD_POLLING, OLD_POLLING)),
        ]
        cases.append(("no Retry-After, 1 s x1.5 to 15 s (after)", False, now))
        lags: list[tuple[str, float, float, int]] = []
        for lro in args.lro_seconds:
            for label, retry_after, (first, cap) in cases:
                if first == OLD_POLLING and lro != args.lro_seconds[0]:
                    continue  # the old fixed 30 s is measured once: it costs 30 s per operation
                lags.append((label, lro, *bench.lag(lro, retry_after, first, cap)))
        server.stop()

    print(
        f"(1) fresh plan + apply of {len(specs)} resources (steps 1, 2a, 2b), azure target over the sandbox, "
        f"{args.token_seconds:g} s per token acquisition, {args.runs} runs"
    )
    for label, results in tokens.items():
        counts = [n for n, _ in results]
        wall = statistics.median(w for _, w in results)
        print(f"    {label:<22} token acquisitions per run: {counts}; median wall {wall:.2f} s")
    print("(2) long-running operation (registry PUT): lag from its end to the engine noticing it")
    for label, lro, lag, polls in lags:
        print(f"    {lro:>4.0f} s operation, {label:<42} lag {lag:5.2f} s, {polls} status polls")


if __name__ == "__main__":
    main()
