"""The sandbox answers prod's private-network types as Azure does, seen through the real SDK clients.

azure.mgmt.network's NetworkManagementClient for the network RP, the generic
ResourceManagementClient (deploykit's provider) for private DNS and the DNS resolver, and the Key
Vault SecretClient for the vault's data plane, all over HTTPS to one sandbox per module. Shapes
are checked against the real ARM examples in tests/data/arm-examples (file named in each test);
errors against azure-facts.md and the codes cited in deploykit/sandbox/network.py.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.network import NetworkManagementClient

from deploykit.azure.target import SANDBOX_SUBSCRIPTION, SandboxCredential
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError
from deploykit.sandbox.server import SandboxServer
from tests.conftest import Sandbox, load_example, module_sandbox

SUB = f"/subscriptions/{SANDBOX_SUBSCRIPTION}"
GROUP = "rg-net"
RG = f"{SUB}/resourceGroups/{GROUP}"
NET = f"{RG}/providers/Microsoft.Network"
NET_API = "2026-03-01"
API = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.KeyVault/vaults": "2026-05-15",
    "Microsoft.ContainerRegistry/registries": "2025-11-01",
    "Microsoft.Network/privateDnsZones": "2024-06-01",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": "2024-06-01",
    "Microsoft.Network/dnsResolvers": "2025-05-01",
    "Microsoft.Network/dnsResolvers/inboundEndpoints": "2025-05-01",
    "Microsoft.Network/virtualNetworkGateways": NET_API,
    "Microsoft.Network/privateEndpoints": NET_API,
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": NET_API,
    "Microsoft.Network/virtualNetworks": NET_API,
}
SPACE = "10.20.0.0/16"
SUBNETS = {  # name -> prefix, as config/prod.yaml lays them out
    "snet-apps": "10.20.0.0/23",
    "snet-endpoints": "10.20.2.0/24",
    "snet-dns-inbound": "10.20.3.0/28",
    "GatewaySubnet": "10.20.255.0/27",
}
VNET = "vnet-net"
VNET_ID = f"{NET}/virtualNetworks/{VNET}"
NSG_NAME = "nsg-net"
PG = "Microsoft.DBforPostgreSQL/flexibleServers"
JOIN = "Microsoft.Network/virtualNetworks/subnets/join/action"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with module_sandbox(tmp_path_factory.mktemp("network"), "network", RG) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def network(box: Sandbox) -> NetworkManagementClient:
    return NetworkManagementClient(
        SandboxCredential(),
        SANDBOX_SUBSCRIPTION,
        base_url=box.url,
        credential_scopes=["https://management.azure.com/.default"],
        connection_verify=box.ca,
    )


@pytest.fixture(scope="module")
def vnet(box: Sandbox, network: NetworkManagementClient) -> dict:
    """The prod layout: an NSG, a VNet with four inline subnets (one delegated, one with the NSG, GatewaySubnet)."""
    network.network_security_groups.begin_create_or_update(GROUP, NSG_NAME, {"location": "centralus"}).result()
    return network.virtual_networks.begin_create_or_update(GROUP, VNET, vnet_body(SUBNETS)).result().as_dict()


def vnet_body(subnets: dict[str, str], location: str = "centralus") -> dict:
    listed = []
    for name, prefix in subnets.items():
        props: dict = {"addressPrefix": prefix}
        if name == "snet-dns-inbound":
            props["delegations"] = [{"name": "dns", "properties": {"serviceName": "Microsoft.Network/dnsResolvers"}}]
        if name == "snet-endpoints":
            props["networkSecurityGroup"] = {"id": f"{NET}/networkSecurityGroups/{NSG_NAME}"}
        listed.append({"name": name, "properties": props})
    return {"location": location, "properties": {"addressSpace": {"addressPrefixes": [SPACE]}, "subnets": listed}}


def put(sandbox: Sandbox, kind: str, rid: str, body: dict) -> dict:
    return sandbox.provider.put(ResourceSpec("t", kind, API[kind], rid, {}, "t"), body)


def get(sandbox: Sandbox, kind: str, rid: str) -> dict:
    found = sandbox.provider.read(rid, API[kind])
    assert found is not None, rid
    return found


def refused(call) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as caught:
        call()
    return caught.value


def refused_put(sandbox: Sandbox, kind: str, rid: str, body: dict) -> AzureOperationError:
    with pytest.raises(AzureOperationError) as caught:
        put(sandbox, kind, rid, body)
    return caught.value


def host(prefix: str, offset: int) -> str:
    return str(ipaddress.ip_network(prefix).network_address + offset)


# ---- VNet and subnets ------------------------------------------------------------------------
def test_vnet_lists_its_subnets_as_full_objects(vnet: dict, network: NetworkManagementClient) -> None:
    """VirtualNetworkCreate.json's answer plus subnets as VirtualNetworkGet.json / SubnetGetWithDelegation.json show them."""
    example = load_example("virtual-network/VirtualNetworkCreate.json")["responses"]["201"]["body"]
    props = vnet["properties"]
    assert set(example["properties"]) <= set(props) | {"flowTimeoutInMinutes"}  # flowTimeout is the example's own input
    assert props["virtualNetworkPeerings"] == [] and props["resourceGuid"]
    by_name = {s["name"]: s for s in props["subnets"]}
    assert sorted(by_name) == sorted(SUBNETS)
    for name, subnet in by_name.items():
        assert subnet["id"] == f"{VNET_ID}/subnets/{name}"
        assert subnet["etag"].startswith('W/"')
        assert subnet["properties"]["addressPrefix"] == SUBNETS[name]
        assert subnet["properties"]["provisioningState"] == "Succeeded"
        assert subnet["properties"]["privateEndpointNetworkPolicies"] == "Disabled"
    delegation = by_name["snet-dns-inbound"]["properties"]["delegations"][0]
    assert delegation["id"] == f"{VNET_ID}/subnets/snet-dns-inbound/delegations/dns"
    assert delegation["properties"]["actions"] == [JOIN] and delegation["properties"]["provisioningState"] == "Succeeded"
    assert by_name["snet-endpoints"]["properties"]["networkSecurityGroup"]["id"].endswith(f"/{NSG_NAME}")
    # The child GET answers the same subnet, without `type` (SubnetGetWithDelegation.json has none).
    child = network.subnets.get(GROUP, VNET, "snet-dns-inbound").as_dict()
    example_subnet = load_example("subnet/SubnetCreateWithDelegation.json")["responses"]["200"]["body"]
    assert "type" not in child and "type" not in example_subnet
    assert set(example_subnet["properties"]) <= set(child["properties"])
    assert child["properties"]["delegations"] == by_name["snet-dns-inbound"]["properties"]["delegations"]


