"""IP network rules as Azure checks them: firewall rule ranges (PostgreSQL, Redis) and the IP
lists inside a Key Vault (`networkAcls.ipRules`) and a container registry (`networkRuleSet.ipRules`).

Every rule here is IPv4 only: the PostgreSQL spec's pattern is IPv4 (azure-facts.md 3.8), the
Key Vault SDK documents "an IPv4 address range in CIDR notation" (azure-mgmt-keyvault `IPRule`),
the registry's IP rule "Only IPV4 address is allowed" (Az.ContainerRegistry `IPRule` help).
The hooks raise ArmError; which codes are verified is said beside each.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from deploykit.sandbox.armtype import State
from deploykit.sandbox.bodies import properties
from deploykit.sandbox.ids import ArmError, ParsedId

# The PostgreSQL spec's pattern for startIpAddress/endIpAddress (FirewallRules.json 2025-08-01):
# dotted decimal, no leading zeros. ipaddress.IPv4Address accepts exactly these too.
IPV4_PATTERN = re.compile(
    r"(([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.){3}([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])"
)
# Key Vault refuses rules inside 10.0.0.0/8: documented (Add-AzKeyVaultNetworkRule help: "any IP
# range inside 10.0.0.0-10.255.255.255 (private IP addresses) cannot be used") and answered as
# 400 BadRequest "Invalid value found at properties.networkAcls.ipRules[0].value: 10.0.0.0/8
# belongs to forbidden range 10.0.0.0-10.255.255.255 (private IP addresses)", with an en dash
# in the range (Azure/azure-powershell#11471). Whether 172.16.0.0/12 and 192.168.0.0/16 are
# refused too is UNVERIFIED: accepted here.
VAULT_FORBIDDEN = ((ipaddress.IPv4Network("10.0.0.0/8"), "10.0.0.0–10.255.255.255 (private IP addresses)"),)


def ipv4(value: Any) -> ipaddress.IPv4Address | None:
    """The address a dotted IPv4 string names, or None (IPv6, a CIDR, leading zeros, not a string)."""
    if not isinstance(value, str) or not IPV4_PATTERN.fullmatch(value):
        return None
    return ipaddress.IPv4Address(value)


def ipv4_network(value: Any) -> ipaddress.IPv4Network | None:
    """The range an IPv4 address or IPv4 CIDR (`a.b.c.d/n`, host bits allowed) names, or None."""
    if not isinstance(value, str):
        return None
    address, slash, prefix = value.partition("/")
    if ipv4(address) is None or (slash and not re.fullmatch(r"[0-9]|[12][0-9]|3[0-2]", prefix)):
        return None
    return ipaddress.IPv4Network(value, strict=False)


def check_range(request: dict[str, Any], start_key: str, end_key: str, code: str) -> None:
    """A firewall rule's properties: both ends present, dotted IPv4, start <= end; else a 400."""
    props = properties(request)
    missing = [key for key in (start_key, end_key) if props.get(key) in (None, "")]
    if missing:
        raise ArmError(400, code, f"The firewall rule needs properties.{start_key} and properties.{end_key}.")
    start, end = ipv4(props[start_key]), ipv4(props[end_key])
    for key, parsed in ((start_key, start), (end_key, end)):
        if parsed is None:
            raise ArmError(
                400,
                code,
                f"The value '{props[key]}' of properties.{key} is not a valid IPv4 address "
                "(four decimal numbers 0-255 separated by dots; IPv6 is not supported).",
            )
    assert start is not None and end is not None
    if start > end:
        raise ArmError(
            400,
            code,
            f"The start IP address '{props[start_key]}' is greater than the end IP address '{props[end_key]}'.",
        )


def _rule_list(request: dict[str, Any], container: str, where: str, code: str) -> list[Any] | None:
    """properties.<container>.ipRules of a request when it sends one; a 400 when it is not a list."""
    holder = properties(request).get(container)
    if holder is None:
        return None
    if not isinstance(holder, dict):
        raise ArmError(400, code, f"Invalid value found at properties.{container}: it must be an object.")
    rules = holder.get("ipRules")
    if rules is None:
        return None
    if not isinstance(rules, list):
        raise ArmError(400, code, f"Invalid value found at {where}: it must be a list.")
    return rules


