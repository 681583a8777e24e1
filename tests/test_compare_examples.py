"""Normalisation rules, each proved on a real ARM example (tests/data/arm-examples, file cited).

The examples are byte-for-byte copies of the steering repo's shared/arm-examples, kept in this
repository so the suite is self-contained; tests/data/arm-examples/INDEX.md gives each file's source
path and commit in Azure/azure-rest-api-specs.

The request body of a create example is the desired state; the service's response in the same
example is the actual state. A correct compare finds no difference between them.
"""

from __future__ import annotations

import copy
import hashlib

import pytest

from deploykit.engine.compare import diff_resource, rules_for
from tests.conftest import EXAMPLES, load_example

# (example file, ARM type, request body parameter, write-only paths)
CREATE_EXAMPLES = [
    ("resource-group/CreateResourceGroup.json", "Microsoft.Resources/resourceGroups", "parameters", ()),
    ("key-vault/createVault.json", "Microsoft.KeyVault/vaults", "parameters", ()),
    ("key-vault-secret/createSecret.json", "Microsoft.KeyVault/vaults/secrets", "parameters", ("properties.value",)),
    ("container-registry/RegistryCreate.json", "Microsoft.ContainerRegistry/registries", "registry", ()),
    (
        "management-lock/ManagementLocks_CreateOrUpdateAtResourceGroupLevel.json",
        "Microsoft.Authorization/locks",
        "parameters",
        (),
    ),
    ("redis-firewall-rule/RedisCacheFirewallRuleCreate.json", "Microsoft.Cache/redis/firewallRules", "parameters", ()),
    ("managed-identity/IdentityCreate.json", "Microsoft.ManagedIdentity/userAssignedIdentities", "parameters", ()),
    (
        "app-configuration/ConfigurationStoresCreate.json",
        "Microsoft.AppConfiguration/configurationStores",
        "configStoreCreationParameters",
        (),
    ),
    (
        "app-configuration/ConfigurationStoresCreateKeyValue.json",
        "Microsoft.AppConfiguration/configurationStores/keyValues",
        "keyValueParameters",
        (),
    ),
    ("role-assignment/RoleAssignments_CreateForResource.json", "Microsoft.Authorization/roleAssignments", "parameters", ()),
    ("role-assignment/RoleAssignments_CreateForResourceGroup.json", "Microsoft.Authorization/roleAssignments", "parameters", ()),
    ("network-security-group/NetworkSecurityGroupCreate.json", "Microsoft.Network/networkSecurityGroups", "parameters", ()),
    ("public-ip/PublicIpAddressCreateDefaults.json", "Microsoft.Network/publicIPAddresses", "parameters", ()),
    ("virtual-network/VirtualNetworkCreate.json", "Microsoft.Network/virtualNetworks", "parameters", ()),
    ("subnet/SubnetCreateWithDelegation.json", "Microsoft.Network/virtualNetworks/subnets", "subnetParameters", ()),
    ("private-dns-zone/PrivateZonePut.json", "Microsoft.Network/privateDnsZones", "parameters", ()),
    (
        "private-dns-vnet-link/VirtualNetworkLinkPut.json",
        "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "parameters",
        (),
    ),
    (
        "private-endpoint-dns-zone-group/PrivateEndpointDnsZoneGroupCreate.json",
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        "parameters",
        (),
    ),
    ("dns-resolver/DnsResolver_Put.json", "Microsoft.Network/dnsResolvers", "parameters", ()),
    (
        "dns-resolver-inbound-endpoint/InboundEndpoint_Put.json",
        "Microsoft.Network/dnsResolvers/inboundEndpoints",
        "parameters",
        (),
    ),
    (
        "virtual-network-gateway/VirtualNetworkGatewayUpdate.json",
        "Microsoft.Network/virtualNetworkGateways",
        "parameters",
        ("properties.vpnClientConfiguration.radiusServers.radiusServerSecret",),
    ),
]