def test_vnet_put_without_subnets_keeps_them_and_with_subnets_prunes(box: Sandbox, network: NetworkManagementClient) -> None:
    """azure-facts.md 3.16: omitted `subnets` keep them; a list is authoritative (left-out subnets are deleted)."""
    name = "vnet-prune"
    first = {"a": "10.30.0.0/24", "b": "10.30.1.0/24", "c": "10.30.2.0/24"}
    body = vnet_body(first)
    body["properties"]["addressSpace"]["addressPrefixes"] = ["10.30.0.0/16"]
    network.virtual_networks.begin_create_or_update(GROUP, name, body).result()
    del body["properties"]["subnets"]
    body["tags"] = {"changed": "yes"}
    kept = network.virtual_networks.begin_create_or_update(GROUP, name, body).result().as_dict()
    assert sorted(s["name"] for s in kept["properties"]["subnets"]) == sorted(first)
    body["properties"]["subnets"] = [{"name": "a", "properties": {"addressPrefix": first["a"]}}]
    pruned = network.virtual_networks.begin_create_or_update(GROUP, name, body).result().as_dict()
    assert [s["name"] for s in pruned["properties"]["subnets"]] == ["a"]
    gone = refused(lambda: network.subnets.get(GROUP, name, "b"))
    assert gone.status_code == 404
    assert [s.name for s in network.subnets.list(GROUP, name)] == ["a"]


