"""Prod, end to end, through the CLI against one sandbox: steps 1, 2a, 2b, 6-9 with the databases.

The tests run in order and share one sandbox: the first deploys prod from nothing, the later ones
revoke a VPN client, kill a run while the gateway builds, and step off the VPN.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from tests.conftest import REPO, Sandbox, invoke_path, project_world, run_invoke
from tests.helpers import set_yaml_value

PROD = yaml.safe_load((REPO / "config" / "prod.yaml").read_text())
SUB = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups"
DATA = f"{SUB}/{PROD['resource_groups']['data']['name']}/providers"
APPS = f"{SUB}/{PROD['resource_groups']['apps']['name']}/providers"
_GW = PROD["vpn"]["gateway"]
GATEWAY = f"{SUB}/{_GW['resource_group']}/providers/Microsoft.Network/virtualNetworkGateways/{_GW['name']}"
GATEWAY_API = "2026-03-01"


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    with project_world("deploykit-prod-", "prod-e2e") as made:
        set_yaml_value(made["project"] / "config" / "prod.yaml", ["health", "timeout_seconds"], 60)
        yield made


def cli(world: dict, *args: str) -> tuple[int, dict, str]:
    result = run_invoke(*args, "--json", env=world["env"])
    return result.returncode, json.loads(result.stdout), result.stderr


def pending(document: dict) -> list[dict]:
    return [c for c in document["changes"] if c["action"] != "unchanged"]


def gateway_requests(box: Sandbox, mark: int, method: str) -> list[dict]:
    entries = box.control("GET", f"/journal?since={mark}")["entries"]
    return [e for e in entries if e["method"] == method and GATEWAY.lower() in e["path"].lower().split("?")[0]]


def test_deploy_prod_converges_then_a_second_run_writes_nothing(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    status, first, err = cli(world, "deploy", "--env", "prod", "--yes")
    assert status == 0, err
    created = [c for c in first["changes"] if c["action"] == "create"]
    assert created and all(c["result"] == "ok" for c in created)
    assert {c["address"] for c in created} >= {"vnet.prod", "vgw.prod", "pe.prod.pg.zones", "app.prod.auth-api"}
    assert first["checks"]["passed"] is True
    mark = box.journal_mark()
    status, again, err = cli(world, "deploy", "--env", "prod", "--yes")
    assert status == 0, err
    assert pending(again) == []
    assert box.requests_since(mark)["writes"] == 0


def test_no_data_service_of_prod_is_reachable_from_the_internet(world: dict) -> None:
    provider = world["sandbox"].provider
    vault = provider.read(f"{DATA}/Microsoft.KeyVault/vaults/{PROD['key_vault']['name']}", "2026-05-15")
    server = provider.read(f"{DATA}/Microsoft.DBforPostgreSQL/flexibleServers/{PROD['postgres']['name']}", "2026-10-01")
    cache = provider.read(f"{DATA}/Microsoft.Cache/redis/{PROD['redis']['name']}", "2024-11-01")
    assert vault["properties"]["publicNetworkAccess"] == "Disabled"
    assert server["properties"]["network"]["publicNetworkAccess"] == "Disabled"
    assert cache["properties"]["publicNetworkAccess"] == "Disabled"
    for target in (vault, server, cache):
        linked = [
            c
            for c in target["properties"].get("privateEndpointConnections", [])
            if c["properties"]["privateLinkServiceConnectionState"]["status"] == "Approved"
        ]
        assert linked, f"{target['name']} has no approved private endpoint"
    # The connection belongs to the endpoint: a later PUT of the vault that omits it keeps it.
    body = {k: v for k, v in vault.items() if k in ("location", "properties", "tags")}
    body["properties"] = {k: v for k, v in body["properties"].items() if k != "privateEndpointConnections"}
    vault_id = f"{DATA}/Microsoft.KeyVault/vaults/{PROD['key_vault']['name']}"
    provider.put(ResourceSpec("kv.prod", "Microsoft.KeyVault/vaults", "2026-05-15", vault_id, {}, "test"), body)
    assert (
        provider.read(vault_id, "2026-05-15")["properties"]["privateEndpointConnections"]
        == vault["properties"]["privateEndpointConnections"]
    )
    environment = provider.read(
        f"{APPS}/Microsoft.App/managedEnvironments/{PROD['container_apps_environment']['name']}", "2026-07-01"
    )
    assert environment["properties"]["vnetConfiguration"]["internal"] is True


def test_gateway_lists_agree_with_the_vpn_tasks_and_a_missed_revocation_shows_in_step6(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    for args in (("vpn.root",), ("vpn.client", "--name", "alice"), ("vpn.client", "--name", "bob")):
        status, _, err = cli(world, *args, "--env", "prod", "--yes")
        assert status == 0, err
    roots = box.provider.read(GATEWAY, GATEWAY_API)["properties"]["vpnClientConfiguration"]["vpnClientRootCertificates"]
    assert [r["name"] for r in roots if r["name"].startswith("deploykit-root-")]
    status, plan, err = cli(world, "step6", "--env", "prod", "--dry-run")
    assert status == 0 and pending(plan) == [], err  # the vpn tasks wrote what step 6 declares

    # The gateway cannot be read while alice is revoked: recorded locally only.
    box.faults(
        rules=[{"method": "GET", "path_contains": "virtualNetworkGateways/", "status": 403, "code": "AuthorizationFailed"}]
    )
    status, revoke, err = cli(world, "vpn.revoke", "--env", "prod", "--name", "alice", "--yes")
    assert status == 0, err
    assert "not reachable" in next(c for c in revoke["changes"] if c["address"] == "vpn.gateway")["reason"]
    status, plan, err = cli(world, "step6", "--env", "prod", "--dry-run")
    assert status == 0, err
    [change] = pending(plan)
    assert change["address"] == "vgw.prod" and change["action"] == "update"
    [field] = change["diff"]
    assert field.startswith("properties.vpnClientConfiguration.vpnClientRevokedCertificates[alice-")
    index = json.loads((world["project"] / "certs" / "prod" / "index.json").read_text())
    assert change["diff"][field]["new"]["properties"]["thumbprint"] == index["clients"]["alice"][0]["thumbprint"]

    status, applied, err = cli(world, "step6", "--env", "prod", "--yes")
    assert status == 0 and [c["result"] for c in pending(applied)] == ["ok"], err
    status, plan, err = cli(world, "step6", "--env", "prod", "--dry-run")
    assert status == 0 and pending(plan) == [], err
    status, revoke, err = cli(world, "vpn.revoke", "--env", "prod", "--name", "alice", "--yes")
    assert status == 0 and pending(revoke) == [], err


def _delete_gateway(box: Sandbox) -> None:
    box.provider.delete(GATEWAY, GATEWAY_API)
    assert box.provider.read(GATEWAY, GATEWAY_API) is None


def test_a_run_killed_while_the_gateway_builds_is_waited_for_not_sent_again(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    _delete_gateway(box)
    box.faults(gateway_seconds=8)
    invoke = invoke_path()
    environment = {**world["env"], "PYTHONPATH": str(REPO)}
    mark = box.journal_mark()
    process = subprocess.Popen(
        [invoke, "--search-root", str(REPO), "step6", "--env", "prod", "--yes"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not gateway_requests(box, mark, "PUT") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gateway_requests(box, mark, "PUT"), "the gateway PUT was never sent"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert box.provider.read(GATEWAY, GATEWAY_API)["properties"]["provisioningState"] == "Updating"

    mark = box.journal_mark()
    status, rerun, err = cli(world, "step6", "--env", "prod", "--yes")
    assert status == 0, err
    gateway = next(c for c in rerun["changes"] if c["address"] == "vgw.prod")
    assert gateway["action"] == "wait" and gateway["result"] == "ok"
    assert gateway_requests(box, mark, "PUT") == []  # waited for, never sent a second time
    assert box.provider.read(GATEWAY, GATEWAY_API)["properties"]["provisioningState"] == "Succeeded"
    status, plan, err = cli(world, "step6", "--env", "prod", "--dry-run")
    assert status == 0 and pending(plan) == [], err


def test_no_wait_returns_once_azure_accepted_and_the_next_run_finishes(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    _delete_gateway(box)
    box.faults(gateway_seconds=5)
    status, first, err = cli(world, "step6", "--env", "prod", "--yes", "--no-wait")
    assert status == 0, err
    gateway = next(c for c in first["changes"] if c["address"] == "vgw.prod")
    assert gateway["result"] == "accepted"
    assert box.provider.read(GATEWAY, GATEWAY_API)["properties"]["provisioningState"] == "Updating"
    mark = box.journal_mark()
    status, second, err = cli(world, "step6", "--env", "prod", "--yes")
    assert status == 0, err
    assert next(c for c in second["changes"] if c["address"] == "vgw.prod")["action"] == "wait"
    assert gateway_requests(box, mark, "PUT") == []
    box.faults()


def test_off_the_vpn_the_private_vault_says_what_the_operator_needs(world: dict) -> None:
    box: Sandbox = world["sandbox"]
    box.control("PUT", "/vpn", {"connected": False})
    try:
        result = run_invoke("step7", "--env", "prod", "--dry-run", env=world["env"])
    finally:
        box.control("PUT", "/vpn", {"connected": True})
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "Public network access is disabled" in line
    assert "connect the point-to-site VPN" in line and "Traceback" not in result.stderr


def test_a_create_only_change_is_planned_as_forcing_a_new_server_and_refused(world: dict) -> None:
    prod = world["project"] / "config" / "prod.yaml"
    original = prod.read_text()
    set_yaml_value(prod, ["postgres", "geo_redundant_backup"], False)
    try:
        status, plan, err = cli(world, "step7", "--env", "prod", "--dry-run")
        assert status == 0, err
        [change] = pending(plan)
        assert any("(forces a new server)" in path for path in change["diff"])
        status, applied, err = cli(world, "step7", "--env", "prod", "--yes")
        assert status == 1
        assert "never replaces it" in next(c for c in applied["changes"] if c["address"] == "pg.prod")["error"]
    finally:
        prod.write_text(original)
