"""The no-op's floor: what a fresh process pays to import only the libraries a deploy no-op loads.

A no-op `invoke deploy --env beta` is a cold Python process. Before it can send its first
request it must import invoke, the Azure SDK (azure-core, requests, the management and vault
clients), pydantic, jinja2, psycopg and rich. This benchmark finds those modules by running the
no-op and listing every module it loaded from site-packages, then times a bare process that
imports exactly those (and the standard library they need) and does nothing else. The
difference between the no-op and that floor is everything the product itself does: its own
modules, the in-process sandbox, the reads, the SQL and the table.

Run: python benchmarks/bench_floor.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOOP = ["deploy", "--env", "beta", "--yes"]

# Runs the no-op inside this interpreter, then prints the third-party modules it left loaded
# (the background imports of parallel.import_meanwhile have finished by the time it returns).
PROBE = """
import json, sys
from invoke.main import program
program.run(["invoke", *{noop!r}], exit=False)
third = sorted(
    name for name, module in list(sys.modules.items())
    if "site-packages" in (getattr(module, "__file__", None) or "")
)
print("MODULES:" + json.dumps(third))
"""

IMPORT_EACH = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def environment() -> dict[str, str]:
    """This shell's variables, with bytecode allowed (operators' shells rarely forbid it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def loaded_modules(env: dict[str, str]) -> list[str]:
    probe = PROBE.format(noop=NOOP, repo=str(REPO))
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MODULES:")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"the no-op probe failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")
    return json.loads(lines[-1].removeprefix("MODULES:"))


def median_seconds(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def by_distribution(modules: list[str]) -> dict[str, list[str]]:
    """Modules grouped by their top-level package (azure.* by its second level: core, mgmt, keyvault)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in modules:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "azure" and len(parts) > 1 else parts[0]
        groups[key].append(name)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7, help="processes timed per figure (the median is reported)")
    args = parser.parse_args()
    env = environment()
    invoke = str(Path(sys.executable).with_name("invoke"))
    subprocess.run([invoke, *NOOP], cwd=REPO, env=env, capture_output=True, check=True)  # deployed, and bytecode written
    modules = loaded_modules(env)
    import_each = [sys.executable, "-c", IMPORT_EACH]

    bare = median_seconds([sys.executable, "-c", "pass"], env, args.runs)
    floor = median_seconds([*import_each, *modules], env, args.runs)
    noop = median_seconds([invoke, *NOOP], env, args.runs)
    print(f"deploy --env beta no-op against the default sandbox, median of {args.runs} processes each")
    print(f"  third-party modules the no-op loads: {len(modules)} (from site-packages)")
    print(f"  bare python:                               {bare:.3f} s")
    print(f"  python importing only those modules:       {floor:.3f} s  (the floor)")
    print(f"  the whole no-op:                           {noop:.3f} s")
    print(f"  the product's own share (no-op - floor):   {noop - floor:.3f} s")
    print("  each library alone (bare python + its modules; they share the standard library, so these overlap):")
    alone = {
        group: median_seconds([*import_each, *names], env, max(3, args.runs // 2)) - bare
        for group, names in by_distribution(modules).items()
    }
    for group, seconds in sorted(alone.items(), key=lambda item: -item[1]):
        if seconds >= 0.005:
            print(f"    {group:28} {seconds:.3f} s")


if __name__ == "__main__":
    main()
