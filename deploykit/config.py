"""Load and validate config/*.yaml into typed, frozen objects; errors name file, field and rule."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploykit.errors import UserError
from deploykit.naming import (
    POSTGRES_RESERVED_DATABASES,
    name_problem,
    postgres_login_problem,
    region_problem,
    tags_problem,
)
from deploykit.paths import project_root

SHARED_FILE = "shared.yaml"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _azure_name(resource_type: str) -> AfterValidator:
    def check(value: str) -> str:
        problem = name_problem(resource_type, value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


class FieldProblem(ValueError):
    """A validator's error about a field below the model it runs on.

    `loc` is that field's path from the model; `{also}` in the message becomes the full path of
    `also` (another field of the same model), so the line names both places.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str, also: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.also = also

    def describe(self, model_loc: tuple[str | int, ...]) -> str:
        message = self.message.replace("{also}", _dotted((*model_loc, *self.also)))
        return f"{_dotted((*model_loc, *self.loc))}: {message}"


# ---- YAML: the safe loader, refusing a key given twice (PyYAML silently keeps the last) -----------
_SafeLoaderBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(_SafeLoaderBase):
    """yaml.CSafeLoader (or SafeLoader) whose mappings refuse duplicate keys, naming key and line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:  # unhashable: the base constructor reports it
                    continue
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first on line {first_line[key]}); allowed: each key once per mapping",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, shown: str, line_word: str = "line") -> Any:
    """Parse YAML text with UniqueKeyLoader; a mistake is one UserError naming the file and line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        raise UserError(
            f"{shown}: {line_word} {line}: character U+{char:04X} is not allowed; allowed: printable text (YAML)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{line_word} {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        if "allowed:" not in problem:
            problem += "; allowed: valid YAML"
        raise UserError(f"{shown}: {where}{problem}") from None
    except RecursionError:
        raise UserError(f"{shown}: nested too deeply; allowed: valid YAML") from None


def read_text_file(path: Path, shown: str, missing: str = "file not found") -> str:
    """A config or playbook file as text: UTF-8 only (a BOM is tolerated), one line on any problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{shown}: {missing}") from None
    except OSError as exc:
        raise UserError(f"{shown}: cannot be read ({exc.strerror or exc}); allowed: a readable file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{shown}: line {line}: byte 0x{raw[exc.start]:02x} is not valid UTF-8; allowed: UTF-8 text (save the file as UTF-8)"
        ) from None
    return text.removeprefix("\ufeff")


# ---- addresses -----------------------------------------------------------------------------------
_CIDR_SHAPE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_IP_SHAPE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _cidr(value: str) -> str:
    """An IPv4 network in CIDR form, parsed strictly: host bits set is an error naming the network meant."""
    if not _CIDR_SHAPE.fullmatch(value):
        raise ValueError(f"{value!r} is not a CIDR; allowed: an IPv4 network as a.b.c.d/n, e.g. 10.20.0.0/16")
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc}); allowed: an IPv4 network as a.b.c.d/n, e.g. 10.20.0.0/16") from None
    if str(network) != value:
        raise ValueError(
            f"{value!r} has host bits set; did you mean {network}? allowed: a network address with its prefix length"
        )
    return value


def _ip(value: str) -> str:
    problem = None
    if not _IP_SHAPE.fullmatch(value):
        problem = "is not an IPv4 address"
    else:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError as exc:
            problem = f"is not an IPv4 address ({exc})"
        else:
            if (
                address.is_unspecified
                or address.is_loopback
                or address.is_multicast
                or address == ipaddress.IPv4Address("255.255.255.255")
            ):
                problem = "cannot be used by a client"
    if problem:
        raise ValueError(f"{value!r} {problem}; allowed: a unicast IPv4 address, e.g. 10.20.3.4")
    return value


def _region(value: str) -> str:
    problem = region_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _duplicates(
    items: Iterable[tuple[tuple[str | int, ...], str]], what: str, fold: Callable[[str], str] = str, note: str = ""
) -> None:
    """Raise FieldProblem at the second place a value occurs, naming the first."""
    first: dict[str, tuple[str | int, ...]] = {}
    for loc, value in items:
        key = fold(value)
        if key in first:
            raise FieldProblem(loc, f"{value!r} is also {{also}}; allowed: each {what} once{note}", also=first[key])
        first[key] = loc


RegionName = Annotated[str, AfterValidator(_region), Field(description="programmatic region name, e.g. centralus")]
Cidr = Annotated[str, AfterValidator(_cidr)]
IpAddress = Annotated[str, AfterValidator(_ip)]
Uuid = Annotated[str, Field(pattern=f"^{_UUID}$")]
ResourceGroupName = Annotated[str, _azure_name("Microsoft.Resources/resourceGroups")]
VaultName = Annotated[str, _azure_name("Microsoft.KeyVault/vaults")]
SecretName = Annotated[str, _azure_name("Microsoft.KeyVault/vaults/secrets")]
RegistryName = Annotated[str, _azure_name("Microsoft.ContainerRegistry/registries")]
PostgresServerName = Annotated[str, _azure_name("Microsoft.DBforPostgreSQL/flexibleServers")]
RedisName = Annotated[str, _azure_name("Microsoft.Cache/redis")]
IdentityName = Annotated[str, _azure_name("Microsoft.ManagedIdentity/userAssignedIdentities")]
AppConfigName = Annotated[str, _azure_name("Microsoft.AppConfiguration/configurationStores")]
EnvironmentName = Annotated[str, _azure_name("Microsoft.App/managedEnvironments")]
ContainerAppName = Annotated[str, _azure_name("Microsoft.App/containerApps")]
PgIdentifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
TagMap = dict[str, str]
GatewayName = Annotated[str, _azure_name("Microsoft.Network/virtualNetworkGateways")]
# Lock names are `<group>-<level lower-case>` (playbooks/step1.yaml.j2); the lock rule allows 90.
_LOCK_NAME_MAX = 90


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AzureSettings(Strict):
    tenant_id: Uuid
    subscription_id: Uuid | None = None
    arm_endpoint: Annotated[str, Field(pattern=r"^https://")] = "https://management.azure.com"
    credential_scope: str | None = None

    def scope(self) -> str:
        return self.credential_scope or self.arm_endpoint.rstrip("/") + "/.default"


class ResourceGroupConfig(Strict):
    name: ResourceGroupName
    lock: Literal["CanNotDelete", "ReadOnly"] | None = None

    @model_validator(mode="after")
    def _lock_name_fits(self) -> ResourceGroupConfig:
        if self.lock:
            lock_name = f"{self.name}-{self.lock.lower()}"
            problem = name_problem("Microsoft.Authorization/locks", lock_name)
            if problem:
                raise FieldProblem(("name",), f"the lock's name {lock_name!r} breaks Azure's rule: {problem}")
        return self


class VaultConfig(Strict):
    name: VaultName
    sku: Literal["standard", "premium"] = "standard"
    soft_delete_retention_days: Annotated[int, Field(ge=7, le=90)] = 90
    purge_protection: bool = True
    public_network_access: Literal["Enabled", "Disabled"] = "Enabled"


class RegistryConfig(Strict):
    name: RegistryName
    sku: Literal["Basic", "Standard", "Premium"]
    retention_days: Annotated[int, Field(ge=0, le=365)]
    admin_user_enabled: bool = False
    # ABAC registries ignore AcrPull: apps then get Container Registry Repository Reader (azure-facts-2.md 2.5).
    role_assignment_mode: Literal["LegacyRegistryPermissions", "AbacRepositoryPermissions"] = "LegacyRegistryPermissions"

    @property
    def pull_role(self) -> str:
        """The role (by name in playbooks/roles.yaml) that lets an identity pull from this registry."""
        abac = self.role_assignment_mode == "AbacRepositoryPermissions"
        return "Container Registry Repository Reader" if abac else "AcrPull"

    @model_validator(mode="after")
    def _retention_needs_premium(self) -> RegistryConfig:
        if self.retention_days and self.sku != "Premium":
            raise ValueError("retention_days needs sku Premium (retention is a Premium feature)")
        return self


class ProviderSecret(Strict):
    name: SecretName
    description: str


# Compute SKU names per tier (Standard_B1ms, Standard_D2ds_v4, Standard_E4ds_v5, ...).
POSTGRES_SKU_PATTERNS = {
    "Burstable": r"Standard_B\d+m?s",
    "GeneralPurpose": r"Standard_D\d+a?d?s_v\d",
    "MemoryOptimized": r"Standard_E\d+a?d?s_v\d",
}
POSTGRES_SKU_EXAMPLES = {
    "Burstable": "Standard_B1ms",
    "GeneralPurpose": "Standard_D2ds_v4",
    "MemoryOptimized": "Standard_E2ds_v4",
}
# The storage sizes a flexible server offers (premium SSD), in GiB.
POSTGRES_STORAGE_GB = (32, 64, 128, 256, 512, 1024, 2048, 4095, 4096, 8192, 16384, 32767)


def _postgres_login(value: str) -> str:
    problem = postgres_login_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class PostgresConfig(Strict):
    name: PostgresServerName
    sku_name: str
    tier: Literal["Burstable", "GeneralPurpose", "MemoryOptimized"]
    version: Literal["13", "14", "15", "16", "17"]
    storage_gb: int
    admin_login: Annotated[PgIdentifier, AfterValidator(_postgres_login)]
    backup_retention_days: Annotated[int, Field(ge=7, le=35)] = 7
    geo_redundant_backup: bool = False
    high_availability: Literal["Disabled", "ZoneRedundant", "SameZone"] = "Disabled"
    public_network_access: Literal["Enabled", "Disabled"]
    allow_azure_services: bool = False
    # The env vault secret holding the admin password (step 3 generates and stores it).
    admin_password_secret: SecretName = "postgres-admin-password"  # noqa: S105 - a secret's name, not its value

    @model_validator(mode="after")
    def _sku_fits_tier(self) -> PostgresConfig:
        if not re.fullmatch(POSTGRES_SKU_PATTERNS[self.tier], self.sku_name):
            examples = ", ".join(f"{tier} {sku}" for tier, sku in POSTGRES_SKU_EXAMPLES.items())
            raise FieldProblem(
                ("sku_name",),
                f"{self.sku_name!r} is not a {self.tier} compute size; allowed: Standard_B* for Burstable, "
                f"Standard_D*s_v* for GeneralPurpose, Standard_E*s_v* for MemoryOptimized (e.g. {examples})",
            )
        if self.storage_gb not in POSTGRES_STORAGE_GB:
            sizes = ", ".join(map(str, POSTGRES_STORAGE_GB))
            raise FieldProblem(("storage_gb",), f"{self.storage_gb} GiB is not a size Azure offers; allowed: {sizes}")
        if self.tier == "Burstable" and self.high_availability != "Disabled":
            raise FieldProblem(
                ("high_availability",),
                f"{self.high_availability!r} is not available on tier Burstable; "
                "allowed: Disabled, or tier GeneralPurpose/MemoryOptimized",
            )
        return self


class RedisConfig(Strict):
    name: RedisName
    name_suffix: Annotated[str, Field(pattern=r"^[a-z0-9]+$")] | None = None
    sku: Literal["Basic", "Standard", "Premium"]
    family: Literal["C", "P"]
    capacity: Annotated[int, Field(ge=0, le=6)]
    minimum_tls_version: Literal["1.2"] = "1.2"
    non_ssl_port: Literal[False] = False
    public_network_access: Literal["Enabled", "Disabled"]

    @property
    def full_name(self) -> str:
        """The deployed name: a configured suffix is added when the plain name is taken in DNS."""
        return f"{self.name}-{self.name_suffix}" if self.name_suffix else self.name

    @model_validator(mode="after")
    def _sku_family_capacity(self) -> RedisConfig:
        family, capacities = ("P", range(1, 6)) if self.sku == "Premium" else ("C", range(0, 7))
        if self.family != family:
            raise FieldProblem(("family",), f"{self.family!r} does not fit sku {self.sku}; allowed: {family}")
        if self.capacity not in capacities:
            raise FieldProblem(
                ("capacity",),
                f"{self.capacity} does not fit sku {self.sku}; allowed: {capacities.start}-{capacities.stop - 1}",
            )
        problem = name_problem("Microsoft.Cache/redis", self.full_name)
        if problem:
            raise FieldProblem(("name_suffix",), f"the full name {self.full_name!r} breaks Azure's rule: {problem}")
        return self


class IdentityConfig(Strict):
    name: IdentityName


def _setting_keys(settings: dict[str, str]) -> dict[str, str]:
    """App Configuration keys: not empty, not '.' or '..', no '%' (the service refuses them)."""
    for key in settings:
        if not key or key in {".", ".."} or "%" in key:
            raise FieldProblem((key,), f"{key!r} is not a valid key; allowed: any text except '%', '.' and '..'")
    return settings


class AppConfigurationConfig(Strict):
    name: AppConfigName
    sku: Literal["Free", "Developer", "Standard", "Premium"] = "Standard"
    settings: Annotated[dict[str, str], AfterValidator(_setting_keys)] = {}


class ContainerAppsEnvironmentConfig(Strict):
    name: EnvironmentName


def _per_app(value: str) -> str:
    if "{app}" not in value:
        raise ValueError("must contain {app} (one secret per app, e.g. database-url-{app})")
    problem = name_problem("Microsoft.KeyVault/vaults/secrets", value.replace("{app}", "app"))
    if problem:
        raise ValueError(problem)
    return value


class ConnectionSecrets(Strict):
    """Names of the secrets step 3 and db.create write into the env vault, named once here."""

    postgres_host: SecretName = "postgres-host"
    postgres_admin_login: SecretName = "postgres-admin-login"
    redis_host: SecretName = "redis-host"
    redis_key: SecretName = "redis-access-key"
    # One PostgreSQL URL per app, built by db.create from the app's own role and password.
    database_url: Annotated[str, AfterValidator(_per_app)] = "database-url-{app}"

    def database_url_for(self, app: str) -> str:
        return self.database_url.replace("{app}", app)


class HealthConfig(Strict):
    """How step 5 verifies apps: `http` GETs /healthz and /readyz; `revision` reads revision state only."""

    mode: Literal["http", "revision"] = "http"
    timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 600
    liveness_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/healthz"
    readiness_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/readyz"


class AppConfig(Strict):
    name: ContainerAppName
    port: Annotated[int, Field(ge=1, le=65535)]
    min_replicas: Annotated[int, Field(ge=0, le=300)]
    max_replicas: Annotated[int, Field(ge=1, le=300)] = 3
    image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9/._-]*$")]
    purpose: str

    @model_validator(mode="after")
    def _replicas_ordered(self) -> AppConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


def _database_name(value: str) -> str:
    if value in POSTGRES_RESERVED_DATABASES:
        reserved = ", ".join(sorted(POSTGRES_RESERVED_DATABASES))
        raise ValueError(f"{value!r} already exists on every server; allowed: any other name (not {reserved})")
    return value


class DatabaseConfig(Strict):
    name: Annotated[PgIdentifier, AfterValidator(_database_name)]
    owner: ContainerAppName | None = None
    shared_with: list[ContainerAppName] = []
    extensions: list[PgIdentifier] = []
    holds: str
    # Folder of this database's migrations under the env's migrations_root (default: the name
    # without the "sigmatiq_" prefix, e.g. migrations/core for sigmatiq_core).
    migrations: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None

    @property
    def migrations_folder(self) -> str:
        return self.migrations or self.name.removeprefix("sigmatiq_")


class GatewayRef(Strict):
    """The VPN gateway step 6 creates; tasks that revoke or package talk to it when it exists."""

    name: GatewayName
    resource_group: ResourceGroupName


class VpnConfig(Strict):
    """Point-to-site certificate authentication (azure-facts.md 7): RSA with SHA-256."""

    root_common_name: Annotated[str, Field(min_length=1, max_length=64)]
    key_size: Literal[2048, 3072, 4096] = 2048
    root_validity_days: Annotated[int, Field(ge=30, le=7300)] = 3650
    client_validity_days: Annotated[int, Field(ge=1, le=825)] = 365
    renewal_days: Annotated[int, Field(ge=1, le=365)] = 30
    max_roots: Annotated[int, Field(ge=1, le=20)] = 20  # the gateway accepts up to 20 roots
    gateway: GatewayRef
    client_address_pool: Cidr
    routes: list[Cidr]
    dns_servers: list[IpAddress] = []

    @model_validator(mode="after")
    def _renewal_inside_validity(self) -> VpnConfig:
        if self.renewal_days >= self.client_validity_days:
            raise FieldProblem(
                ("renewal_days",),
                f"{self.renewal_days} is not shorter than client_validity_days ({self.client_validity_days}); "
                "allowed: fewer days than client_validity_days",
            )
        return self

    @model_validator(mode="after")
    def _addresses_fit(self) -> VpnConfig:
        pool = ipaddress.IPv4Network(self.client_address_pool)
        if not pool.is_private:
            raise FieldProblem(
                ("client_address_pool",),
                f"{self.client_address_pool!r} is not a private range; "
                "allowed: a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
            )
        _duplicates(((("routes", i), r) for i, r in enumerate(self.routes)), "route")
        for i, route in enumerate(self.routes):
            if pool.overlaps(ipaddress.IPv4Network(route)):
                raise FieldProblem(
                    ("client_address_pool",),
                    f"{self.client_address_pool!r} overlaps routes[{i}] {route} (the network clients reach); "
                    "allowed: a client pool outside every route and the VNet",
                )
        _duplicates(((("dns_servers", i), d) for i, d in enumerate(self.dns_servers)), "DNS server")
        for i, server in enumerate(self.dns_servers):
            if ipaddress.IPv4Address(server) in pool:
                raise FieldProblem(
                    ("dns_servers", i),
                    f"{server!r} is inside client_address_pool {self.client_address_pool}; "
                    "allowed: a DNS server outside the client pool",
                )
        return self


NetworkName = Annotated[str, _azure_name("Microsoft.Network/virtualNetworks/subnets")]
SubnetPurpose = Literal["apps", "endpoints", "dns_inbound", "gateway"]
# What each purpose needs of its subnet (azure-facts.md 3.17, 3.21; Container Apps workload profiles: /27).
_SUBNET_SIZES: dict[str, tuple[int, int]] = {
    "apps": (16, 27),
    "endpoints": (16, 28),
    "dns_inbound": (24, 28),
    "gateway": (16, 27),
}


class NsgRuleConfig(Strict):
    name: NetworkName
    priority: Annotated[int, Field(ge=100, le=4096)]
    direction: Literal["Inbound", "Outbound"] = "Inbound"
    access: Literal["Allow", "Deny"]
    protocol: Literal["Tcp", "Udp", "Icmp", "*"] = "Tcp"
    source: str  # an address prefix, CIDR or service tag (VirtualNetwork, Internet, *)
    ports: Annotated[str, Field(pattern=r"^(\*|[0-9]{1,5}(-[0-9]{1,5})?)$")] = "*"


class NsgConfig(Strict):
    name: Annotated[str, _azure_name("Microsoft.Network/networkSecurityGroups")]
    rules: list[NsgRuleConfig] = []

    @model_validator(mode="after")
    def _unique_rules(self) -> NsgConfig:
        _duplicates(((("rules", i, "name"), r.name) for i, r in enumerate(self.rules)), "rule name", str.lower)
        _duplicates(
            ((("rules", i, "priority"), f"{r.direction} {r.priority}") for i, r in enumerate(self.rules)),
            "priority per direction",
        )
        return self


class SubnetConfig(Strict):
    name: NetworkName
    prefix: Cidr
    purpose: SubnetPurpose
    nsg: NsgConfig | None = None


class PublicIpConfig(Strict):
    name: Annotated[str, _azure_name("Microsoft.Network/publicIPAddresses")]
    # Zone-redundant: with current API versions no zones means a non-zonal IP, which an AZ gateway
    # refuses (azure-facts-2.md 6); so at least one zone, and zones are fixed once the IP exists.
    zones: Annotated[list[Literal["1", "2", "3"]], Field(min_length=1)] = ["1", "2", "3"]

    @model_validator(mode="after")
    def _zones_once(self) -> PublicIpConfig:
        _duplicates(((("zones", i), z) for i, z in enumerate(self.zones)), "zone")
        return self


class GatewayConfig(Strict):
    # Only the AZ SKUs can be created since 2025 (azure-facts-2.md 6).
    sku: Literal["VpnGw1AZ", "VpnGw2AZ", "VpnGw3AZ", "VpnGw4AZ", "VpnGw5AZ"] = "VpnGw1AZ"
    generation: Literal["Generation1", "Generation2"] = "Generation1"
    protocols: list[Literal["IkeV2", "OpenVPN", "SSTP"]] = ["IkeV2", "OpenVPN"]


class DnsResolverConfig(Strict):
    name: NetworkName
    inbound_endpoint: NetworkName


class NetworkConfig(Strict):
    """The private network of step 6: one VNet with a subnet per purpose, the VPN gateway, DNS."""

    resource_group: Literal["data", "apps"] = "apps"
    vnet: Annotated[str, _azure_name("Microsoft.Network/virtualNetworks")]
    address_space: Cidr
    subnets: list[SubnetConfig]
    public_ip: PublicIpConfig
    gateway: GatewayConfig = GatewayConfig()
    dns_resolver: DnsResolverConfig
    private_dns_zones: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")]]

    @model_validator(mode="after")
    def _subnets_fit(self) -> NetworkConfig:
        space = ipaddress.IPv4Network(self.address_space)
        _duplicates(((("subnets", i, "name"), n.name) for i, n in enumerate(self.subnets)), "subnet name", str.lower)
        _duplicates(((("subnets", i, "purpose"), n.purpose) for i, n in enumerate(self.subnets)), "purpose")
        _duplicates(((("private_dns_zones", i), z) for i, z in enumerate(self.private_dns_zones)), "zone")
        seen: list[tuple[int, ipaddress.IPv4Network]] = []
        for i, subnet in enumerate(self.subnets):
            net = ipaddress.IPv4Network(subnet.prefix)
            widest, narrowest = _SUBNET_SIZES[subnet.purpose]
            if not net.subnet_of(space):
                raise FieldProblem(
                    ("subnets", i, "prefix"),
                    f"{subnet.prefix} is outside address_space {self.address_space}; allowed: a range inside it",
                )
            if not widest <= net.prefixlen <= narrowest:
                raise FieldProblem(
                    ("subnets", i, "prefix"),
                    f"{subnet.prefix} is a /{net.prefixlen}; allowed for {subnet.purpose}: /{widest} to /{narrowest}",
                )
            for j, other in seen:
                if net.overlaps(other):
                    raise FieldProblem(
                        ("subnets", i, "prefix"),
                        f"{subnet.prefix} overlaps subnets[{j}] {other}; allowed: ranges that do not overlap",
                    )
            seen.append((i, net))
            if subnet.purpose == "gateway" and subnet.name != "GatewaySubnet":
                raise FieldProblem(
                    ("subnets", i, "name"),
                    f"{subnet.name!r} is not allowed for the gateway; allowed: GatewaySubnet (Azure's fixed name)",
                )
            if subnet.purpose == "gateway" and subnet.nsg is not None:
                raise FieldProblem(
                    ("subnets", i, "nsg"), "an NSG on GatewaySubnet is not supported by Azure; allowed: none (remove nsg)"
                )
            if subnet.purpose != "gateway" and subnet.nsg is None:
                raise FieldProblem(
                    ("subnets", i, "nsg"), f"missing for {subnet.name!r}; allowed: an NSG on every subnet but GatewaySubnet"
                )
        missing = {"apps", "endpoints", "dns_inbound", "gateway"} - {s.purpose for s in self.subnets}
        if missing:
            raise FieldProblem(
                ("subnets",),
                f"no subnet for {', '.join(sorted(missing))}; "
                "allowed: one subnet per purpose (apps, endpoints, dns_inbound, gateway)",
            )
        return self

    def subnet(self, purpose: str) -> SubnetConfig:
        return next(s for s in self.subnets if s.purpose == purpose)

    @property
    def inbound_dns_address(self) -> str:
        """The resolver's inbound address: Azure assigns the subnet's first usable (x.x.x.4)."""
        return str(ipaddress.IPv4Network(self.subnet("dns_inbound").prefix)[4])


WhitelistService = Literal["postgres", "redis", "vault", "registry"]


def _duration(value: str) -> str:
    from deploykit.whitelist.rules import parse_ttl

    try:
        parse_ttl(value)
    except UserError:
        raise ValueError(f"{value!r} is not a duration; allowed: a whole number with m, h or d, e.g. 30m, 8h, 1d") from None
    return value


Duration = Annotated[str, AfterValidator(_duration)]
# A rule that outlives a working day is a permanent rule, and those belong in the playbooks.
WHITELIST_TTL_CEILING = "24h"


class WhitelistConfig(Strict):
    """Operator whitelisting (whitelist.*): bounded in time and width, owner from the sign-in."""

    default_services: list[WhitelistService] = ["postgres", "redis"]
    default_ttl: Duration = "8h"
    max_ttl: Duration = "8h"
    widest_prefix: Annotated[int, Field(ge=24, le=32)] = 29
    # "What is my IP" services asked in parallel; two must answer the same address.
    discovery_urls: Annotated[list[Annotated[str, Field(pattern=r"^https://")]], Field(min_length=2)] = [
        "https://api.ipify.org",
        "https://ipv4.icanhazip.com",
        "https://checkip.amazonaws.com",
    ]
    discovery_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 3.0

    @model_validator(mode="after")
    def _ttls_bounded(self) -> WhitelistConfig:
        from deploykit.whitelist.rules import parse_ttl

        if parse_ttl(self.max_ttl) > parse_ttl(WHITELIST_TTL_CEILING):
            raise FieldProblem(("max_ttl",), f"{self.max_ttl!r} is longer than {WHITELIST_TTL_CEILING}; allowed: up to 24h")
        if parse_ttl(self.default_ttl) > parse_ttl(self.max_ttl):
            raise FieldProblem(("default_ttl",), f"{self.default_ttl!r} is longer than max_ttl {self.max_ttl!r}")
        return self


class SharedConfig(Strict):
    product: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*$")]
    owner: str
    location: RegionName
    azure: AzureSettings
    tags: TagMap
    resource_group: ResourceGroupConfig
    key_vault: VaultConfig
    registry: RegistryConfig
    provider_secrets: list[ProviderSecret]
    whitelist: WhitelistConfig = WhitelistConfig()

    @model_validator(mode="after")
    def _tags_and_names(self) -> SharedConfig:
        for name in self.tags:
            if name.lower() in AUTOMATIC_TAGS:
                raise FieldProblem(
                    ("tags", name),
                    f"{name!r} is set by deploykit on every resource; allowed: other names "
                    f"({', '.join(AUTOMATIC_TAGS)} come from the env, product and owner settings)",
                )
        problem = tags_problem(self.tags_for("prod"))
        if problem:
            tag, why = problem
            if tag is None:
                why = f"{len(self.tags)} tags here plus {len(AUTOMATIC_TAGS)} automatic ones; " + why.split("; ", 1)[1]
            raise FieldProblem(("owner",) if tag == "owner" else ("tags", tag) if tag else ("tags",), why)
        _duplicates(
            ((("provider_secrets", i, "name"), s.name) for i, s in enumerate(self.provider_secrets)),
            "secret name",
            str.lower,
            note=" (Key Vault ignores case)",
        )
        return self

    def tags_for(self, env: str) -> dict[str, str]:
        """Every group and resource carries environment, product, managed-by and owner."""
        return {**self.tags, "environment": env, "product": self.product, "owner": self.owner}


AUTOMATIC_TAGS = ("environment", "product", "owner")  # added by SharedConfig.tags_for


class EnvConfig(Strict):
    env: Literal["beta", "prod"]
    location: RegionName
    network_model: Literal["public", "private"]
    steps: list[Annotated[str, Field(pattern=r"^step[0-9]+[a-z]?$")]]
    resource_groups: dict[Literal["data", "apps"], ResourceGroupConfig]
    key_vault: VaultConfig
    postgres: PostgresConfig
    redis: RedisConfig
    identity: IdentityConfig
    app_configuration: AppConfigurationConfig
    container_apps_environment: ContainerAppsEnvironmentConfig
    apps: list[AppConfig]
    # The image tag step 5 deploys (`--tag` overrides it for one run).
    image_tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = "latest"
    # Images promoted from another environment (`release.promote`): the source env's tag T is
    # copied, by digest, to T with this prefix; this environment deploys the prefixed tag.
    promote_from: Literal["beta"] | None = None
    image_tag_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{0,32}$")] = ""
    health: HealthConfig = HealthConfig()
    connection_secrets: ConnectionSecrets = ConnectionSecrets()
    databases: list[DatabaseConfig]
    # Where each application's ordered SQL migrations are checked out (the apps own them).
    migrations_root: str = "migrations"
    vpn: VpnConfig | None = None
    network: NetworkConfig | None = None  # network_model private: the VNet of step 6

    @model_validator(mode="after")
    def _network_matches_model(self) -> EnvConfig:
        if (
            self.network_model == "private"
            and self.network is None
            and any(s in self.steps for s in ("step6", "step7", "step8", "step9"))
        ):
            raise FieldProblem(("network",), "missing; allowed: a network section (the private network steps 6-9 build)")
        if self.network is not None and self.vpn is not None:
            network_group = (
                self.resource_groups[self.network.resource_group].name
                if self.network.resource_group in self.resource_groups
                else None
            )
            groups = {g.name.lower() for g in self.resource_groups.values()}
            gateway_group = self.vpn.gateway.resource_group.lower()
            if network_group and gateway_group in groups and gateway_group != network_group.lower():
                raise FieldProblem(
                    ("vpn", "gateway", "resource_group"),
                    f"{self.vpn.gateway.resource_group!r} is not the VNet's group; allowed: {network_group} "
                    "(the gateway is created beside its VNet, in network.resource_group)",
                )
            vnet = ipaddress.IPv4Network(self.network.address_space)
            if ipaddress.IPv4Network(self.vpn.client_address_pool).overlaps(vnet):
                raise FieldProblem(
                    ("vpn", "client_address_pool"),
                    f"{self.vpn.client_address_pool} overlaps network.address_space {vnet}; allowed: a pool outside the VNet",
                )
            if self.vpn.dns_servers and self.vpn.dns_servers != [self.network.inbound_dns_address]:
                raise FieldProblem(
                    ("vpn", "dns_servers"),
                    f"{self.vpn.dns_servers} is not the DNS resolver's inbound address; "
                    f"allowed: [{self.network.inbound_dns_address}] "
                    "(the first usable address of the dns_inbound subnet, which Azure assigns)",
                )
        return self

    @model_validator(mode="after")
    def _owners_are_apps(self) -> EnvConfig:
        missing = {"data", "apps"} - set(self.resource_groups)
        if missing:
            raise FieldProblem(("resource_groups",), f"{', '.join(sorted(missing))} missing; allowed: both data and apps")
        _duplicates(((("apps", i, "name"), a.name) for i, a in enumerate(self.apps)), "app name")
        _duplicates(((("databases", i, "name"), d.name) for i, d in enumerate(self.databases)), "database name")
        apps = [app.name for app in self.apps]
        for i, db in enumerate(self.databases):
            places = [(("databases", i, "owner"), db.owner)]
            places += [(("databases", i, "shared_with", j), app) for j, app in enumerate(db.shared_with)]
            for loc, app in places:
                if app is not None and app not in apps:
                    raise FieldProblem(loc, f"{app!r} is not an app of this environment; allowed: {', '.join(apps) or '(none)'}")
        return self

    @model_validator(mode="after")
    def _steps_known(self) -> EnvConfig:
        from deploykit.engine.steps import STEPS

        for i, step in enumerate(self.steps):
            if step not in STEPS:
                raise FieldProblem(("steps", i), f"{step!r} is not a step; allowed: {', '.join(STEPS)}")
        _duplicates(((("steps", i), s) for i, s in enumerate(self.steps)), "step")
        return self

    @model_validator(mode="after")
    def _gateway_in_own_group(self) -> EnvConfig:
        groups = [g.name for g in self.resource_groups.values()]
        if self.vpn is not None and self.vpn.gateway.resource_group.lower() not in {g.lower() for g in groups}:
            raise FieldProblem(
                ("vpn", "gateway", "resource_group"),
                f"{self.vpn.gateway.resource_group!r} is not a resource group of this environment; allowed: {', '.join(groups)}",
            )
        return self

    def deployed_tag(self, tag: str) -> str:
        """The tag this environment runs for image tag `tag` (prod runs beta's T promoted as prod-T)."""
        return f"{self.image_tag_prefix}{tag}"


class Platform(BaseModel):
    """The loaded inventory: shared settings plus the environments asked for."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    config_dir: Path
    shared: SharedConfig
    envs: dict[str, EnvConfig]

    def vault_for(self, env: str) -> tuple[VaultConfig, str]:
        """An environment's vault and its group: shared's in the shared group, the others' with their data."""
        if env == "shared":
            return self.shared.key_vault, self.shared.resource_group.name
        return self.envs[env].key_vault, self.envs[env].resource_groups["data"].name

    def subscription_id(self) -> str | None:
        """AZURE_SUBSCRIPTION_ID overrides config (platform.md); None means ask the Azure CLI."""
        return os.environ.get("AZURE_SUBSCRIPTION_ID") or self.shared.azure.subscription_id


def available_envs(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml") if p.name != SHARED_FILE)


def load_platform(config_dir: Path, envs: list[str]) -> Platform:
    """Load shared.yaml and each named environment file; raise UserError on the first mistake."""
    known = available_envs(config_dir)
    for env in envs:
        if env not in known:
            raise UserError(f"--env: {env!r} is not an environment; allowed: {', '.join(known) or '(none)'}")
    shared = _load_file(config_dir / SHARED_FILE, SharedConfig)
    loaded = {env: _load_file(config_dir / f"{env}.yaml", EnvConfig) for env in envs}
    for env, cfg in loaded.items():
        if cfg.env != env:
            raise UserError(f"{_display(config_dir / f'{env}.yaml')}: env: is {cfg.env!r}; must match the file name {env!r}")
    _check_across_files(config_dir, shared, loaded, known)
    return Platform(config_dir=config_dir, shared=shared, envs=loaded)


# What must be unique across files: resource groups per subscription, the others as global DNS names.
_UNIQUE_KINDS = {
    "resource group": "a resource group name no other environment or role uses",
    "key vault": "a vault name used nowhere else (vault names are global)",
    "postgres server": "a server name used nowhere else (server names are global)",
    "redis cache": "a cache name used nowhere else (cache names are global)",
    "app configuration store": "a store name used nowhere else (store names are global)",
}


def _names_in(shared: SharedConfig | None, env: EnvConfig | None) -> list[tuple[str, str, str]]:
    """(kind, field path, name) of every name that must be unique across the config files."""
    if shared is not None:
        return [
            ("resource group", "resource_group.name", shared.resource_group.name),
            ("key vault", "key_vault.name", shared.key_vault.name),
        ]
    if env is None:
        return []
    names = [("resource group", f"resource_groups.{role}.name", g.name) for role, g in env.resource_groups.items()]
    return [
        *names,
        ("key vault", "key_vault.name", env.key_vault.name),
        ("postgres server", "postgres.name", env.postgres.name),
        ("redis cache", "redis.name_suffix" if env.redis.name_suffix else "redis.name", env.redis.full_name),
        ("app configuration store", "app_configuration.name", env.app_configuration.name),
    ]


def _check_across_files(config_dir: Path, shared: SharedConfig, loaded: dict[str, EnvConfig], known: list[str]) -> None:
    """Two files (or two roles) must not claim the same resource group or global name.

    Environments not asked for are read quietly: when such a file is broken its own run reports it.
    """
    places: list[tuple[str, bool, EnvConfig | None, SharedConfig | None]] = [(SHARED_FILE, True, None, shared)]
    places += [(f"{env}.yaml", True, cfg, None) for env, cfg in loaded.items()]
    for env in known:
        if env not in loaded:
            peeked = _peek_env(config_dir / f"{env}.yaml")
            if peeked is not None:
                places.append((f"{env}.yaml", False, peeked, None))
    first: dict[tuple[str, str], tuple[str, bool, str]] = {}
    for file, is_loaded, env_cfg, shared_cfg in places:
        for kind, field, name in _names_in(shared_cfg, env_cfg):
            key = (kind, name.lower())
            if key not in first:
                first[key] = (file, is_loaded, field)
                continue
            other_file, other_loaded, other_field = first[key]
            if not is_loaded and (not other_loaded or other_file == SHARED_FILE):
                continue  # no environment asked for is involved: that environment's own run reports it
            here, there = (file, field), (other_file, other_field)
            if not is_loaded:
                here, there = there, here
            where = "" if here[0] == there[0] else f" in {_display(config_dir / there[0])}"
            raise UserError(
                f"{_display(config_dir / here[0])}: {here[1]}: {name!r} is also {there[1]}{where}; allowed: {_UNIQUE_KINDS[kind]}"
            )


def _peek_env(path: Path) -> EnvConfig | None:
    try:
        data = parse_yaml(read_text_file(path, str(path)), str(path))
        return EnvConfig.model_validate(data) if isinstance(data, Mapping) else None
    except (UserError, ValidationError):
        return None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def _load_file(path: Path, model: type[BaseModel]) -> Any:
    shown = _display(path)
    text = read_text_file(path, shown)
    data = parse_yaml(text, shown)
    if data is None:
        raise UserError(f"{shown}: the file is empty; allowed: a mapping of settings (key: value lines)")
    if not isinstance(data, Mapping):
        raise UserError(f"{shown}: (top level): is a {_yaml_kind(data)}; allowed: a mapping of settings (key: value lines)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, model, text)}") from None


def _yaml_kind(data: Any) -> str:
    return {list: "list", str: "single value", int: "number", float: "number", bool: "true/false"}.get(
        type(data), type(data).__name__
    )


# What a field of a basic type allows, by pydantic's error type (what the user must write instead).
_ALLOWED_BY_TYPE = {
    "int_parsing": "a whole number, e.g. 32",
    "int_type": "a whole number, e.g. 32",
    "int_from_float": "a whole number, e.g. 32",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "dict_type": "a mapping (key: value lines)",
    "list_type": "a list ([a, b] or '- ' lines)",
}
# Bounds: pydantic's error type -> (the ctx key with the limit, how the limit reads).
_BOUNDS = {
    "less_than_equal": ("le", "at most {}"),
    "less_than": ("lt", "less than {}"),
    "greater_than_equal": ("ge", "at least {}"),
    "greater_than": ("gt", "more than {}"),
    "string_too_short": ("min_length", "at least {} characters"),
    "string_too_long": ("max_length", "at most {} characters"),
    "too_short": ("min_length", "at least {} items"),
    "too_long": ("max_length", "at most {} items"),
}


def _first_error(exc: ValidationError) -> dict[str, Any]:
    """The error to report: an unknown key before a missing one (a typo'd key causes both)."""
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown and errors[0]["type"] == "missing":
        return unknown[0]
    return errors[0]


def _as_written(text: str | None, loc: tuple[Any, ...]) -> str | None:
    """The scalar at `loc` as the file writes it (`2026.10`, where YAML read the number 2026.1).

    Found by walking the composed YAML nodes along the error's path, so a flow mapping, another
    key of the same name or an alias cannot point at the wrong line. None when it cannot be found.
    """
    if not text:
        return None
    try:
        node = yaml.compose(text, Loader=UniqueKeyLoader)
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next(value for key, value in node.value if key.value == str(part))
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part]
            else:
                return None
    except (yaml.YAMLError, StopIteration, IndexError):
        return None
    return node.value if isinstance(node, yaml.ScalarNode) else None


def describe_validation_error(exc: ValidationError, model: type[BaseModel], text: str | None = None) -> str:
    """One line for the first problem: `field.path: what is wrong; what is allowed`.

    `text` is the file as written: a value YAML read as a number is quoted back as the user typed it.
    """
    err = _first_error(exc)
    loc = err["loc"]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        return problem.describe(tuple(loc))
    kind = err["type"]
    if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping's key, not its value, is wrong
        path = _dotted(loc[:-2]) or "(top level)"
        msg = re.sub(r"^Value error, ", "", err["msg"])
        if kind.startswith("literal_error"):
            msg = f"is not allowed; allowed: {err['ctx']['expected']}"
        return f"{path}: key {err.get('input', loc[-2])!r} {msg}"
    path = _dotted(loc) or "(top level)"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{path}: unknown field{hint}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: missing required field"
    msg = re.sub(r"^Value error, ", "", err["msg"])
    if kind == "string_pattern_mismatch":
        msg = f"{err.get('input')!r} does not match {err['ctx']['pattern']}"
    elif kind.startswith("literal_error"):
        given = err.get("input")
        msg = f"{given!r} is not allowed; allowed: {err['ctx']['expected']}"
        if isinstance(given, int | float) and f"'{given}'" in err["ctx"]["expected"]:
            msg += f' (quote it: "{given}")'
    elif kind == "string_type" and isinstance(err.get("input"), int | float) and not isinstance(err["input"], bool):
        written = _as_written(text, tuple(loc)) or str(err["input"])
        read = "" if written == str(err["input"]) else f" ({err['input']!r})"
        msg = f'{written} is read as a number{read}; allowed: text: quote it: "{written}"'
    elif kind in _ALLOWED_BY_TYPE:
        msg = f"{err.get('input')!r} is not allowed; allowed: {_ALLOWED_BY_TYPE[kind]}"
    elif kind in _BOUNDS and _BOUNDS[kind][0] in (err.get("ctx") or {}):
        key, phrase = _BOUNDS[kind]
        msg = f"{err.get('input')!r} is out of range; allowed: {phrase.format(err['ctx'][key])}"
    elif "input" in err and kind not in {"value_error", "assertion_error"}:
        msg = f"{msg} (got {err['input']!r})"
    return f"{path}: {msg}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names the model allows at `loc`, for 'unknown field' messages."""
    try:
        return _fields_below(model, loc)
    except (KeyError, IndexError, TypeError):
        return []


def _fields_below(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[part].annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or str(origin) == "<class 'types.UnionType'>":
            options = [a for a in get_args(annotation) if a is not type(None)]
            annotation = options[0]
        else:
            return annotation
