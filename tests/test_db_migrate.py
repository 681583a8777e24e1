"""db.migrate and db.status against a real PostgreSQL: order, checksums, failures, locking, dry runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from deploykit.db import database, migration_runs
from deploykit.db.database import DbRequest
from tests.conftest import REPO, run_invoke
from tests.helpers import copy_project

DB = "sigmatiq_core"


@pytest.fixture()
def created(pg_admin: str, beta_vault) -> str:
    assert database.create(DbRequest(task="db.create", env="beta", admin_dsn=pg_admin, yes=True)) == 0
    return pg_admin


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode())
    return folder


def migrate(admin: str, folder: Path, db: str = DB, **extra) -> int:
    return migration_runs.migrate(
        DbRequest(task="db.migrate", env="beta", admin_dsn=admin, db=db, dir=str(folder), yes=True, **extra)
    )


def query(admin: str, sql: str, db: str = DB) -> list[tuple]:
    with psycopg.connect(make_conninfo(admin, dbname=db)) as conn:
        return conn.execute(sql).fetchall()


BASIC = {
    "0001_watchlists.sql": "CREATE TABLE watchlists (id serial PRIMARY KEY, name text NOT NULL);\n",
    "0002_presets.sql": "CREATE TABLE presets (id serial PRIMARY KEY);\nINSERT INTO watchlists (name) VALUES ('default');\n",
    "0010_index.sql": "CREATE INDEX watchlists_name ON watchlists (name);\n",
}


def test_migrate_twice_second_run_applies_nothing(created: str, tmp_path: Path, capsys) -> None:
    folder = write(tmp_path / "core", BASIC)
    assert migrate(created, folder) == 0
    rows = query(created, "SELECT version, name, checksum, applied_by FROM deploykit_migrations ORDER BY version")
    assert [(r[0], r[1]) for r in rows] == [(1, "0001_watchlists.sql"), (2, "0002_presets.sql"), (10, "0010_index.sql")]
    import hashlib

    assert [r[2] for r in rows] == [hashlib.sha256(BASIC[r[1]].encode()).hexdigest() for r in rows]
    capsys.readouterr()
    assert migrate(created, folder) == 0
    assert "No changes: every migration is applied." in capsys.readouterr().out
    assert len(query(created, "SELECT * FROM deploykit_migrations")) == 3
    # Objects belong to the owning app, not the admin.
    assert query(created, "SELECT tableowner FROM pg_tables WHERE tablename = 'watchlists'") == [("native_api",)]


def test_edited_migration_is_refused_and_crlf_is_not_an_edit(created: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "core", BASIC)
    assert migrate(created, folder) == 0
    (folder / "0001_watchlists.sql").write_bytes(b"\xef\xbb\xbf" + BASIC["0001_watchlists.sql"].replace("\n", "\r\n").encode())
    assert migrate(created, folder) == 0  # BOM and CRLF only: the same migration
    (folder / "0002_presets.sql").write_text("CREATE TABLE presets (id bigserial PRIMARY KEY);\n")
    result = run_invoke("db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder))
    assert result.returncode == 2
    assert "0002_presets.sql: already applied with a different checksum" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert migrate(created, folder, repair=True) == 0
    assert query(created, "SELECT count(*) FROM deploykit_migrations")[0][0] == 3


def test_failing_migration_rolls_back_and_keeps_earlier_ones(created: str, tmp_path: Path) -> None:
    folder = write(
        tmp_path / "core",
        {
            "0001_ok.sql": "CREATE TABLE kept (id int);\n",
            "0002_broken.sql": "CREATE TABLE lost (id int);\nSELECT 1 / 0;\n",
            "0003_never.sql": "CREATE TABLE never (id int);\n",
        },
    )
    result = run_invoke("db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder), "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["summary"]["failed"] == 1
    error = next(c["error"] for c in doc["changes"] if c["address"] == f"migrations.{DB}")
    assert "0002_broken.sql" in error and "SQLSTATE 22012" in error and "division by zero" in error
    assert query(created, "SELECT version FROM deploykit_migrations") == [(1,)]
    tables = {r[0] for r in query(created, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "kept" in tables and "lost" not in tables and "never" not in tables


def test_syntax_error_reports_its_position(created: str, tmp_path: Path, capsys) -> None:
    folder = write(tmp_path / "core", {"0001_typo.sql": "CREATE TABEL oops (id int);\n"})
    assert migrate(created, folder) == 1
    out = capsys.readouterr().out
    assert "0001_typo.sql: SQLSTATE 42601 at position 8" in out


def test_two_concurrent_runners_apply_each_migration_once(created: str, tmp_path: Path, beta_vault) -> None:
    files = {"0001_log.sql": "CREATE TABLE applied_log (version int);\n"}
    for n in range(2, 16):
        files[f"{n:04d}_step.sql"] = f"SELECT pg_sleep(0.05);\nINSERT INTO applied_log VALUES ({n});\n"
    folder = write(tmp_path / "core", files)
    invoke = shutil.which("invoke", path=str(Path(__import__("sys").executable).parent))
    command = [
        invoke,
        "--search-root",
        str(REPO),
        "db.migrate",
        "--env",
        "beta",
        "--admin-dsn",
        created,
        "--db",
        DB,
        "--dir",
        str(folder),
    ]
    env = {**beta_vault.env(), "PYTHONPATH": str(REPO)}
    runners = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(r.wait(timeout=120), r.stdout.read(), r.stderr.read()) for r in runners]
    assert [code for code, _, _ in results] == [0, 0], results
    assert query(created, "SELECT count(*), count(DISTINCT version) FROM applied_log") == [(14, 14)]
    assert query(created, "SELECT count(*) FROM deploykit_migrations") == [(15,)]


def _snapshot(admin: str) -> list[tuple]:
    return query(
        admin,
        "SELECT c.relname, c.relkind, c.relpages FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1",
    )


def test_dry_run_writes_nothing_not_even_the_tracking_table(created: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "core", BASIC)
    before = _snapshot(created)
    result = run_invoke(
        "db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder), "--dry-run", "--show-sql"
    )
    assert result.returncode == 0, result.stderr
    assert "-- sigmatiq_core: 0001_watchlists.sql\nCREATE TABLE watchlists" in result.stdout
    planned = run_invoke(
        "db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder), "--dry-run", "--json"
    )
    [change] = json.loads(planned.stdout)["changes"]
    assert change["diff"]["pending"]["new"] == ["0001_watchlists.sql", "0002_presets.sql", "0010_index.sql"]
    assert _snapshot(created) == before
    assert query(created, "SELECT to_regclass('public.deploykit_migrations')") == [(None,)]


def test_non_transactional_marker_allows_create_index_concurrently(created: str, tmp_path: Path) -> None:
    folder = write(
        tmp_path / "core",
        {
            "0001_table.sql": "CREATE TABLE quotes (symbol text);\n",
            "0002_index.sql": "-- deploykit:no-transaction\nCREATE INDEX CONCURRENTLY quotes_symbol ON quotes (symbol);\n",
        },
    )
    assert migrate(created, folder) == 0
    assert query(created, "SELECT indexname FROM pg_indexes WHERE tablename = 'quotes'") == [("quotes_symbol",)]


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"0001_a.sql": "SELECT 1;"}, ["--db", "sigmatiq_nope"], "--db: 'sigmatiq_nope' is not a database of beta"),
        (None, ["--db", DB, "--dir", "/nonexistent/migrations"], "--dir: /nonexistent/migrations does not exist"),
        ({"0001_a.sql": "SELECT 1;", "abc.sql": "SELECT 2;"}, ["--db", DB], "abc.sql: not a migration name"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"}, ["--db", DB], "duplicate number 0001"),
    ],
)
def test_bad_input_exits_2_and_applies_nothing(created: str, tmp_path: Path, files, args, message) -> None:
    folder = write(tmp_path / "core", files) if files else None
    extra = ["--dir", str(folder)] if folder and "--dir" not in args else []
    result = run_invoke("db.migrate", "--env", "beta", "--admin-dsn", created, *args, *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert query(created, "SELECT to_regclass('public.deploykit_migrations')") == [(None,)]


def test_missing_applied_file_is_reported(created: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "core", BASIC)
    assert migrate(created, folder) == 0
    (folder / "0010_index.sql").unlink()
    result = run_invoke("db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder))
    assert result.returncode == 2 and "missing from the folder: 0010_index.sql" in result.stderr


def test_all_databases_migrate_from_the_configured_root_and_status_reports(created: str, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    beta = (
        (work / "config" / "beta.yaml")
        .read_text()
        .replace("migrations_root: migrations", f"migrations_root: {tmp_path / 'apps'}")
    )
    (work / "config" / "beta.yaml").write_text(beta)
    write(tmp_path / "apps" / "core", BASIC)
    write(tmp_path / "apps" / "auth", {"0001_users.sql": "CREATE TABLE users (id serial PRIMARY KEY);\n"})
    write(tmp_path / "apps" / "backfill", {"0001_bars.sql": "CREATE TABLE bars (symbol text);\n", "0002_more.sql": "SELECT 1;\n"})
    monkeypatch.chdir(work)
    assert migration_runs.migrate(DbRequest(task="db.migrate", env="beta", admin_dsn=created, yes=True)) == 0
    assert query(created, "SELECT count(*) FROM deploykit_migrations", db="sigmatiq_auth") == [(1,)]
    assert query(created, "SELECT count(*) FROM deploykit_migrations", db="sigmatiq_backfill") == [(2,)]
    (tmp_path / "apps" / "auth" / "0002_sessions.sql").write_text("CREATE TABLE sessions (id int);\n")
    (tmp_path / "apps" / "core" / "0001_watchlists.sql").write_text("-- edited\n")
    result = run_invoke("db.status", "--env", "beta", "--admin-dsn", created, "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    rows = {r["database"]: r for r in json.loads(result.stdout)["databases"]}
    assert rows["sigmatiq_auth"]["pending"] == ["0002_sessions.sql"] and rows["sigmatiq_auth"]["applied"] == 1
    assert rows["sigmatiq_core"]["checksum_drift"] == ["0001_watchlists.sql"]
    assert rows["sigmatiq_backfill"]["last_applied"]["name"] == "0002_more.sql"


def test_baseline_adopts_a_database_migrated_by_another_tool(created: str, tmp_path: Path) -> None:
    with psycopg.connect(make_conninfo(created, dbname=DB), autocommit=True) as conn:
        conn.execute("SET ROLE native_api")
        conn.execute("CREATE TABLE watchlists (id serial PRIMARY KEY, name text NOT NULL)")  # applied by hand, long ago
    folder = write(tmp_path / "core", {**BASIC, "0002_presets.sql": "CREATE TABLE presets (id serial PRIMARY KEY);\n"})
    assert migrate(created, folder, baseline=1) == 0
    rows = query(created, "SELECT version, applied_by FROM deploykit_migrations ORDER BY version")
    assert rows[0][0] == 1 and rows[0][1].startswith("baseline by ")
    assert [r[0] for r in rows] == [1, 2, 10]


def test_a_relative_dir_is_read_from_the_folder_the_command_runs_in(created: str, tmp_path: Path) -> None:
    """`--dir ../core` typed in a subfolder means the shell's ../core, not one beside the repository."""
    write(tmp_path / "core", BASIC)
    (tmp_path / "sub").mkdir()
    args = ("db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", "../core", "--dry-run")
    result = run_invoke(*args, cwd=tmp_path / "sub")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in BASIC), result.stdout