def test_subnet_checks_azure_makes(vnet: dict, network: NetworkManagementClient) -> None:
    """Outside the space, overlapping, not a CIDR, a missing NSG, an NSG on GatewaySubnet: refused, nothing stored."""
    cases = [
        ("outside", {"addressPrefix": "10.99.0.0/24"}, "NetcfgSubnetRangeOutsideVnet"),
        ("overlap", {"addressPrefix": "10.20.2.128/25"}, "NetcfgSubnetRangesOverlap"),
        ("odd", {"addressPrefix": "10.20.9.5/24"}, "InvalidCIDRNotation"),
        (
            "snet-x",
            {"addressPrefix": "10.20.8.0/24", "networkSecurityGroup": {"id": f"{NET}/networkSecurityGroups/nope"}},
            "InvalidResourceReference",
        ),
    ]
    for name, props, code in cases:
        error = refused(
            lambda n=name, p=props: network.subnets.begin_create_or_update(GROUP, VNET, n, {"properties": p}).result()
        )
        assert (error.status_code, error.error.code) == (400, code), name
    gateway = dict(vnet_body(SUBNETS))
    gateway["properties"]["subnets"][-1]["properties"]["networkSecurityGroup"] = {"id": f"{NET}/networkSecurityGroups/{NSG_NAME}"}
    error = refused(lambda: network.virtual_networks.begin_create_or_update(GROUP, VNET, gateway).result())
    assert error.error.code == "NetworkSecurityGroupCannotBeAttachedToGatewaySubnet"
    assert sorted(s.name for s in network.subnets.list(GROUP, VNET)) == sorted(SUBNETS)


def test_subnet_put_writes_its_vnet_list_and_delete_leaves_it(vnet: dict, network: NetworkManagementClient) -> None:
    """Subnets_CreateOrUpdate and Subnets_Delete read and write the VNet's own list."""
    body = {"properties": {"addressPrefix": "10.20.4.0/27", "delegations": [{"name": "pg", "properties": {"serviceName": PG}}]}}
    created = network.subnets.begin_create_or_update(GROUP, VNET, "snet-db", body).result().as_dict()
    assert created["properties"]["delegations"][0]["properties"]["actions"] == [JOIN]
    listed = {s["name"]: s for s in network.virtual_networks.get(GROUP, VNET).as_dict()["properties"]["subnets"]}
    assert listed["snet-db"]["properties"]["addressPrefix"] == "10.20.4.0/27"
    network.subnets.begin_delete(GROUP, VNET, "snet-db").result()
    after = network.virtual_networks.get(GROUP, VNET).as_dict()["properties"]["subnets"]
    assert sorted(s["name"] for s in after) == sorted(SUBNETS)


# ---- NSG ------------------------------------------------------------------------------------
def test_nsg_answers_the_six_default_rules_and_completes_its_own(vnet: dict, network: NetworkManagementClient) -> None:
    """NetworkSecurityGroupCreate.json: six defaultSecurityRules; each rule gains id and provisioningState."""
    example = load_example("network-security-group/NetworkSecurityGroupCreate.json")["responses"]["201"]["body"]
    rule = {
        "name": "allow-https",
        "properties": {
            "priority": 100,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": "Tcp",
            "sourceAddressPrefix": "VirtualNetwork",
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": "443",
        },
    }
    nsg = (
        network.network_security_groups.begin_create_or_update(
            GROUP, "nsg-rules", {"location": "centralus", "properties": {"securityRules": [rule]}}
        )
        .result()
        .as_dict()
    )
    nsg_id = f"{NET}/networkSecurityGroups/nsg-rules"
    theirs = {r["name"]: r["properties"] for r in example["properties"]["defaultSecurityRules"]}
    ours = {r["name"]: r for r in nsg["properties"]["defaultSecurityRules"]}
    assert {n: r["properties"] for n, r in ours.items()} == theirs
    assert all(r["id"] == f"{nsg_id}/defaultSecurityRules/{n}" for n, r in ours.items())
    [mine] = nsg["properties"]["securityRules"]
    assert mine["id"] == f"{nsg_id}/securityRules/allow-https" and mine["properties"]["provisioningState"] == "Succeeded"
    assert nsg["properties"]["flushConnection"] is False and nsg["properties"]["resourceGuid"]


