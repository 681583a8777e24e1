"""release.promote end to end: the real CLI, the real SDK clients, the in-process sandbox's registry.

One sandbox for the module; each test uses its own tag T, so tests never see each other's images.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.azure.target import OpenTarget
from deploykit.config import load_platform
from deploykit.paths import config_dir
from deploykit.registry import Registry
from deploykit.sandbox.server import SandboxServer
from tests.conftest import REPO, Sandbox, run_invoke
from tests.helpers import spec

PROD = load_platform(config_dir(), ["prod"])
SHARED = PROD.shared
APPS = PROD.envs["prod"].apps
PREFIX = PROD.envs["prod"].image_tag_prefix
REGISTRY = SHARED.registry.name


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    """One sandbox with the shared group and registry as steps 1 and 2b declare them."""
    folder = Path(tempfile.mkdtemp(prefix="deploykit-promote-"))
    server = SandboxServer(folder / "sandbox", run_id="promote")
    sandbox = Sandbox(server)
    for step, address in (("step1", "rg.shared"), ("step2b", "acr.shared")):
        declared = spec([step], address, env=None)
        sandbox.provider.put(declared, declared.body)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        yield sandbox
    server.stop()


@pytest.fixture(scope="module")
def registry(box: Sandbox) -> Registry:
    """The product's own client for the shared registry (data plane through the SDK)."""
    rid = box.provider.resource_id(SHARED.resource_group.name, f"Microsoft.ContainerRegistry/registries/{REGISTRY}")
    return Registry(OpenTarget(box.provider, box.url), rid, f"{REGISTRY}.azurecr.io")


def push(box: Sandbox, repository: str, tag: str, digest: str | None = None) -> str:
    """Push an image as CI would (the sandbox control); returns its digest."""
    body = {"repository": repository, "tag": tag, **({"digest": digest} if digest else {})}
    return box.control("PUT", f"/registries/{REGISTRY}/images", body)["digest"]


def promote(box: Sandbox, *flags: str):
    return run_invoke("release.promote", *flags, env=box.env())


def imports_since(box: Sandbox, mark: int) -> list[dict]:
    """The importImage POSTs the sandbox received after `mark` (its journal)."""
    entries = box.control("GET", f"/journal?since={mark}")["entries"]
    return [e for e in entries if e["method"] == "POST" and e["path"].lower().endswith("/importimage")]


