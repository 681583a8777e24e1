"""What is special about each emulated ARM type, in one table (the way moto keeps per-service backends).

The store and the HTTP front are generic: they look a type up with `spec_for` and follow its
`ArmType`. Where behaviour is more than data (Key Vault soft delete and recover, a resource
group's fixed location), the entry names a small hook defined here, or the entries come from a
module per service (rbac.py, cache.py, appconfig.py, pgtypes.py, apps.py, vaultsecrets.py). Types not in the table
are emulated generically: synchronous PUT, a provisioningState, the type as the path spells it.

Shapes follow the real examples copied to tests/data/arm-examples (file named beside each entry;
sources in its INDEX.md) and the project's verified Azure facts (section named).
"""

from __future__ import annotations

import copy
import ipaddress
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from deploykit.sandbox import appconfig, apps, cache, netrules, network, pgtypes, rbac, registry, vaultsecrets
from deploykit.sandbox.armtype import PRIVATE, PROVISIONING_STATE, ArmType, State, now_iso
from deploykit.sandbox.bodies import deep_merge, stored_body
from deploykit.sandbox.ids import ArmError, ParsedId

__all__ = ["PROVISIONING_STATE", "ArmType", "State", "deep_merge", "now_iso", "present", "spec_for", "stored_body"]


# ---- hooks -------------------------------------------------------------------------------------
def _group_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """A resource group's location is fixed (azure-facts.md 3.1)."""
    if existing is None:
        return
    have, want = existing["body"].get("location", ""), request.get("location", "")
    if str(have).lower() != str(want).lower():
        raise ArmError(
            409,
            "InvalidResourceGroupLocation",
            f"Invalid resource group location '{want}'. The Resource group already exists in location '{have}'.",
        )


def _vault_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any] | None:
    """Key Vault soft delete (azure-facts.md 4): a deleted name blocks a plain create; recover restores it.

    networkAcls.ipRules are checked first, a lone address stored as its /32 (netrules.py).
    """
    netrules.vault_ip_rules(request)
    if existing is not None:
        return None
    properties = request.get("properties") if isinstance(request.get("properties"), dict) else {}
    mode = str(properties.get("createMode", "default")).lower()
    deleted = state["deleted_vaults"].get(parsed.name.lower())
    if mode == "recover":
        if deleted is None:
            raise ArmError(
                400,
                "SoftDeletedVaultDoesNotExist",
                f"A soft deleted vault with the given name '{parsed.name}' does not exist.",
            )
        del state["deleted_vaults"][parsed.name.lower()]
        return copy.deepcopy(deleted["body"])
    if deleted is not None:
        raise ArmError(
            409,
            "ConflictError",
            "A vault with the same name already exists in deleted state. "
            f"You need to either recover or purge existing key vault '{parsed.name}'.",
        )
    return None


def _vault_after_delete(state: State, record: dict[str, Any]) -> None:
    """A deleted vault is kept, with its secrets, until purged (shape of key-vault/getDeletedVault.json)."""
    body = record["body"]
    props = body.get("properties", {}) if isinstance(body.get("properties"), dict) else {}
    days = int(props.get("softDeleteRetentionInDays", 90))
    deleted_at = datetime.now(UTC)
    name = record["id"].rsplit("/", 1)[-1]
    state["deleted_vaults"][name.lower()] = {
        "name": name,
        "vault_id": record["id"],
        "location": body.get("location", ""),
        "deletion_date": deleted_at.isoformat(),
        "purge_date": (deleted_at + timedelta(days=days)).isoformat(),
        "purge_protection": bool(props.get("enablePurgeProtection")),
        "tags": body.get("tags", {}),
        "body": body,
    }


def _vault_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    props = out.get("properties")
    if isinstance(props, dict) and vault_url is not None:
        props["vaultUri"] = vault_url(out["name"])


def _registry_created(body: dict[str, Any]) -> None:
    body.setdefault("properties", {})["creationDate"] = now_iso()


