"""Container apps in the sandbox: the ARM type, its revisions, and the apps the revisions run.

ARM side (hooks of the `TYPES` entries, inside the store's transaction): a PUT whose
`properties.template` differs from the latest revision's (or a create) adds a revision record
`{app id}/revisions/{app}--{suffix}` beside the app (azure-facts-2.md 3.1); secret values are
kept but never shown; `listSecrets` shows them, as Azure's does.

Runtime side (`AppRuntime`, one per sandbox server): each revision "runs" as a real app would.
It pulls its image (refused when the tag is marked failing, or when the registry identity has no
AcrPull on the registry), resolves its Key Vault references through their identity (refused
without Key Vault Secrets User on an RBAC vault, or a `get` secrets access policy on an
access-policy vault; role questions go to the store's rbac), connects to its DATABASE_URL with
psycopg (connect_timeout 5 s, SELECT 1), and answers /healthz and /readyz over HTTPS on its own
port (server.py starts one listener per revision and one per app; the app's ingress routes to
its latest ready revision). Status is
derived from the state whenever asked, readiness cached about a second, so a restored role
assignment turns a revision Healthy within a second. Secret values never leave this module:
reasons name variables, vaults and identities, and database errors lose anything password-like.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets as pysecrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from deploykit.sandbox.armtype import ArmType, State, now_iso
from deploykit.sandbox.bodies import deep_merge
from deploykit.sandbox.ids import ArmError, ParsedId

APP_TYPE = "Microsoft.App/containerApps"
REVISION_TYPE = "Microsoft.App/containerApps/revisions"
ENVIRONMENT_TYPE = "Microsoft.App/managedEnvironments"
PRIVATE = "_sandbox"  # sandbox-only data in a stored body (a revision's order, flags): never shown
SANDBOX_TENANT = "00000000-0000-0000-0000-000000000000"

# Built-in role definitions (azure-facts-2.md 2.5 and 4; azure-facts.md 8).
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
PULL_ROLES = (ACR_PULL, ACR_PUSH, OWNER, CONTRIBUTOR)  # registries in legacy permission mode
# ABAC registries honour only the repository roles (azure-facts-2.md 2.5): Reader, Writer, Contributor.
ABAC_PULL_ROLES = (
    "b93aa761-3e63-49ed-ac28-beffa264f7ac",
    "2a1e307c-b015-4ebd-883e-5b7698a07328",
    "2efddaa5-3f1f-4df3-97df-af3f13818f4c",
)
# Key Vault Secrets User, Secrets Officer, Administrator: each may read secret values.
SECRET_READER_ROLES = (
    "4633458b-17de-408a-b874-0445c86b69e6",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "00482a5a-887f-4fb3-b363-3baf46d5ad6b",
)

READY_CACHE_SECONDS = 1.0  # readiness (Key Vault references, database) is re-checked this often at most
DATABASE_CONNECT_TIMEOUT = 5  # seconds, psycopg's connect_timeout
DEFAULT_COOLDOWN_SECONDS = 300  # template.scale.cooldownPeriod's default: idle time before scaling to zero
TEMPLATE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"scale": {"maxReplicas": 10}})  # azure-facts.md 3.14
IN_FLIGHT = frozenset({"creating", "updating", "inprogress", "accepted"})


# ---- small helpers -----------------------------------------------------------------------------
def _props(body: Any) -> dict[str, Any]:
    props = body.get("properties") if isinstance(body, dict) else None
    return props if isinstance(props, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def _template(body: dict[str, Any]) -> dict[str, Any]:
    """A template as the service keeps it: the request's, over the defaults."""
    return deep_merge(TEMPLATE_DEFAULTS, _dict(_props(body).get("template")))


def _lower_groups(resource_id: str) -> str:
    """Azure answers identity keys with a lower-case `resourcegroups` segment (ContainerApps_Get.json)."""
    return re.sub(r"/resourcegroups/", "/resourcegroups/", resource_id, flags=re.IGNORECASE)


def system_principal(app_id: str) -> str:
    """The principal id of an app's system-assigned identity: stable for the app's id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox:system-identity:{app_id.lower()}"))


def _is_system(identity_ref: str) -> bool:
    return identity_ref.strip().lower() == "system"


def _has_system_identity(app_body: dict[str, Any]) -> bool:
    kind = str(_dict(app_body.get("identity")).get("type", ""))
    return "systemassigned" in kind.lower().replace(" ", "")


def _assigned_identities(app_body: dict[str, Any]) -> set[str]:
    return {key.lower() for key in _dict(_dict(app_body.get("identity")).get("userAssignedIdentities"))}


def revisions_of(app_key: str, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    prefix = app_key.lower() + "/revisions/"
    found = [r for r in records if r["type"].lower() == REVISION_TYPE.lower() and r["id"].lower().startswith(prefix)]
    return sorted(found, key=lambda r: _dict(r["body"].get(PRIVATE)).get("seq", 0))


def _app_key_of(revision_key: str) -> str:
    return revision_key.lower().rsplit("/revisions/", 1)[0]


def _image_server(image: str) -> str:
    """The registry host of an image reference ('docker.io' when it names none)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def _env_of(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for c in _list(template.get("containers")) for e in _list(_dict(c).get("env")) if isinstance(e, dict)]


