"""Container apps that really run in the sandbox, and the client-side health verification.

One sandbox for the module, reached as a deployer would: ARM PUTs through the SDK, Key Vault
through its data plane, the apps' revisions over HTTPS on their own FQDNs. The world: a vault
(RBAC) holding the database URL, a user-assigned identity with Key Vault Secrets User on the
vault and AcrPull on the registry, an environment, two apps: auth-api (scales to zero, reads
DATABASE_URL through a Key Vault reference and connects to a real PostgreSQL) and native-api
(one replica, a plain secret). Each test leaves the world healthy for the next.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from deploykit.azure.api_versions import api_version
from deploykit.azure.health import AppHealth, AppTarget, problems, verify_apps
from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.sandbox.server import SandboxServer
from tests.conftest import Sandbox

SUB = SANDBOX_SUBSCRIPTION
RG = f"/subscriptions/{SUB}/resourceGroups/rg-aca-test"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-aca-test"
MI = f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-aca-test"
ACR = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acracatest"
CAE = f"{RG}/providers/Microsoft.App/managedEnvironments/cae-aca-test"
AUTH = f"{RG}/providers/Microsoft.App/containerApps/auth-api"
NATIVE = f"{RG}/providers/Microsoft.App/containerApps/native-api"
LOGIN_SERVER = "acracatest.azurecr.io"
SECRET_NAME = "db-url-auth-api"
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
KV_ROLE = f"{VAULT}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid5(uuid.NAMESPACE_URL, 'aca-kv')}"
ACR_ROLE = f"{ACR}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid5(uuid.NAMESPACE_URL, 'aca-acr')}"
APP_VERSION = api_version("Microsoft.App/containerApps")
BEARER = {"Authorization": "Bearer sandbox"}
FAST = {"poll_first": 0.1, "poll_cap": 0.5}  # verify_apps polls quickly against the sandbox


def image(app: str, tag: str) -> str:
    return f"{LOGIN_SERVER}/trading/{app}:{tag}"


@dataclass
class World:
    box: Sandbox
    principal: str
    vault_uri: str
    database_url: str
    password: str

    def put(self, rid: str, kind: str, body: dict) -> dict:
        return self.box.provider.put(ResourceSpec(rid.rsplit("/", 1)[-1], kind, api_version(kind), rid, {}, "test"), body)

    def read(self, rid: str) -> dict:
        return self.box.provider.read(rid, APP_VERSION)

    def delete(self, rid: str, kind: str) -> None:
        self.box.provider.delete(rid, api_version(kind))

    def grant(self, assignment_id: str, role: str) -> None:
        body = {
            "properties": {"roleDefinitionId": ROLES + role, "principalId": self.principal, "principalType": "ServicePrincipal"}
        }
        self.put(assignment_id, "Microsoft.Authorization/roleAssignments", body)

    def verify(self, targets: list[AppTarget], timeout: float = 15.0, mode: str = "http") -> list[AppHealth]:
        return verify_apps(self.box.provider, targets, mode, timeout, lambda line: None, self.box.ca, **FAST)  # type: ignore[arg-type]

    def auth_body(self, tag: str, suffix: str | None = None) -> dict:
        """auth-api: scales to zero; DATABASE_URL is a Key Vault reference read with the identity."""
        template: dict = {
            "containers": [
                {
                    "name": "auth-api",
                    "image": image("auth-api", tag),
                    "resources": {"cpu": 0.5, "memory": "1Gi"},
                    "env": [{"name": "DATABASE_URL", "secretRef": "database-url"}, {"name": "LOG_LEVEL", "value": "info"}],
                    "probes": [
                        {"type": "Readiness", "httpGet": {"path": "/readyz", "port": 8004, "scheme": "HTTP"}},
                        {"type": "Liveness", "httpGet": {"path": "/healthz", "port": 8004, "scheme": "HTTP"}},
                    ],
                }
            ],
            "scale": {"minReplicas": 0, "maxReplicas": 2},
        }
        if suffix:
            template["revisionSuffix"] = suffix
        return {
            "location": "centralus",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {MI: {}}},
            "properties": {
                "managedEnvironmentId": CAE,
                "configuration": {
                    "activeRevisionsMode": "Single",
                    "ingress": {"external": True, "targetPort": 8004, "transport": "auto", "allowInsecure": False},
                    "registries": [{"server": LOGIN_SERVER, "identity": MI}],
                    "secrets": [
                        {"name": "database-url", "keyVaultUrl": f"{self.vault_uri}secrets/{SECRET_NAME}", "identity": MI}
                    ],
                },
                "template": template,
            },
        }

    def native_body(self, tag: str) -> dict:
        """native-api: one replica always, a plain secret, no database."""
        return {
            "location": "centralus",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {MI: {}}},
            "properties": {
                "managedEnvironmentId": CAE,
                "configuration": {
                    "ingress": {"external": True, "targetPort": 8002},
                    "registries": [{"server": LOGIN_SERVER, "identity": MI}],
                    "secrets": [{"name": "feed-key", "value": "plain-secret-value-123"}],
                },
                "template": {
                    "containers": [
                        {
                            "name": "native-api",
                            "image": image("native-api", tag),
                            "env": [{"name": "FEED_KEY", "secretRef": "feed-key"}],
                        }
                    ],
                    "scale": {"minReplicas": 1, "maxReplicas": 3},
                },
            },
        }


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    server = SandboxServer(tmp_path_factory.mktemp("aca") / "sandbox", run_id="test")
    try:
        yield Sandbox(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def database(pg_server: str) -> Iterator[tuple[str, str]]:
    """A login role with a password on the real PostgreSQL, and the URL an app would get."""
    password = "pw-" + secrets.token_hex(12)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS aca_probe")
        conn.execute(sql.SQL("CREATE ROLE aca_probe LOGIN PASSWORD {}").format(sql.Literal(password)))
    params = conninfo_to_dict(pg_server)
    url = f"postgresql://aca_probe:{password}@/postgres?host={quote(str(params['host']))}"
    if params.get("port"):
        url += f"&port={params['port']}"
    try:
        yield url, password
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS aca_probe")


@pytest.fixture(scope="module")
def world(box: Sandbox, database: tuple[str, str]) -> World:
    url, password = database
    put = World(box, "", "", url, password).put
    put(RG, "Microsoft.Resources/resourceGroups", {"location": "centralus"})
    vault_body = {
        "location": "centralus",
        "properties": {
            "tenantId": SUB,
            "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": True,
            "accessPolicies": [],
        },
    }
    vault_uri = put(VAULT, "Microsoft.KeyVault/vaults", vault_body)["properties"]["vaultUri"]
    box.provider.secret_client(vault_uri).set_secret(SECRET_NAME, url)
    principal = put(MI, "Microsoft.ManagedIdentity/userAssignedIdentities", {"location": "centralus"})["properties"][
        "principalId"
    ]
    put(ACR, "Microsoft.ContainerRegistry/registries", {"location": "centralus", "sku": {"name": "Basic"}})
    w = World(box, principal, vault_uri, url, password)
    w.grant(KV_ROLE, KV_SECRETS_USER)
    w.grant(ACR_ROLE, ACR_PULL)
    cae = {
        "location": "centralus",
        "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}]},
    }
    put(CAE, "Microsoft.App/managedEnvironments", cae)
    put(AUTH, "Microsoft.App/containerApps", w.auth_body("v1"))
    put(NATIVE, "Microsoft.App/containerApps", w.native_body("v1"))
    return w


AUTH_TARGET = AppTarget("app.test.auth-api", "auth-api", AUTH, scales_to_zero=True)
NATIVE_TARGET = AppTarget("app.test.native-api", "native-api", NATIVE)


def get(box: Sandbox, fqdn: str, path: str) -> requests.Response:
    return requests.get(f"https://{fqdn}{path}", verify=box.ca, timeout=10)


def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def revision(world: World, app_id: str, name: str) -> dict:
    return world.read(f"{app_id}/revisions/{name}")


# ---- the healthy path ----------------------------------------------------------------------------
def test_healthy_apps_verify_over_https(world: World) -> None:
    first = revision(world, AUTH, world.read(AUTH)["properties"]["latestRevisionName"])
    assert first["properties"]["replicas"] == 0  # scaled to zero until a request arrives
    progress: list[str] = []
    results = verify_apps(world.box.provider, [AUTH_TARGET, NATIVE_TARGET], "http", 15, progress.append, world.box.ca, **FAST)
    assert [r.ok for r in results] == [True, True], problems(results)
    auth, native = results
    app = world.read(AUTH)
    assert auth.revision == app["properties"]["latestRevisionName"] == app["properties"]["latestReadyRevisionName"]
    assert (auth.provisioning_state, auth.running_state, auth.health_state) == ("Provisioned", "Running", "Healthy")
    assert auth.http_status == 200 and auth.url.endswith("/readyz")
    assert native.revision.startswith("native-api--")
    rev = revision(world, AUTH, auth.revision)["properties"]
    assert rev["replicas"] == 1  # the probes woke it
    assert get(world.box, rev["fqdn"], "/readyz").json() == {"status": "ready", "revision": auth.revision}
    assert get(world.box, rev["fqdn"], "/healthz").status_code == 200
    served = get(world.box, app["properties"]["configuration"]["ingress"]["fqdn"], "/")
    assert served.status_code == 200 and served.json()["revision"] == auth.revision


def test_app_and_revision_shapes(world: World) -> None:
    """ContainerApps_Get.json: what a GET computes; secret values never returned."""
    app = world.read(AUTH)
    props = app["properties"]
    assert app["location"] == "Central US" and props["provisioningState"] == "Succeeded"
    assert props["runningStatus"] == "Running" and props["workloadProfileName"] == "Consumption"
    assert props["outboundIpAddresses"] and props["eventStreamEndpoint"].endswith("/containerApps/auth-api/eventstream")
    ingress = props["configuration"]["ingress"]
    assert ingress["fqdn"].startswith("127.0.0.1:") and ingress["traffic"] == [{"weight": 100, "latestRevision": True}]
    latest = revision(world, AUTH, props["latestRevisionName"])
    assert props["latestRevisionFqdn"] == latest["properties"]["fqdn"] != ingress["fqdn"]
    [(key, ids)] = app["identity"]["userAssignedIdentities"].items()
    assert "/resourcegroups/rg-aca-test/" in key and key.lower() == MI.lower()
    assert ids["principalId"] == world.principal and ids["clientId"]
    [secret] = props["configuration"]["secrets"]
    assert secret == {"name": "database-url", "keyVaultUrl": f"{world.vault_uri}secrets/{SECRET_NAME}", "identity": MI}
    native = world.read(NATIVE)["properties"]["configuration"]
    assert native["secrets"] == [{"name": "feed-key"}] and native["activeRevisionsMode"] == "Single"
    rp = latest["properties"]
    assert latest["type"] == "Microsoft.App/containerApps/revisions" and latest["name"].startswith("auth-api--")
    assert {"createdTime", "lastActiveTime", "template", "active", "replicas", "trafficWeight"} <= rp.keys()
    assert (rp["active"], rp["trafficWeight"], rp["healthState"]) == (True, 100, "Healthy")
    assert rp["template"]["containers"][0]["image"] == image("auth-api", "v1")
    listed = requests.get(
        f"{world.box.url}{AUTH}/revisions?api-version={APP_VERSION}", headers=BEARER, verify=world.box.ca, timeout=10
    )
    assert listed.status_code == 200 and [r["name"] for r in listed.json()["value"]][-1] == latest["name"]


def test_only_a_template_change_makes_a_revision(world: World) -> None:
    before = world.read(NATIVE)["properties"]["latestRevisionName"]
    body = world.native_body("v1")
    body["properties"]["configuration"]["ingress"]["allowInsecure"] = False  # not the template
    assert world.put(NATIVE, "Microsoft.App/containerApps", body)["properties"]["latestRevisionName"] == before
    body["properties"]["template"]["revisionSuffix"] = "named1"
    assert world.put(NATIVE, "Microsoft.App/containerApps", body)["properties"]["latestRevisionName"] == "native-api--named1"
    body["properties"]["template"]["containers"][0]["image"] = image("native-api", "v1b")
    with pytest.raises(Exception, match="ContainerAppRevisionSuffixConflict"):
        world.put(NATIVE, "Microsoft.App/containerApps", body)
    del body["properties"]["template"]["revisionSuffix"]
    world.put(NATIVE, "Microsoft.App/containerApps", body)
    [result] = world.verify([NATIVE_TARGET])
    assert result.ok, result.problem
    assert result.revision not in (before, "native-api--named1")


def test_list_secrets_shows_values_and_counts_as_a_read(world: World) -> None:
    mark = world.box.journal_mark()
    url = f"{world.box.url}{NATIVE}/listSecrets?api-version={APP_VERSION}"
    answer = requests.post(url, headers=BEARER, verify=world.box.ca, timeout=10)
    assert answer.json() == {"value": [{"name": "feed-key", "value": "plain-secret-value-123"}]}
    counts = world.box.requests_since(mark)
    assert (counts["reads"], counts["writes"], counts["by_method"]) == (1, 0, {"POST": 1})


# ---- a lost role assignment, then restored -------------------------------------------------------
def test_key_vault_role_removed_then_restored(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    box = world.box
    name = world.read(AUTH)["properties"]["latestRevisionName"]
    fqdn = revision(world, AUTH, name)["properties"]["fqdn"]
    world.delete(KV_ROLE, "Microsoft.Authorization/roleAssignments")
    try:
        until(lambda: get(box, fqdn, "/readyz").status_code == 503)
        body = get(box, fqdn, "/readyz").json()
        assert body["status"] == "not ready"
        assert body["reason"] == (
            f"Key Vault reference DATABASE_URL ({world.vault_uri}secrets/{SECRET_NAME}): "
            "the identity mi-aca-test has no Key Vault Secrets User role on kv-aca-test"
        )
        assert get(box, fqdn, "/healthz").status_code == 200  # the process runs; it is not ready
        rev = revision(world, AUTH, name)["properties"]
        assert (rev["runningState"], rev["healthState"]) == ("Running", "Unhealthy")
        [result] = world.verify([AUTH_TARGET], timeout=1.5)
        assert not result.ok and result.http_status == 503
        assert result.problem.startswith(f"auth-api: revision {name} not healthy after")
        assert "healthState Unhealthy" in result.problem and "Key Vault reference DATABASE_URL" in result.problem
        assert world.read(AUTH)["properties"]["latestReadyRevisionName"] == name  # it stays the ready one
    finally:
        world.grant(KV_ROLE, KV_SECRETS_USER)
    until(lambda: get(box, fqdn, "/readyz").status_code == 200)
    [result] = world.verify([AUTH_TARGET])
    assert result.ok, result.problem
    # The database URL (and its password) never shows: answers, journal, control API, output.
    seen = [
        json.dumps(world.read(AUTH)),
        json.dumps(box.control("GET", "/apps")),
        json.dumps(box.control("GET", "/resources")),
        (Path(box.server.state_dir) / "journal.jsonl").read_text(),
        "".join(capfd.readouterr()),
    ]
    assert not [text for text in seen if world.password in text]


def test_wrong_database_password_names_the_variable_not_the_value(world: World) -> None:
    box = world.box
    client = box.provider.secret_client(world.vault_uri)
    wrong = "wrong-" + secrets.token_hex(8)
    client.set_secret(SECRET_NAME, world.database_url.replace(world.password, wrong))
    name = world.read(AUTH)["properties"]["latestRevisionName"]
    fqdn = revision(world, AUTH, name)["properties"]["fqdn"]
    try:
        until(lambda: get(box, fqdn, "/readyz").status_code == 503)
        reason = get(box, fqdn, "/readyz").json()["reason"]
        assert reason.startswith("DATABASE_URL: cannot connect to the database (OperationalError")
        assert "password authentication failed" in reason and "aca_probe" in reason
        assert wrong not in reason and world.password not in reason
        [result] = world.verify([AUTH_TARGET], timeout=1.0)
        assert not result.ok and wrong not in result.problem and "DATABASE_URL" in result.problem
    finally:
        client.set_secret(SECRET_NAME, world.database_url)
    restart = f"{box.url}{AUTH}/revisions/{name}/restart?api-version={APP_VERSION}"
    answer = requests.post(restart, headers=BEARER, verify=box.ca, timeout=10)
    assert answer.status_code == 200 and answer.content == b""
    assert get(box, fqdn, "/readyz").status_code == 200  # a restart checks again at once


# ---- a failing image: the old revision keeps serving ---------------------------------------------
def test_failing_image_keeps_the_old_revision_then_a_good_tag_converges(world: World) -> None:
    box = world.box
    bad = image("auth-api", "bad")
    box.control("PUT", "/images/failing", {"image": bad})
    old = world.read(AUTH)["properties"]["latestReadyRevisionName"]
    try:
        applied = world.put(AUTH, "Microsoft.App/containerApps", world.auth_body("bad"))
        assert applied["properties"]["provisioningState"] == "Succeeded"  # ARM success is not health
        new = applied["properties"]["latestRevisionName"]
        assert new != old
        started = time.monotonic()
        [result] = world.verify([AUTH_TARGET], timeout=20)
        assert time.monotonic() - started < 5  # failed fast, not after the timeout
        assert not result.ok and (result.provisioning_state, result.running_state) == ("Failed", "Failed")
        assert result.problem.startswith(f"auth-api: revision {new} failed (provisioningState Failed")
        assert f"failed to pull image '{bad}'" in result.problem and result.problem.endswith(f"the app still serves {old}")
        app = world.read(AUTH)["properties"]
        assert (app["latestRevisionName"], app["latestReadyRevisionName"]) == (new, old)
        served = get(box, app["configuration"]["ingress"]["fqdn"], "/")
        assert served.json()["revision"] == old  # Single mode: the old revision keeps the traffic
        assert get(box, app["latestRevisionFqdn"], "/healthz").status_code == 503
        failed = revision(world, AUTH, new)["properties"]
        assert "ImagePullFailure" in failed["provisioningError"] and failed["trafficWeight"] == 0
        [snapshot] = [a for a in box.control("GET", "/apps")["value"] if a["name"] == "auth-api"]
        assert [r["provisioningState"] for r in snapshot["revisions"] if r["name"] == new] == ["Failed"]
    finally:
        box.control("DELETE", "/images/failing", {"image": bad})
    good = world.put(AUTH, "Microsoft.App/containerApps", world.auth_body("v2"))["properties"]["latestRevisionName"]
    [result] = world.verify([AUTH_TARGET])
    assert result.ok and result.revision == good, result.problem
    app = world.read(AUTH)["properties"]
    assert app["latestReadyRevisionName"] == good
    assert get(box, app["configuration"]["ingress"]["fqdn"], "/").json()["revision"] == good
    previous = revision(world, AUTH, old)["properties"]
    assert (previous["active"], previous["runningState"], previous["trafficWeight"]) == (False, "Stopped", 0)


def test_registry_identity_without_acr_pull_fails_the_pull(world: World) -> None:
    world.delete(ACR_ROLE, "Microsoft.Authorization/roleAssignments")
    try:
        world.put(NATIVE, "Microsoft.App/containerApps", world.native_body("v3"))
        [result] = world.verify([NATIVE_TARGET])
        assert not result.ok and result.provisioning_state == "Failed"
        assert "the identity mi-aca-test has no AcrPull role on acracatest" in result.problem
    finally:
        world.grant(ACR_ROLE, ACR_PULL)
    [result] = world.verify([NATIVE_TARGET])  # the pull is retried: with the role back it runs
    assert result.ok, result.problem


def test_revision_deactivate_and_activate(world: World) -> None:
    box = world.box
    app = world.read(NATIVE)["properties"]
    name, front = app["latestRevisionName"], app["configuration"]["ingress"]["fqdn"]
    base = f"{box.url}{NATIVE}/revisions/{name}"
    post = requests.post(f"{base}/deactivate?api-version={APP_VERSION}", headers=BEARER, verify=box.ca, timeout=10)
    assert post.status_code == 200
    rev = revision(world, NATIVE, name)["properties"]
    assert (rev["active"], rev["runningState"], rev["replicas"]) == (False, "Stopped", 0)
    assert get(box, front, "/").status_code == 503
    post = requests.post(f"{base}/activate?api-version={APP_VERSION}", headers=BEARER, verify=box.ca, timeout=10)
    assert post.status_code == 200
    assert get(box, front, "/").json()["revision"] == name
    [result] = world.verify([NATIVE_TARGET])
    assert result.ok, result.problem


def test_role_assignments_listed_for_a_principal(world: World) -> None:
    url = (
        f"{world.box.url}{VAULT}/providers/Microsoft.Authorization/roleAssignments"
        f"?$filter=principalId eq '{world.principal}'&api-version=2022-04-01"
    )
    answer = requests.get(url, headers=BEARER, verify=world.box.ca, timeout=10)
    assert answer.status_code == 200
    assert [a["id"].lower() for a in answer.json()["value"]] == [KV_ROLE.lower()]


def test_revision_mode_reads_state_only(world: World) -> None:
    results = world.verify([AUTH_TARGET, NATIVE_TARGET], mode="revision")
    assert all(r.ok for r in results), problems(results)
    assert all(r.http_status is None for r in results)


def test_stop_is_prompt_with_app_listeners(tmp_path: Path) -> None:
    server = SandboxServer(tmp_path / "sandbox", run_id="test")
    box = Sandbox(server)
    try:
        spec = World(box, "", "", "", "").put
        spec(RG, "Microsoft.Resources/resourceGroups", {"location": "centralus"})
        spec(CAE, "Microsoft.App/managedEnvironments", {"location": "centralus", "properties": {}})
        body = {
            "location": "centralus",
            "properties": {
                "managedEnvironmentId": CAE,
                "configuration": {"ingress": {"external": True, "targetPort": 80}},
                "template": {"containers": [{"name": "web", "image": "mcr.microsoft.com/k8se/quickstart:latest"}]},
            },
        }
        app = spec(NATIVE, "Microsoft.App/containerApps", body)
        front = app["properties"]["configuration"]["ingress"]["fqdn"]
        until(lambda: get(box, front, "/").status_code == 200)
        session = requests.Session()  # a keep-alive connection left open
        session.get(f"https://{front}/healthz", verify=box.ca, timeout=10)
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 1.0
