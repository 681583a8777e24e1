"""Values known only after apply: references from one playbook entry to another's actual state.

A playbook writes `{{ ref("mi.beta", "properties.principalId") }}`; rendering leaves a token in
the value (`${ref:mi.beta:properties.principalId}`). A reference implies a dependency. While
planning, a token resolves from what was read (or stays "(known after apply)" when the entry
does not exist yet, as Terraform shows it); when applying, it resolves from the entry's state
after its own apply. A path may start with an action (`listKeys().primaryKey`): the value comes
from POST {id}/listKeys and is sensitive, like any secret's value.

Two more tokens: `${generate:password}` (a value the tool generates once, see the secrets
plug-in) and role-assignment names, which are resolved while rendering (they need only ids).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

TOKEN = re.compile(r"\$\{ref:([a-z0-9][a-z0-9_.-]*):([A-Za-z0-9_.()]+)\}")
GENERATE = "${generate:password}"
ASSIGNMENT = re.compile(r"^\$\{assignment:([a-z0-9][a-z0-9_.-]*):([a-z0-9][a-z0-9_.-]*):([0-9a-f-]{36})\}$")
ACTION = re.compile(r"^([A-Za-z]+)\(\)(?:\.(.+))?$")
# Our own namespace for role-assignment names (azure-facts-2.md 4: Bicep's guid() cannot be matched).
ASSIGNMENT_NAMESPACE = uuid.UUID("6f1c3a52-8e0b-4d0e-9a51-2b1f0c7d9e44")


class KnownAfterApply(str):
    """A value Azure assigns when the referenced entry is created: shown, never compared equal."""

    __slots__ = ()


UNKNOWN = KnownAfterApply("(known after apply)")
SENSITIVE = "(sensitive)"


class Unresolved(Exception):
    """A reference whose value is not known yet (the entry does not exist or lacks the field)."""


# ---- what templates call -----------------------------------------------------------------------
def ref(address: str, path: str) -> str:
    return f"${{ref:{address}:{path}}}"


def generated_password() -> str:
    return GENERATE


def assignment_name(scope: str, principal: str, role_guid: str) -> str:
    """A role assignment's name: a GUID derived from scope, principal and role, fixed once rendered."""
    return f"${{assignment:{scope}:{principal}:{role_guid.lower()}}}"


def keyvalue_name(key: str, label: str | None = None) -> str:
    """App Configuration's ARM name for key + label (azure-facts-2.md 1.2): `~` percent-encoding, `$` label."""

    def encode(text: str) -> str:
        return quote(text, safe="").replace("~", "~7E").replace("%", "~")

    return encode(key) + (f"${encode(label)}" if label else "")


class ConfigProblem(Exception):
    """Raised by `config_problem` while rendering: the message is the whole one-line error."""


def config_problem(message: str) -> str:
    """`{{ config_problem("...") }}` in a playbook: stop rendering with that one line (a config the
    playbook cannot express, named before anything is sent)."""
    raise ConfigProblem(message)


JINJA_GLOBALS: dict[str, Callable[..., str]] = {
    "ref": ref,
    "config_problem": config_problem,
    "generated_password": generated_password,
    "assignment_name": assignment_name,
}
JINJA_FILTERS: dict[str, Callable[..., str]] = {"keyvalue_name": keyvalue_name}


# ---- reading tokens ----------------------------------------------------------------------------
def refs_in(value: Any) -> set[tuple[str, str]]:
    """Every (address, path) a body refers to."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, str):
        found.update(TOKEN.findall(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= refs_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs_in(item)
    return found


def assignment_parts(name: str) -> tuple[str, str, str] | None:
    match = ASSIGNMENT.match(name)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def assignment_guid(scope_id: str, principal_id: str, role_guid: str) -> str:
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, f"{scope_id.lower()}|{principal_id.lower()}|{role_guid.lower()}"))


def is_sensitive_path(path: str) -> bool:
    """Action results (keys) are secrets; so is a secret entry's value."""
    return bool(ACTION.match(path)) or path == "value"


Lookup = Callable[[str, str], Any]  # (address, path) -> value; raises Unresolved


def resolve(value: Any, lookup: Lookup, skip: frozenset[str] = frozenset(), strict: bool = False, _path: str = "") -> Any:
    """The value with every token replaced; unknown ones become UNKNOWN (or raise when strict).

    Paths in `skip` (write-only fields while planning) are left as they are.
    """
    if _path in skip:
        return value
    if isinstance(value, Mapping):
        return {k: resolve(v, lookup, skip, strict, f"{_path}.{k}" if _path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup, skip, strict, _path) for v in value]
    if not isinstance(value, str) or "${ref:" not in value:
        return value
    whole = TOKEN.fullmatch(value)
    try:
        if whole:
            return lookup(whole.group(1), whole.group(2))
        return TOKEN.sub(lambda m: str(lookup(m.group(1), m.group(2))), value)
    except Unresolved:
        if strict:
            raise
        return UNKNOWN


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path of a resource's JSON; Unresolved when absent."""
    node = document
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            raise Unresolved(path)
        node = node[part]
    return node


def contains_unknown(value: Any) -> bool:
    if isinstance(value, KnownAfterApply):
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False
