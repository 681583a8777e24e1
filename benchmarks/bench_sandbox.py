"""Benchmark: what the sandbox itself adds to every request, so it does not distort what it measures.

With no injected latency, through the real SDK provider (`ArmProvider` with a sandbox `Target`,
as tests/conftest.py builds it), against an in-process sandbox on a fresh state folder:

- sequential GETs and PUTs (small synchronous resources): the median time of one request,
  client included; everything above the client's own CPU is the sandbox's added latency. The
  same GET over one keep-alive `http.client` connection shows it with almost no client;
- a parallel no-op read burst: N GETs from 16 threads through one provider (the engine's no-op),
  then N GETs each on a new TLS connection (handshakes and the accept backlog); stalls are
  requests slower than 500 ms (a SYN retransmit costs 1 s);
- the time of 500 PUTs of small synchronous resources (state persistence at size) and the size
  of the state file afterwards; then the same 500 writes on a `SandboxState` alone (no HTTP),
  with the bytes this process passed to write() for them (/proc/self/io wchar);
- the time of `SandboxServer.stop()` with the ARM listener and one vault listener up.

Run: python benchmarks/bench_sandbox.py [--requests 200] [--puts 500] [--threads 16]
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploykit.azure.arm import ArmProvider, Target  # noqa: E402
from deploykit.azure.target import SANDBOX_SUBSCRIPTION, SandboxCredential  # noqa: E402
from deploykit.engine.model import ResourceSpec  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402
from deploykit.sandbox.store import SandboxState  # noqa: E402

GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-bench"
IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
IDENTITY_API = "2024-11-30"
STALL = 0.5


def _get(conn: http.client.HTTPSConnection, path: str) -> None:
    """One raw GET on an open connection, read to the end; anything but 200 ends the benchmark."""
    conn.request("GET", path, headers={"Authorization": "Bearer sandbox"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"GET answered {response.status}")


def provider_for(server: SandboxServer) -> ArmProvider:
    """The SDK provider exactly as tests/conftest.py's Sandbox builds it."""
    target = Target(
        "sandbox",
        server.url,
        SandboxCredential(),
        SANDBOX_SUBSCRIPTION,
        "https://management.azure.com/.default",
        str(server.cert_path),
        1.0,
        False,
    )
    return ArmProvider(target)


def identity(n: int | str) -> ResourceSpec:
    """A small synchronous resource (a user-assigned identity), the cheapest PUT the sandbox stores."""
    rid = f"{GROUP}/providers/{IDENTITY}/id-bench-{n}"
    return ResourceSpec(f"id.{n}", IDENTITY, IDENTITY_API, rid, {"location": "centralus"}, "bench")


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    """Milliseconds, one decimal."""
    return f"{seconds * 1000:.1f} ms"


def sequential(provider: ArmProvider, count: int) -> tuple[list[float], list[float]]:
    """Median material: `count` GETs of one resource, then `count` PUTs replacing another, one at a time."""
    spec = identity("seq")
    provider.put(spec, spec.body)
    for _ in range(5):  # warm the connection and the SDK's lazy imports
        provider.read(spec.id, IDENTITY_API)
    gets = [timed(lambda: provider.read(spec.id, IDENTITY_API)) for _ in range(count)]
    puts = [timed(lambda: provider.put(spec, {"location": "centralus", "tags": {"n": "x"}})) for _ in range(count)]
    return gets, puts


