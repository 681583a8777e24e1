"""The provider: official Azure SDK clients over one ARM endpoint (real Azure or the sandbox).

Generic by-id operations carry every plain resource; typed clients only where a resource needs
special handling (soft-deleted vaults, Key Vault secrets). Retries, Retry-After and long-running
operations are azure-core's, configured here once; only the poll delay when Azure sends no
Retry-After is ours (`LroPolling`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.utils import case_insensitive_dict
from azure.mgmt.core.polling.arm_polling import ARMPolling

from deploykit.azure.api_versions import api_version
from deploykit.config import Platform
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError, ResourceLockedError
from deploykit.parallel import each

# Set when the process's first ARM read is back (answered or failed): from then on a run mostly waits on Azure, and
# work that can wait until then (imports needed later: parallel.import_meanwhile) uses idle CPU.
READING = threading.Event()
SECRET_READ_WORKERS = 16  # as many as the plan's reads: one round of the vault's data plane


@dataclass(frozen=True)
class Target:
    """Where requests go and how they authenticate."""

    name: str  # "sandbox" or "azure"
    arm_endpoint: str
    credential: TokenCredential
    subscription_id: str
    credential_scope: str
    connection_verify: str | bool = True
    # Long-running operations: a Retry-After from the service is always honoured. Without one,
    # the first poll waits polling_interval seconds, each later one 1.5x longer, up to
    # polling_interval_max (azure-core alone would wait a fixed 30 s).
    polling_interval: float = 1.0
    verify_challenge_resource: bool = True
    polling_interval_max: float = 15.0
    # Proxies from HTTPS_PROXY/NO_PROXY (requests reads the whole environment on every request
    # for them). The sandbox is on loopback and never goes through a proxy.
    use_env_settings: bool = True


# Reads are retried more than azure-core's default of 3 status retries (issue 2); PUT and GET
# are idempotent, so the same policy serves writes.
RETRY_SETTINGS = {"retry_total": 10, "retry_status": 6, "retry_backoff_factor": 0.5, "retry_backoff_max": 30}


# The headers azure-core reads as Retry-After (azure.core.pipeline.policies._utils.get_retry_after).
RETRY_AFTER_HEADERS = ("retry-after", "retry-after-ms", "x-ms-retry-after-ms")
BACKOFF_FACTOR = 1.5


def backoff_delays(first: float, cap: float, factor: float = BACKOFF_FACTOR) -> Iterator[float]:
    """first, first*factor, ... up to cap, then cap forever: waits between polls of a slow operation."""
    delay = min(first, cap)
    while True:
        yield delay
        delay = min(cap, delay * factor)


class LroPolling(ARMPolling):
    """ARMPolling that backs off when the service gives no Retry-After.

    ARMPolling waits Retry-After when an answer has one, else its fixed `timeout`. Here the wait
    without Retry-After starts at `first` seconds and grows by `factor` per such poll up to
    `cap`: an operation that ends in 1 s is noticed within about a second, and a 45-minute VPN
    gateway costs under 200 polls (a fixed 1 s would cost 2700). Passed to `begin_*` as
    `polling=` (the SDK's way to supply one's own polling method); one instance per operation.
    """

    def __init__(self, first: float, cap: float, factor: float = BACKOFF_FACTOR, **kwargs: Any) -> None:
        # `timeout` is ARMPolling's own fixed delay; it stays the first delay should azure-core
        # ever stop consulting _extract_delay, so polling would still be prompt, only not backing off.
        super().__init__(timeout=first, **kwargs)
        self._delays = backoff_delays(first, cap, factor)

    def next_delay(self, headers: Mapping[str, str]) -> float | None:
        """The wait before the next poll after an answer with these headers; None: use its Retry-After."""
        headers = case_insensitive_dict(headers)
        if any(headers.get(name) for name in RETRY_AFTER_HEADERS):
            return None
        return next(self._delays)

    def _extract_delay(self) -> float:  # azure-core's hook: Retry-After if present, else `timeout`
        delay = self.next_delay(self._pipeline_response.http_response.headers)
        return super()._extract_delay() if delay is None else delay


def lro_polling(target: Target) -> LroPolling:
    """A polling method for one long-running operation of any ARM client, as `polling=` to `begin_*`."""
    return LroPolling(
        target.polling_interval,
        target.polling_interval_max,
        path_format_arguments={"endpoint": target.arm_endpoint},
    )


def _raw_json(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    """Keep Azure's JSON as sent: diffs compare ARM's own field names, not SDK model names."""
    response = pipeline_response.http_response
    return response.json() if response.text() else None


PRIVATE_ONLY_HINT = (
    "(it accepts callers on its private network only: connect the point-to-site VPN first, "
    "runbooks/vpn.client.md, with DNS through the resolver, and run again)"
)


def _private_only(exc: HttpResponseError, message: str) -> bool:
    """A data plane with public network access off refusing a caller from outside (Key Vault: ForbiddenByConnection)."""
    inner = getattr(exc.error, "innererror", None) if exc.error is not None else None
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return inner_code == "ForbiddenByConnection" or "public network access is disabled" in message.lower()


def azure_error(exc: HttpResponseError) -> AzureOperationError:
    """Translate an SDK error into ours, keeping Azure's error code and message."""
    code = (exc.error.code if exc.error is not None else None) or getattr(exc, "reason", None) or "HttpError"
    message = (exc.error.message if exc.error is not None else None) or str(exc.message or exc).splitlines()[0]
    message = " ".join(str(message).split())  # Key Vault's messages span lines (Caller:, Vault:): one line each
    status = exc.status_code
    if _private_only(exc, message):
        message = f"{message.rstrip()} {PRIVATE_ONLY_HINT}"
    if code == "ScopeLocked":
        return ResourceLockedError(code, message, status)
    return AzureOperationError(code, message, status)


