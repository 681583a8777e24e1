"""Benchmarks (b) and (c): `deploy --env beta` against the sandbox with injected latency.

(b) a fresh deploy: wall time against the dependency graph's critical path and against the
    same engine run sequentially (one worker), with request counts;
(c) the no-op re-run: all reads in parallel, about one round of latency.

Run: python benchmarks/bench_deploy.py [--latency-ms 50] [--lro-seconds 1.0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)

from deploykit.azure.target import SANDBOX_SUBSCRIPTION, open_target, sandbox_control  # noqa: E402
from deploykit.config import load_platform  # noqa: E402
from deploykit.deploy import APP_TYPE, db_inputs, deploy  # noqa: E402
from deploykit.engine.plan import compute_plan  # noqa: E402
from deploykit.engine.runner import (  # noqa: E402
    APPLY_WORKERS,
    RunOptions,
    apply_plan,
    render_steps,
)
from deploykit.paths import config_dir  # noqa: E402
from deploykit.sandbox.pgcluster import warm_template  # noqa: E402
from deploykit.sandbox.providers import ASYNC_TYPES  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402

STEPS = list(load_platform(config_dir(), ["beta"]).envs["beta"].steps)  # every step beta lists


# db.create at its least: the vault's secrets in one read round, then the roles' passwords, then
# the database URLs (two write rounds); its SQL is local to the server and counted as free.
DB_CREATE_ROUNDS = 3


def critical_path(specs, latency: float, lro: float, with_databases: bool = False) -> float:
    """The least time the graph allows: plan round, longest dependency chain, verify round.

    A synchronous PUT costs one request; an asynchronous one costs PUT + one status poll +
    the final GET, plus the operation's own duration. Planning an absent vault costs two reads
    (the vault, then its soft-deleted twin). With `with_databases`, the graph is the one deploy
    runs (deploy.py): db.create after the server's inputs, costing DB_CREATE_ROUNDS requests,
    and every app after db.create.
    """
    by_address = {s.address: s for s in specs}
    depends = {s.address: [d for d in s.depends_on if d in by_address] for s in specs}
    cost = {s.address: (3 * latency + lro) if s.type.lower() in ASYNC_TYPES else latency for s in specs}
    if with_databases:
        env = load_platform(config_dir(), ["beta"]).envs["beta"]
        depends["db.create"] = [a for a in db_inputs(env) if a in by_address]
        cost["db.create"] = DB_CREATE_ROUNDS * latency
        for spec in specs:
            if spec.type.lower() == APP_TYPE:
                depends[spec.address].append("db.create")
    memo: dict[str, float] = {}

    def finish(address: str) -> float:
        if address not in memo:
            memo[address] = max((finish(d) for d in depends[address]), default=0.0) + cost[address]
        return memo[address]

    plan_round = 2 * latency if any(s.type.lower() == "microsoft.keyvault/vaults" for s in specs) else latency
    return plan_round + max(finish(a) for a in depends) + latency


def run_engine(workers: int) -> float:
    """Plan, apply and verify with the given parallelism; returns wall seconds."""
    platform = load_platform(config_dir(), ["beta"])
    with open_target(platform, "sandbox") as opened:
        specs = render_steps(platform, STEPS, "beta", SANDBOX_SUBSCRIPTION)
        start = time.perf_counter()
        plan = compute_plan(specs, opened.provider, workers=workers)
        apply_plan(plan, {s.address: s for s in specs}, opened.provider, workers=workers)
        compute_plan(specs, opened.provider, workers=workers)
        return time.perf_counter() - start


def timed_reads(workers: int) -> float:
    platform = load_platform(config_dir(), ["beta"])
    with open_target(platform, "sandbox") as opened:
        specs = render_steps(platform, STEPS, "beta", SANDBOX_SUBSCRIPTION)
        start = time.perf_counter()
        compute_plan(specs, opened.provider, workers=workers)
        return time.perf_counter() - start


def whole(env: dict[str, str], *args: str) -> float:
    """One `invoke` process, start to exit (the figure an operator feels)."""
    invoke = shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke"
    start = time.perf_counter()
    result = subprocess.run([invoke, "--search-root", str(REPO), *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
    return seconds


def timeline(entries: list[dict], began: float, wall: float) -> dict[str, float]:
    """Where one whole deploy's time went, from the sandbox's journal (seconds since process start)."""

    def first(match) -> float:
        return min(e["t"] - began for e in entries if match(e))

    server = [e["t"] - began for e in entries if e["path"].split("?")[0].lower().endswith("/flexibleservers/psql-trading-beta")]
    app_put = first(lambda e: e["method"] == "PUT" and "/containerApps/" in e["path"])
    url_put = [e["t"] - began for e in entries if e["method"] == "PUT" and "/secrets/database-url-" in e["path"]]
    return {
        "first request": first(lambda e: True),
        "server PUT": server[1],  # [0] is the plan's read (404)
        "server ready": server[2],  # the final GET after the operation
        "last database URL": max(url_put),
        "first app PUT": app_put,
        "last request": max(e["t"] - began for e in entries),
        "exit": wall,
    }


def fresh_deploys(
    root: Path, env: dict[str, str], faults: dict, runs: int, servers: list[SandboxServer]
) -> tuple[list[float], list[dict]]:
    """Whole-process fresh deploys, each against a new sandbox in its own folder under `root`.

    A new folder each, not a reset of one sandbox: a reset deletes the last run's cluster (about
    1,600 files), and on this project's VM files made in the seconds after many were deleted are
    slow to create (the next server's copy of the template took 0.9-1.5 s instead of 0.1 s), which
    measured the benchmark's own clean-up. The sandboxes go into `servers`, removed by the caller
    once every measurement is done.
    """
    walls, phases = [], []
    for run in range(runs):
        server, where = new_sandbox(root, f"fresh-{run}", faults, servers)
        began = time.time()
        walls.append(whole({**env, **where}, "deploy", "--env", "beta", "--yes"))
        entries = sandbox_control(server.url, str(server.cert_path), "GET", "/journal?since=0")["entries"]
        phases.append(timeline(entries, began, walls[-1]))
    return walls, phases


def new_sandbox(root: Path, name: str, faults: dict, servers: list[SandboxServer]) -> tuple[SandboxServer, dict[str, str]]:
    """A sandbox in the new folder `root/name` with `faults`, kept in `servers`, and the variables
    that point a run at it (its audit log beside it, never the repository's)."""
    server = SandboxServer(root / name, run_id=f"bench-{name}")
    servers.append(server)
    sandbox_control(server.url, str(server.cert_path), "PUT", "/faults", faults)
    return server, {
        "DEPLOYKIT_SANDBOX_URL": server.url,
        "DEPLOYKIT_SANDBOX_CA": str(server.cert_path),
        "DEPLOYKIT_AUDIT_DIR": str(root / f"{name}-audit"),
    }


def remove(servers: list[SandboxServer]) -> None:
    """Stop and delete every sandbox's clusters (none left running), even after a failed measurement."""
    for server in servers:
        with contextlib.suppress(Exception):
            sandbox_control(server.url, str(server.cert_path), "POST", "/reset")
        server.stop()


# A machine's memory-backed folder: the sandbox's clusters without this disk's file-creation
# stalls (on the project's VM, 1,600 new files take 0.05 s to 1.5 s depending on the moment).
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 - only a folder of our own (mkdtemp) inside it


def memory_backed(env: dict[str, str], faults: dict, runs: int) -> tuple[list[float], list[dict]] | None:
    """fresh_deploys() with the sandboxes' state in MEMORY_DIR; None where there is none."""
    if not (MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK)):
        return None
    with tempfile.TemporaryDirectory(dir=MEMORY_DIR, prefix="deploykit-bench-") as tmp:
        servers: list[SandboxServer] = []
        try:
            return fresh_deploys(Path(tmp), env, faults, runs, servers)
        finally:
            remove(servers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--lro-seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="fresh whole-command deploys (the median is reported)")
    args = parser.parse_args()
    latency, lro = args.latency_ms / 1000, args.lro_seconds
    faults = {"latency_ms": args.latency_ms, "lro_seconds": lro, "poll_ms": 100}
    # Under the repository's .sandbox/, where the default sandbox keeps its state (and its
    # PostgreSQL clusters): file creation costs differ a lot between folders on some machines.
    (REPO / ".sandbox").mkdir(exist_ok=True)
    # Whole processes (the figure an operator feels). Python's default: bytecode cached on the
    # first run. (Some machines, this project's CI image among them, set PYTHONDONTWRITEBYTECODE=1,
    # so every command would compile the package afresh; that is not what an operator's machine does.)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("DEPLOYKIT_SANDBOX_")}
    env["PYTHONPATH"] = str(REPO)
    warm_template()  # made once per machine: not part of any figure below
    servers: list[SandboxServer] = []  # every sandbox this benchmark starts; removed at the very end
    with tempfile.TemporaryDirectory(dir=REPO / ".sandbox", prefix="bench-") as tmp, contextlib.ExitStack() as cleanup:
        cleanup.callback(remove, servers)
        # First, before any measurement: fresh deploys on this disk, then in memory.
        fresh_runs, phases = fresh_deploys(Path(tmp), env, faults, args.runs, servers)
        process_wall = statistics.median(fresh_runs)
        memory = memory_backed(env, faults, args.runs)

        # Each measurement below gets a sandbox of its own too, for the same reason.
        def fresh_server(name: str) -> tuple[SandboxServer, dict[str, str]]:
            server, where = new_sandbox(Path(tmp), name, faults, servers)
            os.environ.update(where)  # the in-process runs below find it as a user's command would
            return server, where

        specs = render_steps(load_platform(config_dir(), ["beta"]), STEPS, "beta", SANDBOX_SUBSCRIPTION)
        floor = critical_path(specs, latency, lro)
        deploy_floor = critical_path(specs, latency, lro, with_databases=True)

        fresh_server("engine-sequential")
        sequential = run_engine(workers=1)

        server, _ = fresh_server("engine-parallel")
        parallel = run_engine(workers=APPLY_WORKERS)
        fresh_counts = sandbox_control(server.url, str(server.cert_path), "GET", "/journal?since=0")["counts"]

        server, task_sandbox = fresh_server("task")
        control = lambda method, path, body=None: sandbox_control(server.url, str(server.cert_path), method, path, body)  # noqa: E731
        devnull = open(os.devnull, "w")  # noqa: SIM115 - the task's console output is not the figure
        stdout, sys.stdout = sys.stdout, devnull
        try:
            start = time.perf_counter()
            deploy(RunOptions("deploy", "beta", "sandbox", yes=True))
            task_wall = time.perf_counter() - start
            task_counts = control("GET", "/journal?since=0")["counts"]
            mark = control("GET", "/journal?since=999999999")["last"]
            start = time.perf_counter()
            deploy(RunOptions("deploy", "beta", "sandbox", yes=True))
            noop_task_wall = time.perf_counter() - start
        finally:
            sys.stdout = stdout
        noop_counts = control("GET", f"/journal?since={mark}")["counts"]
        noop_parallel = timed_reads(16)
        noop_sequential = timed_reads(1)

        # The no-op as a whole process: against this (external) sandbox, then against the default
        # one, started and stopped by the command itself.
        external = {**env, **task_sandbox}
        process_noop = statistics.median(whole(external, "deploy", "--env", "beta", "--yes") for _ in range(3))
        local = {
            **env,
            "DEPLOYKIT_SANDBOX_DIR": str(Path(tmp) / "default-sandbox"),
            "DEPLOYKIT_AUDIT_DIR": str(Path(tmp) / "default-audit"),
        }
        try:
            whole(local, "deploy", "--env", "beta", "--yes")
            default_noop = statistics.median(whole(local, "deploy", "--env", "beta", "--yes") for _ in range(5))
        finally:  # its cluster stopped with the others, not orphaned
            servers.append(SandboxServer(Path(tmp) / "default-sandbox", run_id="bench-cleanup"))

    print(
        f"deploy --env beta, sandbox, {args.latency_ms:.0f} ms per request, {lro:.1f} s per long-running operation, "
        f"{len(specs)} resources"
    )
    print(f"(b) ARM critical path (plan round + longest chain of the steps' entries + verify round): {floor:.2f} s")
    print(f"    engine, {APPLY_WORKERS} workers: {parallel:.2f} s = {parallel / floor:.2f}x the ARM critical path")
    print(f"    engine, sequential: {sequential:.2f} s = {sequential / floor:.2f}x the ARM critical path")
    print(
        f"    deploy's critical path (the same, with db.create at {DB_CREATE_ROUNDS} requests after the server and "
        f"every app after db.create): {deploy_floor:.2f} s"
    )
    print(
        f"    whole deploy task (plus db.create over SQL and the apps' health checks): {task_wall:.2f} s "
        f"= {task_wall / deploy_floor:.2f}x deploy's critical path; {task_counts['requests']} requests "
        f"({task_counts['reads']} reads, {task_counts['writes']} writes)"
    )
    print(
        f"    requests for a fresh deploy: {fresh_counts['requests']} ({fresh_counts['reads']} reads, "
        f"{fresh_counts['writes']} writes) {fresh_counts['by_method']}"
    )
    print(
        f"(c) no-op re-run: reads in parallel {noop_parallel * 1000:.0f} ms vs sequential {noop_sequential * 1000:.0f} ms "
        f"(one round of latency = {args.latency_ms:.0f} ms); whole no-op task {noop_task_wall:.2f} s"
    )
    print(
        f"    requests for the no-op run: {noop_counts['requests']} "
        f"({noop_counts['reads']} reads, {noop_counts['writes']} writes)"
    )
    print(
        f"(d) whole command, process start to exit: deploy {process_wall:.2f} s = {process_wall / deploy_floor:.2f}x "
        f"deploy's critical path (median of {args.runs}: {', '.join(f'{t:.2f}' for t in fresh_runs)}); "
        f"no-op {process_noop:.2f} s (external sandbox, {args.latency_ms:.0f} ms per request, median of 3); "
        f"no-op against the default in-process sandbox {default_noop:.2f} s (no injected latency, median of 5)"
    )

    if memory is not None:
        memory_runs = memory[0]
        memory_wall = statistics.median(memory_runs)
        print(
            f"    the same deploy with the sandbox's state (its PostgreSQL clusters) in memory ({MEMORY_DIR}): "
            f"{memory_wall:.2f} s = {memory_wall / deploy_floor:.2f}x deploy's critical path "
            f"(median of {args.runs}: {', '.join(f'{t:.2f}' for t in memory_runs)})"
        )
    print("    where a whole fresh deploy's time goes (seconds from process start, median of the runs):")
    print(f"      {'':<18} {'on disk':>8}" + (f" {'in memory':>10}" if memory is not None else ""))
    for key in phases[0]:
        row = f"      {key:<18} {statistics.median(p[key] for p in phases):8.2f}"
        if memory is not None:
            row += f" {statistics.median(p[key] for p in memory[1]):10.2f}"
        print(row)


if __name__ == "__main__":
    main()