# Examples whose response is not a true round trip of their request (spec examples are written
# by hand): the paths listed are exactly the fields the example's response does not echo.
# Everything else in them must still compare equal.
EXAMPLE_GAPS = [
    (
        "redis/RedisCacheCreate.json",
        "Microsoft.Cache/redis",
        "parameters",
        (),
        {
            "location",
            "properties.enableNonSslPort",
            "properties.shardCount",
            "properties.staticIP",
            "properties.subnetId",
            "properties.redisConfiguration.maxmemory-policy",
        },
    ),
    (
        "container-apps-environment/ManagedEnvironments_CreateOrUpdate.json",
        "Microsoft.App/managedEnvironments",
        "environmentEnvelope",
        (
            "properties.appLogsConfiguration.logAnalyticsConfiguration.sharedKey",
            "properties.customDomainConfiguration.certificatePassword",
            "properties.customDomainConfiguration.certificateValue",
        ),
        {"properties.daprAIConnectionString", "properties.peerTrafficConfiguration"},
    ),
    (
        "postgresql-flexible-server/ServerCreate.json",
        "Microsoft.DBforPostgreSQL/flexibleServers",
        "parameters",
        ("properties.administratorLoginPassword", "properties.createMode"),
        {"properties.network.privateDnsZoneArmResourceId"},
    ),  # request id is truncated before ".azure.com"
    (
        "private-endpoint/PrivateEndpointCreate.json",
        "Microsoft.Network/privateEndpoints",
        "parameters",
        (),
        {"properties.ipVersionType"},
    ),
    (
        # A hand-written example: the responses drop half of the request's configuration, show
        # another image tag and traffic split, and name the environment managedEnvironmentId only.
        "container-app/ContainerApps_CreateOrUpdate.json",
        "Microsoft.App/containerApps",
        "containerAppEnvelope",
        (),
        {
            "properties.configuration.dapr.enableApiLogging",
            "properties.configuration.dapr.httpMaxRequestSize",
            "properties.configuration.dapr.logLevel",
            "properties.configuration.ingress.additionalPortMappings",
            "properties.configuration.ingress.clientCertificateMode",
            "properties.configuration.ingress.corsPolicy",
            "properties.configuration.ingress.customDomains",
            "properties.configuration.ingress.ipSecurityRestrictions",
            "properties.configuration.ingress.stickySessions",
            "properties.configuration.ingress.traffic",
            "properties.configuration.maxInactiveRevisions",
            "properties.configuration.service",
            "properties.environmentId",
            "properties.template.containers[testcontainerApp0].image",
            "properties.template.scale.rules[httpscalingrule].custom",
            "properties.template.serviceBinds",
            "properties.workloadProfileName",
        },
    ),
]


def _request_and_responses(example: str, param: str) -> tuple[dict, list[tuple[str, dict]]]:
    data = load_example(example)
    request = data["parameters"][param]
    responses = [(code, r["body"]) for code, r in data["responses"].items() if r.get("body")]
    return request, responses


@pytest.mark.parametrize(
    ("example", "resource_type", "param", "write_only"), CREATE_EXAMPLES, ids=[c[0] for c in CREATE_EXAMPLES]
)
def test_example_response_matches_its_request(example: str, resource_type: str, param: str, write_only: tuple[str, ...]) -> None:
    request, responses = _request_and_responses(example, param)
    assert responses, f"{example} has no response body"
    for code, body in responses:
        assert diff_resource(resource_type, request, body, write_only) == {}, f"{example} response {code}"


@pytest.mark.parametrize(
    ("example", "resource_type", "param", "write_only", "gaps"), EXAMPLE_GAPS, ids=[c[0] for c in EXAMPLE_GAPS]
)
def test_example_differs_only_where_the_example_is_inconsistent(
    example: str, resource_type: str, param: str, write_only: tuple[str, ...], gaps: set[str]
) -> None:
    request, responses = _request_and_responses(example, param)
    for code, body in responses:
        found = set(diff_resource(resource_type, request, body, write_only))
        assert found and found <= gaps, f"{example} response {code}: {sorted(found - gaps)}"


def test_postgres_database_charset_and_collation_casing() -> None:
    """DatabasesCreate.json (202, no body) against DatabasesListByServer.json: case-insensitive values."""
    request = load_example("postgresql-database/DatabasesCreate.json")["parameters"]["parameters"]
    listed = load_example("postgresql-database/DatabasesListByServer.json")["responses"]["200"]["body"]["value"]
    desired = {"properties": {k: v.upper() for k, v in request["properties"].items()}}
    for item in listed:
        assert diff_resource("Microsoft.DBforPostgreSQL/flexibleServers/databases", desired, item) == {}, item["name"]


def test_postgres_firewall_rule_matches_get() -> None:
    """FirewallRulesCreateOrUpdate.json (202) against FirewallRulesGet.json."""
    request = load_example("postgresql-firewall-rule/FirewallRulesCreateOrUpdate.json")["parameters"]["parameters"]
    get = load_example("postgresql-firewall-rule/FirewallRulesGet.json")["responses"]["200"]["body"]
    assert diff_resource("Microsoft.DBforPostgreSQL/flexibleServers/firewallRules", request, get) == {}


