"""Prod's private network as Azure answers it: VNets and subnets, NSGs, public IPs, the VPN gateway,
the DNS Private Resolver and its inbound endpoint, private DNS zones and links, private endpoints
and their DNS zone groups.

Shapes follow the real examples in tests/data/arm-examples (file named beside each entry) and
azure-facts.md 3.16-3.23 and 7, azure-facts-2.md 6. Error codes come from public error output
(the source is named beside each); a code or message marked UNVERIFIED is the sandbox's best guess.

Subnets live twice, kept in step by these hooks: inside their VNet's `properties.subnets` (as
the VNet GET shows them) and as their own records `{vnet}/subnets/{name}` (the child GET and PUT,
and a parent for nothing). A VNet PUT with `subnets` is authoritative; without them it keeps
them (azure-facts.md 3.16). Addresses (subnet ranges, private IPs) are real IPv4 arithmetic:
an endpoint takes the first free address of its subnet from .4 (Azure keeps .0-.3).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import uuid
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from deploykit.sandbox.armtype import PRIVATE, ArmType, State
from deploykit.sandbox.bodies import properties, stored_body
from deploykit.sandbox.ids import ArmError, ParsedId

VNET = "Microsoft.Network/virtualNetworks"
SUBNET = "Microsoft.Network/virtualNetworks/subnets"
NSG = "Microsoft.Network/networkSecurityGroups"
PIP = "Microsoft.Network/publicIPAddresses"
GATEWAY = "Microsoft.Network/virtualNetworkGateways"
RESOLVER = "Microsoft.Network/dnsResolvers"
INBOUND = "Microsoft.Network/dnsResolvers/inboundEndpoints"
ZONE = "Microsoft.Network/privateDnsZones"
LINK = "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
ENDPOINT = "Microsoft.Network/privateEndpoints"
ZONE_GROUP = "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
GATEWAY_SUBNET = "GatewaySubnet"

# Durations of a gateway's operations when the server names none (server.Faults holds the live ones).
GATEWAY_SECONDS = 3.0
GATEWAY_UPDATE_SECONDS = 1.0

# Non-AZ gateway SKUs can no longer be created (azure-facts-2.md 6; about-gateway-skus.md).
NON_AZ_SKUS = frozenset({"vpngw1", "vpngw2", "vpngw3", "vpngw4", "vpngw5", "standard", "highperformance"})

# Delegation `actions` the service fills in, per service name. UNVERIFIED: the values are those
# `az network vnet subnet list-available-delegations` prints for these services; the subnet
# example (SubnetCreateWithDelegation.json) shows [] for its made-up service, as do unknown ones here.
DELEGATION_ACTIONS = {
    "microsoft.dbforpostgresql/flexibleservers": ["Microsoft.Network/virtualNetworks/subnets/join/action"],
    "microsoft.network/dnsresolvers": ["Microsoft.Network/virtualNetworks/subnets/join/action"],
    "microsoft.app/environments": ["Microsoft.Network/virtualNetworks/subnets/join/action"],
}

# Private Link targets: lower-cased type -> (groupId, public DNS suffix) (azure-facts.md 3.22's table;
# a record in the zone is the public name less this suffix: kv-x.vault.azure.net -> kv-x).
LINK_TARGETS = {
    "microsoft.keyvault/vaults": ("vault", "vault.azure.net"),
    "microsoft.containerregistry/registries": ("registry", "azurecr.io"),
    "microsoft.cache/redis": ("redisCache", "redis.cache.windows.net"),
    "microsoft.dbforpostgresql/flexibleservers": ("postgresqlServer", "postgres.database.azure.com"),
}

# NetworkSecurityGroupCreate.json: the six rules every NSG answers with.
# (name, description, access, destinationAddressPrefix, direction, priority, sourceAddressPrefix)
DEFAULT_RULES = (
    (
        "AllowVnetInBound",
        "Allow inbound traffic from all VMs in VNET",
        "Allow",
        "VirtualNetwork",
        "Inbound",
        65000,
        "VirtualNetwork",
    ),
    (
        "AllowAzureLoadBalancerInBound",
        "Allow inbound traffic from azure load balancer",
        "Allow",
        "*",
        "Inbound",
        65001,
        "AzureLoadBalancer",
    ),
    ("DenyAllInBound", "Deny all inbound traffic", "Deny", "*", "Inbound", 65500, "*"),
    (
        "AllowVnetOutBound",
        "Allow outbound traffic from all VMs to all VMs in VNET",
        "Allow",
        "VirtualNetwork",
        "Outbound",
        65000,
        "VirtualNetwork",
    ),
    ("AllowInternetOutBound", "Allow outbound traffic from all VMs to Internet", "Allow", "Internet", "Outbound", 65001, "*"),
    ("DenyAllOutBound", "Deny all outbound traffic", "Deny", "*", "Outbound", 65500, "*"),
)

# Answered by a private endpoint connection Azure approves itself (PrivateEndpointCreate.json and
# PrivateEndpointGet.json spell the description "Auto-approved").
APPROVED = {"status": "Approved", "description": "Auto-approved", "actionsRequired": "None"}


def _frozen(data: dict[str, Any]) -> MappingProxyType:
    return MappingProxyType(data)


def _weak_etag() -> str:
    """Network RP etags are weak (azure-facts.md 2.8; VirtualNetworkGatewayUpdate.json)."""
    return f'W/"{uuid.uuid4()}"'


def _stable(*parts: str) -> str:
    """A hex digest stable for the same inputs (addresses and names that must not change between GETs)."""
    return hashlib.sha256("|".join(p.lower() for p in parts).encode()).hexdigest()


def _guid(body: dict[str, Any]) -> None:
    """resourceGuid: assigned once at creation (every network example's GET carries one)."""
    body.setdefault("properties", {})["resourceGuid"] = str(uuid.uuid4())


def _spec(name: str) -> ArmType:
    return next(t for t in TYPES if t.name == name)


def _bad(code: str, message: str, status: int = 400) -> ArmError:
    return ArmError(status, code, message)


def _record(state: State, rid: str | None) -> dict[str, Any] | None:
    return state["resources"].get(str(rid).lower()) if rid else None


def _require(state: State, rid: Any, referrer: str) -> dict[str, Any]:
    """A referenced resource must exist. Code and wording as the network RP answers a missing
    NSG or public IP reference (UNVERIFIED for the other referrers)."""
    found = _record(state, rid) if isinstance(rid, str) else None
    if found is None:
        raise _bad(
            "InvalidResourceReference",
            f"Resource {rid} referenced by resource {referrer} was not found. Please make sure that the referenced "
            "resource exists, and that both resources are in the same region.",
        )
    return found


def _ref_id(value: Any) -> str | None:
    """`{"id": "..."}` -> the id."""
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None


def _replace(state: State, record: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    """Change another resource: a new record replaces the entry (the store logs replaced entries)."""
    fresh = copy.deepcopy(record)
    change(fresh["body"])
    state["resources"][fresh["id"].lower()] = fresh


def _rp_state(out: dict[str, Any]) -> None:
    """The network RP answers Updating for a create in flight too (UNVERIFIED for types other than the gateway)."""
    props = out.get("properties")
    if isinstance(props, dict) and props.get("provisioningState") == "Creating":
        props["provisioningState"] = "Updating"


# ---- addresses -------------------------------------------------------------------------------
def _network(prefix: Any, owner: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A prefix as sent, in canonical CIDR form (host bits zero), or Azure's InvalidCIDRNotation."""
    try:
        return ipaddress.ip_network(str(prefix), strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            raise _bad(
                "InvalidCIDRNotation", f"The address prefix {prefix} in resource {owner} has an invalid CIDR notation."
            ) from None
        raise _bad(
            "InvalidCIDRNotation",
            f"The address prefix {prefix} in resource {owner} has an invalid CIDR notation. "
            f"For the given prefix length, the address prefix should be {fixed}.",
        ) from None


def _subnet_prefixes(props: dict[str, Any]) -> list[Any]:
    many = props.get("addressPrefixes")
    if isinstance(many, list) and many:
        return many
    return [props["addressPrefix"]] if props.get("addressPrefix") else []


def _space(vnet_id: str, props: dict[str, Any]) -> list[Any]:
    space = props.get("addressSpace") if isinstance(props.get("addressSpace"), dict) else {}
    prefixes = space.get("addressPrefixes") if isinstance(space.get("addressPrefixes"), list) else []
    return [_network(p, vnet_id) for p in prefixes]


def _inside(net: Any, space: list[Any]) -> bool:
    return any(net.version == s.version and net.subnet_of(s) for s in space)


def _check_subnets(state: State, vnet_name: str, vnet_id: str, space: list[Any], subnets: list[tuple[str, dict]]) -> None:
    """What Azure checks of a VNet's subnets: CIDR form, inside the address space, no overlaps, NSGs.

    NetcfgSubnetRangeOutsideVnet's wording is az's output for it; NetcfgSubnetRangesOverlap's is
    UNVERIFIED (the code is seen in real output, the message is a close guess).
    """
    ranges: list[tuple[str, Any]] = []
    for name, props in subnets:
        subnet_id = f"{vnet_id}/subnets/{name}"
        nets = [_network(p, subnet_id) for p in _subnet_prefixes(props)]
        if not nets:
            raise _bad("NoAddressPrefixOrPoolProvided", f"Subnet {subnet_id} has no address prefix.")  # UNVERIFIED code
        for net in nets:
            if space and not _inside(net, space):
                raise _bad(
                    "NetcfgSubnetRangeOutsideVnet",
                    f"Subnet '{name}' is not valid because its IP address range is outside the IP address range "
                    f"of virtual network '{vnet_name}'.",
                )
            for other, other_net in ranges:
                if other_net.version == net.version and other_net.overlaps(net):
                    raise _bad(
                        "NetcfgSubnetRangesOverlap",
                        f"Subnet '{name}' is not valid because its IP address range overlaps with that of an existing "
                        f"subnet '{other}' in virtual network '{vnet_name}'.",
                    )
        ranges.extend((name, net) for net in nets)
        nsg = _ref_id(props.get("networkSecurityGroup"))
        if nsg is not None:
            if name.lower() == GATEWAY_SUBNET.lower():
                # Azure-Terraform/terraform-azurerm-virtual-network#18 (real output)
                raise _bad(
                    "NetworkSecurityGroupCannotBeAttachedToGatewaySubnet",
                    f"The operation failed because the network security group {nsg.rsplit('/', 1)[-1]} can not be "
                    "associated to the GatewaySubnet. Please remove the network security group associated to the "
                    "GatewaySubnet. No changes have occurred on the gateway at this time. "
                    "See here for additional details: https://aka.ms/GatewaySubnet.",
                )
            _require(state, nsg, subnet_id)


def _mentions(node: Any, target: str) -> bool:
    if isinstance(node, str):
        return node.lower() == target
    if isinstance(node, dict):
        return any(_mentions(v, target) for k, v in node.items() if k != PRIVATE)
    if isinstance(node, list):
        return any(_mentions(v, target) for v in node)
    return False


def _user_of(state: State, subnet_id: str) -> str | None:
    """The first resource (not a VNet or subnet) whose body names the subnet: an endpoint, gateway, environment..."""
    target = subnet_id.lower()
    for record in state["resources"].values():
        if record["type"] in (VNET, SUBNET):
            continue
        if _mentions(record["body"], target):
            return record["id"]
    return None


def _in_use(subnet_id: str, user: str) -> ArmError:
    """InUseSubnetCannotBeDeleted, worded as the network RP does (quoted in terraform-provider-azurerm's sources)."""
    return _bad(
        "InUseSubnetCannotBeDeleted",
        f"Subnet {subnet_id.rsplit('/', 1)[-1]} is in use by {user} and cannot be deleted. In order to delete the "
        "subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.",
    )


def _used_addresses(state: State, subnet_id: str, skip: str) -> set[str]:
    """Private addresses taken in a subnet by endpoints and resolver endpoints (except the resource `skip`)."""
    target = subnet_id.lower()
    used: set[str] = set()
    for key, record in state["resources"].items():
        if key == skip:
            continue
        props = properties(record["body"])
        if record["type"] == INBOUND:
            for config in props.get("ipConfigurations") or []:
                if isinstance(config, dict) and str(_ref_id(config.get("subnet"))).lower() == target:
                    used.add(str(config.get("privateIpAddress")))
        elif record["type"] == ENDPOINT and str(_ref_id(props.get("subnet"))).lower() == target:
            for entry in props.get("customDnsConfigs") or []:
                used.update(str(a) for a in entry.get("ipAddresses") or [])
    return used


def _allocate(state: State, subnet: dict[str, Any], skip: str, count: int, keep: list[str]) -> list[str]:
    """`count` private addresses from the subnet: those in `keep` still inside it first, then the first free from .4."""
    nets = [ipaddress.ip_network(p, strict=False) for p in _subnet_prefixes(properties(subnet["body"]))]
    nets = [n for n in nets if n.version == 4]
    used = _used_addresses(state, subnet["id"], skip)
    chosen = [a for a in keep if a not in used and any(ipaddress.ip_address(a) in n for n in nets)][:count]
    for net in nets:
        for offset in range(4, net.num_addresses - 1):  # .0-.3 and the last are Azure's
            if len(chosen) >= count:
                return chosen
            address = str(net.network_address + offset)
            if address not in used and address not in chosen:
                chosen.append(address)
    if len(chosen) < count:
        raise _bad("SubnetIsFull", f"Subnet {subnet['id']} has no free private IP address.")  # UNVERIFIED code
    return chosen


# ---- VNet and subnets (virtual-network/VirtualNetworkCreate.json, subnet/SubnetCreateWithDelegation.json)
def _subnet_body(subnet_id: str, sent: dict[str, Any]) -> dict[str, Any]:
    """A subnet as Azure keeps it: what was sent, read-only fields replaced, delegations completed."""
    props = {k: copy.deepcopy(v) for k, v in sent.items() if k not in {"provisioningState", "purpose", "ipConfigurations"}}
    # UNVERIFIED defaults: what az shows for a subnet created without them.
    props.setdefault("privateEndpointNetworkPolicies", "Disabled")
    props.setdefault("privateLinkServiceNetworkPolicies", "Enabled")
    delegations = []
    for item in sent.get("delegations") or []:
        if not isinstance(item, dict):
            continue
        service = str(properties(item).get("serviceName", ""))
        name = str(item.get("name") or service)
        delegations.append(
            {
                "name": name,
                "id": f"{subnet_id}/delegations/{name}",
                "etag": _weak_etag(),
                "properties": {
                    "serviceName": service,
                    "actions": list(DELEGATION_ACTIONS.get(service.lower(), [])),
                    "provisioningState": "Succeeded",
                },
            }
        )
    props["delegations"] = delegations
    props["purpose"] = ""  # SubnetCreateWithDelegation.json answers "" even with a delegation
    props["provisioningState"] = "Succeeded"
    return {"etag": _weak_etag(), "properties": props}


def _embedded(name: str, subnet_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A subnet as its VNet's GET lists it (VirtualNetworkGet.json: name, id, properties; etag as the network RP adds)."""
    return {"name": name, "id": subnet_id, **copy.deepcopy(body)}


def _subnets_of(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    found = properties(record["body"]).get("subnets") if record else None
    return [s for s in found or [] if isinstance(s, dict) and s.get("name")]


def _vnet_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """Check the address space and subnets; with `subnets`, the list is authoritative (left-out ones deleted)."""
    vnet_id = existing["id"] if existing else parsed.id
    props = properties(request)
    space = _space(vnet_id, props)
    authoritative = isinstance(props.get("subnets"), list)
    wanted = [s for s in props["subnets"] if isinstance(s, dict)] if authoritative else _subnets_of(existing)
    if any(not s.get("name") for s in wanted):
        raise _bad("InvalidRequestFormat", "Cannot parse the request: every subnet needs a name.")  # UNVERIFIED
    _check_subnets(state, parsed.name, vnet_id, space, [(str(s["name"]), properties(s)) for s in wanted])
    names = {str(s["name"]).lower() for s in wanted}
    removed = [s for s in _subnets_of(existing) if str(s["name"]).lower() not in names] if authoritative else []
    for subnet in removed:  # every check before any change: a refused PUT changes nothing
        user = _user_of(state, subnet["id"])
        if user is not None:
            raise _in_use(subnet["id"], user)
    body = stored_body(_spec(VNET), existing["body"] if existing else None, request)
    body["etag"] = _weak_etag()
    if authoritative:
        for subnet in removed:
            state["resources"].pop(subnet["id"].lower(), None)
        listed = []
        for subnet in wanted:
            subnet_id = f"{vnet_id}/subnets/{subnet['name']}"
            old = _record(state, subnet_id)
            sub_body = _subnet_body(subnet_id, properties(subnet))
            state["resources"][subnet_id.lower()] = {"id": old["id"] if old else subnet_id, "type": SUBNET, "body": sub_body}
            listed.append(_embedded(str(subnet["name"]), old["id"] if old else subnet_id, sub_body))
        body.setdefault("properties", {})["subnets"] = listed
    return body


def _vnet_after_delete(state: State, record: dict[str, Any]) -> None:
    """A VNet whose subnets are in use cannot be deleted (the record is put back before refusing)."""
    for subnet in _subnets_of(record):
        user = _user_of(state, subnet["id"])
        if user is not None:
            state["resources"][record["id"].lower()] = record
            raise _in_use(subnet["id"], user)


def _subnet_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """PUT .../subnets/{name}: checked against its VNet and siblings, then written into the VNet's list too."""
    vnet = state["resources"][str(parsed.container).lower()]
    vnet_props = properties(vnet["body"])
    siblings = [s for s in _subnets_of(vnet) if str(s["name"]).lower() != parsed.name.lower()]
    props = properties(request)
    checked = [(str(s["name"]), properties(s)) for s in siblings] + [(parsed.name, props)]
    _check_subnets(state, vnet["id"].rsplit("/", 1)[-1], vnet["id"], _space(vnet["id"], vnet_props), checked)
    subnet_id = existing["id"] if existing else f"{vnet['id']}/subnets/{parsed.name}"
    body = _subnet_body(subnet_id, props)
    name = subnet_id.rsplit("/", 1)[-1]

    def upsert(vnet_body: dict[str, Any]) -> None:
        listed = [s for s in _subnets_of({"body": vnet_body}) if str(s["name"]).lower() != name.lower()]
        vnet_body.setdefault("properties", {})["subnets"] = [*listed, _embedded(name, subnet_id, body)]
        vnet_body["etag"] = _weak_etag()

    _replace(state, vnet, upsert)
    return body


def _subnet_after_delete(state: State, record: dict[str, Any]) -> None:
    """DELETE .../subnets/{name}: refused while in use; otherwise it leaves its VNet's list too."""
    user = _user_of(state, record["id"])
    if user is not None:
        state["resources"][record["id"].lower()] = record
        raise _in_use(record["id"], user)
    vnet = _record(state, record["id"].rsplit("/subnets/", 1)[0])
    if vnet is not None:
        name = record["id"].rsplit("/", 1)[-1].lower()

        def drop(vnet_body: dict[str, Any]) -> None:
            vnet_body["properties"]["subnets"] = [s for s in _subnets_of({"body": vnet_body}) if str(s["name"]).lower() != name]

        _replace(state, vnet, drop)


def _subnet_computed(out: dict[str, Any], vault_url: Any) -> None:
    """The subnet GET example (SubnetGetWithDelegation.json) has no `type`."""
    out.pop("type", None)
    _rp_state(out)


# ---- NSG (network-security-group/NetworkSecurityGroupCreate.json) ------------------------------
def _nsg_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """Each rule gains its id and provisioningState (NetworkSecurityGroupGet.json)."""
    body = stored_body(_spec(NSG), existing["body"] if existing else None, request)
    nsg_id = existing["id"] if existing else parsed.id
    rules = properties(body).get("securityRules") or []
    if any(not isinstance(rule, dict) or not rule.get("name") for rule in rules):
        raise _bad("InvalidRequestFormat", "Cannot parse the request: every security rule needs a name.")  # UNVERIFIED
    body.setdefault("properties", {})["securityRules"] = _completed_items(rules, nsg_id, "securityRules")
    body["etag"] = _weak_etag()
    return body


def _nsg_after_delete(state: State, record: dict[str, Any]) -> None:
    """An NSG a subnet still names cannot be deleted (code UNVERIFIED: InUseNetworkSecurityGroupCannotBeDeleted)."""
    for other in state["resources"].values():
        if other["type"] == SUBNET and _mentions(properties(other["body"]).get("networkSecurityGroup"), record["id"].lower()):
            state["resources"][record["id"].lower()] = record
            raise _bad(
                "InUseNetworkSecurityGroupCannotBeDeleted",
                f"Network security group {record['id']} cannot be deleted because it is in use by the following "
                f"resources: {other['id']}.",
            )


def _nsg_computed(out: dict[str, Any], vault_url: Any) -> None:
    """The six defaultSecurityRules every NSG answers with, each with its id."""
    props = out.setdefault("properties", {})
    props["defaultSecurityRules"] = [
        {
            "name": name,
            "id": f"{out['id']}/defaultSecurityRules/{name}",
            "properties": {
                "description": description,
                "access": access,
                "destinationAddressPrefix": destination,
                "destinationPortRange": "*",
                "direction": direction,
                "priority": priority,
                "provisioningState": "Succeeded",
                "sourceAddressPrefix": source,
                "sourcePortRange": "*",
                "protocol": "*",
            },
        }
        for name, description, access, destination, direction, priority, source in DEFAULT_RULES
    ]
    _rp_state(out)


# ---- public IP (public-ip/PublicIpAddressCreateDefaults.json) ---------------------------------
def public_address(resource_id: str) -> str:
    """A stable public IPv4 for a public IP resource: the same id always gets the same address (in 20.0.0.0/8)."""
    n = int(_stable("pip", resource_id)[:8], 16)
    return str(ipaddress.IPv4Address(0x14000000 + ((n >> 8) % 0x10000) * 256 + 1 + n % 254))


def _pip_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """Basic/Dynamic when nothing is said (the example); Standard must be Static."""
    body = stored_body(_spec(PIP), existing["body"] if existing else None, request)
    props = body.setdefault("properties", {})
    sku = body["sku"] if isinstance(body.get("sku"), dict) else {}
    standard = str(sku.get("name", "")).lower().startswith("standard")
    method = props.get("publicIPAllocationMethod")
    if method is None:
        props["publicIPAllocationMethod"] = "Static" if standard else "Dynamic"  # UNVERIFIED for Standard
    elif standard and str(method).lower() != "static":
        # the code az prints for it (quoted in public deployment notes)
        raise _bad(
            "StandardAndStandardV2SkuPublicIPAddressesMustBeStatic",
            f"Standard sku publicIp {existing['id'] if existing else parsed.id} must have AllocationMethod set to Static.",
        )
    if standard:
        sku.setdefault("tier", "Regional")  # UNVERIFIED: what a Standard IP answers without a tier
    body["etag"] = _weak_etag()
    return body


def _pip_computed(out: dict[str, Any], vault_url: Any) -> None:
    """A Static IP has its address from creation; a Dynamic one only once attached (the example shows none)."""
    props = out.setdefault("properties", {})
    if str(props.get("publicIPAllocationMethod", "")).lower() == "static" and not props.get("ipAddress"):
        props["ipAddress"] = public_address(out["id"])
    _rp_state(out)


# ---- VPN gateway (virtual-network-gateway/VirtualNetworkGatewayUpdate.json) --------------------
def operation_seconds(type_name: str, created: bool, default: float, gateway: float, gateway_update: float) -> float:
    """How long a long-running PUT of this type takes: gateways their own (configurable) time."""
    if type_name.lower() == GATEWAY.lower():
        return gateway if created else gateway_update
    return default


def _in_flight(state: State, key: str) -> str | None:
    for op_id, op in state["operations"].items():
        if op["resource"] == key and op["status"] == "InProgress":
            return op_id
    return None


def _check_new_gateway(state: State, gateway_id: str, props: dict[str, Any]) -> None:
    """What Azure refuses when a gateway is created (azure-facts-2.md 6, azure-facts.md 7)."""
    sku = props.get("sku") if isinstance(props.get("sku"), dict) else {}
    sku_name = str(sku.get("name", ""))
    if sku_name.lower() in NON_AZ_SKUS:
        raise _bad(
            "NonAzSkusNotAllowedForVPNGateway",
            "VpnGw1-5 non-AZ SKUs are no longer supported for VPN gateways. Only VpnGw1-5AZ SKUs can be created going forward.",
        )
    configs = [c for c in props.get("ipConfigurations") or [] if isinstance(c, dict)]
    if not configs:
        raise _bad("InvalidRequestFormat", "A virtual network gateway needs at least one IP configuration.")  # UNVERIFIED
    for config in configs:
        config_props = properties(config)
        subnet_id = _ref_id(config_props.get("subnet"))
        if subnet_id is None:
            raise _bad("InvalidRequestFormat", "Subnet reference is required for ipconfiguration.")  # UNVERIFIED code
        if subnet_id.rsplit("/", 1)[-1] != GATEWAY_SUBNET:
            raise _bad(  # UNVERIFIED code; the rule is azure-facts.md 3.17
                "InvalidGatewaySubnet",
                f"Subnet {subnet_id} referenced by {gateway_id} is not valid: a virtual network gateway must be in the "
                "subnet named 'GatewaySubnet'.",
            )
        _require(state, subnet_id, gateway_id)
        pip = _require(state, _ref_id(config_props.get("publicIPAddress")), gateway_id)
        pip_sku = str((pip["body"].get("sku") or {}).get("name", "Basic"))
        if pip_sku.lower() == "basic":
            # hashicorp/terraform-provider-azurerm#24112, Azure/Azure-Landing-Zones#475 (real output)
            raise _bad(
                "PublicIpWithBasicSkuNotAllowedOnVPNGateways",
                "Basic IP configuration for VPN Virtual Network Gateways is not supported. Follow the link for more "
                f"details : https://go.microsoft.com/fwlink/p/?linkid=2241350 {gateway_id}",
            )
        if sku_name.lower().endswith("az") and not pip["body"].get("zones"):
            raise _bad(
                "VmssVpnGatewayPublicIpsMustHaveZonesConfigured",
                "Standard Public IPs associated with VPN Gateways with AZ VPN skus must have zones configured.",
            )


def _completed_items(items: Any, parent: str, kind: str) -> list[Any]:
    """Named list items as the GET shows them (gateway certificates, NSG rules): each gains id, etag and
    provisioningState (azure-facts.md 3.18, 3.20)."""
    out = []
    for item in items or []:
        if not isinstance(item, dict) or not item.get("name"):
            out.append(item)
            continue
        props = {k: v for k, v in properties(item).items() if k != "provisioningState"}
        out.append(
            {
                "name": item["name"],
                "id": f"{parent}/{kind}/{item['name']}",
                "etag": _weak_etag(),
                "properties": {**props, "provisioningState": "Succeeded"},
            }
        )
    return out


def _bgp(state: State, gateway_id: str, props: dict[str, Any]) -> dict[str, Any]:
    """bgpSettings, filled even with BGP off: ASN 65515 and the gateway subnet's last usable address."""
    sent = props.get("bgpSettings") if isinstance(props.get("bgpSettings"), dict) else {}
    configs = [c for c in props.get("ipConfigurations") or [] if isinstance(c, dict)]
    peering = None
    tunnel: list[str] = []
    subnet = _record(state, _ref_id(properties(configs[0]).get("subnet"))) if configs else None
    if subnet is not None:
        nets = [ipaddress.ip_network(p, strict=False) for p in _subnet_prefixes(properties(subnet["body"]))]
        if nets:
            peering = str(nets[0].network_address + nets[0].num_addresses - 2)
    pip = _record(state, _ref_id(properties(configs[0]).get("publicIPAddress"))) if configs else None
    if pip is not None:
        tunnel = [str(properties(pip["body"]).get("ipAddress") or public_address(pip["id"]))]
    out = {"asn": 65515, "peerWeight": 0, **sent}
    if peering is not None:
        out.setdefault("bgpPeeringAddress", peering)
        out["bgpPeeringAddresses"] = [
            {
                "ipconfigurationId": f"{gateway_id}/ipConfigurations/{configs[0].get('name')}",
                "defaultBgpIpAddresses": [peering],
                "customBgpIpAddresses": [],
                "tunnelIpAddresses": tunnel,
            }
        ]
    return out


def _gateway_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """One operation at a time; creation checks; the GET extras the service adds (azure-facts.md 3.20)."""
    gateway_id = existing["id"] if existing else parsed.id
    op_id = _in_flight(state, parsed.key)
    if op_id is not None:
        raise _bad(  # 409 AnotherOperationInProgress (the code is seen in public retry lists; wording UNVERIFIED)
            "AnotherOperationInProgress",
            f"Another operation on this or dependent resource is in progress. To retrieve status of the operation "
            f"use uri: {gateway_id}/operations/{op_id}.",
            409,
        )
    props = properties(request)
    old_sku = str((properties(existing["body"]).get("sku") or {}).get("name", "")) if existing else None
    new_sku = str((props.get("sku") or {}).get("name", "")) if isinstance(props.get("sku"), dict) else ""
    if existing is None or old_sku.lower() != new_sku.lower():
        _check_new_gateway(state, gateway_id, props)
    body = stored_body(_spec(GATEWAY), existing["body"] if existing else None, request)
    props = body.setdefault("properties", {})
    configs = props.get("ipConfigurations") or []
    for config in configs:
        if isinstance(config, dict):
            properties(config).setdefault("privateIPAllocationMethod", "Dynamic")
    props["ipConfigurations"] = _completed_items(configs, gateway_id, "ipConfigurations")
    client = props.get("vpnClientConfiguration")
    if isinstance(client, dict):
        for kind in ("vpnClientRootCertificates", "vpnClientRevokedCertificates"):
            if kind in client:
                client[kind] = _completed_items(client[kind], gateway_id, kind)
        for server in client.get("radiusServers") or []:
            if isinstance(server, dict):
                server.pop("radiusServerSecret", None)  # write-only (azure-facts.md 2.5)
    props["bgpSettings"] = _bgp(state, gateway_id, props)
    if isinstance(props.get("sku"), dict):
        props["sku"].setdefault("capacity", 0)  # the example's answer for VpnGw1 (UNVERIFIED for AZ SKUs)
    body["etag"] = _weak_etag()
    for config in props["ipConfigurations"]:  # the public IP now names the configuration it serves
        pip = _record(state, _ref_id(properties(config).get("publicIPAddress"))) if isinstance(config, dict) else None
        if pip is not None:
            config_id = config["id"]
            _replace(state, pip, lambda b, i=config_id: b.setdefault("properties", {}).update({"ipConfiguration": {"id": i}}))
    return body


GATEWAY_DEFAULTS = {
    "properties": {
        # VirtualNetworkGatewayUpdate.json's answer for what its request left out
        "vpnGatewayGeneration": "None",
        "enablePrivateIpAddress": False,
        "activeActive": False,
        "enableBgp": False,
        "disableIPSecReplayProtection": False,
        "allowRemoteVnetTraffic": False,
        "allowVirtualWanTraffic": False,
        "enableBgpRouteTranslationForNat": False,
        "natRules": [],
    }
}


# ---- DNS Private Resolver and inbound endpoint (dns-resolver/DnsResolver_Put.json, ...) ---------
def _resolver_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    _require(state, _ref_id(properties(request).get("virtualNetwork")), existing["id"] if existing else parsed.id)
    body = stored_body(_spec(RESOLVER), existing["body"] if existing else None, request)
    body["etag"] = str(uuid.uuid4())  # DnsResolver_Put.json: a plain GUID, not a weak tag
    return body


def _resolver_computed(out: dict[str, Any], vault_url: Any) -> None:
    out.setdefault("properties", {})["dnsResolverState"] = "Connected"


def _inbound_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """Each configuration's subnet must exist; Dynamic ones get the subnet's first free address (.4 first)."""
    endpoint_id = existing["id"] if existing else parsed.id
    body = stored_body(_spec(INBOUND), existing["body"] if existing else None, request)
    before = properties(existing["body"]).get("ipConfigurations") or [] if existing else []
    configs = []
    for index, config in enumerate(properties(body).get("ipConfigurations") or []):
        if not isinstance(config, dict):
            continue
        subnet = _require(state, _ref_id(config.get("subnet")), endpoint_id)
        _not_gateway_subnet(subnet["id"])
        config = dict(config)
        method = str(config.setdefault("privateIpAllocationMethod", "Dynamic"))
        if method.lower() == "dynamic":
            old = before[index] if index < len(before) and isinstance(before[index], dict) else {}
            same = str(_ref_id(old.get("subnet"))).lower() == subnet["id"].lower()
            keep = [str(old["privateIpAddress"])] if same and old.get("privateIpAddress") else []
            config["privateIpAddress"] = _allocate(state, subnet, parsed.key, 1, keep)[0]
        configs.append(config)
    body.setdefault("properties", {})["ipConfigurations"] = configs
    body["etag"] = str(uuid.uuid4())
    return body


def _inbound_computed(out: dict[str, Any], vault_url: Any) -> None:
    """InboundEndpoint_Put.json and InboundEndpoint_Get.json answer the id without `/dnsResolvers/{name}`: kept."""
    parts = out["id"].split("/")
    lowered = [p.lower() for p in parts]
    if "dnsresolvers" in lowered:
        at = lowered.index("dnsresolvers")
        out["id"] = "/".join(parts[:at] + parts[at + 2 :])


def _not_gateway_subnet(subnet_id: str) -> None:
    """Nothing but a gateway goes into GatewaySubnet (azure-rest-api-specs#11861, real output)."""
    if subnet_id.rsplit("/", 1)[-1] == GATEWAY_SUBNET:
        raise _bad("GatewaySubnet", "Subnet with name 'GatewaySubnet' can be used only for the Gateway resource.")


# ---- private DNS zones and links (private-dns-zone/PrivateZonePut.json, private-dns-vnet-link/...) --
def _global_location(out: dict[str, Any]) -> None:
    """Sent as "Global", answered "global" (PrivateZonePut.json, VirtualNetworkLinkPut.json)."""
    if str(out.get("location", "")).lower() == "global":
        out["location"] = "global"


def _zone_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    body = stored_body(_spec(ZONE), existing["body"] if existing else None, request)
    body.setdefault(PRIVATE, {"records": {}, "links": {}})
    body["etag"] = str(uuid.uuid4())
    body.setdefault("properties", {}).setdefault("internalId", f"{_stable('zone', parsed.id)[:32]}")
    return body


def _zone_computed(out: dict[str, Any], vault_url: Any) -> None:
    """The counts a zone answers with: its SOA plus the A records zone groups made, its links."""
    _global_location(out)
    private = out.get(PRIVATE) if isinstance(out.get(PRIVATE), dict) else {}
    links = private.get("links") or {}
    props = out.setdefault("properties", {})
    props.update(
        {
            "maxNumberOfRecordSets": 5000,
            "maxNumberOfVirtualNetworkLinks": 100,
            "maxNumberOfVirtualNetworkLinksWithRegistration": 50,
            "numberOfRecordSets": 1 + len(private.get("records") or {}),
            "numberOfVirtualNetworkLinks": len(links),
            "numberOfVirtualNetworkLinksWithRegistration": sum(1 for r in links.values() if r),
        }
    )


def _zone_private(body: dict[str, Any]) -> dict[str, Any]:
    private = body.get(PRIVATE)
    if not isinstance(private, dict):
        private = body[PRIVATE] = {}
    private.setdefault("records", {})
    private.setdefault("links", {})
    return private


def _link_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    link_id = existing["id"] if existing else parsed.id
    _require(state, _ref_id(properties(request).get("virtualNetwork")), link_id)
    body = stored_body(_spec(LINK), existing["body"] if existing else None, request)
    body.setdefault("properties", {}).setdefault("registrationEnabled", False)
    body["etag"] = str(uuid.uuid4())
    registration = bool(body["properties"]["registrationEnabled"])
    zone = state["resources"][str(parsed.container).lower()]
    _replace(state, zone, lambda b: _zone_private(b)["links"].update({link_id.lower(): registration}))
    return body


def _link_after_delete(state: State, record: dict[str, Any]) -> None:
    zone = _record(state, record["id"].rsplit("/virtualNetworkLinks/", 1)[0])
    if zone is not None:
        _replace(state, zone, lambda b: _zone_private(b)["links"].pop(record["id"].lower(), None))


def _link_computed(out: dict[str, Any], vault_url: Any) -> None:
    _global_location(out)
    out.setdefault("properties", {})["virtualNetworkLinkState"] = "Completed"


# ---- private endpoints and zone groups (private-endpoint/PrivateEndpointCreate.json, ...) --------
def _fqdns(target: dict[str, Any]) -> tuple[str, list[str]]:
    """The target's group id and the names its endpoint answers for (a registry's data endpoint too)."""
    group, suffix = LINK_TARGETS[target["type"].lower()]
    name = target["id"].rsplit("/", 1)[-1].lower()
    names = [f"{name}.{suffix}"]
    if group == "registry":
        region = str(target["body"].get("location", "")).lower().replace(" ", "")
        names.append(f"{name}.{region}.data.{suffix}")
    return group, names


def _connection_name(endpoint_id: str, target_id: str) -> str:
    return f"{endpoint_id.rsplit('/', 1)[-1]}.{uuid.UUID(_stable(endpoint_id, target_id)[:32])}"


def _check_connection(state: State, endpoint_id: str, connection: dict[str, Any]) -> dict[str, Any]:
    """The target must exist and take the group id asked for (codes from public az output, except where marked)."""
    name = connection.get("name", "")
    props = properties(connection)
    connection_id = f"{endpoint_id}/privateLinkServiceConnections/{name}"
    groups = props.get("groupIds")
    if not isinstance(groups, list) or not groups:
        raise _bad(  # Azure/azure-cli#15136
            "MissingParameterOnPrivateLinkServiceConnection",
            f"Private link service connection {connection_id} is missing required parameter 'group Id'.",
        )
    target = _require(state, props.get("privateLinkServiceId"), endpoint_id)  # UNVERIFIED code for a missing target
    if len(groups) > 1:
        raise _bad(  # DFE-Digital/terraform-azurerm-container-apps-hosting#352
            "OnlyOneGroupIdPermitted",
            f"Private link service connection {connection_id} has the following group Ids: {', '.join(map(str, groups))}. "
            f"Only one group Id is permitted when connecting to a first-party resource ({target['id']}).",
        )
    expected = LINK_TARGETS.get(target["type"].lower(), (None, ""))[0]
    if expected is None or str(groups[0]).lower() != expected.lower():
        # terraform-provider-azurerm#11778 quotes this wording for another RP; code UNVERIFIED
        raise _bad("BadRequest", f"Call to {target['type']} failed. Error message: Invalid groupId")
    return target


def _endpoint_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """Subnet and targets checked; connections approved; a NIC, the endpoint's addresses, and the targets' connection lists."""
    endpoint_id = existing["id"] if existing else parsed.id
    props = properties(request)
    subnet = _require(state, _ref_id(props.get("subnet")), endpoint_id)
    _not_gateway_subnet(subnet["id"])
    connections = [c for c in props.get("privateLinkServiceConnections") or [] if isinstance(c, dict)]
    targets = [_check_connection(state, endpoint_id, c) for c in connections]
    body = stored_body(_spec(ENDPOINT), existing["body"] if existing else None, request)
    out = body.setdefault("properties", {})
    done = []
    for connection in connections:
        name = str(connection.get("name") or "")
        sent = {
            k: v for k, v in properties(connection).items() if k not in {"provisioningState", "privateLinkServiceConnectionState"}
        }
        done.append(
            {
                "name": name,
                "id": f"{endpoint_id}/privateLinkServiceConnections/{name}",
                "etag": _weak_etag(),
                "type": "Microsoft.Network/privateEndpoints/privateLinkServiceConnections",
                "properties": {**sent, "privateLinkServiceConnectionState": dict(APPROVED), "provisioningState": "Succeeded"},
            }
        )
    out["privateLinkServiceConnections"] = done
    names = [fqdn for target in targets for fqdn in _fqdns(target)[1]]
    old = {c["fqdn"]: c["ipAddresses"][0] for c in properties(existing["body"]).get("customDnsConfigs") or []} if existing else {}
    addresses = _allocate(state, subnet, parsed.key, len(names), [old[n] for n in names if n in old])
    out["customDnsConfigs"] = [{"fqdn": n, "ipAddresses": [a]} for n, a in zip(names, addresses, strict=True)]
    nic = f"{parsed.name}.nic.{_stable('nic', endpoint_id)[:8]}"
    group_prefix = endpoint_id.split("/providers/", 1)[0]
    out["networkInterfaces"] = [{"id": f"{group_prefix}/providers/Microsoft.Network/networkInterfaces/{nic}"}]
    body["etag"] = _weak_etag()
    for target in targets:
        connection_id = f"{target['id']}/privateEndpointConnections/{_connection_name(endpoint_id, target['id'])}"
        entry = {
            "id": connection_id,
            "etag": _weak_etag(),
            "properties": {
                "privateEndpoint": {"id": endpoint_id},
                "privateLinkServiceConnectionState": dict(APPROVED),
                "provisioningState": "Succeeded",
            },
        }
        _replace(state, target, lambda b, e=entry: _set_connection(b, e))
    return body


def _set_connection(target_body: dict[str, Any], entry: dict[str, Any] | None, drop: str | None = None) -> None:
    """Put (or drop) one entry of a Private Link target's properties.privateEndpointConnections."""
    props = target_body.setdefault("properties", {})
    current = [c for c in props.get("privateEndpointConnections") or [] if isinstance(c, dict)]
    gone = (entry["id"] if entry else drop or "").lower()
    kept = [c for c in current if str(c.get("id", "")).lower() != gone]
    props["privateEndpointConnections"] = [*kept, entry] if entry else kept


def _endpoint_after_delete(state: State, record: dict[str, Any]) -> None:
    """A deleted endpoint's connections leave their targets' lists."""
    for connection in properties(record["body"]).get("privateLinkServiceConnections") or []:
        target = _record(state, properties(connection).get("privateLinkServiceId"))
        if target is not None:
            drop = f"{target['id']}/privateEndpointConnections/{_connection_name(record['id'], target['id'])}"
            _replace(state, target, lambda b, d=drop: _set_connection(b, None, d))


def _endpoint_computed(out: dict[str, Any], vault_url: Any) -> None:
    _rp_state(out)


def _zone_group_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """Each zone config gains the A records of its endpoint's names (PrivateEndpointDnsZoneGroupCreate.json)."""
    group_id = existing["id"] if existing else parsed.id
    endpoint = state["resources"][str(parsed.container).lower()]
    zones = []
    for config in properties(request).get("privateDnsZoneConfigs") or []:
        if isinstance(config, dict):
            zones.append(_require(state, properties(config).get("privateDnsZoneId"), group_id))
    body = stored_body(_spec(ZONE_GROUP), existing["body"] if existing else None, request)
    dns = properties(endpoint["body"]).get("customDnsConfigs") or []
    suffixes = sorted({suffix for _, suffix in LINK_TARGETS.values()}, key=len, reverse=True)
    configs = []
    for config, zone in zip(
        [c for c in properties(body).get("privateDnsZoneConfigs") or [] if isinstance(c, dict)], zones, strict=True
    ):
        zone_name = zone["id"].rsplit("/", 1)[-1]
        records = []
        for entry in dns:
            fqdn = str(entry.get("fqdn", ""))
            suffix = next((s for s in suffixes if fqdn.endswith("." + s)), None)
            if suffix is None:
                continue
            record_name = fqdn[: -len(suffix) - 1]
            records.append(
                {
                    "recordType": "A",
                    "recordSetName": record_name,
                    "fqdn": f"{record_name}.{zone_name}",
                    "ipAddresses": entry["ipAddresses"],
                }
            )
        props = {k: v for k, v in properties(config).items() if k != "recordSets"}
        configs.append({**config, "properties": {**props, "recordSets": records}})
        names = {r["recordSetName"].lower(): group_id.lower() for r in records}
        _replace(state, zone, lambda b, n=names: _zone_private(b)["records"].update(n))
    body.setdefault("properties", {})["privateDnsZoneConfigs"] = configs
    body["etag"] = _weak_etag()
    return body


def _zone_group_after_delete(state: State, record: dict[str, Any]) -> None:
    """The A records a zone group made leave their zones."""
    for config in properties(record["body"]).get("privateDnsZoneConfigs") or []:
        zone = _record(state, properties(config).get("privateDnsZoneId"))
        if zone is None:
            continue
        owner = record["id"].lower()

        def drop(body: dict[str, Any], owner: str = owner) -> None:
            records = _zone_private(body)["records"]
            for name in [n for n, o in records.items() if o == owner]:
                del records[name]

        _replace(state, zone, drop)


def _zone_group_computed(out: dict[str, Any], vault_url: Any) -> None:
    """PrivateEndpointDnsZoneGroupCreate.json answers without `type`."""
    out.pop("type", None)
    _rp_state(out)


# ---- the table's entries (spliced into providers.TYPES) ---------------------------------------
TYPES: tuple[ArmType, ...] = (
    # virtual-network/VirtualNetworkCreate.json; azure-facts.md 3.16: a PUT without subnets keeps them
    ArmType(
        VNET,
        long_running=True,
        kept_when_omitted=("properties.subnets",),
        defaults=_frozen({"properties": {"subnets": [], "virtualNetworkPeerings": [], "enableDdosProtection": False}}),
        read_only=("properties.resourceGuid",),
        on_create=_guid,
        before_put=_vnet_before_put,
        after_delete=_vnet_after_delete,
        computed=lambda out, url: _rp_state(out),
    ),
    # subnet/SubnetCreateWithDelegation.json (no `type` in its answer); azure-facts.md 3.17
    ArmType(
        SUBNET, long_running=True, before_put=_subnet_before_put, after_delete=_subnet_after_delete, computed=_subnet_computed
    ),
    # network-security-group/NetworkSecurityGroupCreate.json; azure-facts.md 3.18
    ArmType(
        NSG,
        long_running=True,
        defaults=_frozen({"properties": {"securityRules": [], "flushConnection": False}}),
        read_only=("properties.resourceGuid", "properties.defaultSecurityRules"),
        on_create=_guid,
        before_put=_nsg_before_put,
        after_delete=_nsg_after_delete,
        computed=_nsg_computed,
    ),
    # public-ip/PublicIpAddressCreateDefaults.json; azure-facts.md 3.19, azure-facts-2.md 6 (zones kept as sent)
    ArmType(
        PIP,
        long_running=True,
        defaults=_frozen({"sku": {"name": "Basic"}, "properties": {"publicIPAddressVersion": "IPv4", "idleTimeoutInMinutes": 4}}),
        read_only=("properties.resourceGuid", "properties.ipAddress", "properties.ipConfiguration"),
        on_create=_guid,
        before_put=_pip_before_put,
        computed=_pip_computed,
    ),
    # virtual-network-gateway/VirtualNetworkGatewayUpdate.json; azure-facts.md 3.20 and 7, azure-facts-2.md 6
    ArmType(
        GATEWAY,
        long_running=True,
        defaults=_frozen(GATEWAY_DEFAULTS),
        read_only=("properties.resourceGuid",),
        on_create=_guid,
        before_put=_gateway_before_put,
        computed=lambda out, url: _rp_state(out),
    ),
    # private-endpoint/PrivateEndpointCreate.json; azure-facts.md 3.23
    ArmType(
        ENDPOINT,
        long_running=True,
        defaults=_frozen(
            {"properties": {"manualPrivateLinkServiceConnections": [], "applicationSecurityGroups": [], "ipConfigurations": []}}
        ),
        read_only=("properties.resourceGuid", "properties.customDnsConfigs", "properties.networkInterfaces"),
        on_create=_guid,
        before_put=_endpoint_before_put,
        after_delete=_endpoint_after_delete,
        computed=_endpoint_computed,
    ),
    # private-endpoint-dns-zone-group/PrivateEndpointDnsZoneGroupCreate.json (no `type` in its answer)
    ArmType(
        ZONE_GROUP,
        long_running=True,
        before_put=_zone_group_before_put,
        after_delete=_zone_group_after_delete,
        computed=_zone_group_computed,
    ),
    # private-dns-zone/PrivateZonePut.json (202 + Retry-After 60 on Azure); azure-facts.md 3.22
    ArmType(ZONE, long_running=True, before_put=_zone_before_put, computed=_zone_computed),
    # private-dns-vnet-link/VirtualNetworkLinkPut.json
    ArmType(LINK, long_running=True, before_put=_link_before_put, after_delete=_link_after_delete, computed=_link_computed),
    # dns-resolver/DnsResolver_Put.json; azure-facts.md 3.21
    ArmType(
        RESOLVER,
        long_running=True,
        read_only=("properties.resourceGuid", "properties.dnsResolverState"),
        on_create=_guid,
        before_put=_resolver_before_put,
        computed=_resolver_computed,
    ),
    # dns-resolver-inbound-endpoint/InboundEndpoint_Put.json (its id quirk kept: see _inbound_computed)
    ArmType(
        INBOUND,
        long_running=True,
        read_only=("properties.resourceGuid",),
        on_create=_guid,
        before_put=_inbound_before_put,
        computed=_inbound_computed,
    ),
)