def _registry_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """container-registry/RegistryCreate.json: loginServer keeps the name's case; sku.tier follows sku.name."""
    props = out.get("properties")
    if isinstance(props, dict):
        props["loginServer"] = f"{out['name']}.azurecr.io"
    if isinstance(out.get("sku"), dict):
        out["sku"]["tier"] = out["sku"].get("name")


# Words for a managed environment's default domain: Azure's look like "<word>-<8 hex>.<region>...".
_DOMAIN_WORDS = ("happy", "calm", "brave", "gentle", "lively", "proud", "quiet", "witty", "bold", "mellow")


def _environment_created(body: dict[str, Any]) -> None:
    """ManagedEnvironments_Get.json: the service picks a default domain and a static IP once."""
    region = str(body.get("location", "centralus")).lower().replace(" ", "")
    word = secrets.choice(_DOMAIN_WORDS) + secrets.choice(("river", "hill", "field", "stone", "sea", "wood"))
    props = body.setdefault("properties", {})
    props["defaultDomain"] = f"{word}-{secrets.token_hex(4)}.{region}.azurecontainerapps.io"
    props["staticIp"] = str(ipaddress.IPv4Address(0x14000000 + secrets.randbelow(0x00FFFFFF)))  # in 20.0.0.0/8
    props["customDomainConfiguration"] = {"customDomainVerificationId": secrets.token_hex(32).upper()}


