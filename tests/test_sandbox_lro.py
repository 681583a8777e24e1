"""Long-running operations as Azure shapes them, including the no-Retry-After variant."""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from deploykit.target import SANDBOX_SUBSCRIPTION

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-lro"
ACR = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrlro"
ACR_BODY = {"location": "centralus", "sku": {"name": "Premium"}}
AUTH = {"Authorization": "Bearer sandbox", "Content-Type": "application/json"}


def _connection(sandbox) -> http.client.HTTPSConnection:
    split = urlsplit(sandbox.url)
    return http.client.HTTPSConnection(
        split.hostname, split.port, context=ssl.create_default_context(cafile=sandbox.ca), timeout=10
    )


def _call(conn: http.client.HTTPSConnection, method: str, path: str, body: object = None):
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=AUTH)
    response = conn.getresponse()
    data = response.read()
    return response, (json.loads(data) if data else None)


def _retry_headers(response: http.client.HTTPResponse) -> set[str]:
    return {k.lower() for k in response.headers if k.lower() in {"retry-after", "retry-after-ms"}}


def test_lro_without_retry_after(sandbox) -> None:
    sandbox.faults(lro_seconds=0.5, lro_retry_after=False)
    conn = _connection(sandbox)
    try:
        response, _ = _call(conn, "PUT", f"{RG}?api-version=2025-04-01", {"location": "centralus"})
        assert response.status == 201
        response, body = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", ACR_BODY)
        assert response.status == 201 and body["properties"]["provisioningState"] == "Creating"
        assert _retry_headers(response) == set()
        poll = urlsplit(response.headers["Azure-AsyncOperation"])
        response, status = _call(conn, "GET", f"{poll.path}?{poll.query}")
        assert status["status"] == "InProgress"
        assert _retry_headers(response) == set()
    finally:
        conn.close()


def test_lro_with_retry_after_by_default(sandbox) -> None:
    sandbox.faults(lro_seconds=0.5)
    conn = _connection(sandbox)
    try:
        _call(conn, "PUT", f"{RG}?api-version=2025-04-01", {"location": "centralus"})
        response, _ = _call(conn, "PUT", f"{ACR}?api-version=2025-11-01", ACR_BODY)
        assert "retry-after-ms" in _retry_headers(response)
        poll = urlsplit(response.headers["Azure-AsyncOperation"])
        response, status = _call(conn, "GET", f"{poll.path}?{poll.query}")
        assert status["status"] == "InProgress" and "retry-after-ms" in _retry_headers(response)
    finally:
        conn.close()
