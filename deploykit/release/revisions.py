"""What release, release.rollback and release.status share: the app, its revisions, one rollout.

Apps run in Single revision mode (step 5). A rollout is azd's: read the app, change only the
image, PUT it (a template change makes a new revision), wait for the operation, then verify the
new revision as step 5 does (`azure/health.py`): ARM's Succeeded is not a healthy deployment
(azure-facts-2.md 3.3). In Single mode the old revision keeps all traffic until the new one is
ready, so a revision that never gets ready takes no traffic; returning to an earlier image is
another rollout (a new revision running that image), the one rollback the facts verify for
Single mode (3.2). docs/releases.md explains the choice.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploykit.azure.api_versions import api_version
from deploykit.config import AppConfig, EnvConfig, Platform
from deploykit.engine.flow import RunContext
from deploykit.engine.model import ResourceSpec
from deploykit.errors import UserError

APP_TYPE = "Microsoft.App/containerApps"
DIGEST_SEPARATOR = "@"


@dataclass(frozen=True)
class AppRef:
    """One app of one environment: its config, ARM id and plan address (step 5's, app.<env>.<name>)."""

    env: EnvConfig
    app: AppConfig
    id: str

    @property
    def address(self) -> str:
        return f"app.{self.env.env}.{self.app.name}"

    @property
    def resource_name(self) -> str:
        return f"{self.app.name}-{self.env.env}"

    @property
    def version(self) -> str:
        return api_version(APP_TYPE)

    def spec(self) -> ResourceSpec:
        return ResourceSpec(self.address, APP_TYPE, self.version, self.id, {}, "release")


def app_ref(platform: Platform, env_name: str, app_name: str | None, subscription: str) -> AppRef:
    """The app named by --app, or a one-line refusal naming the allowed apps."""
    env = platform.envs[env_name]
    names = [a.name for a in env.apps]
    app = next((a for a in env.apps if a.name == app_name), None)
    if app is None:
        problem = "required" if not app_name else f"{app_name!r} is not an app of {env_name}"
        raise UserError(f"--app: {problem}; allowed: {', '.join(names)}")
    group = env.resource_groups["apps"].name
    app_id = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{APP_TYPE}/{app.name}-{env.env}"
    return AppRef(env, app, app_id)


def all_apps(platform: Platform, env_name: str, subscription: str) -> list[AppRef]:
    return [app_ref(platform, env_name, a.name, subscription) for a in platform.envs[env_name].apps]


def read_app(provider: Any, ref: AppRef) -> dict[str, Any]:
    """The app as Azure has it; a missing app is the operator's mistake (deploy first)."""
    actual = provider.read(ref.id, ref.version)
    if actual is None:
        raise UserError(
            f"--app: {ref.resource_name} does not exist in {ref.env.env}; "
            f"allowed: an app `invoke deploy --env {ref.env.env}` has created (nothing was changed)"
        )
    return actual


def read_revision(provider: Any, ref: AppRef, name: str | None) -> dict[str, Any] | None:
    return provider.read(f"{ref.id}/revisions/{name}", ref.version) if name else None


def list_revisions(provider: Any, ref: AppRef) -> list[dict[str, Any]]:
    """Every revision of the app, oldest first (Revisions - List)."""
    found = provider.list_at(f"{ref.id}/revisions", ref.version)
    return sorted(found, key=lambda r: str(props(r).get("createdTime") or ""))


def props(body: Mapping[str, Any] | None) -> dict[str, Any]:
    value = (body or {}).get("properties")
    return value if isinstance(value, dict) else {}


def main_image(body: Mapping[str, Any] | None, ref: AppRef) -> str | None:
    """The image of the app's own container (named as the app), else of its first container."""
    containers = [c for c in (props(body).get("template") or {}).get("containers") or [] if isinstance(c, dict)]
    own = next((c for c in containers if c.get("name") == ref.app.name), containers[0] if containers else None)
    image = (own or {}).get("image")
    return image if isinstance(image, str) else None


def digest_of(image: str | None) -> str | None:
    """sha256:... of an image pinned by digest, else None."""
    if image and DIGEST_SEPARATOR in image:
        return image.split(DIGEST_SEPARATOR, 1)[1]
    return None


def tag_of(image: str | None) -> str | None:
    """The tag of `server/repo:tag` (None for a digest reference)."""
    if not image or DIGEST_SEPARATOR in image:
        return None
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def registry_server(app: Mapping[str, Any], ref: AppRef) -> str:
    """The login server the app pulls from: its registries entry (step 5 names the shared registry)."""
    configuration = props(app).get("configuration") or {}
    for entry in configuration.get("registries") or []:
        server = (entry or {}).get("server")
        if isinstance(server, str) and server:
            return server
    image = main_image(app, ref) or ""
    return image.split("/", 1)[0]


def rollout_body(provider: Any, ref: AppRef, actual: Mapping[str, Any], image: str) -> dict[str, Any]:
    """Azure's app with only the app container's image changed, ready to PUT.

    Read-only fields are left out; identities are sent as keys; plain secret values, which a GET
    never returns, come from listSecrets (what azd does); Key Vault references need no value. A
    leftover `revisionSuffix` is dropped, so the new revision gets a fresh name.
    """
    p = props(actual)
    configuration = copy.deepcopy(p.get("configuration") or {})
    ingress = configuration.get("ingress")
    if isinstance(ingress, dict):
        ingress.pop("fqdn", None)
    secrets = configuration.get("secrets") or []
    if any(isinstance(s, dict) and not s.get("keyVaultUrl") for s in secrets):
        listed = provider.action(ref.id, "listSecrets", ref.version) or {}
        values = {s.get("name"): s.get("value") for s in listed.get("value") or [] if isinstance(s, dict)}
        for secret in secrets:
            if isinstance(secret, dict) and not secret.get("keyVaultUrl"):
                secret["value"] = values.get(secret.get("name"))
    template = copy.deepcopy(p.get("template") or {})
    template.pop("revisionSuffix", None)
    containers = [c for c in template.get("containers") or [] if isinstance(c, dict)]
    own = next((c for c in containers if c.get("name") == ref.app.name), containers[0] if containers else None)
    if own is None:
        raise UserError(f"--app: {ref.resource_name} has no container to release to (nothing was changed)")
    own["image"] = image
    body: dict[str, Any] = {"location": actual.get("location"), "properties": {}}
    for key in ("tags",):
        if key in actual:
            body[key] = copy.deepcopy(actual[key])
    identity = actual.get("identity")
    if isinstance(identity, dict):
        body["identity"] = {"type": identity.get("type")}
        if isinstance(identity.get("userAssignedIdentities"), dict):
            body["identity"]["userAssignedIdentities"] = {k: {} for k in identity["userAssignedIdentities"]}
    out = body["properties"]
    for key in ("managedEnvironmentId", "environmentId", "workloadProfileName"):
        if p.get(key):
            out[key] = p[key]
    out["configuration"] = configuration
    out["template"] = template
    return body


def roll(provider: Any, ref: AppRef, body: Mapping[str, Any], stop: threading.Event | None = None) -> dict[str, Any] | None:
    """PUT the app and wait for Azure's operation (Retry-After honoured); the app as it ends."""
    from deploykit.azure.operations import begin_put

    operation = begin_put(provider, ref.spec(), body)
    while not operation.done and not operation.poll():
        if stop is not None and stop.wait(operation.delay):
            break
        if stop is None:
            time.sleep(operation.delay)
    return operation.result


def verify(ctx: RunContext, ref: AppRef) -> tuple[Any, bool]:
    """Step 5's verification of the app's latest revision (azure/health.py), with the env's health
    settings: (its AppHealth, whether the first Ctrl-C ended the wait)."""
    from deploykit.azure.health import AppTarget, verify_apps

    health = ref.env.health
    provider = ctx.provider()
    target = AppTarget(ref.address, ref.app.name, ref.id, ref.app.min_replicas == 0, health.liveness_path, health.readiness_path)
    stop = threading.Event()
    ctx.cancel_hooks.append(stop.set)
    verify_tls = provider.target.connection_verify
    result = verify_apps(provider, [target], health.mode, health.timeout_seconds, ctx.reporter.info, verify_tls, stop)[0]
    return result, stop.is_set()
