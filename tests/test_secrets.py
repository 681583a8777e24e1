"""secrets.set: values only from stdin or a file; a canary never appears in any output."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_invoke
from tests.helpers import run, spec

CANARY = "canary-7f3a9c-DO-NOT-PRINT"


def _vault_client(sandbox):
    vault = spec(["step2a"], "kv.shared")
    uri = sandbox.provider.read(vault.id, vault.api_version)["properties"]["vaultUri"]
    return sandbox.provider.secret_client(uri)


def test_canary_secret_is_stored_but_never_printed_or_logged(sandbox, audit_dir, tmp_path) -> None:
    assert run(["step1", "step2a"]) == 0
    env = {**sandbox.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    outputs = []
    first = run_invoke("secrets.set", "--name", "openai-api-key", env=env, stdin=CANARY + "\n")
    assert first.returncode == 0, first.stderr
    second = run_invoke("secrets.set", "--name", "openai-api-key", "--json", env=env, stdin=CANARY + "\n")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["summary"]["unchanged"] == 1  # not rewritten
    value_file = tmp_path / "value.txt"
    value_file.write_text(CANARY + "-v2\n")
    third = run_invoke("secrets.set", "--name", "openai-api-key", "--file", str(value_file), "--json", env=env)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["changes"][0]["action"] == "update"
    dry = run_invoke("secrets.set", "--name", "openai-api-key", "--dry-run", "--json", env=env, stdin=CANARY + "\n")
    assert dry.returncode == 0
    outputs += [first.stdout, first.stderr, second.stdout, second.stderr, third.stdout, third.stderr, dry.stdout, dry.stderr]

    assert _vault_client(sandbox).get_secret("openai-api-key").value == CANARY + "-v2"
    audit_lines = (audit_dir / "audit.jsonl").read_text().splitlines()
    assert any('"secret.openai-api-key"' in line for line in audit_lines)
    journal = sandbox.control("GET", "/journal?since=0")["entries"]
    for text in [*outputs, *audit_lines, json.dumps(journal)]:
        assert CANARY not in text


def test_secret_needs_its_vault_first(sandbox) -> None:
    result = run_invoke("secrets.set", "--name", "github-token", env=sandbox.env(), stdin="ghp_not-a-real-token\n")
    assert result.returncode == 2
    assert "kv-trading-shared does not exist yet; run `invoke step2a` first" in result.stderr


def test_empty_value_is_refused(sandbox) -> None:
    assert run(["step1", "step2a"]) == 0
    result = run_invoke("secrets.set", "--name", "github-token", env=sandbox.env(), stdin="\n")
    assert result.returncode == 2 and "empty" in result.stderr
    assert [s.name for s in _vault_client(sandbox).list_properties_of_secrets()] == []


def test_unreadable_file_is_a_user_error(sandbox, tmp_path: Path) -> None:
    result = run_invoke("secrets.set", "--name", "github-token", "--file", str(tmp_path / "missing"), env=sandbox.env())
    assert result.returncode == 2 and "--file: cannot read" in result.stderr
