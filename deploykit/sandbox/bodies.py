"""What a provider keeps from a PUT (ARM PUT semantics), as generic helpers on JSON bodies.

Apart from providers.py so the per-type modules (rbac.py, cache.py, ...) can build their bodies
the way the table does without importing the table.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from deploykit.sandbox.armtype import PRIVATE, ArmType

ABSENT = object()


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(body: Any, dotted: str) -> Any:
    node = body
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def set_path(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = body
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def pop_path(body: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = body
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def properties(body: Mapping[str, Any]) -> dict[str, Any]:
    """body["properties"] when it is an object, else an empty one (a request may send anything)."""
    props = body.get("properties")
    return props if isinstance(props, dict) else {}


def _recase(body: dict[str, Any], dotted: str, how: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = body
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(leaf), str):
        node[leaf] = getattr(node[leaf], how)()


def stored_body(spec: ArmType, previous: dict[str, Any] | None, request: Mapping[str, Any]) -> dict[str, Any]:
    """What the provider keeps from a PUT, which replaces the resource (ARM PUT semantics).

    The request over the type's defaults: a property the PUT omits returns to its default, not
    to its previous value. Only read-only fields the service computed survive from before
    (provisioningState, creationDate, ...), the sandbox's PRIVATE data, and child collections
    the type keeps when omitted. Read-only fields in the request are ignored, write-only ones
    dropped, enums re-cased.
    """
    body = {key: copy.deepcopy(value) for key, value in request.items() if key not in {"id", "name", "type", PRIVATE}}
    kept = (*spec.read_only_paths(), PRIVATE)
    for path in kept:
        pop_path(body, path)
    body = deep_merge(spec.defaults, body)
    if previous is not None:
        for path in kept:
            value = get_path(previous, path)
            if value is not ABSENT:
                set_path(body, path, copy.deepcopy(value))
        for path in spec.kept_when_omitted:
            value = get_path(previous, path)
            if value is not ABSENT and get_path(request, path) is ABSENT:
                set_path(body, path, copy.deepcopy(value))
    elif spec.on_create is not None:
        spec.on_create(body)
    for path in spec.write_only:
        pop_path(body, path)
    for path, how in spec.recase.items():
        _recase(body, path, how)
    return body
