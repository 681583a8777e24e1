"""Benchmark (a): `invoke --list` wall time, and proof that no Azure SDK or psycopg is imported.

Run: python benchmarks/bench_list.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "import sys; from invoke import Program, Collection; import tasks; "
    "Program(namespace=Collection.from_module(tasks)).run(['invoke', '--list'], exit=False); "
    "print('HEAVY:' + ','.join(sorted(m for m in sys.modules if m.startswith(('azure', 'psycopg')))))"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    invoke = Path(sys.executable).with_name("invoke")
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([str(invoke), "--list"], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    heavy = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, check=True, capture_output=True, text=True)
    imported = heavy.stdout.strip().splitlines()[-1].removeprefix("HEAVY:")
    print(
        f"invoke --list over {args.runs} runs: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s (target < 0.3 s)"
    )
    print(f"azure/psycopg modules imported by --list: {imported or 'none'}")


if __name__ == "__main__":
    main()
