"""The sandbox's container registry: ACR's token flow, tags, manifests and catalog through the real
azure-containerregistry SDK, importImage through ARM, and images kept in the sandbox's state."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ResourceNotFoundError

from deploykit.azure.target import SANDBOX_SUBSCRIPTION, OpenTarget, SandboxCredential
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError
from deploykit.registry import Registry, data_endpoint
from deploykit.sandbox.server import SandboxServer
from tests.conftest import Sandbox

API = "2025-11-01"
GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-registry-test"


def registry_id(name: str) -> str:
    return f"{GROUP}/providers/Microsoft.ContainerRegistry/registries/{name}"


def create_registry(box: Sandbox, name: str) -> str:
    """A registry created through ARM, as step 2b would."""
    box.provider.put(
        ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", GROUP, {}, "t"), {"location": "centralus"}
    )
    rid = registry_id(name)
    box.provider.put(
        ResourceSpec("acr", "Microsoft.ContainerRegistry/registries", API, rid, {}, "t"),
        {"location": "centralus", "sku": {"name": "Premium"}, "properties": {"adminUserEnabled": False}},
    )
    return rid


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="deploykit-registry-"))


@pytest.fixture(scope="module")
def box(folder: Path) -> Iterator[Sandbox]:
    server = SandboxServer(folder / "sandbox", run_id="registry")
    sandbox = Sandbox(server)
    create_registry(sandbox, "acrdata")
    yield sandbox
    server.stop()


def push(box: Sandbox, registry: str, repository: str, tag: str, digest: str | None = None) -> str:
    body = {"repository": repository, "tag": tag, **({"digest": digest} if digest else {})}
    return box.control("PUT", f"/registries/{registry}/images", body)["digest"]


def endpoint(box: Sandbox, registry: str) -> str:
    return data_endpoint(OpenTarget(box.provider, box.url), f"{registry}.azurecr.io")


def sdk(box: Sandbox, registry: str) -> ContainerRegistryClient:
    return ContainerRegistryClient(
        endpoint(box, registry), SandboxCredential(), audience="https://containerregistry.azure.net", connection_verify=box.ca
    )


def product_client(box: Sandbox, registry: str) -> Registry:
    return Registry(OpenTarget(box.provider, box.url), registry_id(registry), f"{registry}.azurecr.io")


# ---- the token flow --------------------------------------------------------------------------------
def test_anonymous_request_gets_acrs_bearer_challenge(box: Sandbox) -> None:
    answer = requests.get(f"{endpoint(box, 'acrdata')}/acr/v1/_catalog", verify=box.ca, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        'Bearer realm="https://acrdata.azurecr.io/oauth2/token",service="acrdata.azurecr.io",scope="registry:catalog:*"'
    )
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_exchange_then_token_then_request_by_hand(box: Sandbox) -> None:
    push(box, "acrdata", "hand/one", "v1")
    base, service = endpoint(box, "acrdata"), "acrdata.azurecr.io"
    exchange = requests.post(
        f"{base}/oauth2/exchange",
        data={"grant_type": "access_token", "service": service, "access_token": "aad-token"},
        verify=box.ca,
        timeout=10,
    )
    assert exchange.status_code == 200
    refresh = exchange.json()["refresh_token"]
    token = requests.post(
        f"{base}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "service": service,
            "scope": "repository:hand/one:metadata_read",
            "refresh_token": refresh,
        },
        verify=box.ca,
        timeout=10,
    )
    assert token.status_code == 200
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    tags = requests.get(f"{base}/acr/v1/hand%2Fone/_tags", headers=bearer, verify=box.ca, timeout=10)
    assert tags.status_code == 200
    assert [t["name"] for t in tags.json()["tags"]] == ["v1"]
    other = requests.get(f"{base}/acr/v1/hand%2Fother/_tags", headers=bearer, verify=box.ca, timeout=10)
    assert other.status_code == 401  # the token is scoped to hand/one
    assert 'scope="repository:hand/other:metadata_read"' in other.headers["WWW-Authenticate"]


def test_exchange_for_another_registry_or_with_a_forged_refresh_token_is_refused(box: Sandbox) -> None:
    base = endpoint(box, "acrdata")
    wrong = requests.post(
        f"{base}/oauth2/exchange",
        data={"grant_type": "access_token", "service": "elsewhere.azurecr.io", "access_token": "aad-token"},
        verify=box.ca,
        timeout=10,
    )
    assert wrong.status_code == 401
    forged = requests.post(
        f"{base}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "service": "acrdata.azurecr.io",
            "scope": "registry:catalog:*",
            "refresh_token": "a.b.c",
        },
        verify=box.ca,
        timeout=10,
    )
    assert forged.status_code == 401


# ---- reads through the SDK ------------------------------------------------------------------------
def test_sdk_reads_catalog_tags_and_manifests(box: Sandbox) -> None:
    first = push(box, "acrdata", "sdk/api", "1.0")
    second = push(box, "acrdata", "sdk/api", "2.0")
    also = push(box, "acrdata", "sdk/api", "stable", first)
    assert also == first
    client = sdk(box, "acrdata")
    names = list(client.list_repository_names(results_per_page=1))  # one per page: the Link header is followed
    assert "sdk/api" in names and names == sorted(names)
    tag = client.get_tag_properties("sdk/api", "2.0")
    assert tag.digest == second and tag.name == "2.0" and tag.created_on is not None
    assert sorted(t.name for t in client.list_tag_properties("sdk/api")) == ["1.0", "2.0", "stable"]
    manifest = client.get_manifest_properties("sdk/api", first)
    assert sorted(manifest.tags) == ["1.0", "stable"] and manifest.size_in_bytes > 0
    assert sorted(m.digest for m in client.list_manifest_properties("sdk/api")) == sorted({first, second})
    repo = client.get_repository_properties("sdk/api")
    assert (repo.tag_count, repo.manifest_count) == (3, 2)


def test_missing_repository_tag_or_manifest_is_not_found(box: Sandbox) -> None:
    push(box, "acrdata", "sdk/present", "1.0")
    client = sdk(box, "acrdata")
    for call, code in (
        (lambda: client.get_tag_properties("sdk/absent", "1.0"), "NAME_UNKNOWN"),
        (lambda: client.get_tag_properties("sdk/present", "9.9"), "TAG_UNKNOWN"),
        (lambda: client.get_manifest_properties("sdk/present", "sha256:" + "0" * 64), "MANIFEST_UNKNOWN"),
    ):
        with pytest.raises(ResourceNotFoundError) as caught:
            call()
        assert caught.value.response.json()["errors"][0]["code"] == code
    assert product_client(box, "acrdata").digest("sdk/present", "9.9") is None


def test_a_pushed_tag_moves_to_the_new_digest(box: Sandbox) -> None:
    old = push(box, "acrdata", "sdk/moving", "latest")
    new = push(box, "acrdata", "sdk/moving", "latest")
    assert old != new
    assert product_client(box, "acrdata").digest("sdk/moving", "latest") == new


def test_token_exchanges_count_as_reads_and_arm_never_shows_images(box: Sandbox) -> None:
    push(box, "acrdata", "sdk/quiet", "1")
    before = box.provider.read(registry_id("acrdata"), API)
    mark = box.journal_mark()
    assert product_client(box, "acrdata").digest("sdk/quiet", "1") is not None
    counts = box.requests_since(mark)
    assert counts["writes"] == 0 and counts["by_method"]["POST"] >= 2  # exchange and token
    push(box, "acrdata", "sdk/quiet", "2")
    after = box.provider.read(registry_id("acrdata"), API)
    assert after == before  # a push is not a new version of the ARM resource (same etag, nothing private shown)
    assert "_sandbox" not in after and "images" not in str(after["properties"])


def test_bad_push_is_400_and_a_push_to_a_missing_registry_404(box: Sandbox) -> None:
    url = f"{box.url}/_sandbox/registries"
    bad = requests.put(f"{url}/acrdata/images", json={"repository": "Bad Name", "tag": "1"}, verify=box.ca, timeout=10)
    assert bad.status_code == 400 and "repository" in bad.json()["error"]["message"]
    missing = requests.put(f"{url}/acrnowhere/images", json={"repository": "a/b", "tag": "1"}, verify=box.ca, timeout=10)
    assert missing.status_code == 404


# ---- importImage through ARM ----------------------------------------------------------------------
def import_raw(box: Sandbox, registry: str, body: dict) -> tuple[int, dict[str, str]]:
    status, headers, _ = box.provider.send_raw("POST", f"{registry_id(registry)}/importImage", API, body=body)
    return status, headers


def test_import_by_digest_then_noforce_conflict_then_force(box: Sandbox) -> None:
    source = push(box, "acrdata", "imp/app", "1.0")
    other = push(box, "acrdata", "imp/app", "hand-made")
    client = product_client(box, "acrdata")
    client.import_by_digest("imp/app", source, ["imp/app:prod-1.0"])
    assert client.digest("imp/app", "prod-1.0") == source
    with pytest.raises(AzureOperationError) as conflict:
        client.import_by_digest("imp/app", other, ["imp/app:prod-1.0"])
    assert conflict.value.status == 409 and "already exists in target registry" in conflict.value.message
    assert client.digest("imp/app", "prod-1.0") == source  # nothing copied
    client.import_by_digest("imp/app", other, ["imp/app:prod-1.0"], force=True)
    assert client.digest("imp/app", "prod-1.0") == other


def test_import_answers_202_with_a_location_that_reports_done(box: Sandbox) -> None:
    source = push(box, "acrdata", "imp/tagged", "3.0")
    status, headers = import_raw(
        box,
        "acrdata",
        {"source": {"resourceId": registry_id("acrdata"), "sourceImage": "imp/tagged:3.0"}, "targetTags": ["imp/copy"]},
    )
    assert status == 202
    monitor = {k.lower(): v for k, v in headers.items()}["location"]
    assert box.provider.send_raw("GET", monitor)[0] == 200
    # a target without a tag takes the source's tag (azure-facts-2.md 2.1)
    assert product_client(box, "acrdata").digest("imp/copy", "3.0") == source


def test_import_from_another_registry_by_login_server_and_untagged(box: Sandbox) -> None:
    create_registry(box, "acrother")
    source = push(box, "acrother", "lib/base", "2.1")
    status, _ = import_raw(
        box,
        "acrdata",
        {
            "source": {"registryUri": "acrother.azurecr.io", "sourceImage": "lib/base:2.1"},
            "targetTags": ["lib/base:2.1"],
            "untaggedTargetRepositories": ["lib/untagged"],
        },
    )
    assert status == 202
    client = sdk(box, "acrdata")
    assert client.get_tag_properties("lib/base", "2.1").digest == source
    assert [m.digest for m in client.list_manifest_properties("lib/untagged")] == [source]


@pytest.mark.parametrize(
    ("source", "status", "code"),
    [
        ({"resourceId": registry_id("acrdata"), "sourceImage": "imp/none:1"}, 400, "InvalidParameters"),
        ({"resourceId": registry_id("acrmissing"), "sourceImage": "imp/app:1.0"}, 404, "ResourceNotFound"),
        ({"registryUri": "docker.io", "sourceImage": "library/nginx:1"}, 400, "InvalidParameters"),
        ({"sourceImage": "imp/app:1.0"}, 400, "InvalidParameters"),
    ],
)
def test_an_unknown_source_is_refused_and_nothing_is_copied(box: Sandbox, source: dict, status: int, code: str) -> None:
    before = box.control("GET", "/registries/acrdata/images")["repositories"]
    with pytest.raises(AzureOperationError) as caught:
        import_raw(box, "acrdata", {"source": source, "targetTags": ["imp/never:1"]})
    assert (caught.value.status, caught.value.code) == (status, code)
    assert box.control("GET", "/registries/acrdata/images")["repositories"] == before


# ---- state -------------------------------------------------------------------------------------
def test_images_survive_a_restart_and_go_with_a_deleted_registry(folder: Path, box: Sandbox) -> None:
    digest = push(box, "acrdata", "keep/me", "1")
    again = Sandbox(SandboxServer(folder / "sandbox", run_id="restart"))
    try:
        assert product_client(again, "acrdata").digest("keep/me", "1") == digest
        create_registry(again, "acrgone")
        push(again, "acrgone", "gone/img", "1")
        again.provider.delete(registry_id("acrgone"), API)
        create_registry(again, "acrgone")
        assert list(sdk(again, "acrgone").list_repository_names()) == []
    finally:
        again.server.stop()
