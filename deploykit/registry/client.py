"""One registry on the run's target: which digest a tag holds, and copying a manifest by digest.

Reads go through the `azure-containerregistry` SDK (ACR's data plane, its own token exchange);
imports through ARM (`importImage`, azure-facts-2.md 2.1), which needs no network reach to the
registry. The data-plane endpoint of a login server is decided in one place, `data_endpoint`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from deploykit.azure.api_versions import api_version
from deploykit.azure.arm import RETRY_SETTINGS, lro_polling, translated_errors
from deploykit.engine.steps import run_first
from deploykit.errors import AzureOperationError, UserError

if TYPE_CHECKING:
    from deploykit.azure.target import OpenTarget
    from deploykit.engine.flow import RunContext

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
# The data plane's token audience (azure-facts-2.md 2.4; the SDK's default for every cloud).
AUDIENCE = "https://containerregistry.azure.net"


def data_endpoint(opened: OpenTarget, login_server: str) -> str:
    """Where a registry's data plane answers: `https://<loginServer>` on Azure; in the sandbox, its own
    listener on 127.0.0.1, asked of the sandbox (loginServer stays `<name>.azurecr.io` there too)."""
    if opened.sandbox_url is None:
        return f"https://{login_server}"
    from deploykit.azure.target import sandbox_control

    name = login_server.split(".", 1)[0]
    ca = str(opened.provider.target.connection_verify)
    return str(sandbox_control(opened.sandbox_url, ca, "GET", f"/registries/{name}")["endpoint"])


def _acr_error(exc: HttpResponseError, where: str) -> AzureOperationError:
    """ACR answers {"errors": [{"code", "message"}]}: keep its first code and message."""
    code, message = None, None
    try:
        errors = (exc.response.json() or {}).get("errors") if exc.response is not None else None
        if errors:
            code, message = errors[0].get("code"), errors[0].get("message")
    except (ValueError, AttributeError):
        pass
    code = code or getattr(exc, "reason", None) or "HttpError"
    return AzureOperationError(code, f"{where}: {message or exc.message}", exc.status_code)


@dataclass
class Registry:
    """A registry as one run sees it: its ARM id and login server, and clients for both planes (thread-safe)."""

    opened: OpenTarget
    resource_id: str
    login_server: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.resource_id.rsplit("/", 1)[-1]

    def reference(self, repository: str, tag_or_digest: str) -> str:
        """The image reference apps pull: `<loginServer>/<repository>:<tag>` or `...@sha256:...`."""
        joiner = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.login_server}/{repository}{joiner}{tag_or_digest}"

    @cached_property
    def _data_client(self) -> Any:
        from azure.containerregistry import ContainerRegistryClient

        target = self.opened.provider.target
        return ContainerRegistryClient(
            data_endpoint(self.opened, self.login_server),
            target.credential,
            audience=AUDIENCE,
            connection_verify=target.connection_verify,
            use_env_settings=target.use_env_settings,
            **RETRY_SETTINGS,
        )

    def digest(self, repository: str, tag: str) -> str | None:
        """The digest `repository:tag` holds now, or None when the repository or the tag does not exist.

        Other failures (no network reach, refused token) raise AzureOperationError with ACR's code.
        """
        with self._lock:
            client = self._data_client
        where = f"{self.login_server}/{repository}:{tag}"
        try:
            return str(client.get_tag_properties(repository, tag).digest)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise _acr_error(exc, where) from None
        except ServiceRequestError as exc:
            raise AzureOperationError("ConnectionFailed", f"could not reach {where}: {exc}") from None

    def import_by_digest(self, repository: str, digest: str, target_tags: Sequence[str], force: bool = False) -> None:
        """Copy `repository@digest` of this registry to each `repo:tag` in target_tags (ARM importImage).

        NoForce fails when a target tag exists; Force overwrites it. Waits for the operation
        (200, or 202 + Location polled with the target's back-off).
        """
        from azure.core.polling import LROPoller
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        provider = self.opened.provider
        body = {
            "source": {"resourceId": self.resource_id, "sourceImage": f"{repository}@{digest}"},
            "targetTags": list(target_tags),
            "mode": "Force" if force else "NoForce",
        }
        url = provider.target.arm_endpoint.rstrip("/") + f"{self.resource_id}/importImage"
        request = HttpRequest("POST", url, params={"api-version": api_version(REGISTRY_TYPE)}, json=body)
        with translated_errors(provider.target.arm_endpoint):
            client = provider.resources
            initial = client.send_request(request, _return_pipeline_response=True)
            status = initial.http_response.status_code
            if status not in (200, 202):
                raise HttpResponseError(response=initial.http_response, error_format=ARMErrorFormat)
            if status == 202:
                # As the generated mgmt clients do: the poller runs on the client's own pipeline (token, retries).
                LROPoller(client._client, initial, lambda *_: None, lro_polling(provider.target)).result()


def shared_registry(ctx: RunContext) -> Registry:
    """The shared registry of config/shared.yaml on the run's target, read from ARM.

    A UserError (exit 2) when it does not exist yet: step2b creates it.
    """
    assert ctx.platform is not None, "load the platform before asking for the registry"
    shared = ctx.platform.shared
    opened = ctx.target()
    provider = opened.provider
    resource_id = provider.resource_id(shared.resource_group.name, f"{REGISTRY_TYPE}/{shared.registry.name}")
    actual = provider.read(resource_id, api_version(REGISTRY_TYPE))
    if actual is None:
        raise UserError(f"registry {shared.registry.name} does not exist yet; {run_first('step2b')} (nothing was changed)")
    login = (actual.get("properties") or {}).get("loginServer") or f"{shared.registry.name}.azurecr.io"
    return Registry(opened, resource_id, str(login))
