"""Load and validate config/*.yaml into typed, frozen objects; errors name file, field and rule."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploykit.errors import UserError
from deploykit.naming import name_problem
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


RegionName = Annotated[str, Field(pattern=r"^[a-z0-9]+$", description="short region name, e.g. centralus")]
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
TagMap = dict[Annotated[str, Field(min_length=1, max_length=512)], Annotated[str, Field(max_length=256)]]


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

    @model_validator(mode="after")
    def _retention_needs_premium(self) -> RegistryConfig:
        if self.retention_days and self.sku != "Premium":
            raise ValueError("retention_days needs sku Premium (retention is a Premium feature)")
        return self


class ProviderSecret(Strict):
    name: SecretName
    description: str


class PostgresConfig(Strict):
    name: PostgresServerName
    sku_name: str
    tier: Literal["Burstable", "GeneralPurpose", "MemoryOptimized"]
    version: Literal["13", "14", "15", "16", "17"]
    storage_gb: Annotated[int, Field(ge=32, le=32768)]
    admin_login: PgIdentifier
    backup_retention_days: Annotated[int, Field(ge=7, le=35)] = 7
    geo_redundant_backup: bool = False
    high_availability: Literal["Disabled", "ZoneRedundant", "SameZone"] = "Disabled"
    public_network_access: Literal["Enabled", "Disabled"]
    allow_azure_services: bool = False
    # The env vault secret holding the admin password (step 3 generates and stores it).
    admin_password_secret: SecretName = "postgres-admin-password"  # noqa: S105 - a secret's name, not its value


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


class IdentityConfig(Strict):
    name: IdentityName


class AppConfigurationConfig(Strict):
    name: AppConfigName
    sku: Literal["Free", "Developer", "Standard", "Premium"] = "Standard"
    settings: dict[str, str] = {}


class ContainerAppsEnvironmentConfig(Strict):
    name: EnvironmentName


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


class DatabaseConfig(Strict):
    name: PgIdentifier
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

    name: Annotated[str, Field(min_length=1, max_length=80)]
    resource_group: ResourceGroupName
    api_version: str = "2026-03-01"


class VpnConfig(Strict):
    """Point-to-site certificate authentication (azure-facts.md 7): RSA with SHA-256."""

    root_common_name: Annotated[str, Field(min_length=1, max_length=64)]
    key_size: Literal[2048, 3072, 4096] = 2048
    root_validity_days: Annotated[int, Field(ge=30, le=7300)] = 3650
    client_validity_days: Annotated[int, Field(ge=1, le=825)] = 365
    renewal_days: Annotated[int, Field(ge=1, le=365)] = 30
    max_roots: Annotated[int, Field(ge=1, le=20)] = 20  # the gateway accepts up to 20 roots
    gateway: GatewayRef
    client_address_pool: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$")]
    routes: list[Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$")]]
    dns_servers: list[Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+\.\d+$")]] = []

    @model_validator(mode="after")
    def _renewal_inside_validity(self) -> VpnConfig:
        if self.renewal_days >= self.client_validity_days:
            raise ValueError("renewal_days must be shorter than client_validity_days")
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

    def tags_for(self, env: str) -> dict[str, str]:
        """Every group and resource carries environment, product, managed-by and owner."""
        return {**self.tags, "environment": env, "product": self.product, "owner": self.owner}


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
    databases: list[DatabaseConfig]
    # Where each application's ordered SQL migrations are checked out (the apps own them).
    migrations_root: str = "migrations"
    vpn: VpnConfig | None = None

    @model_validator(mode="after")
    def _owners_are_apps(self) -> EnvConfig:
        apps = {app.name for app in self.apps}
        for db in self.databases:
            for app in [db.owner, *db.shared_with]:
                if app is not None and app not in apps:
                    raise ValueError(f"database {db.name}: app {app!r} is not in apps ({', '.join(sorted(apps))})")
        missing = {"data", "apps"} - set(self.resource_groups)
        if missing:
            raise ValueError(f"resource_groups needs {', '.join(sorted(missing))}")
        return self


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
    return Platform(config_dir=config_dir, shared=shared, envs=loaded)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def _load_file(path: Path, model: type[BaseModel]) -> Any:
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{shown}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserError(f"{shown}: {where}{problem}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{shown}: (top level): must be a mapping of settings")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, model)}") from None


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first problem: `field.path: what is wrong; what is allowed`."""
    err = exc.errors(include_url=False)[0]
    loc = err["loc"]
    path = _dotted(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return f"{path}: unknown field; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: missing required field"
    msg = re.sub(r"^Value error, ", "", err["msg"])
    if kind == "string_pattern_mismatch":
        msg = f"{err.get('input')!r} does not match {err['ctx']['pattern']}"
    elif kind.startswith("literal_error"):
        msg = f"{err.get('input')!r} is not allowed; allowed: {err['ctx']['expected']}"
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
