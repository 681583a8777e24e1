"""Benchmark: N independent long-running resources (10, 50, 200, 500) from a synthetic playbook.

Engine figures, against a fresh in-process sandbox per N with 1 s operations: render, plan
(all absent), apply, and the no-op plan after it. The ideal apply is N / in-flight limit
operations back to back (at least one); the pool's workers only send requests and status
polls, so the in-flight limit, not the pool size, sets the pace.

Run: python benchmarks/bench_scale.py [--counts 10,50,200,500] [--in-flight 64] [--lro-seconds 1] [--latency-ms 0]
     [--poll-ms 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)

from deploykit.azure.arm import ArmProvider, Target  # noqa: E402
from deploykit.azure.target import SANDBOX_SUBSCRIPTION, SandboxCredential, sandbox_control  # noqa: E402
from deploykit.engine.plan import compute_plan  # noqa: E402
from deploykit.engine.playbook import render_playbook  # noqa: E402
from deploykit.engine.runner import APPLY_WORKERS, apply_plan  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402

PLAYBOOK = REPO / "benchmarks" / "playbooks" / "scale.yaml.j2"


def one(count: int, in_flight: int, lro: float, latency_ms: float, poll_ms: float, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="scale")
        ca = str(server.cert_path)
        sandbox_control(server.url, ca, "PUT", "/faults", {"lro_seconds": lro, "latency_ms": latency_ms, "poll_ms": poll_ms})
        target = Target(
            "sandbox", server.url, SandboxCredential(), SANDBOX_SUBSCRIPTION, "https://management.azure.com/.default", ca
        )
        provider = ArmProvider(target)
        try:
            start = time.perf_counter()
            specs = render_playbook(PLAYBOOK, {"count": count}, SANDBOX_SUBSCRIPTION, "bench")
            render = time.perf_counter() - start
            start = time.perf_counter()
            plan = compute_plan(specs, provider)
            planned = time.perf_counter() - start
            start = time.perf_counter()
            outcomes = apply_plan(plan, {s.address: s for s in specs}, provider, workers, in_flight)
            applied = time.perf_counter() - start
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise SystemExit(f"{len(failed)} failed; first: {failed[0].change.address}: {failed[0].error}")
            start = time.perf_counter()
            again = compute_plan(specs, provider)
            noop = time.perf_counter() - start
            if again.pending:
                raise SystemExit(f"{len(again.pending)} changes pending after apply")
        finally:
            server.stop()
    ideal = max(1.0, count / in_flight) * lro  # the ideal: N / limit operations back to back
    return {"render": render, "plan": planned, "apply": applied, "ideal": ideal, "noop": noop}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="10,50,200,500")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--lro-seconds", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    # The Retry-After the sandbox sends while an operation runs (capped at the time it has left).
    parser.add_argument("--poll-ms", type=float, default=500.0)
    parser.add_argument("--workers", type=int, default=APPLY_WORKERS)
    args = parser.parse_args()
    print(
        f"N independent public IPs, {args.lro_seconds:g} s operations, {args.latency_ms:g} ms per request, "
        f"Retry-After {args.poll_ms:g} ms, {args.workers} workers, {args.in_flight} in flight"
    )
    print(f"{'N':>5} {'render':>8} {'plan':>8} {'apply':>8} {'ideal':>8} {'ratio':>6} {'no-op':>8}")
    for count in (int(c) for c in args.counts.split(",")):
        r = one(count, args.in_flight, args.lro_seconds, args.latency_ms, args.poll_ms, args.workers)
        print(
            f"{count:>5} {r['render']:>7.2f}s {r['plan']:>7.2f}s {r['apply']:>7.2f}s {r['ideal']:>7.2f}s "
            f"{r['apply'] / r['ideal']:>5.2f}x {r['noop']:>7.2f}s"
        )


if __name__ == "__main__":
    main()