def _probe_path(template: dict[str, Any], kind: str, default: str) -> str:
    for container in _list(template.get("containers")):
        for probe in _list(_dict(container).get("probes")):
            probe = _dict(probe)
            path = _dict(probe.get("httpGet")).get("path")
            if str(probe.get("type", "")).lower() == kind and isinstance(path, str) and path.startswith("/"):
                return path
    return default


def _digest_problem(registry: dict[str, Any], image: str, failing: set[str]) -> str | None:
    """An image pinned by digest (`server/repo@sha256:...`, as `invoke release` deploys): the
    manifest must be in the registry's images (sandbox/registry.py), and it fails when a tag
    marked failing (`PUT /_sandbox/images/failing` with `server/repo:tag`) points at that digest."""
    reference, _, digest = image.partition("@")
    server, _, repository = reference.partition("/")
    repos = _dict(_dict(registry["body"].get(PRIVATE)).get("images"))
    repo = _dict(repos.get(repository))
    if digest not in _dict(repo.get("manifests")):
        return f"manifest unknown: {repository}@{digest} is not in {_name(registry['id'])}"
    for tag, entry in _dict(repo.get("tags")).items():
        if _dict(entry).get("digest") == digest and f"{server}/{repository}:{tag}".lower() in failing:
            return f"manifest unknown (the sandbox marks {repository}:{tag}, this digest, as failing)"
    return None


# ---- ARM hooks ---------------------------------------------------------------------------------
def _app_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """Check what Azure checks, then add a revision when the template changed (or on create)."""
    resources = state["resources"]
    props = _props(request)
    environment = props.get("managedEnvironmentId") or props.get("environmentId")
    if not isinstance(environment, str) or not environment:
        raise ArmError(400, "InvalidRequestContent", "properties.managedEnvironmentId is required.")
    record = resources.get(environment.lower())
    if record is None or record["type"].lower() != ENVIRONMENT_TYPE.lower():
        raise ArmError(404, "ManagedEnvironmentNotFound", f"The managed environment '{_name(environment)}' was not found.")
    configuration = _dict(props.get("configuration"))
    assigned = _assigned_identities(request)
    for where, items in (("registries", configuration.get("registries")), ("secrets", configuration.get("secrets"))):
        for item in _list(items):
            ref = _dict(item).get("identity")
            if not isinstance(ref, str) or not ref:
                continue
            if _is_system(ref) and not _has_system_identity(request):
                raise ArmError(
                    400, "InvalidParameterValue", f"configuration.{where} uses the system identity, which the app does not have."
                )
            if not _is_system(ref) and ref.lower() not in assigned:
                raise ArmError(
                    400,
                    "InvalidParameterValue",
                    f"configuration.{where}: identity '{ref}' is not assigned to the container app "
                    "(identity.userAssignedIdentities).",
                )
    secret_names = {str(_dict(s).get("name", "")).lower() for s in _list(configuration.get("secrets"))}
    template = _template(request)
    for container in _list(template.get("containers")):
        for env in _list(_dict(container).get("env")):
            ref = _dict(env).get("secretRef")
            if isinstance(ref, str) and ref.lower() not in secret_names:
                raise ArmError(
                    400,
                    "ContainerAppSecretRefNotFound",
                    f"SecretRef '{ref}' defined for container '{_dict(container).get('name', '')}' not found.",
                )
    app_id = existing["id"] if existing else parsed.id
    revisions = revisions_of(parsed.key, resources.values())
    latest = revisions[-1] if revisions else None
    if latest is not None and _props(latest["body"]).get("template") == template:
        return  # only a template change makes a revision (azure-facts-2.md 3.1)
    suffix = template.get("revisionSuffix")
    names = {_name(r["id"]).lower() for r in revisions}
    if isinstance(suffix, str) and suffix:
        name = f"{parsed.name}--{suffix}"
        if name.lower() in names:
            raise ArmError(
                400,
                "ContainerAppRevisionSuffixConflict",
                f"A revision with the suffix '{suffix}' already exists; give the new template another revisionSuffix.",
            )
    else:
        alphabet = string.ascii_lowercase + string.digits
        name = ""
        while not name or name.lower() in names:
            name = f"{parsed.name}--" + "".join(pysecrets.choice(alphabet) for _ in range(7))
    seq = max((_dict(r["body"].get(PRIVATE)).get("seq", 0) for r in revisions), default=0) + 1
    revision_id = f"{app_id}/revisions/{name}"
    resources[revision_id.lower()] = {
        "id": revision_id,
        "type": REVISION_TYPE,
        "body": {
            "properties": {"createdTime": now_iso(), "template": template},
            PRIVATE: {"seq": seq, "created": time.time(), "deactivated": False, "restarted": 0.0},
        },
    }


