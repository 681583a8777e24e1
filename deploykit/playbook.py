"""Render playbooks/*.yaml.j2 (Jinja2 over YAML) into validated resource specs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploykit.config import describe_validation_error
from deploykit.errors import UserError
from deploykit.model import ResourceSpec
from deploykit.naming import name_problem
from deploykit.paths import display

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
# Top-level body keys a playbook entry may carry, in ARM's own spelling.
BODY_KEYS = ("location", "kind", "sku", "identity", "zones", "properties", "tags")


class Entry(BaseModel):
    """One playbook entry; unknown keys are errors so a typo never drops a property."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str = Field(pattern=r"^[a-z0-9]+(\.[a-z0-9][a-z0-9_-]*)+$")
    type: str = Field(pattern=r"^[A-Za-z]+\.[A-Za-z]+(/[A-Za-z]+)+$")
    api_version: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")
    name: str
    resource_group: str | None = None  # the group's name, for resources inside a group
    parent: str | None = None  # address of the parent (child types) or scope (extension types)
    depends_on: list[str] = []
    write_only: list[str] = []
    location: str | None = None
    kind: str | None = None
    sku: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    zones: list[str] | None = None
    properties: dict[str, Any] | None = None
    tags: dict[str, str] | None = None


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    resources: list[Entry]


def render_playbook(path: Path, context: Mapping[str, Any], subscription_id: str, step: str) -> list[ResourceSpec]:
    """Render one playbook for `context` and turn its entries into specs with full ARM ids."""
    shown = display(path)
    try:
        # YAML, not HTML: autoescape would corrupt values; tojson does the quoting.
        environment = jinja2.Environment(
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701
        )
        template = environment.from_string(path.read_text(encoding="utf-8"))
        text = template.render(**context)
    except FileNotFoundError:
        raise UserError(f"{shown}: playbook not found") from None
    except jinja2.UndefinedError as exc:
        raise UserError(f"{shown}: template refers to an undefined value ({exc.message})") from None
    except jinja2.TemplateError as exc:
        raise UserError(f"{shown}: line {getattr(exc, 'lineno', '?')}: {exc.message}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"{shown}: rendered line {mark.line + 1 if mark else '?'}: not valid YAML") from None
    try:
        book = Playbook.model_validate(raw or {"resources": []})
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, Playbook)}") from None
    return build_specs(book.resources, subscription_id, step, shown)


def build_specs(entries: Iterable[Entry], subscription_id: str, step: str, source: str) -> list[ResourceSpec]:
    specs: dict[str, ResourceSpec] = {}
    for entry in entries:
        where = f"{source}: {entry.address}"
        if entry.address in specs:
            raise UserError(f"{where}: address used twice")
        problem = name_problem(entry.type, entry.name)
        if problem:
            raise UserError(f"{where}.name: {problem}")
        parent = specs.get(entry.parent) if entry.parent else None
        if entry.parent and parent is None:
            raise UserError(f"{where}.parent: {entry.parent!r} is not an earlier entry of this playbook")
        resource_id = _resource_id(entry, subscription_id, parent, where)
        body = {key: getattr(entry, key) for key in BODY_KEYS if getattr(entry, key) is not None}
        depends = [*entry.depends_on, *([entry.parent] if entry.parent else [])]
        specs[entry.address] = ResourceSpec(
            address=entry.address,
            type=entry.type,
            api_version=entry.api_version,
            id=resource_id,
            body=body,
            step=step,
            depends_on=tuple(dict.fromkeys(depends)),
            write_only=tuple(entry.write_only),
        )
    return list(specs.values())


def _resource_id(entry: Entry, subscription_id: str, parent: ResourceSpec | None, where: str) -> str:
    sub = f"/subscriptions/{subscription_id}"
    if entry.type.lower() == RESOURCE_GROUP_TYPE.lower():
        return f"{sub}/resourceGroups/{entry.name}"
    if parent is not None:
        if entry.type.lower().startswith(parent.type.lower() + "/"):
            child_segment = entry.type.rsplit("/", 1)[-1]
            return f"{parent.id}/{child_segment}/{entry.name}"
        return f"{parent.id}/providers/{entry.type}/{entry.name}"  # extension resource, e.g. a lock
    if not entry.resource_group:
        raise UserError(f"{where}: needs resource_group or parent")
    if entry.type.count("/") != 1:
        raise UserError(f"{where}: child type {entry.type} needs parent")
    return f"{sub}/resourceGroups/{entry.resource_group}/providers/{entry.type}/{entry.name}"