def sequential_raw(server: SandboxServer, count: int) -> list[float]:
    """`count` GETs over one keep-alive http.client connection: the sandbox's time with almost no client."""
    split = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    conn = http.client.HTTPSConnection(split.hostname or "127.0.0.1", split.port, context=context, timeout=30)
    path = f"{identity('seq').id}?api-version={IDENTITY_API}"

    def one() -> None:
        _get(conn, path)

    try:
        for _ in range(5):
            one()
        return [timed(one) for _ in range(count)]
    finally:
        conn.close()


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (Linux /proc/self/io wchar; 0 elsewhere)."""
    try:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    except OSError:
        return 0
    return int(fields["wchar"])


def state_only(directory: Path, count: int) -> tuple[float, int, int]:
    """`count` new identities written on a SandboxState (no HTTP): seconds, bytes written, state file size."""
    state = SandboxState(directory / "state.json")
    state.put_resource(GROUP, {"location": "centralus"})
    before, start = written_bytes(), time.perf_counter()
    for n in range(count):
        state.put_resource(identity(n).id, {"location": "centralus"})
    seconds, written = time.perf_counter() - start, written_bytes() - before
    state.close()
    return seconds, written, (directory / "state.json").stat().st_size


def burst_sdk(provider: ArmProvider, count: int, threads: int) -> list[float]:
    """`count` GETs from `threads` threads through one provider (its connection pool), as a no-op plan reads."""
    spec = identity("seq")
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: timed(lambda: provider.read(spec.id, IDENTITY_API)), range(count)))


def burst_new_connections(server: SandboxServer, count: int, threads: int) -> list[float]:
    """`count` GETs from `threads` threads, each on a new TLS connection (accept backlog and handshakes)."""
    split = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    path = f"{identity('seq').id}?api-version={IDENTITY_API}"

    def one(_: int) -> float:
        start = time.perf_counter()
        conn = http.client.HTTPSConnection(split.hostname or "127.0.0.1", split.port, context=context, timeout=30)
        try:
            _get(conn, path)
        finally:
            conn.close()
        return time.perf_counter() - start

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def describe(name: str, samples: list[float]) -> str:
    """One line: median, 95th percentile, max and stalls of a list of request times."""
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    stalls = sum(1 for s in samples if s > STALL)
    return (
        f"{name}: median {ms(statistics.median(samples))}, p95 {ms(p95)}, max {ms(ordered[-1])}, "
        f"stalls > {STALL * 1000:.0f} ms: {stalls}"
    )


def main() -> None:
    """Run every measurement on one fresh sandbox (and a second one for stop), then print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="requests per sequential series and per burst")
    parser.add_argument("--puts", type=int, default=500, help="small synchronous resources created in a row")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="bench")
        try:
            provider = provider_for(server)
            provider.put(
                ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", GROUP, {}, "bench"),
                {"location": "centralus"},
            )
            gets, puts = sequential(provider, args.requests)
            print(f"sandbox, no injected latency, {args.requests} requests per series, SDK provider (client CPU included)")
            print("  " + describe("sequential GET", gets))
            print("  " + describe("sequential PUT (synchronous)", puts))
            print("  " + describe("sequential GET, one keep-alive http.client connection", sequential_raw(server, args.requests)))
            print(
                "  "
                + describe(
                    f"{args.requests} GETs, {args.threads} threads, one provider",
                    burst_sdk(provider, args.requests, args.threads),
                )
            )
            print(
                "  "
                + describe(
                    f"{args.requests} GETs, {args.threads} threads, a new TLS connection each",
                    burst_new_connections(server, args.requests, args.threads),
                )
            )
            mark = server.journal.last_seq()
            start = time.perf_counter()
            for n in range(args.puts):
                spec = identity(n)
                provider.put(spec, spec.body)
            seconds = time.perf_counter() - start
            size = (Path(tmp) / "sandbox" / "state.json").stat().st_size
            spec = identity("late")
            late = [timed(lambda: provider.put(spec, {"location": "centralus", "tags": {"n": "y"}})) for _ in range(50)]
        finally:
            server.stop()  # lets every answered request finish its journal line
        requests = len([e for e in server.journal.since(mark) if not e["path"].endswith("/id-bench-late")])
        print(
            f"  {args.puts} PUTs of new identities in a row: {seconds:.2f} s, {requests} requests "
            f"(each 201 is followed by the SDK's GET), {ms(seconds / requests)} per request; "
            f"state.json {size / 1024:.0f} KiB after"
        )
        print("  " + describe(f"sequential PUT with {args.puts} resources stored", late))
        stops = []
        for run in range(5):
            again = SandboxServer(Path(tmp) / "sandbox", run_id=f"bench-stop-{run}")
            again.vault_url("kv-bench")  # a second listener, as a run that touches a vault has
            stops.append(timed(again.stop))
        print(f"  stop() with two listeners: median {ms(statistics.median(stops))}, max {ms(max(stops))} (5 runs)")
        seconds, written, size = state_only(Path(tmp) / "state-only", args.puts)
        print(
            f"  state alone (SandboxState, no HTTP): {args.puts} new resources in {seconds:.2f} s "
            f"({ms(seconds / args.puts)} each), {written / 1024:.0f} KiB written ({written / args.puts / 1024:.1f} KiB "
            f"per write), state.json {size / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    main()