def _app_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """What a GET adds that needs no other resource (AppRuntime.decorate adds the live fields)."""
    props = out.setdefault("properties", {})
    if str(props.get("provisioningState", "")).lower() in {"creating", "updating"}:
        props["provisioningState"] = "InProgress"  # ContainerApps_CreateOrUpdate.json, 201
    configuration = props.get("configuration")
    if isinstance(configuration, dict):
        for secret in _list(configuration.get("secrets")):
            if isinstance(secret, dict):
                secret.pop("value", None)  # never returned (azure-facts.md 3.14); listSecrets shows it
        ingress = configuration.get("ingress")
        if isinstance(ingress, dict) and not ingress.get("traffic"):
            ingress["traffic"] = [{"weight": 100, "latestRevision": True}]
    parts = out["id"].split("/")
    region = str(out.get("location", "")).lower().replace(" ", "")
    if len(parts) > 4:
        props["eventStreamEndpoint"] = (
            f"https://{region}.azurecontainerapps.dev/subscriptions/{parts[2]}/resourceGroups/{parts[4]}"
            f"/containerApps/{out['name']}/eventstream"
        )
    props["outboundIpAddresses"] = ["127.0.0.1"]


def _list_secrets(state: State, record: dict[str, Any], request: dict[str, Any] | None) -> dict[str, Any]:
    """POST listSecrets: names with values (Key Vault references: their URL and identity)."""
    out = []
    for secret in _list(_dict(_props(record["body"]).get("configuration")).get("secrets")):
        secret = _dict(secret)
        if secret.get("keyVaultUrl"):
            out.append({k: secret[k] for k in ("name", "keyVaultUrl", "identity") if k in secret})
        else:
            out.append({"name": secret.get("name"), "value": secret.get("value")})
    return {"value": out}


def _revision_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    raise ArmError(405, "MethodNotAllowed", "Revisions are made by container app updates: PUT the container app instead.")


def _revision_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    out.pop(PRIVATE, None)


def _revision_action(verb: str) -> Callable[[State, dict[str, Any], dict[str, Any] | None], None]:
    """activate / deactivate / restart: synchronous, 200 without a body (azure-facts-2.md 3.1)."""

    def action(state: State, record: dict[str, Any], request: dict[str, Any] | None) -> None:
        stored = state["resources"][record["id"].lower()]
        private = stored["body"].setdefault(PRIVATE, {})
        if verb == "restart":
            private["restarted"] = time.time()  # readiness is checked afresh
        else:
            private["deactivated"] = verb == "deactivate"
        stored["body"].setdefault("properties", {})["lastActiveTime"] = now_iso()

    return action


TYPES: tuple[ArmType, ...] = (
    # container-app/ContainerApps_Get.json, ContainerApps_CreateOrUpdate.json; azure-facts.md 2.2, 3.14
    ArmType(
        APP_TYPE,
        long_running=True,
        display_location=True,
        defaults=MappingProxyType(
            {"properties": {"configuration": {"activeRevisionsMode": "Single"}, "template": dict(TEMPLATE_DEFAULTS)}}
        ),
        read_only=(
            "properties.latestRevisionName",
            "properties.latestReadyRevisionName",
            "properties.latestRevisionFqdn",
            "properties.runningStatus",
            "properties.outboundIpAddresses",
            "properties.eventStreamEndpoint",
            "properties.configuration.ingress.fqdn",
            "identity.principalId",
            "identity.tenantId",
        ),
        before_put=_app_before_put,
        computed=_app_computed,
        actions=MappingProxyType({"listsecrets": _list_secrets}),
    ),
    # azure-facts-2.md 3.1: read-only, made by app updates; activate/deactivate/restart are POSTs
    ArmType(
        REVISION_TYPE,
        provisioning_state=False,
        before_put=_revision_before_put,
        computed=_revision_computed,
        actions=MappingProxyType(
            {
                "activate": _revision_action("activate"),
                "deactivate": _revision_action("deactivate"),
                "restart": _revision_action("restart"),
            }
        ),
    ),
)


# A revision's last request is written to the state at most this often (replicas outlive the process).
LAST_REQUEST_SAVED_EVERY = 10.0


# ---- the runtime -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timings:
    """How long a revision takes to start, and a cold start from zero replicas (server faults set them)."""

    start_seconds: float = 0.2
    cold_start_seconds: float = 0.5


@dataclass(frozen=True)
class RevisionStatus:
    """A revision as it runs now: the read-only properties Azure reports (azure-facts-2.md 3.1)."""

    name: str
    provisioning: str  # Provisioning | Provisioned | Failed
    running: str  # Running | Processing | Stopped | Failed
    health: str  # Healthy | Unhealthy | None
    active: bool
    error: str | None = None  # provisioningError
    reason: str | None = None  # why the readiness probe fails (None when ready)

    @property
    def serving(self) -> bool:
        return self.running == "Running"

    @property
    def ready(self) -> bool:
        return self.health == "Healthy"


