"""Benchmark: 8 databases x 50 small migrations, parallel against sequential, and the
per-migration overhead of the runner beyond the SQL itself.

Run: python benchmarks/bench_migrations.py [--databases 8] [--migrations 50]
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

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from deploykit.db import migration_runs  # noqa: E402
from deploykit.db import migrations as mig  # noqa: E402
from deploykit.db.database import DbRequest  # noqa: E402
from deploykit.sandbox.postgres import start_embedded  # noqa: E402

SQL = "CREATE TABLE t{n} (id int PRIMARY KEY, note text);\nINSERT INTO t{n} VALUES ({n}, 'x');\n"


def fresh_databases(admin: str, names: list[str]) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def raw_sql_seconds(admin: str, db: str, files: list[mig.Migration]) -> float:
    """The same SQL, one transaction per file, with no runner around it: the floor."""
    with psycopg.connect(make_conninfo(admin, dbname=db), autocommit=True) as conn:
        start = time.perf_counter()
        for migration in files:
            with conn.transaction():
                conn.execute(migration.sql)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", type=int, default=8)
    parser.add_argument("--migrations", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        admin = start_embedded(Path(tmp) / "pg")
        folder = Path(tmp) / "migrations"
        folder.mkdir()
        for n in range(1, args.migrations + 1):
            (folder / f"{n:04d}_table_{n}.sql").write_text(SQL.format(n=n))
        files = mig.discover(folder)
        os.environ["DEPLOYKIT_AUDIT_DIR"] = str(Path(tmp) / "audit")
        names = [f"bench_{i}" for i in range(args.databases)]

        def run_all(workers: int) -> float:
            fresh_databases(admin, names)
            work = [migration_runs.DbWork(db=_db(name), folder=folder, files=files) for name in names]
            ctx = _Ctx()
            start = time.perf_counter()
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda item: migration_runs._run(ctx, item, admin), work))
            elapsed = time.perf_counter() - start
            assert all(len(w.applied) == args.migrations and not w.error for w in work), [w.error for w in work]
            return elapsed

        sequential = run_all(1)
        parallel = run_all(args.databases)
        fresh_databases(admin, ["bench_raw", "bench_one"])
        raw = raw_sql_seconds(admin, "bench_raw", files)
        one = _Ctx()
        item = migration_runs.DbWork(db=_db("bench_one"), folder=folder, files=files)
        start = time.perf_counter()
        migration_runs._run(one, item, admin)
        runner = time.perf_counter() - start
        # Whole task (config, plan reads, apply, report) for one database, for reference.
        fresh_databases(admin, ["sigmatiq_core"])
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DO $$ BEGIN CREATE ROLE native_api; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
            conn.execute("ALTER DATABASE sigmatiq_core OWNER TO native_api")
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                start = time.perf_counter()
                migration_runs.migrate(
                    DbRequest(task="db.migrate", env="beta", admin_dsn=admin, db="sigmatiq_core", dir=str(folder))
                )
                task = time.perf_counter() - start
            finally:
                sys.stdout = stdout
    total = args.databases * args.migrations
    print(
        f"{args.databases} databases x {args.migrations} migrations = {total} files, embedded PostgreSQL 16, "
        "one connection per database"
    )
    print(f"sequential (1 worker):   {sequential:.2f} s ({sequential / total * 1000:.2f} ms per migration)")
    print(f"parallel ({args.databases} workers):    {parallel:.2f} s ({sequential / parallel:.2f}x faster)")
    print(
        f"one database, {args.migrations} files: runner {runner * 1000:.0f} ms vs the same SQL alone {raw * 1000:.0f} ms "
        f"-> overhead {(runner - raw) / args.migrations * 1000:.2f} ms per migration (target < 2 ms)"
    )
    print(f"whole db.migrate task for one database ({args.migrations} files): {task:.2f} s")


def _db(name: str):
    from deploykit.config import DatabaseConfig

    return DatabaseConfig(name=name, holds="benchmark")


class _Ctx:
    """The slice of the task context the runner reads: options and a quiet reporter."""

    class _Quiet:
        def info(self, message: str) -> None:
            pass

    def __init__(self) -> None:
        self.req = DbRequest(task="db.migrate", env="beta")
        self.reporter = self._Quiet()


if __name__ == "__main__":
    main()
