"""PostgreSQL flexible servers, their server parameters and firewall rules, as ARM types.

Each server is backed by a real cluster (pgcluster.py): created with the server, given the
admin login and password of each PUT, deleted with it; its GET reports the live endpoint as
`fullyQualifiedDomainName` = `127.0.0.1:<port>`. The cluster is prepared (initdb, start, the
admin login) by the PUT's backing work, which the store runs inside the server's long-running
operation, as Azure creates a server after answering 201; until it is done the GET answers
`<name>.postgres.database.azure.com`, as for a server without a cluster.

Shapes: postgresql-flexible-server/ServerCreate.json, ServersGet.json; ConfigurationsGet.json
and ConfigurationsUpdateUsingPut.json (Azure/azure-rest-api-specs, 2025-08-01, copied to
tests/data/arm-examples/postgresql-configuration); postgresql-firewall-rule/*.json; azure-facts.md
3.6-3.8 and azure-facts-2.md 5.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from deploykit.sandbox.armtype import PRIVATE, ArmType, BackingWork, State
from deploykit.sandbox.bodies import ABSENT, get_path, properties
from deploykit.sandbox.ids import ArmError, ParsedId
from deploykit.sandbox.netrules import check_range
from deploykit.sandbox.pgcluster import Cluster, binary_version

# Premium SSD tiers by size: 128 GB = P10 / 500 IOPS (ServersGet.json), 512 GB = P20 / 2300
# (ServerCreate.json); the others are the published Premium SSD sizes (not from an example).
STORAGE_TIERS = ((32, "P4", 120), (64, "P6", 240), (128, "P10", 500), (256, "P15", 1100), (512, "P20", 2300),
                 (1024, "P30", 5000), (2048, "P40", 7500), (4096, "P50", 7500), (8192, "P60", 16000),
                 (16384, "P70", 18000), (32768, "P80", 20000))  # fmt: skip
# Create-only: the service refuses a change on an existing server. geoRedundantBackup is
# visibility ["read","create"] in the SDK (azure-facts-2.md 5); administratorLogin cannot be
# renamed either. The error code is not verified (PropertyChangeNotAllowed is ARM's usual one).
CREATE_ONLY = ("properties.backup.geoRedundantBackup", "properties.administratorLogin")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # "2025-06-01T18:35:22.123456Z" (ServersGet.json)


# ---- servers -------------------------------------------------------------------------------------
def _server_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    if existing is None:
        return
    for path in CREATE_ONLY:
        want, have = get_path(request, path), get_path(existing["body"], path)
        if want is not ABSENT and have is not ABSENT and str(want).lower() != str(have).lower():
            field = path.removeprefix("properties.")
            raise ArmError(
                400,
                "PropertyChangeNotAllowed",
                f"Changing property '{field}' is not allowed: it can only be set when server '{parsed.name}' "
                f"is created (it is '{have}').",
            )


def _server_created(body: dict[str, Any]) -> None:
    props = body.setdefault("properties", {})
    props.setdefault("backup", {})["earliestRestoreDate"] = _stamp()
    props["minorVersion"] = binary_version()[1]  # the embedded server's real minor version


def _server_after_put(
    state_dir: Path, parsed: ParsedId, body: dict[str, Any], request: dict[str, Any], created: bool
) -> BackingWork:
    """Name the cluster in the stored body now; return the slow part: started if needed, the admin login set.

    The cluster's folder is made here, in the PUT, so a parameter PUT that follows knows the
    server has a cluster even before its backing work has begun.
    """
    cluster = Cluster.for_server(state_dir, parsed.name)
    cluster.home.mkdir(parents=True, exist_ok=True)
    body[PRIVATE] = {"cluster": str(cluster.home)}
    login = properties(body).get("administratorLogin")
    password = properties(request).get("administratorLoginPassword")  # kept in memory only, for the work

    def prepare() -> None:
        with cluster.preparing():
            cluster.ensure(make_home=False)  # a server deleted meanwhile gets no new cluster
            if isinstance(login, str) and login:
                cluster.set_admin(login, password if isinstance(password, str) else None)

    return prepare


def _server_after_delete(state: State, record: dict[str, Any]) -> None:
    home = record["body"].get(PRIVATE, {}).get("cluster")
    if home:
        Cluster(Path(home)).destroy()


def endpoint(record_body: dict[str, Any]) -> str | None:
    """`127.0.0.1:<port>` of a server's real PostgreSQL (TLS), started if needed; None without one (a seeded body)."""
    home = record_body.get(PRIVATE, {}).get("cluster")
    if not home:
        return None
    path = Path(home)
    port = Cluster(path).endpoint(path.parent.parent / "tls")  # <state dir>/postgres-servers/<name>, <state dir>/tls
    return None if port is None else f"127.0.0.1:{port}"