@dataclass
class AppView:
    """One app and its revisions as they run now."""

    app: dict[str, Any]
    revisions: list[dict[str, Any]]  # oldest first
    statuses: dict[str, RevisionStatus]  # by lower-case revision id
    ready: str | None  # latestReadyRevisionName

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.revisions[-1] if self.revisions else None

    def revision(self, name: str | None) -> dict[str, Any] | None:
        return next((r for r in self.revisions if name and _name(r["id"]).lower() == name.lower()), None)

    @property
    def has_ingress(self) -> bool:
        return isinstance(_dict(_props(self.app["body"]).get("configuration")).get("ingress"), dict)

    @property
    def multiple(self) -> bool:
        mode = _dict(_props(self.app["body"]).get("configuration")).get("activeRevisionsMode", "Single")
        return str(mode).lower() == "multiple"

    def weights(self) -> dict[str, int]:
        """Traffic weight by lower-case revision name: all to the latest ready one in Single mode."""
        ready = (self.ready or "").lower()
        if not self.multiple:
            return {ready: 100} if ready else {}
        traffic = _list(_dict(_dict(_props(self.app["body"]).get("configuration")).get("ingress")).get("traffic"))
        out: dict[str, int] = {}
        for entry in traffic:
            entry = _dict(entry)
            name = ready if entry.get("latestRevision") else str(entry.get("revisionName", "")).lower()
            if name:
                out[name] = out.get(name, 0) + int(entry.get("weight", 0) or 0)
        return out or ({ready: 100} if ready else {})


