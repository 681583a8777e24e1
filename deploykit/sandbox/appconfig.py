"""App Configuration stores and their key-values through ARM.

Shapes: app-configuration/ConfigurationStoresCreate.json, ConfigurationStoresGet.json,
ConfigurationStoresCreateKeyValue.json (tests/data/arm-examples); azure-facts.md 3.12 and
azure-facts-2.md 1.1-1.4. The sandbox serves no App Configuration data plane: `endpoint` is
Azure's name for the store.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from deploykit.sandbox.armtype import ArmType, State
from deploykit.sandbox.bodies import properties
from deploykit.sandbox.ids import ArmError, ParsedId

# azure-facts-2.md 1.4, the error text from pulumi/pulumi-azure-native#4323. Status and code are
# not verified (403 Forbidden is what keyValues writes answer when ARM may not reach the store).
LOCAL_AUTH_DISABLED = (
    "The operation cannot be performed because the configuration store is using local authentication mode and "
    "local authentication is disabled. To enable access to data plane resources while local authentication is "
    "disabled, please use pass-through authentication mode"
)


def _stamp() -> str:
    """The services' timestamp form: "2018-04-24T16:30:55+00:00" (ConfigurationStoresCreate.json)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _store_created(body: dict[str, Any]) -> None:
    body.setdefault("properties", {})["creationDate"] = _stamp()


def _store_computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    out.setdefault("properties", {})["endpoint"] = f"https://{out['name'].lower()}.azconfig.io"


def decode_name(name: str) -> tuple[str, str | None]:
    """(key, label) from a keyValues name: `key$label`, `~` standing for `%` (azure-facts-2.md 1.2)."""
    key, sep, label = name.partition("$")
    return unquote(key.replace("~", "%")), unquote(label.replace("~", "%")) if sep else None


def _key_value_before_put(
    state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """ConfigurationStoresCreateKeyValue.json's shape; refused when ARM may not reach the data (1.4)."""
    store = state["resources"].get((parsed.container or "").lower())
    store_props = properties(store["body"]) if store else {}
    proxy = store_props.get("dataPlaneProxy") if isinstance(store_props.get("dataPlaneProxy"), dict) else {}
    if store_props.get("disableLocalAuth") is True and str(proxy.get("authenticationMode", "Local")).lower() == "local":
        raise ArmError(403, "Forbidden", LOCAL_AUTH_DISABLED)
    props = properties(request)
    key, label = decode_name(parsed.name)
    tags = props.get("tags") if isinstance(props.get("tags"), dict) else {}
    return {
        "properties": {
            "key": key,
            "label": label,
            "value": props.get("value"),
            "contentType": props.get("contentType") or "",
            "eTag": secrets.token_urlsafe(20),
            "lastModified": _stamp(),
            "locked": False,
            "tags": dict(tags),
        }
    }


TYPES: tuple[ArmType, ...] = (
    ArmType(
        "Microsoft.AppConfiguration/configurationStores",
        long_running=True,
        global_name=True,  # <name>.azconfig.io
        defaults=MappingProxyType(
            {
                "properties": {
                    # The SDK model's defaults, sent when unset (azure-facts.md 3.12)
                    "disableLocalAuth": False,
                    "softDeleteRetentionInDays": 7,
                    "enablePurgeProtection": False,
                    # ConfigurationStoresCreate.json
                    "encryption": {"keyVaultProperties": {"keyIdentifier": None, "identityClientId": None}},
                    "privateEndpointConnections": [],
                    "dataPlaneProxy": {"authenticationMode": "Local", "privateLinkDelegation": "Disabled"},
                }
            }
        ),
        read_only=("properties.creationDate", "properties.endpoint"),
        on_create=_store_created,
        computed=_store_computed,
    ),
    # Synchronous; the SDK accepts only 200, created or not (azure-facts-2.md 1.1); no location.
    ArmType(
        "Microsoft.AppConfiguration/configurationStores/keyValues",
        provisioning_state=False,
        created_status=200,
        before_put=_key_value_before_put,
    ),
)