# ---- public IP ------------------------------------------------------------------------------
def test_public_ip_defaults_address_zones_and_standard_static(network: NetworkManagementClient) -> None:
    """PublicIpAddressCreateDefaults.json for a bare PUT; a Standard static zoned IP gets a stable address."""
    example = load_example("public-ip/PublicIpAddressCreateDefaults.json")["responses"]["201"]["body"]
    bare = network.public_ip_addresses.begin_create_or_update(GROUP, "pip-bare", {"location": "centralus"}).result().as_dict()
    assert bare["sku"] == example["sku"]
    for field in ("idleTimeoutInMinutes", "publicIPAddressVersion", "publicIPAllocationMethod"):
        assert bare["properties"][field] == example["properties"][field], field
    assert "ipAddress" not in bare["properties"]  # Dynamic: no address until attached
    body = {
        "location": "centralus",
        "sku": {"name": "Standard"},
        "zones": ["1", "2", "3"],
        "properties": {"publicIPAllocationMethod": "Static"},
    }
    first = network.public_ip_addresses.begin_create_or_update(GROUP, "pip-gw", body).result().as_dict()
    again = network.public_ip_addresses.begin_create_or_update(GROUP, "pip-gw", body).result().as_dict()
    address = ipaddress.ip_address(first["properties"]["ipAddress"])
    assert address.is_global and again["properties"]["ipAddress"] == str(address)
    assert first["zones"] == ["1", "2", "3"] and first["sku"] == {"name": "Standard", "tier": "Regional"}
    dynamic = {**body, "properties": {"publicIPAllocationMethod": "Dynamic"}}
    error = refused(lambda: network.public_ip_addresses.begin_create_or_update(GROUP, "pip-dyn", dynamic).result())
    assert error.error.code == "StandardAndStandardV2SkuPublicIPAddressesMustBeStatic"


# ---- VPN gateway ------------------------------------------------------------------------------
GATEWAY_ID = f"{NET}/virtualNetworkGateways/vgw-net"


def gateway_body(sku: str = "VpnGw1AZ", pip: str = "pip-gw", subnet: str = "GatewaySubnet", roots: list | None = None) -> dict:
    return {
        "location": "centralus",
        "properties": {
            "gatewayType": "Vpn",
            "vpnType": "RouteBased",
            "vpnGatewayGeneration": "Generation1",
            "sku": {"name": sku, "tier": sku},
            "ipConfigurations": [
                {
                    "name": "gwipconfig1",
                    "properties": {
                        "privateIPAllocationMethod": "Dynamic",
                        "subnet": {"id": f"{VNET_ID}/subnets/{subnet}"},
                        "publicIPAddress": {"id": f"{NET}/publicIPAddresses/{pip}"},
                    },
                }
            ],
            "vpnClientConfiguration": {
                "vpnClientAddressPool": {"addressPrefixes": ["172.16.201.0/24"]},
                "vpnClientProtocols": ["IkeV2", "OpenVPN"],
                "vpnAuthenticationTypes": ["Certificate"],
                "vpnClientRootCertificates": roots or [],
            },
        },
    }


