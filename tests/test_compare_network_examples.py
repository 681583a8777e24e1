"""The one diff against the real examples of prod's private-network types (tests/data/arm-examples).

For each of the eleven types the example's request body is the desired state and its response
body the actual state: compare.diff_resource must find no difference (the example file is named
in each case). Then each normalisation rule the network types carry (normalise.yaml, plus the
location rule every type has) is shown to matter: a value cased as Azure may answer it compares
equal with the rule and differs without it.

No new rule was needed for these examples: none of their responses re-cases a value its request
sent (private DNS answers "global" for "Global", which the location rule already covers).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deploykit.engine.compare import diff_resource, keep_undeclared, rules_for
from tests.conftest import load_example

# (example file, ARM type, request parameter, write-only paths the engine never compares)
NETWORK_EXAMPLES = [
    ("virtual-network/VirtualNetworkCreate.json", "Microsoft.Network/virtualNetworks", "parameters", ()),
    ("subnet/SubnetCreateWithDelegation.json", "Microsoft.Network/virtualNetworks/subnets", "subnetParameters", ()),
    ("network-security-group/NetworkSecurityGroupCreate.json", "Microsoft.Network/networkSecurityGroups", "parameters", ()),
    ("public-ip/PublicIpAddressCreateDefaults.json", "Microsoft.Network/publicIPAddresses", "parameters", ()),
    (
        "virtual-network-gateway/VirtualNetworkGatewayUpdate.json",
        "Microsoft.Network/virtualNetworkGateways",
        "parameters",
        ("properties.vpnClientConfiguration.radiusServers.radiusServerSecret",),  # azure-facts.md 2.5: never returned
    ),
    ("dns-resolver/DnsResolver_Put.json", "Microsoft.Network/dnsResolvers", "parameters", ()),
    (
        "dns-resolver-inbound-endpoint/InboundEndpoint_Put.json",
        "Microsoft.Network/dnsResolvers/inboundEndpoints",
        "parameters",
        (),
    ),
    ("private-dns-zone/PrivateZonePut.json", "Microsoft.Network/privateDnsZones", "parameters", ()),
    (
        "private-dns-vnet-link/VirtualNetworkLinkPut.json",
        "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "parameters",
        (),
    ),
    ("private-endpoint/PrivateEndpointCreate.json", "Microsoft.Network/privateEndpoints", "parameters", ()),
    (
        "private-endpoint-dns-zone-group/PrivateEndpointDnsZoneGroupCreate.json",
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        "parameters",
        (),
    ),
]
# PrivateEndpointCreate.json is written by hand: its responses do not echo the request's
# ipVersionType (and only that). The test removes it from the request and says so.
NOT_ECHOED = {"private-endpoint/PrivateEndpointCreate.json": ("properties", "ipVersionType")}


def _pairs(example: str, param: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    data = load_example(example)
    request = copy.deepcopy(data["parameters"][param])
    if example in NOT_ECHOED:
        parent, field = NOT_ECHOED[example]
        assert field in request[parent]
        assert all(field not in r["body"][parent] for r in data["responses"].values() if r.get("body"))
        del request[parent][field]
    return [(code, request, r["body"]) for code, r in data["responses"].items() if r.get("body")]


def test_every_network_type_has_an_example() -> None:
    """The eleven types of steps 6 and 7, one example each (their request and answer bodies)."""
    kinds = {kind for _, kind, _, _ in NETWORK_EXAMPLES}
    assert len(kinds) == len(NETWORK_EXAMPLES) == 11


@pytest.mark.parametrize(("example", "kind", "param", "write_only"), NETWORK_EXAMPLES, ids=[e[0] for e in NETWORK_EXAMPLES])
def test_example_answer_matches_its_request(example: str, kind: str, param: str, write_only: tuple[str, ...]) -> None:
    pairs = _pairs(example, param)
    assert pairs, f"{example} has no answer body"
    for code, request, answer in pairs:
        assert request, f"{example}: empty request"
        assert diff_resource(kind, request, answer, write_only) == {}, f"{example} response {code}"


def test_the_gateway_secret_is_why_it_is_write_only() -> None:
    """VirtualNetworkGatewayUpdate.json sends radiusServerSecret and never answers it: compared, it would be drift."""
    [(_, request, answer), *_] = _pairs("virtual-network-gateway/VirtualNetworkGatewayUpdate.json", "parameters")
    found = diff_resource("Microsoft.Network/virtualNetworkGateways", request, answer)
    assert set(found) == {"properties.vpnClientConfiguration.radiusServers[0].radiusServerSecret"}


def test_private_zone_location_global_in_any_casing() -> None:
    """PrivateZonePut.json and VirtualNetworkLinkPut.json send "Global" and answer "global" (the location rule)."""
    for example, kind in (
        ("private-dns-zone/PrivateZonePut.json", "Microsoft.Network/privateDnsZones"),
        ("private-dns-vnet-link/VirtualNetworkLinkPut.json", "Microsoft.Network/privateDnsZones/virtualNetworkLinks"),
    ):
        for _, request, answer in _pairs(example, "parameters"):
            assert (request["location"], answer["location"]) == ("Global", "global")
            assert diff_resource(kind, {"location": request["location"]}, answer) == {}
            # The same casing difference outside `location` is a difference: the rule is what hides it.
            assert diff_resource(kind, {"tags": {"key1": answer["tags"]["key1"].upper()}}, answer)


def _value_at(body: Any, dotted: str) -> Any:
    node = body
    for part in dotted.split("."):
        node = node[0] if isinstance(node, list) else node
        node = node[part]
    return node


def _with_value(dotted: str, value: Any) -> dict[str, Any]:
    """The smallest body declaring `value` at `dotted` (list levels become one-item lists of named items)."""
    out: Any = value
    parts = dotted.split(".")
    lists = {"securityRules", "vpnClientRevokedCertificates"}
    for part in reversed(parts):
        out = {part: [{"name": "item", **out}] if part in lists else out}
    return out


def _rule_cases() -> list[tuple[str, str, Any]]:
    """(type, path, a value Azure answers there): from the examples, else from azure-facts.md 3.20."""
    nsg = load_example("network-security-group/NetworkSecurityGroupCreate.json")["responses"]["201"]["body"]
    gateway = load_example("virtual-network-gateway/VirtualNetworkGatewayUpdate.json")["responses"]["200"]["body"]
    default_rule = nsg["properties"]["defaultSecurityRules"][0]["properties"]  # the example's own rule values
    facts = {  # azure-facts.md 3.18 and 3.20's PUT bodies: the examples have no rule protocol but "*",
        # no auth types and no revocations
        "properties.securityRules.properties.protocol": "Tcp",
        "properties.vpnClientConfiguration.vpnAuthenticationTypes": ["Certificate"],
        "properties.vpnClientConfiguration.vpnClientRevokedCertificates.properties.thumbprint": "ab" * 20,
    }
    cases = []
    for kind, body in (("Microsoft.Network/networkSecurityGroups", None), ("Microsoft.Network/virtualNetworkGateways", gateway)):
        for path in sorted(rules_for(kind).case_insensitive - rules_for("default").case_insensitive):
            if path in facts:
                value = facts[path]
            elif body is None:
                value = default_rule[path.rsplit(".", 1)[-1]]
            else:
                value = _value_at(body, path)
            cases.append((kind, path, value))
    return cases


@pytest.mark.parametrize(("kind", "path", "value"), _rule_cases(), ids=[f"{c[0]}:{c[1]}" for c in _rule_cases()])
def test_each_network_casing_rule_is_needed(kind: str, path: str, value: Any) -> None:
    """With the rule a re-cased value is equal; the same pair under a type without the rule differs."""
    assert path in rules_for(kind).case_insensitive
    if isinstance(value, list):
        actual, desired = _with_value(path, value), _with_value(path, [v.swapcase() for v in value])
    else:
        actual, desired = _with_value(path, value), _with_value(path, str(value).swapcase())
    assert desired != actual  # a value with letters: its casing can differ
    assert diff_resource(kind, desired, actual) == {}
    assert diff_resource("Microsoft.Network/unruledTypes", desired, actual) != {}


def test_hand_made_gateway_entries_are_kept_not_compared() -> None:
    """extra_items_kept: a root Azure has that the playbook does not name is neither drift nor dropped."""
    kind = "Microsoft.Network/virtualNetworkGateways"
    roots = "properties.vpnClientConfiguration.vpnClientRootCertificates"
    assert roots in rules_for(kind).extra_items_kept
    ours = {"name": "deploykit-root-1", "properties": {"publicCertData": "MIIBours"}}
    theirs = {"name": "manual-root", "properties": {"publicCertData": "MIIBtheirs"}}
    actual = {"properties": {"vpnClientConfiguration": {"vpnClientRootCertificates": [ours, theirs]}}}
    desired = {"properties": {"vpnClientConfiguration": {"vpnClientRootCertificates": [ours]}}}
    assert diff_resource(kind, desired, actual) == {}
    assert diff_resource("Microsoft.Network/unruledTypes", desired, actual) != {}


def test_gateway_lists_the_playbook_does_not_declare_stay_whole_in_a_put() -> None:
    """Without certs/<env>/index.json step 6 declares no lists: an update PUT must carry Azure's (a PUT replaces)."""
    kind = "Microsoft.Network/virtualNetworkGateways"
    ours = {"name": "deploykit-root-1", "properties": {"publicCertData": "MIIBours"}}
    revoked = {"name": "old-laptop", "properties": {"thumbprint": "AB" * 20}}
    actual = {
        "properties": {"vpnClientConfiguration": {"vpnClientRootCertificates": [ours], "vpnClientRevokedCertificates": [revoked]}}
    }
    desired = {"properties": {"vpnClientConfiguration": {"vpnClientProtocols": ["IkeV2", "OpenVPN"]}}}
    sent = keep_undeclared(kind, desired, actual)["properties"]["vpnClientConfiguration"]
    assert sent["vpnClientRootCertificates"] == [ours] and sent["vpnClientRevokedCertificates"] == [revoked]
    assert sent["vpnClientProtocols"] == ["IkeV2", "OpenVPN"]


def test_an_empty_declared_list_keeps_hand_made_items_without_drift() -> None:
    """No revocations of ours yet and one made by hand: no difference, and the PUT keeps it."""
    kind = "Microsoft.Network/virtualNetworkGateways"
    revoked = {"name": "old-laptop", "properties": {"thumbprint": "AB" * 20}}
    actual = {"properties": {"vpnClientConfiguration": {"vpnClientRevokedCertificates": [revoked]}}}
    desired = {"properties": {"vpnClientConfiguration": {"vpnClientRevokedCertificates": []}}}
    assert diff_resource(kind, desired, actual) == {}
    assert keep_undeclared(kind, desired, actual)["properties"]["vpnClientConfiguration"]["vpnClientRevokedCertificates"] == [
        revoked
    ]
    ours = {"name": "deploykit-root-9", "properties": {"publicCertData": "MIIBretired"}}
    retired = {"properties": {"vpnClientConfiguration": {"vpnClientRootCertificates": [ours]}}}
    wanted = {"properties": {"vpnClientConfiguration": {"vpnClientRootCertificates": []}}}
    assert list(diff_resource(kind, wanted, retired)) == [
        "properties.vpnClientConfiguration.vpnClientRootCertificates[deploykit-root-9]"
    ]
