"""What each emulated resource provider adds to a stored body: read-only fields, defaults, casing.

Shapes follow the real examples in ../shared/arm-examples (file named beside each table).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

# Types whose PUT is a long-running operation (201/200 + Azure-AsyncOperation, azure-facts.md 9).
ASYNC_TYPES = frozenset(
    {
        "microsoft.keyvault/vaults",
        "microsoft.containerregistry/registries",
        "microsoft.dbforpostgresql/flexibleservers",
        "microsoft.dbforpostgresql/flexibleservers/databases",
        "microsoft.dbforpostgresql/flexibleservers/firewallrules",
        "microsoft.cache/redis",
        "microsoft.appconfiguration/configurationstores",
        "microsoft.app/managedenvironments",
        "microsoft.app/containerapps",
        "microsoft.network/virtualnetworks",
        "microsoft.network/virtualnetworks/subnets",
        "microsoft.network/networksecuritygroups",
        "microsoft.network/publicipaddresses",
        "microsoft.network/virtualnetworkgateways",
        "microsoft.network/privateendpoints",
        "microsoft.network/privatednszones",
        "microsoft.network/dnsresolvers",
    }
)

# Providers that answer with a display-name location (azure-facts.md 2.2).
DISPLAY_LOCATION_PREFIXES = ("microsoft.cache/", "microsoft.app/")
DISPLAY_NAMES = {
    "centralus": "Central US",
    "eastus": "East US",
    "eastus2": "East US 2",
    "westus": "West US",
    "westus2": "West US 2",
    "northcentralus": "North Central US",
    "southcentralus": "South Central US",
    "westeurope": "West Europe",
    "northeurope": "North Europe",
}

# Defaults the service fills in; a stored body is merged over these (given values win).
DEFAULTS: dict[str, dict[str, Any]] = {
    # key-vault/getVault.json
    "microsoft.keyvault/vaults": {
        "properties": {
            "accessPolicies": [],
            "enabledForDeployment": False,
            "enabledForDiskEncryption": False,
            "enabledForTemplateDeployment": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enableRbacAuthorization": False,
            "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []},
            "publicNetworkAccess": "Enabled",
            "privateEndpointConnections": [],
        }
    },
    # container-registry/RegistryGet.json
    "microsoft.containerregistry/registries": {
        "properties": {
            "adminUserEnabled": False,
            "policies": {
                "quarantinePolicy": {"status": "disabled"},
                "trustPolicy": {"type": "Notary", "status": "disabled"},
                "retentionPolicy": {"days": 7, "status": "disabled"},
                "exportPolicy": {"status": "enabled"},
                "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
            },
            "encryption": {"status": "disabled"},
            "dataEndpointEnabled": False,
            "dataEndpointHostNames": [],
            "privateEndpointConnections": [],
            "publicNetworkAccess": "Enabled",
            "networkRuleBypassOptions": "AzureServices",
            "zoneRedundancy": "Disabled",
            "anonymousPullEnabled": False,
        }
    },
}

# Enum values the provider re-cases in its answers (azure-facts.md 2.4): path -> str method.
RECASE: dict[str, dict[str, str]] = {
    "microsoft.keyvault/vaults": {"properties.sku.name": "lower"},
    "microsoft.containerregistry/registries": {"properties.policies.retentionPolicy.status": "lower"},
}

# Fields accepted on PUT but never returned (azure-facts.md 2.5).
WRITE_ONLY: dict[str, tuple[str, ...]] = {
    "microsoft.keyvault/vaults": ("properties.createMode",),
    "microsoft.dbforpostgresql/flexibleservers": ("properties.administratorLoginPassword", "properties.createMode"),
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _pop_path(body: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = body
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def _recase(body: dict[str, Any], dotted: str, how: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = body
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(leaf), str):
        node[leaf] = getattr(node[leaf], how)()


def stored_body(type_lower: str, previous: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """What the provider keeps from a PUT: defaults, then the request; write-only fields dropped."""
    base = previous if previous is not None else copy.deepcopy(DEFAULTS.get(type_lower, {}))
    body = {key: value for key, value in base.items() if key not in {"id", "name", "type"}}
    for key, value in request.items():
        if key == "properties" and isinstance(value, dict) and previous is None:
            body["properties"] = deep_merge(body.get("properties", {}), value)
        elif key == "properties" and isinstance(value, dict):
            # PUT replaces the declared properties; read-only and defaulted ones are kept.
            kept = {k: v for k, v in body.get("properties", {}).items() if k not in value}
            body["properties"] = {**kept, **copy.deepcopy(value)}
        else:
            body[key] = copy.deepcopy(value)
    for path in WRITE_ONLY.get(type_lower, ()):
        _pop_path(body, path)
    for path, how in RECASE.get(type_lower, {}).items():
        _recase(body, path, how)
    return body


def present(type_name: str, resource_id: str, body: dict[str, Any], vault_uri: str | None) -> dict[str, Any]:
    """The GET shape: id, name, type, location form, computed read-only fields."""
    type_lower = type_name.lower()
    out: dict[str, Any] = {"id": resource_id, "name": resource_id.rsplit("/", 1)[-1], "type": type_name}
    out.update(copy.deepcopy(body))
    location = out.get("location")
    if isinstance(location, str) and type_lower.startswith(DISPLAY_LOCATION_PREFIXES):
        out["location"] = DISPLAY_NAMES.get(location.lower().replace(" ", ""), location)
    props = out.get("properties")
    if type_lower == "microsoft.keyvault/vaults" and isinstance(props, dict) and vault_uri:
        props["vaultUri"] = vault_uri
    if type_lower == "microsoft.containerregistry/registries" and isinstance(props, dict):
        props["loginServer"] = f"{out['name']}.azurecr.io"
        if isinstance(out.get("sku"), dict):
            out["sku"]["tier"] = out["sku"].get("name")
    if type_lower == "microsoft.resources/resourcegroups":
        out.pop("type", None)
        out["type"] = "Microsoft.Resources/resourceGroups"
    return out
