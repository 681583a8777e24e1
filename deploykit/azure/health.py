"""After the apps are applied: is each app's newest revision really running, healthy and serving?

A container app PUT reports Succeeded even when its new revision never starts; the old revision
keeps serving, so a check of the app's FQDN can pass against the old one (azure-facts-2.md 3.3).
So, per app and in parallel: read `latestRevisionName`, poll that revision (backing off) until it
is Provisioned, Running and Healthy and the app's `latestReadyRevisionName` is that revision;
stop at once when it Failed. Then, in `http` mode, GET the liveness and readiness paths on the
*revision's* FQDN over HTTPS, allowing a cold start for apps that scale to zero. The first look
at an app is the run's own recent read where StateCache.recent_read allows it (RunReadsFirst): a
no-op's apps and revisions as its plan read them, a deployed app as its operation's last GET.

Works the same against Azure and the sandbox: ARM reads through the provider, HTTPS with
`requests` (azure-core's own transport).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import requests

from deploykit.azure.api_versions import api_version
from deploykit.azure.arm import backoff_delays
from deploykit.errors import DeployKitError
from deploykit.report import redact

Mode = Literal["http", "revision"]
PROGRESS_EVERY_SECONDS = 10.0  # a progress line at least this often while an app is waited for
HTTP_TIMEOUT_SECONDS = 10.0  # one GET of a health path
HTTP_ATTEMPTS = 2  # per path: one retry for a blip
COLD_START_ATTEMPTS = 6  # per path for apps that scale to zero: the first request starts a replica
BODY_LIMIT = 300  # characters of a health answer kept in a result


class ReadsArm(Protocol):
    """What verification needs of a provider (ArmProvider has it): a resource's ARM JSON, or None."""

    def read(self, resource_id: str, api_version: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class AppTarget:
    """One container app to verify."""

    address: str  # the plan address, e.g. app.beta.auth-api
    name: str  # the service name shown in messages, e.g. auth-api
    id: str  # the container app's ARM id
    scales_to_zero: bool = False  # minReplicas 0: the first request may wait for a cold start
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"


@dataclass(frozen=True)
class AppHealth:
    """What was found for one app; `problem` is one line (no secrets) when not ok."""

    app: AppTarget
    ok: bool
    seconds: float
    revision: str | None = None  # latestRevisionName
    latest_ready_revision: str | None = None
    provisioning_state: str | None = None
    running_state: str | None = None
    health_state: str | None = None
    provisioning_error: str | None = None
    url: str | None = None  # the last health URL asked
    http_status: int | None = None  # its last answer (None: no answer)
    http_body: str | None = None  # the readiness reason, or the start of the body
    problem: str | None = None


def verify_apps(
    provider: ReadsArm,
    apps: Sequence[AppTarget],
    mode: Mode,
    timeout: float,
    on_progress: Callable[[str], None],
    ca: str | bool,
    stop: threading.Event | None = None,
    poll_first: float = 0.25,  # a revision a moment from ready is seen soon; the back-off caps the rate
    poll_cap: float = 10.0,
) -> list[AppHealth]:
    """Verify every app in parallel, each within `timeout` seconds; results in the order given.

    `mode` "http" also GETs the health paths on the revision's FQDN (TLS verified with `ca`: a CA
    file, True for the system store); "revision" reads revision state only. `on_progress` gets
    one-line messages from worker threads. A set `stop` event ends the waits early (not ok).
    """
    if not apps:
        return []
    version = api_version("Microsoft.App/containerApps")  # revisions are read with the app's version
    stop = stop or threading.Event()
    with ThreadPoolExecutor(max_workers=len(apps), thread_name_prefix="verify") as pool:
        futures = [
            pool.submit(_AppCheck(provider, app, mode, timeout, on_progress, ca, stop, version, poll_first, poll_cap).run)
            for app in apps
        ]
        return [future.result() for future in futures]


def problems(results: Sequence[AppHealth]) -> list[str]:
    """One line per app that is not verified (for the caller's report; any → exit 1)."""
    return [r.problem or f"{r.app.name}: not verified" for r in results if not r.ok]


def check_apps(specs: Sequence[Any], cache: Any, ctx: Any) -> list[str]:
    """The container-app plug-in's result check: `verify_apps` over a run's apps, with the env's
    `health` settings (mode, timeout, paths); progress lines go to the run's reporter and the
    first Ctrl-C ends the waits. `specs` are the run's Microsoft.App/containerApps ResourceSpecs;
    `cache` the run's StateCache (its recent reads may answer each app's first look)."""
    from deploykit.config import HealthConfig

    if ctx is None or not specs:
        return []
    env = ctx.platform.envs.get(ctx.options.env or "") if ctx.platform is not None else None
    health = env.health if env is not None else HealthConfig()
    provider = ctx.provider()
    targets = [
        AppTarget(spec.address, spec.name, spec.id, _min_replicas(spec.body) == 0, health.liveness_path, health.readiness_path)
        for spec in specs
    ]
    stop = threading.Event()
    ctx.cancel_hooks.append(stop.set)
    verify = provider.target.connection_verify
    reads = RunReadsFirst(provider, cache)
    return problems(verify_apps(reads, targets, health.mode, health.timeout_seconds, ctx.reporter.info, verify, stop))


class RunReadsFirst:
    """A ReadsArm whose first read of each resource may be the run's own recent read of it.

    `cache.recent_read` answers when the run read the resource moments ago and has not written
    it since: a no-op deploy's check starts from the app and revision its plan read, instead of
    reading both again; an app the run changed starts from the GET that ended its operation.
    Every later poll, a revision the run made, and the health endpoints are live.
    """

    def __init__(self, provider: ReadsArm, cache: Any) -> None:
        self.provider, self.cache = provider, cache
        self._asked: set[str] = set()
        self._lock = threading.Lock()

    def read(self, resource_id: str, api_version: str) -> dict[str, Any] | None:
        key = resource_id.lower()
        with self._lock:
            first = key not in self._asked
            self._asked.add(key)
        if first:
            found, state = self.cache.recent_read(resource_id)
            if found:
                return state
        return self.provider.read(resource_id, api_version)


def _min_replicas(body: Any) -> int:
    """template.scale.minReplicas of a container app body (Azure's default: 0)."""
    scale = (((body or {}).get("properties") or {}).get("template") or {}).get("scale") or {}
    value = scale.get("minReplicas", 0)
    return value if isinstance(value, int) else 0


class _AppCheck:
    """The wait and the probes for one app."""

    def __init__(
        self,
        provider: ReadsArm,
        app: AppTarget,
        mode: Mode,
        timeout: float,
        on_progress: Callable[[str], None],
        ca: str | bool,
        stop: threading.Event,
        version: str,
        poll_first: float,
        poll_cap: float,
    ) -> None:
        self.provider, self.app, self.mode, self.ca, self.stop, self.version = provider, app, mode, ca, stop, version
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.delays = backoff_delays(poll_first, poll_cap)
        self.found: dict[str, Any] = {}  # AppHealth fields seen so far
        self._said: tuple[str, float] | None = None

    # ---- the flow --------------------------------------------------------------------------
    def run(self) -> AppHealth:
        try:
            revision = self._wait_for_revision()
            if revision is None or self.mode != "http":
                return self._result(revision is not None)
            return self._probe(revision)
        except DeployKitError as exc:  # an ARM read failed (after azure-core's retries)
            return self._fail(f"{self.app.name}: cannot read its state: {redact(str(exc))}")

    def _wait_for_revision(self) -> dict[str, Any] | None:
        """The latest revision once Provisioned, Running, Healthy and latest ready; None after a failure."""
        while True:
            app = self.provider.read(self.app.id, self.version)
            if app is None:
                self._fail(f"{self.app.name}: the container app {self.app.id} does not exist")
                return None
            props = app.get("properties") or {}
            latest, ready = props.get("latestRevisionName"), props.get("latestReadyRevisionName")
            self.found.update(revision=latest, latest_ready_revision=ready)
            revision = self.provider.read(f"{self.app.id}/revisions/{latest}", self.version) if latest else None
            rp = (revision or {}).get("properties") or {}
            self.found.update(
                provisioning_state=rp.get("provisioningState"),
                running_state=rp.get("runningState"),
                health_state=rp.get("healthState"),
                provisioning_error=rp.get("provisioningError") or None,
            )
            if revision is not None and "Failed" in (rp.get("provisioningState"), rp.get("runningState")):
                self._fail(self._failed_line())  # no point waiting: the old revision keeps serving
                return None
            if revision is not None and self._healthy(rp) and latest == ready:
                return revision
            self._progress(self._waiting_for(revision, rp, latest, ready))
            if not self._wait():
                self._fail(self._not_healthy_line(revision))
                return None

    def _probe(self, revision: dict[str, Any]) -> AppHealth:
        """GET the liveness then the readiness path on the revision's own FQDN."""
        fqdn = (revision.get("properties") or {}).get("fqdn")
        if not fqdn:
            return self._fail(
                f"{self.app.name}: revision {self.found['revision']} has no FQDN (no ingress), so it cannot be "
                "probed over HTTP; verify it with mode revision"
            )
        attempts = COLD_START_ATTEMPTS if self.app.scales_to_zero else HTTP_ATTEMPTS
        with requests.Session() as session:
            for path in (self.app.liveness_path, self.app.readiness_path):
                url = f"https://{fqdn}{path}"
                for attempt in range(1, attempts + 1):
                    if self._get(session, url):
                        break
                    if attempt == attempts or not self._wait():
                        return self._fail(self._http_line())
                    if self.app.scales_to_zero:
                        self._progress(f"{self.app.name}: GET {path} answered {self._status_text()}; retrying (cold start)")
        return self._result(True)

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _healthy(rp: dict[str, Any]) -> bool:
        return (rp.get("provisioningState"), rp.get("runningState"), rp.get("healthState")) == (
            "Provisioned",
            "Running",
            "Healthy",
        )

    def _get(self, session: requests.Session, url: str, timeout: float | None = None) -> bool:
        """One GET; records the answer. True for 200-399 (what a probe counts as success)."""
        self.found["url"] = url
        if timeout is None:
            timeout = min(HTTP_TIMEOUT_SECONDS, max(1.0, self.deadline - time.monotonic()))
        try:
            response = session.get(url, verify=self.ca, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            self.found.update(http_status=None, http_body=f"no answer: {type(exc).__name__}")
            return False
        self.found.update(http_status=response.status_code, http_body=_reason(response))
        return 200 <= response.status_code < 400

    def _wait(self) -> bool:
        """Sleep the next backoff delay within the deadline; False when time is up or stop was set."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.stop.is_set():
            return False
        return not self.stop.wait(min(next(self.delays), remaining))

    def _progress(self, what: str) -> None:
        now = time.monotonic()
        if self._said is None or self._said[0] != what or now - self._said[1] >= PROGRESS_EVERY_SECONDS:
            self._said = (what, now)
            self.on_progress(f"{what}, {now - self.started:.0f} s")

    def _waiting_for(self, revision: dict[str, Any] | None, rp: dict[str, Any], latest: Any, ready: Any) -> str:
        if revision is None:
            return f"{self.app.name}: waiting for its first revision"
        state = rp.get("provisioningState")
        if state == "Provisioned":
            state = f"{rp.get('runningState')}, {rp.get('healthState')}"
            if self._healthy(rp) and latest != ready:
                state += f", not yet latest ready (that is {ready})"
        return f"{self.app.name}: revision {latest} {state}"

    def _states(self) -> str:
        f = self.found
        return (
            f"provisioningState {f.get('provisioning_state')}, runningState {f.get('running_state')}, "
            f"healthState {f.get('health_state')}"
        )

    def _serving(self) -> str:
        ready, latest = self.found.get("latest_ready_revision"), self.found.get("revision")
        if ready and ready != latest:
            return f"; the app still serves {ready}"
        return "" if ready else "; no revision of the app is ready"

    def _failed_line(self) -> str:
        error = self.found.get("provisioning_error")
        return (
            f"{self.app.name}: revision {self.found.get('revision')} failed ({self._states()})"
            + (f": {redact(str(error))}" if error else "")
            + self._serving()
        )

    def _not_healthy_line(self, revision: dict[str, Any] | None) -> str:
        name = self.app.name
        if self.stop.is_set():
            return f"{name}: verification interrupted ({self._states()})"
        if revision is None:
            return f"{name}: no revision after {self._elapsed()}"
        line = f"{name}: revision {self.found.get('revision')} not healthy after {self._elapsed()} ({self._states()})"
        fqdn = (revision.get("properties") or {}).get("fqdn")
        if self.mode == "http" and fqdn and not self._get_quietly(f"https://{fqdn}{self.app.readiness_path}"):
            line += f"; GET {self.found['url']} answered {self._status_text()}"
        return line + self._serving()

    def _get_quietly(self, url: str) -> bool:
        """Ask the readiness path once, for its reason (the state alone does not say why)."""
        with requests.Session() as session:
            return self._get(session, url, timeout=HTTP_TIMEOUT_SECONDS / 2)

    def _http_line(self) -> str:
        return (
            f"{self.app.name}: revision {self.found.get('revision')}: GET {self.found.get('url')} answered "
            f"{self._status_text()} after {self._elapsed()} ({self._states()})"
        )

    def _status_text(self) -> str:
        status, body = self.found.get("http_status"), self.found.get("http_body")
        text = str(status) if status is not None else "nothing"
        return f"{text}: {body}" if body else text

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    def _fail(self, problem: str) -> AppHealth:
        self.found["problem"] = problem
        return self._result(False)

    def _result(self, ok: bool) -> AppHealth:
        fields = {k: v for k, v in self.found.items() if k != "problem" or not ok}
        return AppHealth(self.app, ok, round(time.monotonic() - self.started, 3), **fields)


def _reason(response: requests.Response) -> str:
    """A health answer in a few words: its JSON `reason` (or `status`), else the start of its text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and (data.get("reason") or data.get("status")):
        text = str(data.get("reason") or data.get("status"))
    else:
        text = " ".join(response.text.split())
    return redact(text[:BODY_LIMIT])
