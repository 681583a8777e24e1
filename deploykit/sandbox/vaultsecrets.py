"""A Key Vault's secrets, kept once for the data plane and for ARM's `vaults/secrets`.

Azure keeps a secret once. A version written through the management plane
(Secrets_CreateOrUpdate, key-vault-secret/createSecret.json) is the data plane's latest
version. An ARM GET (getSecret.json) shows the data plane's latest version, never its value
(azure-facts.md 3.4). The sandbox keeps every secret in the store's "secrets" section (vault ->
lower-cased name -> versions, oldest first). The ARM type is a view of that section
(`ArmType.view`), and its PUT adds a version there.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Callable
from typing import Any

from deploykit.sandbox.armtype import PRIVATE, ArmType, State
from deploykit.sandbox.ids import ArmError, ParsedId

TYPE = "Microsoft.KeyVault/vaults/secrets"


def new_version(name: str, value: str, content_type: str | None, tags: dict | None, enabled: bool = True) -> dict[str, Any]:
    """A new version as the data plane stores it (its id is `<vault>/secrets/<name>/<version>`)."""
    now = int(time.time())
    return {
        "name": name,
        "version": pysecrets.token_hex(16),
        "value": value,
        "contentType": content_type,
        "tags": tags or {},
        "attributes": {"enabled": enabled, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"},
    }


def _arm_body(vault: dict[str, Any], latest: dict[str, Any]) -> dict[str, Any]:
    """ARM's shape of a secret's latest version (getSecret.json): attributes, no value, the vault's location."""
    attributes = latest["attributes"]
    props: dict[str, Any] = {"attributes": {k: attributes[k] for k in ("enabled", "created", "updated") if k in attributes}}
    if latest.get("contentType"):
        props["contentType"] = latest["contentType"]
    body: dict[str, Any] = {"location": vault["body"].get("location", ""), "properties": props}
    if latest.get("tags"):
        body["tags"] = dict(latest["tags"])
    body[PRIVATE] = {"version": latest["version"]}  # for secretUriWithVersion
    return body


def _vault_name(vault: dict[str, Any]) -> str:
    return vault["id"].rsplit("/", 1)[-1].lower()


def _view(state: State, vault: dict[str, Any], name: str | None) -> dict[str, dict[str, Any]]:
    """The ARM bodies of the vault's secrets (one when `name` is given), by name as first written."""
    stored = state["secrets"].get(_vault_name(vault), {})
    keys = [name.lower()] if name is not None else list(stored)
    return {versions[-1]["name"]: _arm_body(vault, versions[-1]) for key in keys if (versions := stored.get(key))}


def _before_put(state: State, parsed: ParsedId, existing: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """Secrets_CreateOrUpdate: a new data-plane version with the request's value; the answer is ARM's view of it."""
    props = request.get("properties") if isinstance(request.get("properties"), dict) else {}
    value = props.get("value")
    if not isinstance(value, str):
        raise ArmError(400, "BadRequest", "The secret's properties.value is required and must be a string.")
    attributes = props.get("attributes") if isinstance(props.get("attributes"), dict) else {}
    tags = request.get("tags") if isinstance(request.get("tags"), dict) else None
    content_type = props.get("contentType") if isinstance(props.get("contentType"), str) else None
    vault = state["resources"][str(parsed.container).lower()]
    name = existing["id"].rsplit("/", 1)[-1] if existing else parsed.name
    version = new_version(name, value, content_type, tags, enabled=attributes.get("enabled") is not False)
    section = dict(state["secrets"].get(_vault_name(vault), {}))  # replaced, not changed in place (armtype.State)
    section[name.lower()] = [*section.get(name.lower(), []), version]
    state["secrets"][_vault_name(vault)] = section
    return _arm_body(vault, version)


def _computed(out: dict[str, Any], vault_url: Callable[[str], str] | None) -> None:
    """secretUri and secretUriWithVersion point at the sandbox's data plane of the vault."""
    props = out.get("properties")
    if not isinstance(props, dict) or vault_url is None:
        return
    uri = f"{vault_url(out['id'].split('/')[-3]).rstrip('/')}/secrets/{out['name']}"
    props["secretUri"] = uri
    version = out.get(PRIVATE, {}).get("version")
    if version:
        props["secretUriWithVersion"] = f"{uri}/{version}"


# key-vault-secret/createSecret.json and getSecret.json: no provisioningState, the value never returned
SECRET = ArmType(
    TYPE,
    provisioning_state=False,
    write_only=("properties.value",),
    read_only=("properties.secretUri", "properties.secretUriWithVersion"),
    before_put=_before_put,
    computed=_computed,
    view=_view,
)
