"""The sandbox behaves like ARM where it matters, seen through the real SDK and plain HTTPS."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import ResourceNotFoundError

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.sandbox.server import SandboxServer

SUB = f"/subscriptions/{SANDBOX_SUBSCRIPTION}"
RG = f"{SUB}/resourceGroups/rg-test"


def _rg(sandbox) -> None:
    sandbox.provider.put(
        ResourceSpec("rg", "Microsoft.Resources/resourceGroups", "2025-04-01", RG, {}, "t"), {"location": "centralus"}
    )


def _not_found_code(sandbox, rid: str, api: str) -> str:
    with pytest.raises(ResourceNotFoundError) as caught:
        sandbox.provider.resources.resources.get_by_id(rid, api_version=api)
    return caught.value.error.code


def test_missing_group_and_missing_resource_have_arm_codes(sandbox) -> None:
    vault = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-x"
    assert _not_found_code(sandbox, RG, "2025-04-01") == "ResourceGroupNotFound"
    assert _not_found_code(sandbox, vault, "2026-05-15") == "ResourceGroupNotFound"
    _rg(sandbox)
    assert _not_found_code(sandbox, vault, "2026-05-15") == "ResourceNotFound"


def test_put_answers_201_on_create_and_200_on_update(sandbox) -> None:
    mark = sandbox.journal_mark()
    _rg(sandbox)
    _rg(sandbox)
    puts = [e["status"] for e in sandbox.control("GET", f"/journal?since={mark}")["entries"] if e["method"] == "PUT"]
    assert puts == [201, 200]


def test_long_running_operation_is_polled_until_done(sandbox) -> None:
    _rg(sandbox)
    sandbox.faults(lro_seconds=0.5, poll_ms=100)
    acr_id = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrtest"
    acr = ResourceSpec("acr", "Microsoft.ContainerRegistry/registries", "2025-11-01", acr_id, {}, "t")
    mark = sandbox.journal_mark()
    result = sandbox.provider.put(acr, {"location": "centralus", "sku": {"name": "Premium"}})
    assert result["properties"]["provisioningState"] == "Succeeded"
    polls = [e for e in sandbox.control("GET", f"/journal?since={mark}")["entries"] if "operationStatuses" in e["path"]]
    assert 2 <= len(polls) <= 10


def test_read_only_fields_are_filled_like_azure(sandbox) -> None:
    _rg(sandbox)
    redis_id = f"{RG}/providers/Microsoft.Cache/redis/cache-test"
    body = sandbox.provider.put(
        ResourceSpec("r", "Microsoft.Cache/redis", "2024-11-01", redis_id, {}, "t"),
        {"location": "centralus", "properties": {"sku": {"name": "Basic", "family": "C", "capacity": 0}}},
    )
    assert body["id"] == redis_id and body["name"] == "cache-test"
    assert body["type"] == "Microsoft.Cache/Redis"  # Azure's own casing (redis/RedisCacheCreate.json)
    assert body["location"] == "Central US"  # display name, as the Redis provider answers
    vault_id = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-test-fill"
    vault = sandbox.provider.put(
        ResourceSpec("v", "Microsoft.KeyVault/vaults", "2026-05-15", vault_id, {}, "t"),
        {
            "location": "centralus",
            "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "Standard"}, "createMode": "default"},
        },
    )
    assert vault["properties"]["sku"]["name"] == "standard"  # re-cased by the provider
    assert "createMode" not in vault["properties"]  # write-only, never returned
    assert vault["properties"]["vaultUri"].startswith("https://127.0.0.1:")


def test_requests_without_a_bearer_token_are_refused(sandbox) -> None:
    context = ssl.create_default_context(cafile=sandbox.ca)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{sandbox.url}{RG}?api-version=2025-04-01", context=context)  # noqa: S310 - https loopback
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["code"] == "AuthenticationFailed"


def test_state_persists_across_sandbox_restarts(tmp_path) -> None:
    first = SandboxServer(tmp_path / "state")
    first.state.put_resource(RG, {"location": "centralus"})
    first.stop()
    second = SandboxServer(tmp_path / "state")
    try:
        assert second.state.get_resource(RG)["body"]["location"] == "centralus"
        assert (tmp_path / "state" / "state.json").stat().st_mode & 0o777 == 0o600
    finally:
        second.stop()


def test_reset_empties_state_and_journal(sandbox) -> None:
    _rg(sandbox)
    sandbox.control("POST", "/reset")
    assert sandbox.resource_ids() == []
    assert sandbox.control("GET", "/status")["journal"]["requests"] == 0