@contextmanager
def translated_errors(endpoint: str) -> Iterator[None]:
    """Turn SDK exceptions into ours at the provider boundary, keeping Azure's code and message."""
    try:
        yield
    except ClientAuthenticationError as exc:
        message = str(exc.message or exc).splitlines()[0]
        raise AzureOperationError("AuthenticationFailed", message, exc.status_code) from None
    except HttpResponseError as exc:
        raise azure_error(exc) from None
    except ServiceRequestError as exc:
        raise AzureOperationError("ConnectionFailed", f"could not reach {endpoint}: {exc}") from None


class ArmProvider:
    """Reads and writes ARM resources through the SDK; one instance per task run (thread-safe)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.target.arm_endpoint,
            "credential_scopes": [self.target.credential_scope],
            "connection_verify": self.target.connection_verify,
            "use_env_settings": self.target.use_env_settings,
            **RETRY_SETTINGS,
        }

    @cached_property
    def resources(self) -> Any:
        from azure.mgmt.resource.resources import ResourceManagementClient

        return ResourceManagementClient(self.target.credential, self.target.subscription_id, **self._client_kwargs())

    @cached_property
    def keyvault(self) -> Any:
        from azure.mgmt.keyvault import KeyVaultManagementClient

        return KeyVaultManagementClient(self.target.credential, self.target.subscription_id, **self._client_kwargs())

    def read(self, resource_id: str, api_version: str) -> dict[str, Any] | None:
        """The resource's JSON, or None when it (or its group) does not exist."""
        try:
            with translated_errors(self.target.arm_endpoint):
                try:
                    return self.resources.resources.get_by_id(resource_id, api_version=api_version, cls=_raw_json)
                except ResourceNotFoundError:
                    return None
        finally:
            READING.set()  # after the first read: the SDK and its transport are imported by then

    def put(self, spec: ResourceSpec, body: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any] | None:
        """Create or update, waiting for the long-running operation to finish.

        `if_match`: the ETag the body was read with; Azure answers 412 PreconditionFailed when
        someone else wrote the resource since (read-modify-write of a list inside a resource).
        """
        headers = {"If-Match": if_match} if if_match else {}
        with translated_errors(self.target.arm_endpoint):
            poller = self.resources.resources.begin_create_or_update_by_id(
                spec.id,
                dict(body),
                api_version=spec.api_version,
                cls=_raw_json,
                polling=lro_polling(self.target),
                headers=headers,
            )
            return poller.result()

    def delete(self, resource_id: str, api_version: str) -> None:
        with translated_errors(self.target.arm_endpoint):
            self.resources.resources.begin_delete_by_id(
                resource_id, api_version=api_version, polling=lro_polling(self.target)
            ).result()

    def list_children(self, parent_id: str, child_type: str, api_version: str) -> list[dict[str, Any]]:
        """GET {parent}/{childType}: every child of one kind (firewall rules of a server), all pages."""
        items: list[dict[str, Any]] = []
        path: str | None = f"{parent_id}/{child_type}"
        params: dict[str, str] = {}
        while path:
            answer = self._send("GET", path, api_version, params=params) or {}
            items.extend(answer.get("value") or [])
            next_link = answer.get("nextLink")
            if not next_link:
                break
            from urllib.parse import parse_qs, urlsplit

            split = urlsplit(next_link)
            path = split.path
            params = {k: v[0] for k, v in parse_qs(split.query).items() if k != "api-version"}
        return items

    def action(self, resource_id: str, name: str, api_version: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST {id}/{name} (listKeys, ...): a synchronous action's JSON answer."""
        return self._send("POST", f"{resource_id}/{name}", api_version, body=body)

    def list_at(self, path: str, api_version: str, filter_expr: str | None = None) -> list[dict[str, Any]]:
        """GET a collection (one page is enough for what we list: a principal's assignments at a scope)."""
        params = {"$filter": filter_expr} if filter_expr else {}
        answer = self._send("GET", path, api_version, params=params) or {}
        return list(answer.get("value") or [])

    def _send(
        self,
        method: str,
        path: str,
        api_version: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        return self.send_raw(method, path, api_version, body=body, params=params)[2]

    def send_raw(
        self,
        method: str,
        path_or_url: str,
        api_version: str | None = None,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request through the client's pipeline (token, retries): (status, headers, JSON or None).

        `path_or_url`: an ARM path, or an absolute URL Azure handed out (an operation's status
        monitor, which carries its own api-version). A status of 400 or more raises with Azure's code.
        """
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        absolute = path_or_url.startswith(("https://", "http://"))
        url = path_or_url if absolute else self.target.arm_endpoint.rstrip("/") + path_or_url
        query = {**({"api-version": api_version} if api_version else {}), **(params or {})}
        request = HttpRequest(
            method, url, params=query, json=dict(body) if body is not None else None, headers=dict(headers or {})
        )
        with translated_errors(self.target.arm_endpoint):
            response = self.resources.send_request(request)
            if response.status_code >= 400:
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            return response.status_code, dict(response.headers), response.json() if response.text() else None

    def read_deleted_vault(self, name: str, location: str) -> dict[str, Any] | None:
        """A soft-deleted vault holding this name, or None (azure-facts.md 4)."""
        with translated_errors(self.target.arm_endpoint):
            try:
                return self.keyvault.vaults.get_deleted(name, location, cls=_raw_json)
            except ResourceNotFoundError:
                return None

    def secret_client(self, vault_url: str) -> Any:
        from azure.keyvault.secrets import SecretClient

        return SecretClient(
            vault_url,
            self.target.credential,
            connection_verify=self.target.connection_verify,
            verify_challenge_resource=self.target.verify_challenge_resource,
            use_env_settings=self.target.use_env_settings,
            **RETRY_SETTINGS,
        )

    def resource_id(self, group: str, provider_path: str) -> str:
        """The ARM id of a resource in one of this subscription's groups, e.g. 'Microsoft.KeyVault/vaults/kv'."""
        return f"/subscriptions/{self.target.subscription_id}/resourceGroups/{group}/providers/{provider_path}"

    def vault_id(self, platform: Platform, env: str) -> str:
        vault, group = platform.vault_for(env)
        return self.resource_id(group, f"Microsoft.KeyVault/vaults/{vault.name}")

    def vault_secret_client(self, vault_id: str) -> Any | None:
        """A SecretClient for the vault's data plane, or None when the vault does not exist."""
        return self.client_for_vault(self.read(vault_id, api_version("Microsoft.KeyVault/vaults")))

    def client_for_vault(self, vault: Mapping[str, Any] | None) -> Any | None:
        """A SecretClient for a vault already read (its ARM JSON), or None for an absent one."""
        return None if vault is None else self.secret_client(vault["properties"]["vaultUri"])


def read_secret(client: Any, name: str) -> str | None:
    """A secret's current value, or None only when it does not exist; other failures raise."""
    with translated_errors(name):
        try:
            return client.get_secret(name).value
        except ResourceNotFoundError:
            return None


def read_secrets(client: Any, names: Iterable[str]) -> dict[str, str | None]:
    """Several secrets in one round of the data plane (in parallel), each as read_secret reads it."""
    unique = list(dict.fromkeys(names))
    values = each(lambda name: read_secret(client, name), unique, SECRET_READ_WORKERS, "secrets")
    return dict(zip(unique, values, strict=True))