def test_redis_get_matches_the_body_a_playbook_sends() -> None:
    """RedisCacheGet.json against a request in the forms a playbook writes: short location, any enum casing, major version."""
    get = load_example("redis/RedisCacheGet.json")["responses"]["200"]["body"]
    props = get["properties"]
    desired = {
        "location": "eastus",
        "properties": {
            "sku": {"name": props["sku"]["name"].lower(), "family": props["sku"]["family"].lower(), "capacity": 3},
            "redisVersion": props["redisVersion"].split(".")[0],
            "enableNonSslPort": props["enableNonSslPort"],
            "publicNetworkAccess": props["publicNetworkAccess"].upper(),
        },
    }
    assert diff_resource("Microsoft.Cache/redis", desired, get) == {}


def test_postgres_server_get_matches_the_body_a_playbook_sends() -> None:
    """ServersGet.json against step 3's request shape: write-only fields skipped, enums in any casing."""
    get = load_example("postgresql-flexible-server/ServersGet.json")["responses"]["200"]["body"]
    props = get["properties"]
    desired = {
        "location": get["location"],
        "sku": {"name": get["sku"]["name"], "tier": get["sku"]["tier"].lower()},
        "properties": {
            "createMode": "Create",
            "version": props["version"],
            "administratorLogin": props["administratorLogin"],
            "administratorLoginPassword": "not returned",
            "storage": {"storageSizeGB": props["storage"]["storageSizeGB"], "autoGrow": props["storage"]["autoGrow"].lower()},
            "backup": {"backupRetentionDays": 7, "geoRedundantBackup": props["backup"]["geoRedundantBackup"].lower()},
            "highAvailability": {"mode": props["highAvailability"]["mode"].lower()},
            "network": {"publicNetworkAccess": props["network"]["publicNetworkAccess"].lower()},
        },
    }
    write_only = ("properties.administratorLoginPassword", "properties.createMode")
    assert diff_resource("Microsoft.DBforPostgreSQL/flexibleServers", desired, get, write_only) == {}


def test_managed_environment_get_matches_its_workload_profiles() -> None:
    """ManagedEnvironments_Get.json: display-name location, workload profile types in any casing."""
    get = load_example("container-apps-environment/ManagedEnvironments_Get.json")["responses"]["200"]["body"]
    profiles = [{**p, "workloadProfileType": p["workloadProfileType"].lower()} for p in get["properties"]["workloadProfiles"]]
    desired = {"location": "northcentralus", "properties": {"workloadProfiles": profiles, "zoneRedundant": True}}
    assert diff_resource("Microsoft.App/managedEnvironments", desired, get) == {}


def test_container_app_identity_keys_compare_case_insensitively() -> None:
    """ContainerApps_Get.json keys userAssignedIdentities with /resourcegroups/; a playbook writes /resourceGroups/."""
    get = load_example("container-app/ContainerApps_Get.json")["responses"]["200"]["body"]
    [key] = get["identity"]["userAssignedIdentities"]
    assert "/resourcegroups/" in key
    desired = {
        "location": "eastus",
        "identity": {
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {key.replace("/resourcegroups/", "/resourceGroups/"): {}},
        },
        "properties": {"configuration": {"ingress": {"transport": "Auto", "external": True}}},
    }
    assert diff_resource("Microsoft.App/containerApps", desired, get) == {}


def test_a_real_difference_is_still_found() -> None:
    """Guard against a compare that ignores everything: change one declared field (createVault.json)."""
    request, [(_, body), *_] = _request_and_responses("key-vault/createVault.json", "parameters")
    drifted = copy.deepcopy(body)
    drifted["properties"]["enabledForDeployment"] = False
    assert diff_resource("Microsoft.KeyVault/vaults", request, drifted) == {
        "properties.enabledForDeployment": {"old": False, "new": True}
    }


def test_location_display_name_equals_short_name() -> None:
    """RedisCacheGet.json answers 'East US' for a cache created in eastus."""
    get = load_example("redis/RedisCacheGet.json")["responses"]["200"]["body"]
    assert get["location"] == "East US"
    assert diff_resource("Microsoft.Cache/redis", {"location": "eastus"}, get) == {}
    assert diff_resource("Microsoft.Cache/redis", {"location": "westus"}, get) == {
        "location": {"old": "East US", "new": "westus"}
    }


def test_enum_casing_rule_is_per_type() -> None:
    """RegistryGet.json returns retention status 'enabled'/'disabled' lower-case; the rule is declared for registries."""
    assert "properties.policies.retentionPolicy.status" in rules_for("Microsoft.ContainerRegistry/registries").case_insensitive
    get = load_example("container-registry/RegistryGet.json")["responses"]["200"]["body"]
    status = get["properties"]["policies"]["retentionPolicy"]["status"]
    desired = {"properties": {"policies": {"retentionPolicy": {"status": status.upper()}}}}
    assert diff_resource("Microsoft.ContainerRegistry/registries", desired, get) == {}
    # Outside a declared path, casing differences are real differences.
    assert diff_resource(
        "Microsoft.ContainerRegistry/registries", {"properties": {"loginServer": get["properties"]["loginServer"].upper()}}, get
    )