def _beta_databases() -> list[str]:
    from deploykit.config import load_platform
    from deploykit.paths import config_dir

    return [d.name for d in load_platform(config_dir(), ["beta"]).envs["beta"].databases]


def test_with_no_migrations_folder_nothing_is_called_applied(created: str, tmp_path: Path) -> None:
    """No database has a folder: both tasks say there is nothing to migrate, and name each database once."""
    project = copy_project(tmp_path)  # its migrations/ folder is the test's
    for task in ("db.migrate", "db.status"):
        result = run_invoke(task, "--env", "beta", "--admin-dsn", created, cwd=project)
        assert result.returncode == 0, result.stderr
        assert "Nothing to migrate: no database has a migrations folder." in result.stdout
        assert "every migration is applied" not in result.stdout
        for name in _beta_databases():
            assert result.stdout.count(f"{name}: no folder") == 1, (task, name, result.stdout)


def test_a_run_that_applies_names_each_folderless_database_once(created: str, tmp_path: Path) -> None:
    """Verify reads the folders again after applying; the notes about missing folders are not repeated."""
    project = copy_project(tmp_path)  # its migrations/ folder is the test's
    write(project / "migrations" / "core", BASIC)
    result = run_invoke("db.migrate", "--env", "beta", "--admin-dsn", created, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Apply finished: 0 created, 1 updated" in result.stdout, result.stdout
    for name in _beta_databases():
        assert result.stdout.count(f"{name}: no folder") == (name != DB), (name, result.stdout)


def test_baseline_and_repair_plans_name_the_files_they_only_record(created: str, tmp_path: Path) -> None:
    """A dry run says which files run and which are only recorded (--baseline) or re-recorded (--repair)."""
    folder = write(tmp_path / "core", BASIC)
    names = sorted(BASIC)

    def planned(*extra: str) -> dict:
        args = ("db.migrate", "--env", "beta", "--admin-dsn", created, "--db", DB, "--dir", str(folder), "--dry-run", "--json")
        result = run_invoke(*args, *extra)
        assert result.returncode == 0, result.stderr
        [change] = json.loads(result.stdout)["changes"]
        return {key: value["new"] for key, value in change["diff"].items()}

    assert planned("--baseline", "2") == {"pending": names[2:], "recorded without running (--baseline)": names[:2]}
    assert migrate(created, folder) == 0
    (folder / names[1]).write_text("CREATE TABLE presets (id bigserial PRIMARY KEY);\n")
    assert planned("--repair") == {"checksum re-recorded (--repair)": [names[1]]}  # nothing runs: no `pending`