class AppRuntime:
    """The revisions as running processes: status, readiness, requests; one per sandbox server.

    `endpoint(key)` is the server's "127.0.0.1:<port>" for a listener key (`app:<id>` or
    `revision:<id>`, started on first use); `vault_url(name)` a vault's data-plane URL.
    """

    def __init__(
        self,
        state: Any,
        vault_url: Callable[[str], str],
        endpoint: Callable[[str], str],
        timings: Callable[[], Timings] = Timings,
    ) -> None:
        self._state = state
        self._vault_url = vault_url
        self._endpoint = endpoint
        self._timings = timings
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._generation = 0  # bumped when the failing images change: cached readiness is stale
        self._ready_cache: dict[str, tuple[float, str, tuple[bool, str | None]]] = {}
        self._revision_locks: dict[str, threading.Lock] = {}
        self._last_request: dict[str, float] = {}  # revision key -> wall time of its last request (replicas)

    # ---- control ---------------------------------------------------------------------------
    def fail_image(self, image: str) -> list[str]:
        with self._lock:
            self._failing.add(image.strip().lower())
            self._generation += 1
            return sorted(self._failing)

    def clear_image(self, image: str | None) -> list[str]:
        with self._lock:
            if image is None:
                self._failing.clear()
            else:
                self._failing.discard(image.strip().lower())
            self._generation += 1
            return sorted(self._failing)

    def failing_images(self) -> list[str]:
        with self._lock:
            return sorted(self._failing)

    def reset(self) -> None:
        with self._lock:
            self._failing.clear()
            self._generation += 1
            self._ready_cache.clear()
            self._last_request.clear()

    # ---- views -----------------------------------------------------------------------------
    def view(self, app_key: str, records: list[dict[str, Any]] | None = None) -> AppView | None:
        """The app's revisions as they run now; moves latestReadyRevisionName forward when a newer one is ready."""
        records = self._state.list_resources() if records is None else records
        app_key = app_key.lower()
        app = next((r for r in records if r["id"].lower() == app_key and r["type"].lower() == APP_TYPE.lower()), None)
        if app is None:
            return None
        revisions = revisions_of(app_key, records)
        stored_ready = _props(app["body"]).get("latestReadyRevisionName")
        by_name = {_name(r["id"]).lower(): r for r in revisions}
        ready = stored_ready if isinstance(stored_ready, str) and stored_ready.lower() in by_name else None
        probed: dict[str, RevisionStatus] = {}
        # Newest first, down to the recorded ready revision: the newest that is ready now wins.
        for revision in reversed(revisions):
            if _dict(revision["body"].get(PRIVATE)).get("deactivated"):
                continue
            status = self._status(app, revision, records, active=True)
            probed[revision["id"].lower()] = status
            name = _name(revision["id"])
            if status.ready:
                if ready is None or self._seq(revision) > self._seq(by_name[ready.lower()]):
                    ready = name
                    self._record_ready(app, name)
                break
            if ready is not None and name.lower() == ready.lower():
                break
        view = AppView(app, revisions, {}, ready)
        multiple = view.multiple
        latest = view.latest
        for revision in revisions:
            key = revision["id"].lower()
            name = _name(revision["id"]).lower()
            deactivated = bool(_dict(revision["body"].get(PRIVATE)).get("deactivated"))
            active = not deactivated and (multiple or revision is latest or name == (ready or "").lower())
            if active:
                view.statuses[key] = probed.get(key) or self._status(app, revision, records, active=True)
            else:
                view.statuses[key] = self._status(app, revision, records, active=False)
        return view

    @staticmethod
    def _seq(revision: dict[str, Any]) -> int:
        return int(_dict(revision["body"].get(PRIVATE)).get("seq", 0))

    def _record_ready(self, app: dict[str, Any], name: str) -> None:
        """latestReadyRevisionName is stored with the app, as Azure keeps it (a read-only field)."""
        _props(app["body"])["latestReadyRevisionName"] = name
        with suppress(ArmError):  # the app was deleted meanwhile
            self._state.mutate(app["id"], {"properties.latestReadyRevisionName": name})

    def _status(
        self, app: dict[str, Any], revision: dict[str, Any], records: list[dict[str, Any]], active: bool
    ) -> RevisionStatus:
        name = _name(revision["id"])
        private = _dict(revision["body"].get(PRIVATE))
        app_state = str(_props(app["body"]).get("provisioningState", "")).lower()
        started = float(private.get("created", 0))
        if active and (app_state in IN_FLIGHT or time.time() < started + self._timings().start_seconds):
            return RevisionStatus(name, "Provisioning", "Processing", "None", True)
        pull_error = self._pull_problem(app, revision, records)
        if pull_error is not None:
            return RevisionStatus(name, "Failed", "Failed", "Unhealthy", active, error=pull_error)
        if not active:
            return RevisionStatus(name, "Provisioned", "Stopped", "None", False)
        ready, reason = self._readiness(app, revision, records)
        return RevisionStatus(name, "Provisioned", "Running", "Healthy" if ready else "Unhealthy", True, reason=reason)

    # ---- image pull ------------------------------------------------------------------------
    def _pull_problem(self, app: dict[str, Any], revision: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
        template = _dict(_props(revision["body"]).get("template"))
        configuration = _dict(_props(app["body"]).get("configuration"))
        with self._lock:
            failing = set(self._failing)
        containers = [_dict(c) for c in _list(template.get("initContainers")) + _list(template.get("containers"))]
        if not containers:
            return "the template has no containers"
        for container in containers:
            image = container.get("image")
            if not isinstance(image, str) or not image:
                return f"container '{container.get('name', '')}' has no image"
            why = self._image_problem(app, configuration, image, failing, records)
            if why is not None:
                return f"ImagePullFailure: failed to pull image '{image}' for container '{container.get('name', '')}': {why}"
        return None

    def _image_problem(
        self, app: dict[str, Any], configuration: dict[str, Any], image: str, failing: set[str], records: list[dict[str, Any]]
    ) -> str | None:
        if image.lower() in failing:
            return "manifest unknown (the sandbox marks this image as failing)"
        server = _image_server(image)
        registry = next(
            (
                r
                for r in records
                if r["type"].lower() == "microsoft.containerregistry/registries"
                and f"{_name(r['id'])}.azurecr.io".lower() == server
            ),
            None,
        )
        if registry is not None and "@" in image:
            why = _digest_problem(registry, image, failing)
            if why is not None:
                return why
        entry = next(
            (_dict(e) for e in _list(configuration.get("registries")) if str(_dict(e).get("server", "")).lower() == server), None
        )
        if entry is None:
            if registry is None and not server.endswith(".azurecr.io"):
                return None  # a public registry
            if registry is not None and _props(registry["body"]).get("anonymousPullEnabled"):
                return None
            return f"unauthorized: the app has no credentials for {server} (configuration.registries)"
        if registry is None:
            return f"the registry {server} does not exist" if server.endswith(".azurecr.io") else None
        ref = entry.get("identity")
        if isinstance(ref, str) and ref:
            principal, label, problem = self._principal(app, ref, records)
            if problem is not None:
                return problem
            assert principal is not None
            abac = str(_props(registry["body"]).get("roleAssignmentMode", "")).lower() == "abacrepositorypermissions"
            if not self._has_role(principal, registry["id"], ABAC_PULL_ROLES if abac else PULL_ROLES):
                if abac:
                    return (
                        f"unauthorized: the identity {label} has no Container Registry Repository Reader role on "
                        f"{_name(registry['id'])} (an ABAC registry does not honour AcrPull)"
                    )
                return f"unauthorized: the identity {label} has no AcrPull role on {_name(registry['id'])}"
            return None
        secret_ref = entry.get("passwordSecretRef")
        names = {str(_dict(s).get("name", "")).lower() for s in _list(configuration.get("secrets"))}
        if entry.get("username") and isinstance(secret_ref, str) and secret_ref.lower() in names:
            return None
        return f"unauthorized: no identity or password for {server} in configuration.registries"

    # ---- identities and roles --------------------------------------------------------------
    def _principal(self, app: dict[str, Any], ref: str, records: list[dict[str, Any]]) -> tuple[str | None, str, str | None]:
        """(principal id, how to name it, problem) for an identity reference of the app."""
        if _is_system(ref):
            label = f"system-assigned identity of {_name(app['id'])}"
            if not _has_system_identity(app["body"]):
                return None, label, f"the app has no {label}"
            return system_principal(app["id"]), label, None
        label = _name(ref)
        record = next((r for r in records if r["id"].lower() == ref.lower()), None)
        if record is None:
            return None, label, f"the identity {label} does not exist"
        principal = _props(record["body"]).get("principalId")
        if not isinstance(principal, str) or not principal:
            return None, label, f"the identity {label} has no principalId"
        return principal, label, None

    def _has_role(self, principal: str, scope_id: str, roles: tuple[str, ...]) -> bool:
        """An assignment of one of the roles to the principal at the scope or above (the store's rbac)."""
        return bool(self._state.principal_has_role(principal, scope_id, roles))

    # ---- readiness -------------------------------------------------------------------------
    def _readiness(self, app: dict[str, Any], revision: dict[str, Any], records: list[dict[str, Any]]) -> tuple[bool, str | None]:
        key = revision["id"].lower()
        with self._lock:
            lock = self._revision_locks.setdefault(key, threading.Lock())
            generation = self._generation
        fingerprint = hashlib.sha256(
            json.dumps(
                [
                    _props(app["body"]).get("configuration"),
                    _props(revision["body"]).get("template"),
                    _dict(revision["body"].get(PRIVATE)).get("restarted"),
                    generation,
                ],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()
        with lock:
            cached = self._ready_cache.get(key)
            if cached is not None and cached[0] > time.monotonic() and cached[1] == fingerprint:
                return cached[2]
            result = self._check_ready(app, revision, records)
            self._ready_cache[key] = (time.monotonic() + READY_CACHE_SECONDS, fingerprint, result)
            return result

    def _check_ready(
        self, app: dict[str, Any], revision: dict[str, Any], records: list[dict[str, Any]]
    ) -> tuple[bool, str | None]:
        """Key Vault references resolve through their identity, then DATABASE_URL connects."""
        configuration = _dict(_props(app["body"]).get("configuration"))
        template = _dict(_props(revision["body"]).get("template"))
        env = _env_of(template)
        secrets = {str(_dict(s).get("name", "")).lower(): _dict(s) for s in _list(configuration.get("secrets"))}
        values: dict[str, str] = {}
        for name, secret in secrets.items():
            url = secret.get("keyVaultUrl")
            if isinstance(url, str) and url:
                value, problem = self._key_vault_value(app, secret, url, records)
                if problem is not None:
                    users = [str(e.get("name")) for e in env if str(e.get("secretRef", "")).lower() == name]
                    label = users[0] if users else f"secret {secret.get('name')}"
                    return False, f"Key Vault reference {label} ({url}): {problem}"
                assert value is not None
                values[name] = value
            elif isinstance(secret.get("value"), str):
                values[name] = secret["value"]
        variables: dict[str, str] = {}
        for entry in env:
            var = str(entry.get("name", ""))
            if isinstance(entry.get("secretRef"), str):
                ref = entry["secretRef"].lower()
                if ref not in values:
                    return False, f"{var}: the secret {entry['secretRef']} has no value"
                variables[var] = values[ref]
            elif "value" in entry:
                variables[var] = str(entry["value"])
        database = variables.get("DATABASE_URL")
        if database:
            _start_servers(records)  # Azure's servers never stop; the sandbox's clusters start on demand
            problem = check_database(database)
            if problem is not None:
                return False, f"DATABASE_URL: {problem}"
        return True, None

    def _key_vault_value(
        self, app: dict[str, Any], secret: dict[str, Any], url: str, records: list[dict[str, Any]]
    ) -> tuple[str | None, str | None]:
        """(value, problem) of a Key Vault reference, read with its identity's rights."""
        split = urlsplit(url)
        parts = [p for p in split.path.split("/") if p]
        if split.scheme != "https" or len(parts) not in (2, 3) or parts[0] != "secrets":
            return None, "not a Key Vault secret URL (https://<vault>/secrets/<name>[/<version>])"
        origin = f"{split.hostname}:{split.port or 443}".lower()
        vault = None
        for record in records:
            if record["type"].lower() != "microsoft.keyvault/vaults":
                continue
            name = _name(record["id"])
            served = urlsplit(self._vault_url(name))
            if (
                f"{served.hostname}:{served.port or 443}".lower() == origin
                or (split.hostname or "").lower().split(".")[0] == name.lower()
            ):
                vault = record
                break
        if vault is None:
            return None, f"no vault answers at {split.scheme}://{split.netloc}"
        vault_name = _name(vault["id"])
        ref = secret.get("identity")
        if not isinstance(ref, str) or not ref:
            return None, "the reference names no identity to read it with"
        principal, label, problem = self._principal(app, ref, records)
        if problem is not None:
            return None, problem
        assert principal is not None
        vault_props = _props(vault["body"])
        if vault_props.get("enableRbacAuthorization"):
            if not self._has_role(principal, vault["id"], SECRET_READER_ROLES):
                return None, f"the identity {label} has no Key Vault Secrets User role on {vault_name}"
        else:
            allowed = any(
                str(_dict(p).get("objectId", "")).lower() == principal.lower()
                and {str(x).lower() for x in _list(_dict(_dict(p).get("permissions")).get("secrets"))} & {"get", "all"}
                for p in _list(vault_props.get("accessPolicies"))
            )
            if not allowed:
                return (
                    None,
                    f"the identity {label} has no access policy allowing get on secrets in {vault_name} (an access-policy vault)",
                )
        try:
            entry = self._state.get_secret(vault_name, parts[1], parts[2] if len(parts) == 3 else None)
        except ArmError:
            return None, f"the secret {parts[1]} does not exist in {vault_name}"
        if not _dict(entry.get("attributes")).get("enabled", True):
            return None, f"the secret {parts[1]} is disabled in {vault_name}"
        return str(entry["value"]), None

    # ---- presenting ------------------------------------------------------------------------
    def endpoint(self, key: str) -> str:
        return self._endpoint(key)

    def decorate(self, out: dict[str, Any], records: list[dict[str, Any]] | None = None) -> None:
        """Fill a GET answer's live fields: revisions, FQDNs, health, identities (ContainerApps_Get.json)."""
        kind = str(out.get("type", "")).lower()
        if kind == APP_TYPE.lower():
            self._decorate_app(out, records)
        elif kind == REVISION_TYPE.lower():
            self._decorate_revision(out, records)

    def _decorate_app(self, out: dict[str, Any], records: list[dict[str, Any]] | None) -> None:
        records = self._state.list_resources() if records is None else records
        view = self.view(out["id"], records)
        props = out.setdefault("properties", {})
        identity = out.get("identity")
        if isinstance(identity, dict):
            assigned = identity.get("userAssignedIdentities")
            if isinstance(assigned, dict):
                shown = {}
                for key in assigned:
                    record = next((r for r in records if r["id"].lower() == key.lower()), None)
                    found = _props(record["body"]) if record else {}
                    shown[_lower_groups(key)] = {k: found[k] for k in ("clientId", "principalId") if found.get(k)}
                identity["userAssignedIdentities"] = shown
            if _has_system_identity(out):
                identity["principalId"] = system_principal(out["id"])
                identity["tenantId"] = SANDBOX_TENANT
        environment = next(
            (r for r in records if r["id"].lower() == str(props.get("managedEnvironmentId", "")).lower()),
            None,
        )
        if "workloadProfileName" not in props and environment and _props(environment["body"]).get("workloadProfiles"):
            props["workloadProfileName"] = "Consumption"
        if view is None:
            return
        latest = view.latest
        if latest is not None:
            props["latestRevisionName"] = _name(latest["id"])
            props["latestRevisionFqdn"] = self.endpoint(f"revision:{latest['id'].lower()}") if view.has_ingress else ""
        if view.ready:
            props["latestReadyRevisionName"] = view.ready
        else:
            props.pop("latestReadyRevisionName", None)
        ingress = _dict(props.get("configuration")).get("ingress")
        if isinstance(ingress, dict):
            ingress["fqdn"] = self.endpoint(f"app:{out['id'].lower()}")
        statuses = list(view.statuses.values())
        if str(props.get("provisioningState", "")).lower() == "inprogress" or (
            latest is not None and view.statuses[latest["id"].lower()].provisioning == "Provisioning"
        ):
            props["runningStatus"] = "Progressing"
        elif any(s.serving for s in statuses):
            props["runningStatus"] = "Running"
        else:
            props["runningStatus"] = "Stopped"

    def _decorate_revision(self, out: dict[str, Any], records: list[dict[str, Any]] | None) -> None:
        key = out["id"].lower()
        view = self.view(_app_key_of(key), records)
        if view is None or key not in view.statuses:
            return
        status = view.statuses[key]
        revision = next(r for r in view.revisions if r["id"].lower() == key)
        props = out.setdefault("properties", {})
        props.setdefault("lastActiveTime", props.get("createdTime"))
        props["fqdn"] = self.endpoint(f"revision:{key}") if view.has_ingress else ""
        props["active"] = status.active
        props["replicas"] = self._replicas(revision, status)
        props["trafficWeight"] = view.weights().get(status.name.lower(), 0)
        props["healthState"] = status.health
        props["provisioningState"] = status.provisioning
        props["runningState"] = status.running
        if status.error:
            props["provisioningError"] = status.error
        else:
            props.pop("provisioningError", None)

    def _scale(self, revision: dict[str, Any]) -> tuple[int, float]:
        scale = _dict(_dict(_props(revision["body"]).get("template")).get("scale"))
        minimum = scale.get("minReplicas", 0)
        cooldown = scale.get("cooldownPeriod", DEFAULT_COOLDOWN_SECONDS)
        return (int(minimum) if isinstance(minimum, int) else 0), float(cooldown) if isinstance(cooldown, int | float) else 300.0

    def _replicas(self, revision: dict[str, Any], status: RevisionStatus) -> int:
        if not (status.active and status.serving):
            return 0
        minimum, cooldown = self._scale(revision)
        if minimum > 0:
            return minimum
        last = self._last_request_at(revision)
        return 1 if last is not None and time.time() - last < cooldown else 0

    def _last_request_at(self, revision: dict[str, Any]) -> float | None:
        """When the revision last had a running replica (wall clock), from this process or the state.

        Kept in the state, so replicas outlive the sandbox process as they outlive a CLI run on
        Azure: a revision scaled to zero stays warm for its cooldown period after a request, and
        after it started (a new revision is ready once one of its replicas has started: Learn,
        "Examine application lifecycle management in Azure Container Apps").
        """
        with self._lock:
            last = self._last_request.get(revision["id"].lower())
        private = _dict(revision["body"].get(PRIVATE))
        created = private.get("created")
        started = created + self._timings().start_seconds if isinstance(created, int | float) else None
        known = [t for t in (last, private.get("last_request"), started) if isinstance(t, int | float)]
        return max(known) if known else None

    def snapshot(self) -> list[dict[str, Any]]:
        """Every app with its revisions, health and FQDNs (GET /_sandbox/apps)."""
        records = self._state.list_resources()
        out = []
        for app in records:
            if app["type"].lower() != APP_TYPE.lower():
                continue
            view = self.view(app["id"], records)
            if view is None:
                continue
            weights = view.weights()
            revisions = []
            for revision in view.revisions:
                status = view.statuses[revision["id"].lower()]
                revisions.append(
                    {
                        "name": status.name,
                        "fqdn": self.endpoint(f"revision:{revision['id'].lower()}") if view.has_ingress else "",
                        "active": status.active,
                        "provisioningState": status.provisioning,
                        "runningState": status.running,
                        "healthState": status.health,
                        "replicas": self._replicas(revision, status),
                        "trafficWeight": weights.get(status.name.lower(), 0),
                        "provisioningError": status.error,
                        "notReady": status.reason,
                    }
                )
            out.append(
                {
                    "id": app["id"],
                    "name": _name(app["id"]),
                    "fqdn": self.endpoint(f"app:{app['id'].lower()}") if view.has_ingress else "",
                    "latestRevisionName": _name(view.latest["id"]) if view.latest else None,
                    "latestReadyRevisionName": view.ready,
                    "failingImages": self.failing_images(),
                    "revisions": revisions,
                }
            )
        return out

    # ---- serving ---------------------------------------------------------------------------
    def answer(self, target: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """What the app (or one revision) answers at its FQDN: (status, JSON body, headers)."""
        kind, _, key = target.partition(":")
        view = self.view(_app_key_of(key) if kind == "revision" else key)
        if view is None:
            return 404, {"status": "not found", "reason": "this container app (or revision) does not exist"}, {}
        if not view.has_ingress:
            return 404, {"status": "not found", "reason": f"{_name(view.app['id'])} has no ingress"}, {}
        if kind == "revision":
            revision = next((r for r in view.revisions if r["id"].lower() == key), None)
            if revision is None:
                return 404, {"status": "not found", "reason": "this revision does not exist"}, {}
        else:
            revision = self._route(view)
            if revision is None:
                return 503, {"status": "unavailable", "reason": f"{_name(view.app['id'])} has no ready revision to route to"}, {}
        status = view.statuses[revision["id"].lower()]
        headers = {"X-Sandbox-Revision": status.name}
        if not (status.active and status.serving):
            why = status.error or (
                "the revision is inactive" if not status.active else f"the revision is {status.provisioning.lower()}"
            )
            return 503, {"status": "unavailable", "revision": status.name, "reason": why}, headers
        self._wake(revision)
        template = _dict(_props(revision["body"]).get("template"))
        if path in ("/healthz", _probe_path(template, "liveness", "/healthz")):
            return 200, {"status": "ok", "revision": status.name}, headers
        if path in ("/readyz", _probe_path(template, "readiness", "/readyz")):
            if status.ready:
                return 200, {"status": "ready", "revision": status.name}, headers
            return 503, {"status": "not ready", "revision": status.name, "reason": status.reason}, headers
        if path == "/":
            return 200, {"app": _name(view.app["id"]), "revision": status.name}, headers
        return 404, {"status": "not found", "revision": status.name}, headers

    def _route(self, view: AppView) -> dict[str, Any] | None:
        """The revision the app's ingress sends a request to: by traffic weight among active revisions."""
        weights = view.weights()
        choices = [
            (r, weights.get(_name(r["id"]).lower(), 0))
            for r in view.revisions
            if view.statuses[r["id"].lower()].active and weights.get(_name(r["id"]).lower(), 0) > 0
        ]
        if not choices:
            return view.revision(view.ready)
        revisions, shares = zip(*choices, strict=True)
        return random.choices(revisions, weights=shares)[0]  # noqa: S311 - traffic split, not security

    def _wake(self, revision: dict[str, Any]) -> None:
        """A request to a revision scaled to zero waits for a replica to start (a cold start)."""
        key = revision["id"].lower()
        minimum, cooldown = self._scale(revision)
        last = self._last_request_at(revision)
        now = time.time()
        if minimum == 0 and (last is None or now - last >= cooldown):
            time.sleep(self._timings().cold_start_seconds)
        with self._lock:
            self._last_request[key] = time.time()
        if last is None or now - last >= LAST_REQUEST_SAVED_EVERY:
            with suppress(ArmError):  # the revision was deleted meanwhile
                self._state.mutate(revision["id"], {f"{PRIVATE}.last_request": time.time()})


# ---- the database check ------------------------------------------------------------------------
def _start_servers(records: list[dict[str, Any]]) -> None:
    """Every flexible server's real PostgreSQL running (its endpoint starts it when stopped)."""
    from deploykit.sandbox import pgtypes

    for record in records:
        if record["type"].lower() == "microsoft.dbforpostgresql/flexibleservers":
            pgtypes.endpoint(record["body"])


def check_database(url: str) -> str | None:
    """Connect and run SELECT 1; None when it works, else a reason free of the URL and its password."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=DATABASE_CONNECT_TIMEOUT, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
    except Exception as exc:  # any failure is a reason to report, never a crash of the sandbox
        return describe_database_error(exc, url)
    return None


def describe_database_error(exc: BaseException, url: str) -> str:
    """The error's first line and SQLSTATE, with the URL, its password and anything password-like removed."""
    from psycopg.conninfo import conninfo_to_dict

    text = " ".join((str(exc).strip().splitlines() or [""])[0].split())
    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:  # an unparsable URL: only the whole URL can be removed
        password = None
    for secret in sorted({url, str(password or "")}, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    sqlstate = getattr(exc, "sqlstate", None)
    code = f", SQLSTATE {sqlstate}" if sqlstate else ""
    return f"cannot connect to the database ({type(exc).__name__}{code}): {text[:300] or 'no detail'}"
