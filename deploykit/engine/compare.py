"""One normalise-and-diff function: compare only what the playbook declares, per-type rules as data."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = Path(__file__).with_name("normalise.yaml")
_MISSING = object()
_ID_PREFIX = re.compile(r"^/(subscriptions|providers)/", re.IGNORECASE)
# In an `extra_items_kept` list, items named with this prefix are this tool's own: one the playbook
# no longer names (a retired VPN root) is removed, not kept.
OWNED_ITEM_PREFIX = "deploykit-"


@dataclass(frozen=True)
class TypeRules:
    case_insensitive: frozenset[str] = frozenset()
    ignore_spaces: frozenset[str] = frozenset()
    major_version: frozenset[str] = frozenset()
    last_segment: frozenset[str] = frozenset()
    kept_from_actual: frozenset[str] = frozenset()
    kept_once_created: frozenset[str] = frozenset()
    running_from: frozenset[str] = frozenset()
    extra_items_kept: frozenset[str] = frozenset()


@cache
def _rules_by_type() -> dict[str, dict[str, list[str]]]:
    """normalise.yaml, read once per process (the C loader where PyYAML has it)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(RULES_FILE.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    return {k.lower(): v for k, v in data.items()}


@cache
def rules_for(resource_type: str) -> TypeRules:
    """The default rules merged with the type's own (type names compared case-insensitively)."""
    by_type = _rules_by_type()
    merged: dict[str, set[str]] = {}
    for block in (by_type.get("default", {}), by_type.get(resource_type.lower(), {})):
        for rule, paths in block.items():
            merged.setdefault(rule, set()).update(paths)
    return TypeRules(**{rule: frozenset(paths) for rule, paths in merged.items()})


def diff_resource(
    resource_type: str, desired: Mapping[str, Any], actual: Mapping[str, Any], write_only: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Differences between declared fields and actual state: {display path: {"old", "new"}}.

    Fields the playbook does not declare are never compared (Azure fills defaults and read-only
    fields); write-only fields (passwords, createMode) are never returned, so never compared.
    """
    rules = rules_for(resource_type)
    out: dict[str, dict[str, Any]] = {}
    _walk(desired, actual, "", "", rules, frozenset(write_only), out)
    return out


def _walk(want: Any, have: Any, shown: str, schema: str, rules: TypeRules, skip: frozenset[str], out: dict) -> None:
    if schema in skip:
        return
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            out[shown or "(body)"] = {"old": _plain(have), "new": _plain(want)}
            return
        case_keys = schema == "tags"  # a provider may re-case tag keys (PG VNetServer -> VnetServer)
        lookup = {k.lower(): v for k, v in have.items()} if case_keys else have
        by_id = {k.lower(): v for k, v in have.items() if _ID_PREFIX.match(str(k))}
        for key, value in want.items():
            found = lookup.get(key.lower() if case_keys else key, _MISSING)
            if found is _MISSING and _ID_PREFIX.match(key):
                # ARM ids as keys (userAssignedIdentities) come back re-cased: /resourcegroups/ (azure-facts.md 2.3)
                found = by_id.get(key.lower(), _MISSING)
            child_schema = f"{schema}.{key}" if schema else key
            child_shown = f"{shown}.{key}" if shown else key
            if found is _MISSING:
                if child_schema not in skip:
                    out[child_shown] = {"old": None, "new": _plain(value)}
                continue
            _walk(value, found, child_shown, child_schema, rules, skip, out)
        return
    if isinstance(want, list):
        _walk_list(want, have, shown, schema, rules, skip, out)
        return
    if not _scalar_equal(want, have, schema, rules):
        out[shown] = {"old": _plain(have), "new": _plain(want)}


def _walk_list(want: list, have: Any, shown: str, schema: str, rules: TypeRules, skip: frozenset[str], out: dict) -> None:
    if not isinstance(have, list):
        out[shown] = {"old": _plain(have), "new": _plain(want)}
        return
    named = all(isinstance(i, Mapping) and "name" in i for i in want) and all(
        isinstance(i, Mapping) and "name" in i for i in have
    )
    # A list others add to is matched by name even when the playbook declares none of its items.
    if named and (want or schema in rules.extra_items_kept):
        # Lists of named objects (subnets, rules, certificates) are matched by name, not position.
        have_by_name = {str(i["name"]).lower(): i for i in have}
        extra = set(have_by_name) - {str(i["name"]).lower() for i in want}
        for item in want:
            match = have_by_name.get(str(item["name"]).lower(), _MISSING)
            child = f"{shown}[{item['name']}]"
            if match is _MISSING:
                out[child] = {"old": None, "new": _plain(item)}
            else:
                _walk(item, match, child, schema, rules, skip, out)
        if schema in rules.extra_items_kept:
            extra = {n for n in extra if n.startswith(OWNED_ITEM_PREFIX)}  # others' items: kept, not compared
        for name in sorted(extra):
            out[f"{shown}[{name}]"] = {"old": _plain(have_by_name[name]), "new": None}
        return
    if len(want) != len(have):
        out[shown] = {"old": _plain(have), "new": _plain(want)}
        return
    if all(not isinstance(i, (Mapping, list)) for i in want):
        # Scalar lists (protocols, address prefixes) are sets to Azure: order is not meaningful.
        if sorted(_norm_scalar(i, schema, rules) for i in want) != sorted(_norm_scalar(i, schema, rules) for i in have):
            out[shown] = {"old": _plain(have), "new": _plain(want)}
        return
    for index, (w, h) in enumerate(zip(want, have, strict=True)):
        _walk(w, h, f"{shown}[{index}]", schema, rules, skip, out)


def _scalar_equal(want: Any, have: Any, schema: str, rules: TypeRules) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return float(want) == float(have)
    return _norm_scalar(want, schema, rules) == _norm_scalar(have, schema, rules)


def _norm_scalar(value: Any, schema: str, rules: TypeRules) -> str:
    if value is None:
        return "\0none"
    text = str(value)
    if schema == "location":
        # Some providers answer with display names ("East US"), others with short names.
        return text.lower().replace(" ", "")
    if schema in rules.last_segment:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    if schema in rules.major_version:
        text = text.split(".", 1)[0]
    if schema in rules.ignore_spaces:
        text = text.replace(" ", "")
    if schema in rules.case_insensitive or _ID_PREFIX.match(text):
        text = text.lower()
    return text


def _plain(value: Any) -> Any:
    if value is _MISSING:
        return None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def keep_undeclared(resource_type: str, body: Mapping[str, Any], actual: Mapping[str, Any] | None) -> dict[str, Any]:
    """The PUT body plus what others keep in the resource that the playbook does not declare.

    A PUT replaces the whole body, so an update of a vault would drop the operator addresses
    `whitelist.add` put in its network rules. The type's `kept_from_actual` paths are copied from
    Azure's current state when the playbook does not declare them; a last segment ending in `*`
    keeps every key of that mapping starting with the rest (tags.dkwl-*).
    """
    out = copy.deepcopy(dict(body))
    if not actual:
        return out
    rules = rules_for(resource_type)
    # An undeclared path is Azure's, whole; a list others add to is that too when the playbook does
    # not declare it (step 6 without the certificate index leaves the gateway's roots as they are).
    for path in sorted(rules.kept_from_actual | rules.extra_items_kept):
        *parents, leaf = path.split(".")
        have: Any = actual
        want: Any = out
        for part in parents:
            have = have.get(part) if isinstance(have, Mapping) else None
            if not isinstance(want.get(part), dict):
                if have is None:
                    break
                want[part] = {}
            want = want[part]
        else:
            if not isinstance(have, Mapping):
                continue
            if leaf.endswith("*"):
                for key, value in have.items():
                    if key.lower().startswith(leaf[:-1].lower()) and key not in want:
                        want[key] = copy.deepcopy(value)
            elif leaf not in want and leaf in have:
                want[leaf] = copy.deepcopy(have[leaf])
    for path in sorted(rules.extra_items_kept):
        _keep_extra_items(at_path(out, path), at_path(actual, path))
    return out


def at_path(document: Any, path: str) -> Any:
    """The value at a dotted path, or None."""
    for part in path.split("."):
        document = document.get(part) if isinstance(document, Mapping) else None
    return document


def _keep_extra_items(want: Any, have: Any) -> None:
    """Append Azure's named items a declared list does not name (a list other tools add to)."""
    if not isinstance(want, list) or not isinstance(have, list):
        return
    named = {str(i.get("name", "")).lower() for i in want if isinstance(i, Mapping)}
    for item in have:
        name = str(item.get("name", "")).lower() if isinstance(item, Mapping) else ""
        if name and name not in named and not name.startswith(OWNED_ITEM_PREFIX):
            want.append(copy.deepcopy(dict(item)))


def adopt_running(resource_type: str, body: Mapping[str, Any], running: Mapping[str, Any] | None) -> dict[str, Any]:
    """The declared body with its `kept_once_created` values replaced by what Azure runs.

    Terraform's `ignore_changes`: a declared value is used when the resource is created; once it
    exists another task owns it (`invoke release` owns an app's image), so the value Azure runs is
    planned and re-sent instead. Paths may step into list items with `[]`
    (`properties.template.containers[].image`): items are matched by `name` when both sides name
    them, else by position. Only values the body declares and Azure has are replaced.
    """
    out = copy.deepcopy(dict(body))
    if not running:
        return out
    for path in sorted(rules_for(resource_type).kept_once_created):
        _adopt(out, running, path.split("."))
    return out


def _adopt(want: Any, have: Any, parts: list[str]) -> None:
    if not parts or not isinstance(want, dict) or not isinstance(have, Mapping):
        return
    part, rest = parts[0], parts[1:]
    key = part.removesuffix("[]")
    if key not in want or key not in have:
        return
    if part.endswith("[]"):
        wants, haves = want[key], have[key]
        if not isinstance(wants, list) or not isinstance(haves, list):
            return
        by_name = {str(i["name"]).lower(): i for i in haves if isinstance(i, Mapping) and "name" in i}
        for index, item in enumerate(wants):
            named = isinstance(item, Mapping) and "name" in item
            match = by_name.get(str(item["name"]).lower()) if named else (haves[index] if index < len(haves) else None)
            if rest:
                _adopt(item, match, rest)
        return
    if rest:
        _adopt(want[key], have[key], rest)
    else:
        want[key] = copy.deepcopy(have[key])