def _server_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    props = out.setdefault("properties", {})
    try:
        found = endpoint(out)
    except ArmError:
        if str(props.get("provisioningState")).lower() != "failed":
            raise
        found = None  # a server whose creation failed still answers its GET, as on Azure; it has no endpoint
    props["fullyQualifiedDomainName"] = found or f"{out['name']}.postgres.database.azure.com"
    storage = props.setdefault("storage", {})
    size = int(storage.get("storageSizeGB") or 32)
    tier, iops = next(((t, i) for gb, t, i in STORAGE_TIERS if size <= gb), STORAGE_TIERS[-1][1:])
    storage.setdefault("tier", tier)
    storage.setdefault("iops", iops)
    ha = props.setdefault("highAvailability", {})
    ha["state"] = "NotEnabled" if str(ha.get("mode", "Disabled")).lower() == "disabled" else "Healthy"
    network = props.setdefault("network", {})
    if network.get("delegatedSubnetResourceId"):
        network["publicNetworkAccess"] = "Disabled"  # ServerCreate.json: a VNet-integrated server


SERVER = ArmType(
    "Microsoft.DBforPostgreSQL/flexibleServers",
    long_running=True,
    global_name=True,  # <name>.postgres.database.azure.com (azure-facts.md 3.6)
    defaults=MappingProxyType(
        {
            "properties": {  # ServersGet.json, ServerCreate.json; azure-facts.md 2.7
                "version": "16",
                "state": "Ready",
                "authConfig": {"activeDirectoryAuth": "Disabled", "passwordAuth": "Enabled"},
                "availabilityZone": "1",
                "backup": {"backupRetentionDays": 7, "geoRedundantBackup": "Disabled"},
                "dataEncryption": {"type": "SystemManaged"},
                "highAvailability": {"mode": "Disabled"},
                "maintenanceWindow": {"customWindow": "Disabled", "dayOfWeek": 0, "startHour": 0, "startMinute": 0},
                "network": {"publicNetworkAccess": "Enabled"},
                "privateEndpointConnections": [],
                "replica": {"role": "Primary", "capacity": 5},
                "replicaCapacity": 5,
                "replicationRole": "Primary",
                "storage": {"storageSizeGB": 32, "autoGrow": "Disabled", "type": ""},
            }
        }
    ),
    read_only=(
        "properties.minorVersion",
        "properties.state",
        "properties.fullyQualifiedDomainName",
        "properties.backup.earliestRestoreDate",
        "properties.highAvailability.state",
        "properties.replicaCapacity",
        "properties.privateEndpointConnections",  # made by private endpoints, kept across PUTs
    ),
    write_only=("properties.administratorLoginPassword", "properties.createMode", "properties.pointInTimeUTC"),
    kept_when_omitted=CREATE_ONLY,
    before_put=_server_before_put,
    on_create=_server_created,
    computed=_server_computed,
    after_put=_server_after_put,
    after_delete=_server_after_delete,
)


# ---- server parameters ---------------------------------------------------------------------------
# azure-databases-docs articles/postgresql/server-parameters/includes/param-16-customized-options.md
AZURE_EXTENSIONS = (
    "address_standardizer,address_standardizer_data_us,age,amcheck,anon,azure_ai,azure_storage,bloom,btree_gin,"
    "btree_gist,citext,credcheck,cube,dblink,dict_int,dict_xsyn,earthdistance,fuzzystrmatch,hll,hstore,hypopg,"
    "intagg,intarray,ip4r,isn,lo,login_hook,ltree,oracle_fdw,orafce,pageinspect,pg_buffercache,pg_cron,pg_diskann,"
    "pg_duckdb,pg_freespacemap,pg_hint_plan,pg_ivm,pg_partman,pg_prewarm,pg_repack,pg_squeeze,pg_stat_statements,"
    "pg_trgm,pg_visibility,pgaudit,pgcrypto,pglogical,pgrouting,pgrowlocks,pgstattuple,plpgsql,plv8,postgis,"
    "postgis_raster,postgis_sfcgal,postgis_tiger_geocoder,postgis_topology,postgres_fdw,postgres_protobuf,semver,"
    "session_variable,sslinfo,tablefunc,temporal_tables,tdigest,tds_fdw,timescaledb,topn,tsm_system_rows,"
    "tsm_system_time,unaccent,uuid-ossp,vector"
)


def _parameter(description: str, data_type: str, default: str, allowed: str, link: str, dynamic: bool = True) -> dict[str, Any]:
    """ConfigurationsGet.json's properties for a parameter nobody has set."""
    return {
        "properties": {
            "description": description,
            "allowedValues": allowed,
            "dataType": data_type,
            "defaultValue": default,
            "documentationLink": link,
            "isConfigPendingRestart": False,
            "isDynamicConfig": dynamic,
            "isReadOnly": False,
            "source": "system-default",
            "value": default,
        }
    }


