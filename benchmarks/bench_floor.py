"""Where a deploy no-op's time goes: the libraries' imports, and the product's work once imported.

A no-op `invoke deploy --env beta` is a cold Python process: it imports invoke, the Azure SDK
(azure-core, requests, the management and vault clients), pydantic, jinja2, psycopg and rich,
then does its work. This benchmark splits the two:

- the floor: a bare process that imports exactly the library modules the no-op loads (found by
  running the no-op in a probe and listing what it loaded from site-packages, aliases and what
  a bare interpreter loads anyway left out), then leaves without the interpreter's teardown,
  as the CLI does (`cli.install_fast_exit`);
- the product's own modules (deploykit.*) imported after them, the same way;
- the work: the same no-op run again inside the probe, where everything is imported already
  (the product's modules too), timed in-process: its reads, SQL, comparison, table and the
  in-process sandbox's start and stop.

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

# Runs the no-op inside this interpreter (the first run imports everything; the background
# imports of parallel.import_meanwhile are done when it returns), then times it again `warm`
# times, then prints the library modules it left loaded under the names they were imported by
# (requests.packages.* are aliases of urllib3, idna and chardet).
PROBE = """
import io, json, sys, time
from contextlib import redirect_stdout
from invoke.main import program
with redirect_stdout(io.StringIO()):
    program.run(["invoke", *{noop!r}], exit=False)
warm = []
for _ in range({warm}):
    start = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        program.run(["invoke", *{noop!r}], exit=False)
    warm.append(time.perf_counter() - start)
loaded = [(name, getattr(module, "__file__", None) or "") for name, module in list(sys.modules.items())
          if getattr(module, "__name__", name) == name]
libraries = sorted(name for name, path in loaded if "site-packages" in path)
own = sorted(name for name, path in loaded if name.split(".")[0] == "deploykit")
print("PROBE:" + json.dumps({{"modules": libraries, "own": own, "warm": warm}}))
"""

BARE = "import json, sys; print(json.dumps(sorted(sys.modules)))"

# Imports each module named, then leaves as the CLI does: no teardown of what was imported.
IMPORT_EACH = """
import importlib, os, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
sys.stdout.flush()
os._exit(0)
"""


def environment() -> dict[str, str]:
    """This shell's variables, with bytecode allowed (operators' shells rarely forbid it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def probe(env: dict[str, str], warm: int) -> tuple[list[str], list[str], list[float]]:
    """(library modules a no-op loads beyond what a bare interpreter has, the product's modules it loads,
    in-process warm no-op seconds)."""
    code = PROBE.format(noop=NOOP, warm=warm)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE:")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"the no-op probe failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")
    found = json.loads(lines[-1].removeprefix("PROBE:"))
    bare = subprocess.run([sys.executable, "-c", BARE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    always = set(json.loads(bare.stdout))
    return [m for m in found["modules"] if m not in always], found["own"], found["warm"]


def median_seconds(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def by_library(modules: list[str]) -> dict[str, list[str]]:
    """Modules grouped by their top-level package (azure.* by its second level: core, mgmt, keyvault)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in modules:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "azure" and len(parts) > 1 else parts[0]
        groups[key].append(name)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7, help="processes (and warm in-process runs) per figure; medians")
    args = parser.parse_args()
    env = environment()
    invoke = str(Path(sys.executable).with_name("invoke"))
    subprocess.run([invoke, *NOOP], cwd=REPO, env=env, capture_output=True, check=True)  # deployed, and bytecode written
    modules, own, warm = probe(env, args.runs)
    import_each = [sys.executable, "-c", IMPORT_EACH]

    bare = median_seconds([sys.executable, "-c", "pass"], env, args.runs)
    floor = median_seconds([*import_each, *modules], env, args.runs)
    with_own = median_seconds([*import_each, *modules, *own], env, args.runs)
    listing = median_seconds([invoke, "--list"], env, args.runs)
    noop = median_seconds([invoke, *NOOP], env, args.runs)
    work = statistics.median(warm)
    print(f"deploy --env beta no-op against the default sandbox, medians of {args.runs}")
    print(f"  library modules the no-op loads:               {len(modules)} (from site-packages, no aliases)")
    print(f"  bare python:                                   {bare:.3f} s")
    print(f"  python importing only those, fast exit:        {floor:.3f} s  (the floor)")
    label = f"the same and the product's {len(own)} modules:"
    print(f"  {label:47}{with_own:.3f} s")
    print(f"  the no-op's work with everything imported:     {work:.3f} s  (in-process, warm)")
    print(f"  all imports + work:                            {with_own + work:.3f} s")
    print(f"  the whole no-op:                               {noop:.3f} s")
    print(f"  invoke --list (invoke and tasks.py alone):     {listing:.3f} s")
    print("  each library alone (bare python + its modules; they share the standard library, so these overlap):")
    alone = {
        group: median_seconds([*import_each, *names], env, max(3, args.runs // 2)) - bare
        for group, names in by_library(modules).items()
    }
    for group, seconds in sorted(alone.items(), key=lambda item: -item[1]):
        if seconds >= 0.005:
            print(f"    {group:28} {seconds:.3f} s")


if __name__ == "__main__":
    main()
