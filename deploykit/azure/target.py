"""Choose and open a target: the local sandbox (default) or real Azure (always explicit)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

from deploykit.azure.arm import ArmProvider, Target
from deploykit.azure.credentials import SharedTokenCredential
from deploykit.config import Platform
from deploykit.errors import AzureOperationError, UserError
from deploykit.paths import sandbox_dir

TARGETS = ("sandbox", "azure")
SANDBOX_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
# Long-running operations on Azure without Retry-After: first poll after 1 s, backing off to 15 s
# (a Retry-After from Azure is always honoured; see arm.LroPolling).
AZURE_POLLING_INTERVAL = 1.0
AZURE_POLLING_INTERVAL_MAX = 15.0


class SandboxCredential:
    """A fixed token for the sandbox, which checks that a bearer token is sent, not what it says."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("sandbox-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("sandbox-token", int(time.time()) + 3600)


@dataclass
class OpenTarget:
    """A target ready for use; `sandbox_url` and `journal_start` let a run count its own sandbox requests."""

    provider: ArmProvider
    sandbox_url: str | None = None
    journal_start: int = 0


def validate_target(name: str) -> None:
    if name not in TARGETS:
        raise UserError(f"--target: {name!r} is not a target; allowed: {', '.join(TARGETS)}")


@contextmanager
def open_target(platform: Platform, name: str) -> Iterator[OpenTarget]:
    """Yield a provider for the target; an in-process sandbox lives as long as the block."""
    validate_target(name)
    if name == "azure":
        yield OpenTarget(ArmProvider(_azure_target(platform)))
        return
    external = external_sandbox()
    if external:
        url, ca = external
        yield OpenTarget(ArmProvider(_sandbox_target(platform, url, ca)), url, journal_position(url, ca))
        return
    from deploykit.sandbox.server import SandboxServer

    server = SandboxServer(sandbox_dir(), run_id=uuid.uuid4().hex[:12])
    try:
        yield OpenTarget(ArmProvider(_sandbox_target(platform, server.url, str(server.cert_path))), server.url, 0)
    finally:
        server.stop()


def external_sandbox() -> tuple[str, str] | None:
    """(url, CA file) of a sandbox already running (DEPLOYKIT_SANDBOX_URL), or None."""
    url = os.environ.get("DEPLOYKIT_SANDBOX_URL")
    if not url:
        return None
    return url.rstrip("/"), os.environ.get("DEPLOYKIT_SANDBOX_CA") or str(sandbox_dir() / "tls" / "cert.pem")


def _sandbox_target(platform: Platform, url: str, ca: str) -> Target:
    return Target(
        name="sandbox",
        arm_endpoint=url,
        credential=SandboxCredential(),
        subscription_id=platform.subscription_id() or SANDBOX_SUBSCRIPTION,
        credential_scope="https://management.azure.com/.default",
        connection_verify=ca,
        polling_interval=1.0,
        verify_challenge_resource=False,  # the sandbox vault's host is 127.0.0.1, not *.vault.azure.net
        use_env_settings=False,  # loopback: no proxy, and no scan of the environment per request
    )


def _azure_target(platform: Platform) -> Target:
    subscription = platform.subscription_id() or _cli_default_subscription()
    return Target(
        name="azure",
        arm_endpoint=platform.shared.azure.arm_endpoint,
        credential=azure_credential(),
        subscription_id=subscription,
        credential_scope=platform.shared.azure.scope(),
        polling_interval=AZURE_POLLING_INTERVAL,
        polling_interval_max=AZURE_POLLING_INTERVAL_MAX,
    )


def credentials_error(exc: AzureOperationError) -> UserError:
    """What an operator is told when Azure refused our token: one line, exit 2, `az login`."""
    return UserError(f"--target azure: no usable Azure credentials ({exc.message}); run `az login`")


def azure_credential() -> SharedTokenCredential:
    """DefaultAzureCredential (an operator's `az login`, environment credentials or a managed
    identity; AZURE_TOKEN_CREDENTIALS pins one), asked once per scope per run by all clients."""
    from azure.identity import DefaultAzureCredential

    try:
        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    except ValueError as exc:  # an invalid AZURE_TOKEN_CREDENTIALS names the accepted values
        raise UserError(f"--target azure: {str(exc).splitlines()[0]}") from None
    return SharedTokenCredential(credential)


def _cli_default_subscription() -> str:
    """The Azure CLI's default subscription (`az account set`), read through its own profile."""
    try:
        from azure.cli.core._profile import Profile  # type: ignore[import-not-found]

        return str(Profile().get_subscription_id())
    except ImportError:
        pass
    except Exception as exc:  # the CLI raises its own CLIError types; any of them means "not logged in"
        raise UserError(f"no subscription: the Azure CLI says {str(exc).splitlines()[0]}") from None
    profile = Path(os.environ.get("AZURE_CONFIG_DIR", Path.home() / ".azure")) / "azureProfile.json"
    try:
        data = json.loads(profile.read_text(encoding="utf-8-sig"))
        return next(s["id"] for s in data.get("subscriptions", []) if s.get("isDefault"))
    except (OSError, ValueError, StopIteration, KeyError):
        raise UserError(
            "config/shared.yaml: azure.subscription_id: not set; set it, export AZURE_SUBSCRIPTION_ID, "
            "or choose one with `az account set`"
        ) from None


def journal_position(url: str, ca: str) -> int:
    """The sandbox journal's last sequence number, so a run can count only its own requests."""
    return int(sandbox_control(url, ca, "GET", "/journal?since=999999999")["last"])


def sandbox_control(url: str, ca: str, method: str, path: str, body: Any = None) -> Any:
    """Call the sandbox's control namespace (reset, journal, faults, mutate, seed)."""
    import ssl
    import urllib.request

    fix = "start one with `python -m deploykit.sandbox`, or unset DEPLOYKIT_SANDBOX_URL to use the in-process sandbox"
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"DEPLOYKIT_SANDBOX_CA: cannot use {ca} ({getattr(exc, 'strerror', None) or exc}); {fix}") from None
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - https to the sandbox only
        f"{url}/_sandbox{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except (OSError, ValueError) as exc:  # URLError, refused, TLS mismatch, not JSON: not our sandbox
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"DEPLOYKIT_SANDBOX_URL: no sandbox answers at {url} ({reason}); {fix}") from None