def audit_lines(audit_dir: Path) -> list[dict]:
    path = audit_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_promote_twice_imports_once_then_nothing(box: Sandbox, registry: Registry, audit_dir: Path) -> None:
    app = APPS[0]
    digest = push(box, app.image, "t1.0")
    env = {**box.env(), "DEPLOYKIT_AUDIT_DIR": str(audit_dir)}
    mark = box.journal_mark()
    first = run_invoke("release.promote", "--app", app.name, "--tag", "t1.0", "--yes", "--json", env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["summary"]["create"] == 1 and doc["summary"]["unchanged"] == 0
    (change,) = doc["changes"]
    assert change["diff"]["digest"] == {"old": None, "new": digest}
    assert change["id"] == f"{REGISTRY}.azurecr.io/{app.image}:{PREFIX}t1.0"
    assert len(imports_since(box, mark)) == 1
    assert registry.digest(app.image, f"{PREFIX}t1.0") == digest
    done = [a for a in audit_lines(audit_dir) if a.get("result") == "ok"]
    assert [(a["address"], a["digest"], a["mode"]) for a in done] == [(f"image.{app.name}", digest, "NoForce")]

    mark = box.journal_mark()
    second = run_invoke("release.promote", "--app", app.name, "--tag", "t1.0", "--yes", "--json", env=env)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["summary"]["unchanged"] == 1 and again["summary"]["create"] == 0
    assert digest in again["changes"][0]["reason"]
    assert imports_since(box, mark) == []
    assert box.requests_since(mark)["writes"] == 0


def test_tampered_target_is_refused_without_force_and_overwritten_with_it(
    box: Sandbox, registry: Registry, audit_dir: Path
) -> None:
    app = APPS[1]
    source = push(box, app.image, "t2.0")
    tampered = push(box, app.image, f"{PREFIX}t2.0")  # someone pushed prod's tag by hand
    assert tampered != source
    mark = box.journal_mark()
    refused = promote(box, "--app", app.name, "--tag", "t2.0", "--yes")
    assert refused.returncode == 2
    assert source in refused.stderr and tampered in refused.stderr and "--force" in refused.stderr
    as_json = promote(box, "--app", app.name, "--tag", "t2.0", "--yes", "--json")
    error = json.loads(as_json.stdout)
    assert as_json.returncode == error["exit_status"] == 2
    assert source in error["error"] and tampered in error["error"]
    assert imports_since(box, mark) == []
    assert registry.digest(app.image, f"{PREFIX}t2.0") == tampered

    forced = promote(box, "--app", app.name, "--tag", "t2.0", "--force", "--yes", "--json")
    assert forced.returncode == 0, forced.stderr
    doc = json.loads(forced.stdout)
    assert doc["summary"]["update"] == 1
    assert doc["changes"][0]["diff"]["digest"] == {"old": tampered, "new": source}
    assert len(imports_since(box, mark)) == 1
    assert registry.digest(app.image, f"{PREFIX}t2.0") == source
    (done,) = [a for a in audit_lines(audit_dir) if a.get("result") == "ok"]
    assert (done["digest"], done["previous_digest"], done["mode"]) == (source, tampered, "Force")


def test_force_with_the_same_digest_already_there_sends_nothing(box: Sandbox) -> None:
    app = APPS[0]
    digest = push(box, app.image, "t7.0")
    push(box, app.image, f"{PREFIX}t7.0", digest)  # prod's tag already holds beta's manifest
    mark = box.journal_mark()
    result = promote(box, "--app", app.name, "--tag", "t7.0", "--force", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["unchanged"] == 1
    assert imports_since(box, mark) == [] and box.requests_since(mark)["writes"] == 0


def test_missing_source_tag_exits_2_naming_it(box: Sandbox) -> None:
    app = APPS[2]
    mark = box.journal_mark()
    result = promote(box, "--app", app.name, "--tag", "t3.0-never-pushed", "--yes")
    assert result.returncode == 2
    assert f"{app.image}:t3.0-never-pushed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert imports_since(box, mark) == []


def test_all_promotes_every_prod_app(box: Sandbox, registry: Registry) -> None:
    digests = {app.name: push(box, app.image, "t4.0") for app in APPS}
    mark = box.journal_mark()
    result = promote(box, "--all", "--tag", "t4.0", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["summary"]["create"] == len(APPS)
    assert sorted(c["address"] for c in doc["changes"]) == sorted(f"image.{a.name}" for a in APPS)
    assert len(imports_since(box, mark)) == len(APPS)
    for app in APPS:
        assert registry.digest(app.image, f"{PREFIX}t4.0") == digests[app.name]


def test_dry_run_imports_nothing(box: Sandbox, registry: Registry) -> None:
    app = APPS[3]
    digest = push(box, app.image, "t5.0")
    mark = box.journal_mark()
    result = promote(box, "--app", app.name, "--tag", "t5.0", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True and doc["summary"]["create"] == 1
    assert doc["changes"][0]["diff"]["digest"]["new"] == digest
    assert imports_since(box, mark) == []
    assert box.requests_since(mark)["writes"] == 0
    assert registry.digest(app.image, f"{PREFIX}t5.0") is None


def test_prod_without_yes_and_no_terminal_imports_nothing(box: Sandbox, registry: Registry) -> None:
    app = APPS[4]
    push(box, app.image, "t6.0")
    mark = box.journal_mark()
    result = promote(box, "--app", app.name, "--tag", "t6.0")
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert imports_since(box, mark) == []
    assert registry.digest(app.image, f"{PREFIX}t6.0") is None


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ((), "--app/--all"),
        (("--app", APPS[0].name, "--all"), "--app/--all"),
        (("--app", "no-such-app"), "--app"),
        (("--app", APPS[0].name, "--tag", "-bad"), "--tag"),
    ],
)
def test_bad_flags_exit_2_before_anything_is_read(box: Sandbox, flags: tuple[str, ...], named: str) -> None:
    mark = box.journal_mark()
    result = promote(box, *flags, "--yes")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and named in result.stderr
    assert box.requests_since(mark)["requests"] == 0


def test_dry_run_against_azure_without_credentials_still_plans(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AZURE_CONFIG_DIR": str(tmp_path / "az"),
        "DEPLOYKIT_AUDIT_DIR": str(tmp_path / "audit"),
    }
    result = run_invoke("release.promote", "--all", "--dry-run", "--json", "--target", "azure", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state_read"] is False and doc["summary"]["create"] == len(APPS)
    tag = PROD.envs["prod"].image_tag
    assert sorted(c["diff"]["source"]["new"] for c in doc["changes"]) == sorted(f"{a.image}:{tag}" for a in APPS)
    assert "planning without reading Azure" in result.stderr
