"""The sandbox over plain HTTPS, one keep-alive connection at a time, as Azure answers.

Long-running operations (with and without Retry-After), request bodies always drained (a fault
must not poison the connection), PUT replacing the body, Azure's casing of `type`.
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-http"
ACR = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrhttp"
ACR_BODY = {"location": "centralus", "sku": {"name": "Premium"}}
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-http"
AUTH = {"Authorization": "Bearer sandbox", "Content-Type": "application/json"}


@pytest.fixture()
def conn(sandbox):
    split = urlsplit(sandbox.url)
    connection = http.client.HTTPSConnection(
        split.hostname, split.port, context=ssl.create_default_context(cafile=sandbox.ca), timeout=10
    )
    try:
        yield connection
    finally:
        connection.close()


def _call(conn: http.client.HTTPSConnection, method: str, path: str, body: object = None, headers: dict | None = None):
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body)
    conn.request(method, path, body=payload, headers=AUTH if headers is None else headers)
    response = conn.getresponse()
    data = response.read()
    return response, (json.loads(data) if data else None)


def _group(conn: http.client.HTTPSConnection) -> None:
    response, _ = _call(conn, "PUT", f"{RG}?api-version=2025-04-01", {"location": "centralus"})
    assert response.status in (200, 201)


def _retry_headers(response: http.client.HTTPResponse) -> set[str]:
    return {k.lower() for k in response.headers if k.lower() in {"retry-after", "retry-after-ms"}}


# ---- long-running operations --------------------------------------------------------------------
def test_lro_without_retry_after(sandbox, conn) -> None:
    sandbox.faults(lro_seconds=0.5, lro_retry_after=False)
    _group(conn)
    response, body = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", ACR_BODY)
    assert response.status == 201 and body["properties"]["provisioningState"] == "Creating"
    assert _retry_headers(response) == set()
    poll = urlsplit(response.headers["Azure-AsyncOperation"])
    response, status = _call(conn, "GET", f"{poll.path}?{poll.query}")
    assert status["status"] == "InProgress"
    assert _retry_headers(response) == set()
    response, body = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", ACR_BODY)
    assert response.status == 200 and "Azure-AsyncOperation" in response.headers
    assert _retry_headers(response) == set()


def test_lro_with_retry_after_by_default(sandbox, conn) -> None:
    sandbox.faults(lro_seconds=0.5)
    _group(conn)
    response, _ = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", ACR_BODY)
    assert "retry-after-ms" in _retry_headers(response)
    poll = urlsplit(response.headers["Azure-AsyncOperation"])
    response, status = _call(conn, "GET", f"{poll.path}?{poll.query}")
    assert status["status"] == "InProgress" and "retry-after-ms" in _retry_headers(response)


# ---- request bodies are always drained ------------------------------------------------------------
def test_injected_fault_leaves_the_connection_usable(sandbox, conn) -> None:
    _group(conn)
    sandbox.faults(rules=[{"method": "PUT", "path_contains": "kv-http", "status": 503, "count": 1}])
    secret_like = {"location": "centralus", "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "note": "hunter2-" * 50}}
    response, body = _call(conn, "PUT", f"{VAULT}?api-version=2026-05-15", secret_like)
    assert response.status == 503 and body["error"]["code"] == "ServiceUnavailable"
    sock = conn.sock
    response, body = _call(conn, "GET", f"{RG}?api-version=2025-04-01")
    assert response.status == 200 and body["name"] == "rg-http"
    assert conn.sock is sock  # the same keep-alive connection, not a reconnect
    assert "hunter2" not in json.dumps(body)


@pytest.mark.parametrize(
    ("headers", "payload", "status"),
    [
        ({"Content-Type": "application/json"}, {"location": "centralus"}, 401),  # no bearer token
        (AUTH, b"{not json", 400),
        (AUTH, b"[1, 2]", 400),
    ],
    ids=["unauthenticated", "not-json", "not-an-object"],
)
def test_error_answers_drain_the_body(sandbox, conn, headers, payload, status) -> None:
    response, _ = _call(conn, "PUT", f"{RG}?api-version=2025-04-01", payload, headers)
    assert response.status == status
    response, body = _call(conn, "GET", f"{RG}?api-version=2025-04-01")
    assert response.status == 404 and body["error"]["code"] == "ResourceGroupNotFound"


def test_missing_api_version_drains_the_body(sandbox, conn) -> None:
    response, body = _call(conn, "PUT", RG, {"location": "centralus"})
    assert response.status == 400 and body["error"]["code"] == "MissingApiVersionParameter"
    _group(conn)


# ---- PUT replaces; type casing is Azure's -----------------------------------------------------------
def test_put_returns_omitted_properties_to_their_defaults(sandbox, conn) -> None:
    _group(conn)
    first = {
        "location": "centralus",
        "tags": {"owner": "ops"},
        "properties": {
            "tenantId": SANDBOX_SUBSCRIPTION,
            "sku": {"family": "A", "name": "Standard"},
            "enabledForDeployment": True,
            "softDeleteRetentionInDays": 7,
        },
    }
    response, body = _call(conn, "PUT", f"{VAULT}?api-version=2026-05-15", first)
    assert response.status == 201
    assert body["properties"]["enabledForDeployment"] is True and body["properties"]["softDeleteRetentionInDays"] == 7
    second = {
        "location": "centralus",
        "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
    }
    response, body = _call(conn, "PUT", f"{VAULT}?api-version=2026-05-15", second)
    assert response.status == 200
    props = body["properties"]
    assert props["enabledForDeployment"] is False  # the default (key-vault/createVault.json), not the old value
    assert props["softDeleteRetentionInDays"] == 90
    assert "tags" not in body
    assert props["provisioningState"] in {"Updating", "Succeeded"}  # read-only: kept, then set by the service
    assert props["vaultUri"].startswith("https://127.0.0.1:")


def test_read_only_fields_survive_a_put_and_are_ignored_in_its_body(sandbox, conn) -> None:
    _group(conn)
    body = {**ACR_BODY, "properties": {"adminUserEnabled": True}}
    _, created = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", body)
    stamp = created["properties"]["creationDate"]
    again = {**ACR_BODY, "properties": {"creationDate": "1999-01-01T00:00:00Z", "loginServer": "evil.example"}}
    _, replaced = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", again)
    props = replaced["properties"]
    assert props["creationDate"] == stamp and props["loginServer"] == "acrhttp.azurecr.io"
    assert props["adminUserEnabled"] is False  # omitted: back to the default (container-registry/RegistryCreate.json)
    assert replaced["sku"] == {"name": "Premium", "tier": "Premium"}


def test_vnet_put_without_subnets_keeps_them(sandbox, conn) -> None:
    _group(conn)
    vnet = f"{RG}/providers/Microsoft.Network/virtualNetworks/vnet-http"
    subnets = [{"name": "default", "properties": {"addressPrefix": "10.0.0.0/24"}}]
    body = {"location": "centralus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "subnets": subnets}}
    _call(conn, "PUT", f"{vnet}?api-version=2026-03-01", body)
    body = {"location": "centralus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}}
    _, kept = _call(conn, "PUT", f"{vnet}?api-version=2026-03-01", body)
    shown = [(s["name"], s["properties"]["addressPrefix"]) for s in kept["properties"]["subnets"]]
    assert shown == [(s["name"], s["properties"]["addressPrefix"]) for s in subnets]  # azure-facts.md 3.16
    body["properties"]["subnets"] = []
    _, pruned = _call(conn, "PUT", f"{vnet}?api-version=2026-03-01", body)
    assert pruned["properties"]["subnets"] == []


def test_type_is_answered_in_azure_casing(sandbox, conn) -> None:
    _group(conn)
    lowered = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourcegroups/rg-http/providers/microsoft.keyvault/VAULTS/kv-lower"
    body = {"location": "centralus", "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}}}
    response, created = _call(conn, "PUT", f"{lowered}?api-version=2026-05-15", body)
    assert response.status == 201 and created["type"] == "Microsoft.KeyVault/vaults"
    assert created["id"] == lowered  # the id stays as stored
    shouted = f"{RG}/providers/MICROSOFT.KEYVAULT/vaults/kv-lower"
    response, read = _call(conn, "GET", f"{shouted}?api-version=2026-05-15")
    assert response.status == 200 and read["type"] == "Microsoft.KeyVault/vaults"
    _, group = _call(conn, "GET", f"{lowered.split('/providers/')[0]}?api-version=2025-04-01")
    assert group["type"] == "Microsoft.Resources/resourceGroups"
    assert sandbox.control("GET", "/status")["by_type"]["Microsoft.KeyVault/vaults"] == 1