def test_resource_ids_compare_case_insensitively() -> None:
    """IdentityGet.json returns '/resourcegroups/' in lower case."""
    get = load_example("managed-identity/IdentityGet.json")["responses"]["200"]["body"]
    assert "/resourcegroups/" in get["id"]
    assert (
        diff_resource(
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            {"id": get["id"].replace("/resourcegroups/", "/resourceGroups/")},
            get,
        )
        == {}
    )


def test_role_definition_compared_by_trailing_guid() -> None:
    """RoleAssignments_Get.json: a subscription-scoped request id equals the provider-scoped answer."""
    get = load_example("role-assignment/RoleAssignments_Get.json")["responses"]["200"]["body"]
    guid = get["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
    desired = {
        "properties": {
            "roleDefinitionId": f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}"
            f"/providers/Microsoft.Authorization/roleDefinitions/{guid}"
        }
    }
    assert diff_resource("Microsoft.Authorization/roleAssignments", desired, get) == {}


def test_redis_version_compared_by_major() -> None:
    """RedisCacheCreate.json sends redisVersion '4' and gets '4.0.14' back."""
    request, responses = _request_and_responses("redis/RedisCacheCreate.json", "parameters")
    assert request["properties"]["redisVersion"] == "4"
    assert responses[0][1]["properties"]["redisVersion"].startswith("4.")
    assert diff_resource("Microsoft.Cache/redis", {"properties": {"redisVersion": "6"}}, responses[0][1])


def test_tag_keys_compare_case_insensitively() -> None:
    """ServerCreate.json sends tag VNetServer and the service answers VnetServer (azure-facts.md 2.6)."""
    assert (
        diff_resource("Microsoft.DBforPostgreSQL/flexibleServers", {"tags": {"VNetServer": "1"}}, {"tags": {"VnetServer": "1"}})
        == {}
    )


def test_identity_type_spacing_ignored() -> None:
    """ManagedEnvironments_CreateOrUpdate.json spaces 'SystemAssigned, UserAssigned'; the SDK enum does not."""
    actual = {"identity": {"type": "SystemAssigned, UserAssigned"}}
    assert diff_resource("Microsoft.App/managedEnvironments", {"identity": {"type": "SystemAssigned,UserAssigned"}}, actual) == {}


def test_write_only_fields_are_never_compared() -> None:
    """ServerCreate.json: the password is sent but never returned."""
    request, responses = _request_and_responses("postgresql-flexible-server/ServerCreate.json", "parameters")
    assert "administratorLoginPassword" in request["properties"]
    assert "administratorLoginPassword" not in responses[0][1]["properties"]
    diff = diff_resource("Microsoft.DBforPostgreSQL/flexibleServers", request, responses[0][1])
    assert "properties.administratorLoginPassword" in diff  # without the write-only declaration it would be drift


def _index_rows() -> dict[str, list[str]]:
    """The table of tests/data/arm-examples/INDEX.md, keyed by "dir/file"."""
    rows: dict[str, list[str]] = {}
    for line in (EXAMPLES / "INDEX.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or line.startswith(("| dir |", "|---")):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        key = f"{cells[0]}/{cells[1]}"
        assert key not in rows, f"INDEX.md lists {key} twice"
        rows[key] = cells
    return rows


def test_examples_index_lists_exactly_the_copied_files() -> None:
    """Every row of INDEX.md names a file that is here, and every example here has a row (with its source)."""
    rows = _index_rows()
    assert rows, "INDEX.md has no rows"
    missing = sorted(key for key in rows if not (EXAMPLES / key).is_file())
    assert not missing, f"listed in INDEX.md but not in {EXAMPLES}: {missing}"
    on_disk = {path.relative_to(EXAMPLES).as_posix() for path in EXAMPLES.rglob("*.json")}
    unlisted = sorted(on_disk - set(rows))
    assert not unlisted, f"in {EXAMPLES} but not listed in INDEX.md: {unlisted}"
    for key, cells in rows.items():
        source, commit = cells[2].strip("`"), cells[3].strip("`")
        assert source.startswith("specification/") and source.endswith("/" + cells[1]), f"{key}: source path {source!r}"
        assert len(commit) == 40 and int(commit, 16) >= 0, f"{key}: commit {commit!r}"


def test_examples_are_unedited_copies() -> None:
    """The sha256 prefix INDEX.md records for each file (carried over from the shared index) still matches."""
    for key, cells in _index_rows().items():
        digest = hashlib.sha256((EXAMPLES / key).read_bytes()).hexdigest()[:12]
        assert digest == cells[8], f"{key} differs from the copy INDEX.md records"