def test_gateway_refuses_what_azure_refuses_at_creation(box: Sandbox, vnet: dict, network: NetworkManagementClient) -> None:
    """azure-facts-2.md 6: non-AZ SKUs, zoneless IPs for AZ SKUs; Basic IPs; a subnet other than GatewaySubnet."""
    network.public_ip_addresses.begin_create_or_update(
        GROUP,
        "pip-nozones",
        {"location": "centralus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}},
    ).result()
    network.public_ip_addresses.begin_create_or_update(GROUP, "pip-basic", {"location": "centralus"}).result()
    cases = [
        (gateway_body(sku="VpnGw1"), "NonAzSkusNotAllowedForVPNGateway"),
        (gateway_body(pip="pip-nozones"), "VmssVpnGatewayPublicIpsMustHaveZonesConfigured"),
        (gateway_body(pip="pip-basic"), "PublicIpWithBasicSkuNotAllowedOnVPNGateways"),
        (gateway_body(subnet="snet-apps"), "InvalidGatewaySubnet"),
    ]
    for body, code in cases:
        error = refused(lambda b=body: network.virtual_network_gateways.begin_create_or_update(GROUP, "vgw-bad", b).result())
        assert (error.status_code, error.error.code) == (400, code)
    assert box.provider.read(f"{NET}/virtualNetworkGateways/vgw-bad", NET_API) is None


def test_gateway_create_is_long_and_survives_its_client(box: Sandbox, vnet: dict, network: NetworkManagementClient) -> None:
    """Updating while it builds, the monitor InProgress, a second PUT refused, state kept for a second sandbox process."""
    seconds = 1.5
    box.faults(gateway_seconds=seconds, gateway_update_seconds=0.5)
    network.public_ip_addresses.begin_create_or_update(
        GROUP, "pip-gw", {"location": "centralus", "sku": {"name": "Standard"}, "zones": ["1", "2", "3"]}
    ).result()
    roots = [{"name": "deploykit-root-1", "properties": {"publicCertData": "MIIBroot"}}]
    started = time.monotonic()
    status, headers, answer = box.provider.send_raw("PUT", GATEWAY_ID, NET_API, body=gateway_body(roots=roots))
    assert status == 201 and answer["properties"]["provisioningState"] == "Updating"
    monitor = headers["Azure-AsyncOperation"]
    assert box.provider.send_raw("GET", monitor)[2]["status"] == "InProgress"
    # The client that sent the PUT is gone; another sandbox process on the same state sees the operation.
    other = SandboxServer(box.server.state_dir, run_id="other")
    try:
        seen = Sandbox(other).provider.read(GATEWAY_ID, NET_API)
        assert seen is not None and seen["properties"]["provisioningState"] == "Updating"
    finally:
        other.stop()
    error = refused(
        lambda: network.virtual_network_gateways.begin_create_or_update(GROUP, "vgw-net", gateway_body(roots=roots)).result()
    )
    assert (error.status_code, error.error.code) == (409, "AnotherOperationInProgress")
    while box.provider.send_raw("GET", monitor)[2]["status"] == "InProgress":
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    assert seconds <= elapsed < seconds + 3
    gateway = network.virtual_network_gateways.get(GROUP, "vgw-net").as_dict()
    props = gateway["properties"]
    assert props["provisioningState"] == "Succeeded" and gateway["etag"].startswith('W/"')
    assert props["sku"]["capacity"] == 0  # VirtualNetworkGatewayUpdate.json's answer
    assert props["bgpSettings"]["asn"] == 65515
    assert props["bgpSettings"]["bgpPeeringAddress"] == host(SUBNETS["GatewaySubnet"], 30)  # the /27's last usable
    [root] = props["vpnClientConfiguration"]["vpnClientRootCertificates"]
    assert root["id"] == f"{GATEWAY_ID}/vpnClientRootCertificates/deploykit-root-1"
    assert root["etag"] and root["properties"]["provisioningState"] == "Succeeded"
    pip = network.public_ip_addresses.get(GROUP, "pip-gw").as_dict()
    assert pip["properties"]["ipConfiguration"]["id"] == f"{GATEWAY_ID}/ipConfigurations/gwipconfig1"
    assert props["bgpSettings"]["bgpPeeringAddresses"][0]["tunnelIpAddresses"] == [pip["properties"]["ipAddress"]]
    # A later change of the client configuration is an update with its own, shorter, time.
    revoked = gateway_body(roots=roots)
    revoked["properties"]["vpnClientConfiguration"]["vpnClientRevokedCertificates"] = [
        {"name": "lost-laptop", "properties": {"thumbprint": "AB" * 20}}
    ]
    started = time.monotonic()
    status, _, answer = box.provider.send_raw("PUT", GATEWAY_ID, NET_API, body=revoked)
    assert status == 200 and answer["properties"]["provisioningState"] == "Updating"
    while network.virtual_network_gateways.get(GROUP, "vgw-net").as_dict()["properties"]["provisioningState"] != "Succeeded":
        time.sleep(0.05)
    assert 0.5 <= time.monotonic() - started < 0.5 + 2
    box.control("DELETE", "/faults")


# A CLI run's sandbox lives in the CLI's process: this child starts one, sends the gateway PUT and is
# killed (SIGKILL) while the gateway builds, as a Ctrl-C'd or crashed `invoke step6` would be.
KILLED_CLIENT = """
import os, signal, sys
from deploykit.sandbox.server import SandboxServer
from tests.conftest import Sandbox
from tests.test_sandbox_network import GATEWAY_ID, NET_API, RG, VNET_ID, SUBNETS, gateway_body, put, vnet_body
box = Sandbox(SandboxServer(__import__("pathlib").Path(sys.argv[1]), run_id="killed"))
box.faults(gateway_seconds=float(sys.argv[2]))
put(box, "Microsoft.Resources/resourceGroups", RG, {"location": "centralus"})
put(box, "Microsoft.Network/virtualNetworks", VNET_ID, vnet_body({"GatewaySubnet": SUBNETS["GatewaySubnet"]}))
pip = {"location": "centralus", "sku": {"name": "Standard"}, "zones": ["1"]}
box.provider.send_raw("PUT", RG + "/providers/Microsoft.Network/publicIPAddresses/pip-gw", NET_API, body=pip)
status, _, answer = box.provider.send_raw("PUT", GATEWAY_ID, NET_API, body=gateway_body())
print(status, answer["properties"]["provisioningState"], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_gateway_operation_outlives_a_killed_cli_process(tmp_path) -> None:
    """The gateway's operation is in the state file: the next process's sandbox shows it Updating, then Succeeded."""
    import subprocess
    import sys

    from tests.conftest import REPO

    seconds = 3.0
    folder = tmp_path / "killed"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CLIENT, str(folder), str(seconds)],
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert child.stdout.split() == ["201", "Updating"]
    server = SandboxServer(folder, run_id="next")
    try:
        provider = Sandbox(server).provider
        states = [provider.read(GATEWAY_ID, NET_API)["properties"]["provisioningState"]]
        while states[-1] != "Succeeded" and time.monotonic() - started < seconds + 10:
            time.sleep(0.1)
            states.append(provider.read(GATEWAY_ID, NET_API)["properties"]["provisioningState"])
        assert states[0] == "Updating" and states[-1] == "Succeeded"
        assert time.monotonic() - started >= seconds
    finally:
        server.stop()


# ---- DNS resolver, private DNS ---------------------------------------------------------------------
RESOLVER = f"{NET}/dnsResolvers/dnspr-net"


def test_resolver_and_inbound_endpoint(box: Sandbox, vnet: dict) -> None:
    """DnsResolver_Put.json and InboundEndpoint_Put.json: Connected; the endpoint takes its subnet's .4."""
    example = load_example("dns-resolver-inbound-endpoint/InboundEndpoint_Put.json")["responses"]["201"]["body"]
    resolver = put(
        box,
        "Microsoft.Network/dnsResolvers",
        RESOLVER,
        {"location": "centralus", "properties": {"virtualNetwork": {"id": VNET_ID}}},
    )
    assert resolver["properties"]["dnsResolverState"] == "Connected" and resolver["properties"]["resourceGuid"]
    body = {
        "location": "centralus",
        "properties": {
            "ipConfigurations": [
                {"subnet": {"id": f"{VNET_ID}/subnets/snet-dns-inbound"}, "privateIpAllocationMethod": "Dynamic"}
            ]
        },
    }
    kind = "Microsoft.Network/dnsResolvers/inboundEndpoints"
    endpoint = put(box, kind, f"{RESOLVER}/inboundEndpoints/in-net", body)
    [config] = endpoint["properties"]["ipConfigurations"]
    assert set(example["properties"]["ipConfigurations"][0]) == set(config)
    assert config["privateIpAddress"] == host(SUBNETS["snet-dns-inbound"], 4)  # Azure keeps .0-.3
    # The example's id has no /dnsResolvers/{name} segment; the sandbox answers the same way.
    assert "/dnsResolvers/" not in example["id"] and endpoint["id"] == f"{NET}/inboundEndpoints/in-net"
    again = put(box, kind, f"{RESOLVER}/inboundEndpoints/in-net", body)
    assert again["properties"]["ipConfigurations"][0]["privateIpAddress"] == config["privateIpAddress"]
    second = put(box, kind, f"{RESOLVER}/inboundEndpoints/in-two", body)
    assert second["properties"]["ipConfigurations"][0]["privateIpAddress"] == host(SUBNETS["snet-dns-inbound"], 5)
    box.provider.delete(f"{RESOLVER}/inboundEndpoints/in-two", API[kind])
    gateway_subnet = {
        "location": "centralus",
        "properties": {"ipConfigurations": [{"subnet": {"id": f"{VNET_ID}/subnets/GatewaySubnet"}}]},
    }
    assert refused_put(box, kind, f"{RESOLVER}/inboundEndpoints/in-gw", gateway_subnet).code == "GatewaySubnet"


ZONE_NAME = "privatelink.vaultcore.azure.net"
ZONE = f"{NET}/privateDnsZones/{ZONE_NAME}"


def test_private_dns_zone_and_link(box: Sandbox, vnet: dict) -> None:
    """PrivateZonePut.json / VirtualNetworkLinkPut.json: "Global" in, "global" out; counts; link Completed."""
    example = load_example("private-dns-zone/PrivateZonePut.json")
    assert example["parameters"]["parameters"]["location"] == "Global"
    zone = put(box, "Microsoft.Network/privateDnsZones", ZONE, {"location": "Global"})
    assert zone["location"] == "global"
    assert set(example["responses"]["200"]["body"]["properties"]) <= set(zone["properties"])
    assert (zone["properties"]["numberOfRecordSets"], zone["properties"]["numberOfVirtualNetworkLinks"]) == (1, 0)
    link_kind = "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
    link = put(
        box,
        link_kind,
        f"{ZONE}/virtualNetworkLinks/{VNET}-link",
        {"location": "global", "properties": {"virtualNetwork": {"id": VNET_ID}, "registrationEnabled": False}},
    )
    assert link["properties"]["virtualNetworkLinkState"] == "Completed" and link["location"] == "global"
    counted = get(box, "Microsoft.Network/privateDnsZones", ZONE)["properties"]
    assert (counted["numberOfVirtualNetworkLinks"], counted["numberOfVirtualNetworkLinksWithRegistration"]) == (1, 0)


# ---- private endpoints and the vault's data plane ----------------------------------------------------
VAULT_ID = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-net-private"
PE_ID = f"{RG}/providers/Microsoft.Network/privateEndpoints/pe-kv-net"


def endpoint_body(target: str, group: str) -> dict:
    return {
        "location": "centralus",
        "properties": {
            "subnet": {"id": f"{VNET_ID}/subnets/snet-endpoints"},
            "privateLinkServiceConnections": [
                {"name": "conn", "properties": {"privateLinkServiceId": target, "groupIds": [group]}}
            ],
        },
    }


@pytest.fixture(scope="module")
def private_vault(box: Sandbox, vnet: dict) -> dict:
    """A vault with public network access disabled, its private endpoint and DNS zone group."""
    put(
        box,
        "Microsoft.KeyVault/vaults",
        VAULT_ID,
        {
            "location": "centralus",
            "properties": {
                "tenantId": SANDBOX_SUBSCRIPTION,
                "sku": {"family": "A", "name": "standard"},
                "publicNetworkAccess": "Disabled",
            },
        },
    )
    return put(box, "Microsoft.Network/privateEndpoints", PE_ID, endpoint_body(VAULT_ID, "vault"))


def test_private_endpoint_to_a_vault(box: Sandbox, private_vault: dict, network: NetworkManagementClient) -> None:
    """PrivateEndpointCreate.json's extras; the vault lists the connection; the zone group's A record."""
    example = load_example("private-endpoint/PrivateEndpointCreate.json")["responses"]["201"]["body"]["properties"]
    props = network.private_endpoints.get(GROUP, "pe-kv-net").as_dict()["properties"]
    [connection] = props["privateLinkServiceConnections"]
    assert (
        connection["properties"]["privateLinkServiceConnectionState"]
        == (example["privateLinkServiceConnections"][0]["properties"]["privateLinkServiceConnectionState"])
    )
    assert connection["id"] == f"{PE_ID}/privateLinkServiceConnections/conn"
    [nic] = props["networkInterfaces"]
    assert "/providers/Microsoft.Network/networkInterfaces/pe-kv-net.nic." in nic["id"]
    [dns] = props["customDnsConfigs"]
    address = dns["ipAddresses"][0]
    assert dns["fqdn"] == "kv-net-private.vault.azure.net"
    assert ipaddress.ip_address(address) in ipaddress.ip_network(SUBNETS["snet-endpoints"])
    assert int(ipaddress.ip_address(address)) - int(ipaddress.ip_network(SUBNETS["snet-endpoints"]).network_address) >= 4
    vault = get(box, "Microsoft.KeyVault/vaults", VAULT_ID)["properties"]
    [listed] = vault["privateEndpointConnections"]
    assert listed["properties"]["privateEndpoint"]["id"] == PE_ID
    assert listed["properties"]["privateLinkServiceConnectionState"]["status"] == "Approved"
    put(box, "Microsoft.Network/privateDnsZones", ZONE, {"location": "global"})
    group = put(
        box,
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        f"{PE_ID}/privateDnsZoneGroups/default",
        {"properties": {"privateDnsZoneConfigs": [{"name": "kv", "properties": {"privateDnsZoneId": ZONE}}]}},
    )
    example_group = load_example("private-endpoint-dns-zone-group/PrivateEndpointDnsZoneGroupCreate.json")["responses"]["201"][
        "body"
    ]
    [record] = group["properties"]["privateDnsZoneConfigs"][0]["properties"]["recordSets"]
    assert set(record) == set(example_group["properties"]["privateDnsZoneConfigs"][0]["properties"]["recordSets"][0])
    assert record == {
        "recordType": "A",
        "recordSetName": "kv-net-private",
        "fqdn": f"kv-net-private.{ZONE_NAME}",
        "ipAddresses": [address],
    }
    assert "type" not in group and "type" not in example_group
    assert get(box, "Microsoft.Network/privateDnsZones", ZONE)["properties"]["numberOfRecordSets"] == 2  # SOA + A


def test_private_endpoint_refusals_and_registry_names(box: Sandbox, vnet: dict) -> None:
    """groupIds must fit the target; the target must exist; a registry endpoint answers for its data endpoint too."""
    kind = "Microsoft.Network/privateEndpoints"
    registry = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrnet"
    put(box, "Microsoft.ContainerRegistry/registries", registry, {"location": "centralus", "sku": {"name": "Premium"}})
    assert (
        refused_put(box, kind, f"{RG}/providers/Microsoft.Network/privateEndpoints/pe-bad", endpoint_body(registry, "vault")).code
        == "BadRequest"
    )
    missing = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-missing"
    assert refused_put(
        box, kind, f"{RG}/providers/Microsoft.Network/privateEndpoints/pe-bad", endpoint_body(missing, "vault")
    ).code == ("InvalidResourceReference")
    names = put(box, kind, f"{RG}/providers/Microsoft.Network/privateEndpoints/pe-acr", endpoint_body(registry, "registry"))
    fqdns = [c["fqdn"] for c in names["properties"]["customDnsConfigs"]]
    assert fqdns == ["acrnet.azurecr.io", "acrnet.centralus.data.azurecr.io"]
    addresses = [c["ipAddresses"][0] for c in names["properties"]["customDnsConfigs"]]
    assert len(set(addresses)) == len(addresses)


def test_endpoint_keeps_its_subnet_from_being_deleted(
    box: Sandbox, private_vault: dict, network: NetworkManagementClient
) -> None:
    """A VNet PUT leaving out a used subnet, or a DELETE of it: InUseSubnetCannotBeDeleted, nothing changed."""
    without = {name: prefix for name, prefix in SUBNETS.items() if name != "snet-endpoints"}
    error = refused(lambda: network.virtual_networks.begin_create_or_update(GROUP, VNET, vnet_body(without)).result())
    assert (error.status_code, error.error.code) == (400, "InUseSubnetCannotBeDeleted")
    assert PE_ID.lower() in error.message.lower()
    error = refused(lambda: network.subnets.begin_delete(GROUP, VNET, "snet-endpoints").result())
    assert error.error.code == "InUseSubnetCannotBeDeleted"
    assert sorted(s.name for s in network.subnets.list(GROUP, VNET)) == sorted(SUBNETS)


def test_private_vault_refuses_its_data_plane_off_the_vpn(box: Sandbox, private_vault: dict) -> None:
    """publicNetworkAccess Disabled: 403 Forbidden / ForbiddenByConnection unless the caller is on the VPN."""
    vault = get(box, "Microsoft.KeyVault/vaults", VAULT_ID)
    client = box.provider.secret_client(vault["properties"]["vaultUri"])
    assert box.control("GET", "/vpn") == {"connected": True}  # the default: a sandbox deploy is "on the VPN"
    client.set_secret("on-vpn", "value-1")
    box.control("PUT", "/vpn", {"connected": False})
    try:
        error = refused(lambda: client.get_secret("on-vpn"))
        assert error.status_code == 403 and error.error.code == "Forbidden"
        assert error.error.innererror["code"] == "ForbiddenByConnection"
        assert error.error.message.startswith("Public network access is disabled and request is not from a trusted service")
        refused(lambda: client.set_secret("off-vpn", "value-2"))
    finally:
        box.control("PUT", "/vpn", {"connected": True})
    assert client.get_secret("on-vpn").value == "value-1"
    assert [s.name for s in client.list_properties_of_secrets()] == ["on-vpn"]  # nothing was written off the VPN
