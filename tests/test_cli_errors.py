"""Bad input: one line naming file and field, exit 2, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run_invoke
from tests.helpers import copy_project, set_yaml_value

CASES = [
    (
        "vault name too long",
        "shared.yaml",
        ["key_vault", "name"],
        "kv-trading-shared-far-too-long",
        "key_vault.name",
        "3-24 characters",
    ),
    (
        "registry with a hyphen",
        "shared.yaml",
        ["registry", "name"],
        "acr-trading-shared",
        "registry.name",
        "letters and digits only",
    ),
    ("unknown key", "beta.yaml", ["redis", "tls_everywhere"], True, "redis.tls_everywhere", "unknown field; allowed:"),
    ("missing field", "beta.yaml", ["postgres", "sku_name"], None, "postgres.sku_name", "missing required field"),
    ("wrong type", "beta.yaml", ["postgres", "storage_gb"], "lots", "postgres.storage_gb", "allowed: a whole number"),
]


def _broken_copy(tmp_path: Path, file: str, path: list[str], value: object) -> Path:
    copy_project(tmp_path)
    set_yaml_value(tmp_path / "config" / file, path, value)
    return tmp_path


@pytest.mark.parametrize(("case", "file", "path", "value", "field", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_invalid_config_exits_2_with_one_line(sandbox, tmp_path, case, file, path, value, field, allowed) -> None:
    workdir = _broken_copy(tmp_path, file, path, value)
    mark = sandbox.journal_mark()
    result = run_invoke("deploy", "--env", "beta", cwd=workdir, env=sandbox.env())
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"config/{file}: {field}:" in lines[0] and allowed in lines[0]
    assert "Traceback" not in result.stderr
    assert sandbox.requests_since(mark)["requests"] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "--env", "staging"], "--env: 'staging' is not an environment; allowed: beta, prod"),
        (["deploy", "--env", "beta", "--target", "moon"], "--target: 'moon' is not a target; allowed: sandbox, azure"),
        (["deploy"], "--env: required"),
        (["secrets.set", "--name", "not-a-provider-secret"], "--name: 'not-a-provider-secret' is not a provider secret"),
    ],
)
def test_invalid_flags_exit_2_with_one_line(sandbox, args, expected) -> None:
    mark = sandbox.journal_mark()
    result = run_invoke(*args, env=sandbox.env())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {expected}" + result.stderr.strip().split(expected, 1)[1]]
    assert sandbox.requests_since(mark)["requests"] == 0


def test_broken_playbook_names_file_and_entry(tmp_path, sandbox) -> None:
    workdir = _broken_copy(tmp_path, "beta.yaml", ["location"], "centralus")
    book = workdir / "playbooks" / "step2b.yaml.j2"
    book.write_text(book.read_text().replace("adminUserEnabled", "{{ undefined_thing }}"))
    result = run_invoke("deploy", "--env", "beta", cwd=workdir, env=sandbox.env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: playbooks/step2b.yaml.j2: ") and "undefined_thing" in result.stderr


def test_a_profiled_command_still_writes_its_profile(tmp_path) -> None:
    """The command leaves without the interpreter's teardown, except when a tool watches it."""
    import subprocess
    import sys

    from tests.conftest import invoke_path

    out = tmp_path / "run.prof"
    result = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), invoke_path(), "--search-root", str(REPO), "deploy", "--env", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    # cProfile's runner swallows the script's SystemExit, so the status is its own, not ours.
    assert result.stderr.strip().splitlines() == ["error: --env: 'nope' is not an environment; allowed: beta, prod"]
    assert out.is_file() and out.stat().st_size > 0, result


def test_a_json_error_names_the_task_as_typed(sandbox) -> None:
    """Every task with --env and --json: a bad --env prints one JSON object whose task is the name typed (vpn.list, not list)."""
    import json

    import tasks

    checked = 0
    for name in tasks.ns.task_names:
        arguments = tasks.ns[name].get_arguments()
        if not {"env", "json"} <= {arg.name for arg in arguments}:
            continue
        required = [word for arg in arguments if arg.positional for word in (f"--{arg.name}", "x")]
        result = run_invoke(name, *required, "--env", "nope", "--json", env=sandbox.env())
        assert result.returncode == 2, (name, result.stderr)
        document = json.loads(result.stdout)
        typed = name.split(".")[0] if name.split(".")[0] == name.split(".")[-1] else name  # release.release is `release`
        assert document["task"] == typed and document["exit_status"] == 2, document
        checked += "." in typed
    assert checked, "no task of a collection (vpn.list, db.status, ...) was checked"


def test_a_json_run_with_a_wrong_command_line_still_prints_one_json_object(sandbox) -> None:
    """Invoke's own parse errors (a missing argument, an unknown flag) also keep --json's promise."""
    import json

    cases = (
        (["secrets.set", "--json"], "secrets.set"),
        (["step2b", "--env", "beta", "--json"], "step2b"),
        (["deploy", "--json=yes"], None),  # the switch given a value: Invoke took `yes` for a task
        (["deploy", "--json", "bogus"], None),  # an unknown task is nobody's error
    )
    for args, task in cases:
        result = run_invoke(*args, env=sandbox.env())
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        document = json.loads(result.stdout)
        assert document["task"] == task and document["error"] == result.stderr.strip(), document
