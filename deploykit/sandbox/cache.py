"""Azure Cache for Redis: the cache, its access keys (listKeys, regenerateKey), its firewall rules.

Shapes: redis/RedisCacheCreate.json, RedisCacheGet.json, redis-firewall-rule/*.json
(tests/data/arm-examples); a Basic C0 cache's real answer (an `az redis create` output quoted in
thingsboard's TBMQ Azure install guide) for what a small cache reports; azure-facts.md 3.9-3.10.
The sandbox serves no Redis: hostName is Azure's name for the cache.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from deploykit.sandbox.armtype import PRIVATE, ArmType, State
from deploykit.sandbox.ids import ArmError, ParsedId
from deploykit.sandbox.netrules import check_range

# A major version as sent, and what the service reports: "4" -> "4.0.14" (RedisCacheCreate.json),
# "6" -> "6.0.20" (a Basic C0 cache created with az redis create); "latest" is 6 today.
FULL_VERSIONS = {"4": "4.0.14", "6": "6.0.20", "latest": "6.0.20"}
# redisConfiguration keys the service adds: a C0 cache's (the az output above), else the
# example's (RedisCacheCreate.json 200, a Premium P1).
C0_CONFIGURATION = {
    "maxclients": "256",
    "maxfragmentationmemory-reserved": "12",
    "maxmemory-delta": "2",
    "maxmemory-reserved": "2",
}
CONFIGURATION = {"maxclients": "1000", "maxmemory-reserved": "50", "maxmemory-delta": "50"}
RULE_NAME = re.compile(r"[A-Za-z0-9]{1,256}")  # azure-facts.md 3.10: 1-256 alphanumerics (fullmatch)


def new_key() -> str:
    """An access key as Azure shows one: 32 random bytes in base64, 44 characters."""
    return base64.b64encode(os.urandom(32)).decode()


def _created(body: dict[str, Any]) -> None:
    """The keys are made once, kept privately, and read only through listKeys."""
    body[PRIVATE] = {"keys": {"primaryKey": new_key(), "secondaryKey": new_key()}}


def _instances(props: dict[str, Any]) -> list[dict[str, Any]]:
    """RedisCacheGet.json's shape; a Basic cache has one node, reported as neither master nor primary."""
    sku = props.get("sku") if isinstance(props.get("sku"), dict) else {}
    if str(sku.get("name", "")).lower() == "basic":
        return [{"sslPort": 15000, "nonSslPort": 13000, "isMaster": False, "isPrimary": False}]
    replicas = int(props.get("replicasPerPrimary") or props.get("replicasPerMaster") or 1)
    nodes = []
    for shard in range(int(props.get("shardCount") or 1)):
        for replica in range(replicas + 1):
            n = len(nodes)
            node = {"sslPort": 15000 + n, "nonSslPort": 13000 + n, "isMaster": replica == 0, "isPrimary": replica == 0}
            if props.get("shardCount"):
                node["shardId"] = shard
            nodes.append(node)
    return nodes


def _computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    props = out.setdefault("properties", {})
    props["hostName"] = f"{out['name']}.redis.cache.windows.net"
    version = str(props.get("redisVersion", "6"))
    props["redisVersion"] = FULL_VERSIONS.get(version.lower(), version) if "." not in version else version
    sku = props.get("sku") if isinstance(props.get("sku"), dict) else {}
    small = str(sku.get("family", "")).upper() == "C" and int(sku.get("capacity") or 0) == 0
    added = C0_CONFIGURATION if small else CONFIGURATION
    given = props.get("redisConfiguration") if isinstance(props.get("redisConfiguration"), dict) else {}
    props["redisConfiguration"] = {**added, **given}
    if str(sku.get("name", "")).lower() != "basic":
        props.setdefault("replicasPerMaster", 1)
        props.setdefault("replicasPerPrimary", props["replicasPerMaster"])
    props["instances"] = _instances(props)


def _list_keys(state: State, record: dict[str, Any], request: dict[str, Any] | None) -> dict[str, str]:
    return dict(record["body"][PRIVATE]["keys"])


def _regenerate_key(state: State, record: dict[str, Any], request: dict[str, Any] | None) -> dict[str, str]:
    """POST .../regenerateKey {"keyType": "Primary"|"Secondary"}: answers both keys, as listKeys does."""
    kind = str((request or {}).get("keyType", ""))
    if kind.lower() not in {"primary", "secondary"}:
        raise ArmError(400, "InvalidRequestBody", f"The value '{kind}' is not valid for keyType; use Primary or Secondary.")
    keys = record["body"][PRIVATE]["keys"]
    keys[f"{kind.lower()}Key"] = new_key()
    return dict(keys)


def _rule_before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> None:
    """Names are 1-256 alphanumerics (azure-facts.md 3.10); startIP and endIP two IPv4 ends in order.

    The error codes (InvalidResourceName, InvalidRequestBody) are not verified.
    """
    name = unquote(parsed.name)
    if not RULE_NAME.fullmatch(name):
        raise ArmError(
            400,
            "InvalidResourceName",
            f"The firewall rule name '{name}' is invalid: it may contain only letters and digits (1-256).",
        )
    check_range(request, "startIP", "endIP", "InvalidRequestBody")


def _rule_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """RedisCacheFirewallRuleGet.json names the rule `cache1/rule1`."""
    parts = out["id"].rstrip("/").split("/")
    out["name"] = f"{parts[-3]}/{parts[-1]}"


TYPES: tuple[ArmType, ...] = (
    # RedisCacheCreate.json answers type "Microsoft.Cache/Redis" and a display-name location.
    ArmType(
        "Microsoft.Cache/Redis",
        long_running=True,
        global_name=True,  # <name>.redis.cache.windows.net (azure-facts.md 3.9)
        display_location=True,
        defaults=MappingProxyType(
            {
                "properties": {
                    "enableNonSslPort": False,
                    "port": 6379,
                    "sslPort": 6380,
                    "minimumTlsVersion": "1.2",
                    "publicNetworkAccess": "Enabled",
                    "redisVersion": "6",
                    "updateChannel": "Stable",
                    "zonalAllocationPolicy": "Automatic",
                    "linkedServers": [],
                    "privateEndpointConnections": [],
                },
                "tags": {},
            }
        ),
        read_only=(
            "properties.hostName",
            "properties.port",
            "properties.sslPort",
            "properties.instances",
            "properties.privateEndpointConnections",
        ),
        on_create=_created,
        computed=_computed,
        actions=MappingProxyType({"listkeys": _list_keys, "regeneratekey": _regenerate_key}),
    ),
    # redis-firewall-rule/*.json: synchronous, no location, no provisioningState
    ArmType(
        "Microsoft.Cache/Redis/firewallRules",
        provisioning_state=False,
        before_put=_rule_before_put,
        computed=_rule_computed,
    ),
)