PARAMETERS: dict[str, dict[str, Any]] = {
    "azure.extensions": _parameter(
        "Specifies which extensions are allowed to be created in the server.",
        "Set",
        "",
        AZURE_EXTENSIONS,
        "https://go.microsoft.com/fwlink/?linkid=2274269",
    ),
    "array_nulls": _parameter(  # ConfigurationsGet.json, verbatim
        "Enables input of NULL (case insensitive) to be considered as NULL value rather than the literal String 'NULL'.",
        "Boolean",
        "on",
        "on,off",
        "https://www.postgresql.org/docs/13/runtime-config-compatible.html#GUC-ARRAY-NULLS",
    ),
    "require_secure_transport": _parameter(  # the TLS front enforces it (pgcluster.py)
        "Whether client connections to the server are required to use some form of secure transport.",
        "Boolean",
        "on",
        "on,off",
        "",
    ),
}


def _implied_parameter(name: str) -> dict[str, Any] | None:
    found = PARAMETERS.get(name.lower())
    return None if found is None else {"properties": dict(found["properties"])}


def _server_key(parsed: ParsedId) -> str:
    return (parsed.container or "").lower()


def _parameter_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """One write at a time per server: another in flight answers 409 ServerBusy (azure-facts-2.md 5)."""
    server = _server_key(parsed)
    for op in state["operations"].values():
        if op["status"] == "InProgress" and op["resource"].startswith(server + "/configurations/"):
            raise ArmError(
                409,
                "ServerBusy",
                f"Server '{server.rsplit('/', 1)[-1]}' is busy with another operation. Please try your operation later.",
            )
    body = _implied_parameter(parsed.name)
    if body is None:
        raise ArmError(404, "ResourceNotFound", f"The server parameter '{parsed.name}' does not exist.")
    props = properties(request)
    if props.get("value") is not None:  # values are kept as sent: upper case comes back upper case
        body["properties"].update(value=str(props["value"]), source=str(props.get("source") or "user-override"))
    return body


def _parameter_after_put(
    state_dir: Path, parsed: ParsedId, body: dict[str, Any], request: dict[str, Any], created: bool
) -> BackingWork | None:
    """azure.extensions reaches the real cluster, which enforces it as Azure does (pgcluster.py).

    Only for a server with a cluster folder (a seeded body has none); the work waits on the
    cluster's lock while the server's own backing work is still making it.
    """
    if parsed.name.lower() != "azure.extensions":
        return None
    cluster = Cluster.for_server(state_dir, _server_key(parsed).rsplit("/", 1)[-1])
    if not cluster.home.is_dir():
        return None
    value = str(properties(body).get("value") or "")

    def apply() -> None:
        cluster.ensure(make_home=False)
        cluster.set_extensions(value)

    return apply


PARAMETER = ArmType(
    "Microsoft.DBforPostgreSQL/flexibleServers/configurations",
    long_running=True,  # 202 + Azure-AsyncOperation in ConfigurationsUpdateUsingPut.json
    provisioning_state=False,  # ConfigurationsGet.json has none
    before_put=_parameter_before_put,
    after_put=_parameter_after_put,
    implied=_implied_parameter,
)


# ---- firewall rules ------------------------------------------------------------------------------
# The spec's name pattern (minLength 1; azure-facts.md 3.8). Python's \w is Unicode, as .NET's is.
RULE_NAME = re.compile(r"[-\w._]+")
# The error code for a bad name or range: Microsoft.DBforPostgreSQL answered InvalidParameterValue
# for a rule name with spaces on a single server (terraform-provider-azurerm#6768, 2020); for a
# flexible server's rules the code is UNVERIFIED. The messages are the sandbox's own.
RULE_ERROR = "InvalidParameterValue"


def _rule_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """Refuse what the spec refuses: a name off its pattern, a range that is not two IPv4 ends in order."""
    name = unquote(parsed.name)  # ARM sees the decoded name: %40 is an @
    if not RULE_NAME.fullmatch(name):
        raise ArmError(
            400,
            RULE_ERROR,
            f"The firewall rule name '{name}' is invalid: it must match the pattern '^[-\\w\\._]+$' "
            "(letters, digits, '-', '.', '_').",
        )
    check_range(request, "startIpAddress", "endIpAddress", RULE_ERROR)


FIREWALL_RULE = ArmType(
    "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules",
    long_running=True,  # FirewallRulesCreateOrUpdate.json: 202
    provisioning_state=False,  # FirewallRulesGet.json has none
    before_put=_rule_before_put,
)

TYPES: tuple[ArmType, ...] = (
    SERVER,
    ArmType("Microsoft.DBforPostgreSQL/flexibleServers/databases", long_running=True),
    FIREWALL_RULE,
    PARAMETER,
)