def vault_ip_rules(request: dict[str, Any]) -> None:
    """Check a vault PUT's networkAcls.ipRules and rewrite a lone address to its /32 form.

    Azure answers a single address as `a.b.c.d/32` (az keyvault network-rule add 123.0.0.1 shows
    `123.0.0.1/32`, Azure/azure-cli#21330; a plain address diffs forever, terraform-provider-azurerm
    #2164). The code BadRequest and the message's start are those seen for a forbidden range
    (module docstring); the wording for a malformed value is the sandbox's own.
    """
    where = "properties.networkAcls.ipRules"
    rules = _rule_list(request, "networkAcls", where, "BadRequest")
    for index, rule in enumerate(rules or ()):
        value = rule.get("value") if isinstance(rule, dict) else None
        network = ipv4_network(value)
        if network is None:
            raise ArmError(
                400,
                "BadRequest",
                f"Invalid value found at {where}[{index}].value: '{value}' is not an IPv4 address or IPv4 CIDR range "
                "(such as '124.56.78.91' or '124.56.78.0/24').",
            )
        for forbidden, label in VAULT_FORBIDDEN:
            if network.subnet_of(forbidden):
                raise ArmError(
                    400,
                    "BadRequest",
                    f"Invalid value found at {where}[{index}].value: {value} belongs to forbidden range {label}",
                )
        if "/" not in value:
            rule["value"] = f"{value}/32"


def registry_network_rules(existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """Check a registry PUT's networkRuleSet: IPv4 or CIDR values, action Allow (the default), Premium only.

    Values are stored as sent (whether ACR rewrites a lone address to /32 is UNVERIFIED). A
    non-Premium registry takes no IP rules and no defaultAction Deny: 400 NetworkRuleNotSupported,
    the code and wording ("The requested feature virtual network rule is not supported for the SKU
    Basic.") seen in public deployment notes, not in Microsoft's docs: UNVERIFIED. The code for a
    malformed rule (BadRequest) is UNVERIFIED too. The GET default `{"defaultAction": "Allow",
    "ipRules": []}` (RegistryGet.json, a Standard registry) is accepted on any SKU, so a client can
    send back what it read.
    """
    where = "properties.networkRuleSet.ipRules"
    rules = _rule_list(request, "networkRuleSet", where, "BadRequest")
    for index, rule in enumerate(rules or ()):
        if not isinstance(rule, dict):
            raise ArmError(400, "BadRequest", f"Invalid value found at {where}[{index}]: it must be an object.")
        action = rule.setdefault("action", "Allow")
        if not isinstance(action, str) or action.lower() != "allow":
            raise ArmError(
                400, "BadRequest", f"Invalid value found at {where}[{index}].action: '{action}'; the only action is 'Allow'."
            )
        if ipv4_network(rule.get("value")) is None:
            raise ArmError(
                400,
                "BadRequest",
                f"Invalid value found at {where}[{index}].value: '{rule.get('value')}' is not an IPv4 address or "
                "IPv4 CIDR range (only IPv4 is allowed).",
            )
    sku = request.get("sku") if isinstance(request.get("sku"), dict) else None
    if sku is None and existing is not None:
        sku = existing["body"].get("sku") if isinstance(existing["body"].get("sku"), dict) else None
    tier = str((sku or {}).get("name", ""))
    if tier.lower() == "premium":
        return
    rule_set = properties(request).get("networkRuleSet")
    deny = isinstance(rule_set, dict) and str(rule_set.get("defaultAction", "")).lower() == "deny"
    if rules or deny:
        feature = "ip rule" if rules else "network rule set default action Deny"
        raise ArmError(
            400, "NetworkRuleNotSupported", f"The requested feature {feature} is not supported for the SKU {tier or 'Basic'}."
        )


def registry_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """The registries entry's PUT hook: network rules (registry_network_rules)."""
    registry_network_rules(existing, request)
