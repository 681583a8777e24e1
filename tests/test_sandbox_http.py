"""The sandbox over plain HTTPS, one keep-alive connection at a time, as Azure answers.

Long-running operations (with and without Retry-After), request bodies always drained (a fault
must not poison the connection).
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

import pytest

from deploykit.target import SANDBOX_SUBSCRIPTION

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
