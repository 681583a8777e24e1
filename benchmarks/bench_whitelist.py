"""Benchmark: operator whitelisting, whole commands against a sandbox with injected latency.

Times `whitelist.add` (four services), the same add again (no change), `whitelist.list` and
`whitelist.remove` as whole processes (start to exit, median of --runs), with each command's
request counts; then K operators adding at the same moment to the vault and registry lists:
wall time, 412 PreconditionFailed answers, and whether every address is present afterwards.
The data services are seeded (no PostgreSQL cluster is started: firewall rules only need their
server's record).

Run: python benchmarks/bench_whitelist.py [--runs 5] [--latency-ms 50] [--concurrent 4]
"""

from __future__ import annotations

import argparse
import json
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

from deploykit.azure.target import SANDBOX_SUBSCRIPTION, sandbox_control  # noqa: E402
from deploykit.sandbox.server import SandboxServer  # noqa: E402

GROUPS = {"rg-trading-beta-data": "centralus", "rg-trading-shared": "centralus"}
DATA = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-data/providers"
SEEDED = {
    f"{DATA}/Microsoft.DBforPostgreSQL/flexibleServers/psql-trading-beta": {"location": "centralus", "properties": {}},
    f"{DATA}/Microsoft.Cache/redis/redis-trading-beta-1023": {"location": "centralus", "properties": {"sku": {"name": "Basic"}}},
    f"{DATA}/Microsoft.KeyVault/vaults/kv-trading-beta": {
        "location": "centralus",
        "properties": {"networkAcls": {"ipRules": []}},
    },
    f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-shared/providers/Microsoft.ContainerRegistry/registries/"
    "acrtradingshared": {"location": "centralus", "sku": {"name": "Premium"}, "properties": {"networkRuleSet": {"ipRules": []}}},
}
ALL = "postgres,redis,vault,registry"


def invoke(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = [shutil.which("invoke", path=str(Path(sys.executable).parent)) or "invoke", "--search-root", str(REPO), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed(env: dict[str, str], control: callable, *args: str) -> tuple[float, dict]:
    mark = control("GET", "/journal?since=999999999")["last"]
    start = time.perf_counter()
    run = invoke(env, *args)
    _, err = run.communicate(timeout=300)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {run.returncode}: {err.strip()}")
    return seconds, control("GET", f"/journal?since={mark}")["counts"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(Path(tmp) / "sandbox", run_id="bench")
        ca = str(server.cert_path)

        def control(method: str, path: str, body: object = None) -> dict:
            return sandbox_control(server.url, ca, method, path, body)

        for name, location in GROUPS.items():
            rid = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/{name}"
            control(
                "POST", "/seed", {"id": rid, "body": {"location": location, "properties": {"provisioningState": "Succeeded"}}}
            )
        for rid, body in SEEDED.items():
            control("POST", "/seed", {"id": rid, "body": body})
        control("PUT", "/faults", {"latency_ms": args.latency_ms})
        env = {
            **os.environ,
            "DEPLOYKIT_SANDBOX_URL": server.url,
            "DEPLOYKIT_SANDBOX_CA": ca,
            "DEPLOYKIT_AUDIT_DIR": str(Path(tmp) / "audit"),
            "PYTHONPATH": str(REPO),
            "USER": "bench.operator@contoso-fx.com",
        }
        rows: dict[str, list[tuple[float, dict]]] = {"add": [], "add again": [], "list": [], "remove": []}
        for i in range(args.runs):
            ip = f"52.10.0.{i + 1}"
            rows["add"].append(timed(env, control, "whitelist.add", "--env", "beta", "--ip", ip, "--services", ALL))
            rows["add again"].append(timed(env, control, "whitelist.add", "--env", "beta", "--ip", ip, "--services", ALL))
            rows["list"].append(timed(env, control, "whitelist.list", "--env", "beta"))
            rows["remove"].append(timed(env, control, "whitelist.remove", "--env", "beta", "--ip", ip))
        print(f"whole commands, {args.latency_ms} ms per request injected, median of {args.runs}:")
        for name, results in rows.items():
            counts = results[-1][1]
            print(
                f"  {name:<10} {statistics.median(s for s, _ in results):6.2f} s   "
                f"{counts['reads']} reads, {counts['writes']} writes"
            )

        mark = control("GET", "/journal?since=999999999")["last"]
        start = time.perf_counter()
        runs = []
        for i in range(args.concurrent):
            owner_env = {**env, "USER": f"operator-{i}@contoso-fx.com"}
            runs.append(
                invoke(owner_env, "whitelist.add", "--env", "beta", "--ip", f"52.20.0.{i + 1}", "--services", "vault,registry")
            )
        failures = [r for r in runs if r.wait(timeout=300) != 0]
        seconds = time.perf_counter() - start
        entries = control("GET", f"/journal?since={mark}")["entries"]
        refused = sum(1 for e in entries if e.get("status") == 412)
        listing = invoke(env, "whitelist.list", "--env", "beta", "--json").communicate(timeout=120)[0]
        present = {(r["service"], r["address"]) for r in json.loads(listing)["rules"]}
        wanted = {(s, f"52.20.0.{i + 1}") for s in ("vault", "registry") for i in range(args.concurrent)}
        server.stop()
    print(
        f"{args.concurrent} operators adding at once (vault and registry lists): {seconds:.2f} s wall, "
        f"{refused} PUTs refused with 412 and retried, {len(failures)} failed, "
        f"every address present: {wanted <= present}"
    )


if __name__ == "__main__":
    main()