def _frozen(data: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(data)


# ---- the table ---------------------------------------------------------------------------------
# ETAG_NOTE: the real Key Vault and Container Registry examples (createVault.json, RegistryGet.json)
# and the SDK models (azure-mgmt-keyvault `Vault`) show no top-level etag. The sandbox gives
# these two types one, and honours If-Match on PUT and DELETE (412 PreconditionFailed), because
# the product guards read-modify-write of their IP rule lists with it. Whether real Azure honours
# If-Match on these types is UNVERIFIED; Faults.etags False plays them without (the client then
# reads back twice, see whitelist/services.py).
TYPES: tuple[ArmType, ...] = (
    # resource-group/CreateResourceGroup.json; azure-facts.md 3.1
    ArmType("Microsoft.Resources/resourceGroups", before_put=_group_before_put),
    # management-lock/*: synchronous, no provisioningState; azure-facts.md 3.2
    ArmType("Microsoft.Authorization/locks", provisioning_state=False, lock=True),
    *rbac.TYPES,  # identities and role assignments: sandbox/rbac.py
    # key-vault/createVault.json, getVault.json; azure-facts.md 3.3 and 4. ETags: see ETAG_NOTE.
    ArmType(
        "Microsoft.KeyVault/vaults",
        long_running=True,
        global_name=True,
        etag=True,
        defaults=_frozen(
            {
                "properties": {
                    "accessPolicies": [],
                    "enabledForDeployment": False,
                    "enabledForDiskEncryption": False,
                    "enabledForTemplateDeployment": False,
                    "enableSoftDelete": True,
                    "softDeleteRetentionInDays": 90,
                    "enableRbacAuthorization": False,
                    "networkAcls": {
                        "bypass": "AzureServices",
                        "defaultAction": "Allow",
                        "ipRules": [],
                        "virtualNetworkRules": [],
                    },
                    "publicNetworkAccess": "Enabled",
                    "privateEndpointConnections": [],
                }
            }
        ),
        read_only=("properties.vaultUri", "properties.privateEndpointConnections"),
        write_only=("properties.createMode",),
        recase=_frozen({"properties.sku.name": "lower"}),
        serves_secrets=True,
        before_put=_vault_before_put,
        after_delete=_vault_after_delete,
        computed=_vault_computed,
    ),
    vaultsecrets.SECRET,  # a view of the vault's data plane: sandbox/vaultsecrets.py
    # container-registry/RegistryCreate.json, RegistryGet.json; azure-facts.md 3.5. ETags: see ETAG_NOTE.
    ArmType(
        "Microsoft.ContainerRegistry/registries",
        long_running=True,
        global_name=True,
        etag=True,
        defaults=_frozen(
            {
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
                    "networkRuleSet": {"defaultAction": "Allow", "ipRules": []},  # RegistryGet.json
                    "dataEndpointEnabled": False,
                    "dataEndpointHostNames": [],
                    "privateEndpointConnections": [],
                    "publicNetworkAccess": "Enabled",
                    "networkRuleBypassOptions": "AzureServices",
                    "zoneRedundancy": "Disabled",
                    "anonymousPullEnabled": False,
                }
            }
        ),
        read_only=("properties.loginServer", "properties.creationDate", "sku.tier", "properties.privateEndpointConnections"),
        recase=_frozen({"properties.policies.retentionPolicy.status": "lower"}),
        before_put=netrules.registry_before_put,  # networkRuleSet: IPv4 rules, Premium only
        on_create=_registry_created,
        computed=_registry_computed,
        # importImage (azure-facts-2.md 2.1-2.3); images, tags and the data plane: sandbox/registry.py
        actions=_frozen({"importimage": registry.import_image}),
    ),
    *pgtypes.TYPES,  # PostgreSQL flexible servers, backed by real clusters: sandbox/pgtypes.py
    *cache.TYPES,  # Azure Cache for Redis and its firewall rules: sandbox/cache.py
    *appconfig.TYPES,  # App Configuration stores and key-values: sandbox/appconfig.py
    # container-apps-environment/ManagedEnvironments_Get.json; azure-facts.md 3.13
    ArmType(
        "Microsoft.App/managedEnvironments",
        long_running=True,
        display_location=True,
        defaults=_frozen(
            {
                "properties": {
                    "zoneRedundant": False,
                    "peerAuthentication": {"mtls": {"enabled": False}},
                    "peerTrafficConfiguration": {"encryption": {"enabled": False}},
                    "kedaConfiguration": {"version": "2.8.1"},
                    "daprConfiguration": {"version": "1.9"},
                }
            }
        ),
        read_only=(
            "properties.defaultDomain",
            "properties.staticIp",
            "properties.customDomainConfiguration.customDomainVerificationId",
            "properties.kedaConfiguration",
            "properties.daprConfiguration",
        ),
        on_create=_environment_created,
    ),
    *apps.TYPES,  # container apps and their revisions: sandbox/apps.py
    # VNets and subnets, NSGs, public IPs, the VPN gateway, the DNS resolver, private DNS zones,
    # private endpoints: sandbox/network.py (each entry names its example there)
    *network.TYPES,
)

_BY_KEY: dict[str, ArmType] = {t.key: t for t in TYPES}

# Lower-cased names of the long-running types (benchmarks read this).
ASYNC_TYPES = frozenset(t.key for t in TYPES if t.long_running)

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


def spec_for(type_name: str) -> ArmType:
    """The table's entry for a type (any casing); a generic synchronous type when it has none."""
    return _BY_KEY.get(type_name.lower()) or ArmType(type_name)


# ---- answers -------------------------------------------------------------------------------------
def present(record: dict[str, Any], vault_url: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The GET shape: id, name, the canonical type, the location form, computed read-only fields.

    `record` is the caller's own copy (every store read returns one): its body's parts are
    reused, not copied again.
    """
    spec = spec_for(record["type"])
    resource_id = record["id"]
    out: dict[str, Any] = {"id": resource_id, "name": resource_id.rsplit("/", 1)[-1], "type": spec.name}
    out.update(record["body"])
    out["type"] = spec.name
    location = out.get("location")
    if isinstance(location, str) and spec.display_location:
        out["location"] = DISPLAY_NAMES.get(location.lower().replace(" ", ""), location)
    if spec.computed is not None:
        spec.computed(out, vault_url)
    out.pop(PRIVATE, None)
    return out
