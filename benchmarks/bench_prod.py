"""`deploy --env prod` against the sandbox: does everything else overlap the VPN gateway?

The gateway takes 30-45 minutes on Azure; here it takes --gateway-seconds (30 by default),
every other long-running operation --lro-seconds, every request --latency-ms. The figure is the
whole command (process start to exit) against the ARM critical path, which the gateway's chain
(group, NSG, VNet, gateway) dominates: everything else (data, endpoints, databases, apps) should
finish inside it. Then a no-op re-run.

Run: python benchmarks/bench_prod.py [--latency-ms 50] [--lro-seconds 1] [--gateway-seconds 30] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.chdir(REPO)

from bench_deploy import whole  # noqa: E402

from deploykit.azure.target import SANDBOX_SUBSCRIPTION, sandbox_control  # noqa: E402
from deploykit.config import load_platform  # noqa: E402
from deploykit.engine.runner import render_steps  # noqa: E402
from deploykit.paths import config_dir  # noqa: E402
from deploykit.sandbox.providers import ASYNC_TYPES  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402

GATEWAY_TYPE = "microsoft.network/virtualnetworkgateways"


def critical_path(specs, latency: float, lro: float, gateway: float) -> tuple[float, list[str]]:
    """The longest chain (plan round + chain + verify round) and its addresses.

    An asynchronous PUT costs PUT + one status poll + the final GET plus its own duration (the
    gateway's is `gateway`); a synchronous one costs one request.
    """
    by_address = {s.address: s for s in specs}
    memo: dict[str, tuple[float, list[str]]] = {}

    def finish(address: str) -> tuple[float, list[str]]:
        if address not in memo:
            spec = by_address[address]
            kind = spec.type.lower()
            own = 3 * latency + (gateway if kind == GATEWAY_TYPE else lro) if kind in ASYNC_TYPES else latency
            deps = [finish(d) for d in spec.depends_on if d in by_address]
            before, chain = max(deps, default=(0.0, []))
            memo[address] = (before + own, [*chain, address])
        return memo[address]

    total, chain = max(finish(a) for a in by_address)
    plan_round = 2 * latency  # absent vaults are read twice (the vault, then its soft-deleted twin)
    return plan_round + total + latency, chain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--lro-seconds", type=float, default=1.0)
    parser.add_argument("--gateway-seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    latency, lro = args.latency_ms / 1000, args.lro_seconds
    faults = {"latency_ms": args.latency_ms, "lro_seconds": lro, "poll_ms": 100, "gateway_seconds": args.gateway_seconds}
    platform = load_platform(config_dir(), ["prod"])
    steps = list(platform.envs["prod"].steps)
    specs = render_steps(platform, steps, "prod", SANDBOX_SUBSCRIPTION)
    floor, chain = critical_path(specs, latency, lro, args.gateway_seconds)
    walls, noops, counts = [], [], None
    # Under the repository's .sandbox/, where the default sandbox keeps its state (and its
    # PostgreSQL clusters): file creation costs differ a lot between folders on some machines.
    (REPO / ".sandbox").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO / ".sandbox", prefix="bench-") as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="bench-prod")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DEPLOYKIT_SANDBOX_URL": server.url,
            "DEPLOYKIT_SANDBOX_CA": str(server.cert_path),
            "DEPLOYKIT_AUDIT_DIR": str(Path(tmp) / "audit"),
        }

        def control(method: str, path: str, body: object = None) -> dict:
            return sandbox_control(server.url, str(server.cert_path), method, path, body)

        try:
            for _ in range(args.runs):
                control("POST", "/reset")
                control("PUT", "/faults", faults)
                walls.append(whole(env, "deploy", "--env", "prod", "--yes"))
                counts = control("GET", "/journal?since=0")["counts"]
                mark = control("GET", "/journal?since=999999999")["last"]
                noops.append(whole(env, "deploy", "--env", "prod", "--yes"))
                noop_counts = control("GET", f"/journal?since={mark}")["counts"]
        finally:
            server.stop()
    wall = statistics.median(walls)
    print(
        f"deploy --env prod, sandbox: {args.latency_ms:.0f} ms per request, {lro:.1f} s per long-running operation, "
        f"gateway {args.gateway_seconds:.0f} s; {len(specs)} resources plus db.create and db.migrate"
    )
    print(f"critical path (plan round + longest chain + verify round): {floor:.2f} s: {' -> '.join(chain)}")
    print(
        f"whole command, process start to exit: {wall:.2f} s = {wall / floor:.2f}x the critical path "
        f"(median of {len(walls)}); {counts['requests']} requests ({counts['reads']} reads, {counts['writes']} writes)"
    )
    print(
        f"no-op re-run: {statistics.median(noops):.2f} s; {noop_counts['requests']} requests "
        f"({noop_counts['reads']} reads, {noop_counts['writes']} writes)"
    )


if __name__ == "__main__":
    main()
