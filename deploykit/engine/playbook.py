"""Render playbooks/*.yaml.j2 (Jinja2 over YAML) into validated resource specs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploykit.azure.api_versions import api_version
from deploykit.config import describe_validation_error, parse_yaml, read_text_file
from deploykit.engine.model import ResourceSpec
from deploykit.engine.references import (
    JINJA_FILTERS,
    JINJA_GLOBALS,
    ConfigProblem,
    assignment_guid,
    assignment_parts,
    refs_in,
)
from deploykit.errors import UserError
from deploykit.naming import name_problem, region_problem, tags_problem
from deploykit.paths import display

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
GLOBAL_LOCATION = "global"  # private DNS zones and their links (azure-facts.md 3.22)
# Top-level body keys a playbook entry may carry, in ARM's own spelling.
BODY_KEYS = ("location", "kind", "sku", "identity", "zones", "properties", "tags")


class Entry(BaseModel):
    """One playbook entry; unknown keys are errors so a typo never drops a property."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str = Field(pattern=r"^[a-z0-9]+(\.[a-z0-9][a-z0-9_-]*)+$")
    type: str = Field(pattern=r"^[A-Za-z]+\.[A-Za-z]+(/[A-Za-z]+)+$")
    name: str
    resource_group: str | None = None  # the group's name, for resources inside a group
    parent: str | None = None  # address of the parent (child types) or scope (extension types)
    depends_on: list[str] = []
    write_only: list[str] = []
    create_only: list[str] = []  # settable only when created: a difference forces a new resource
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


def render_playbook(
    path: Path, context: Mapping[str, Any], subscription_id: str, step: str, known: Mapping[str, ResourceSpec] | None = None
) -> list[ResourceSpec]:
    """Render one playbook for `context` and turn its entries into specs with full ARM ids.

    `known` holds the specs of playbooks rendered before this one: parents, role-assignment
    scopes and references may name them.
    """
    shown = display(path)
    raw = render_template(path, {**context, "subscription_id": subscription_id})
    if raw is not None and not isinstance(raw, Mapping):
        raise UserError(f"{shown}: (top level): is not a mapping; allowed: a mapping with a resources list")
    try:
        book = Playbook.model_validate(raw or {"resources": []})
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, Playbook)}") from None
    return build_specs(book.resources, subscription_id, step, shown, known or {})


@cache
def _environment(folder: Path) -> jinja2.Environment:
    """One Jinja environment per playbook folder, its compiled templates cached on disk.

    Compiling the playbooks costs more than rendering them; Jinja's bytecode cache (a private
    folder under the system's temporary directory, keyed by each template's source checksum)
    keeps that to the first run after a change.
    """
    # YAML, not HTML: autoescape would corrupt values; tojson does the quoting.
    environment = jinja2.Environment(
        # A step may render another's playbook ({% include "step4.yaml.j2" %}: step 8 is step 4 for prod).
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
        auto_reload=True,
    )
    environment.globals.update(JINJA_GLOBALS)
    environment.filters.update(JINJA_FILTERS)
    return environment


def render_template(path: Path, context: Mapping[str, Any]) -> Any:
    """A Jinja YAML file rendered for `context` and parsed; one-line errors name the file."""
    shown = display(path)
    read_text_file(path, shown, missing="playbook not found")  # a missing or unreadable file: the one-line error
    try:
        text = _environment(path.parent).get_template(path.name).render(**context)
    except ConfigProblem as exc:
        raise UserError(str(exc)) from None
    except jinja2.UndefinedError as exc:
        raise UserError(f"{shown}: template refers to an undefined value ({exc.message})") from None
    except jinja2.TemplateError as exc:
        raise UserError(f"{shown}: line {getattr(exc, 'lineno', '?')}: {exc.message}") from None
    # Line numbers of the rendered text: Jinja blocks shift them from the template's.
    return parse_yaml(text, shown, line_word="rendered line")


def build_specs(
    entries: Iterable[Entry], subscription_id: str, step: str, source: str, known: Mapping[str, ResourceSpec] | None = None
) -> list[ResourceSpec]:
    specs: dict[str, ResourceSpec] = {}
    earlier = dict(known or {})
    for entry in entries:
        where = f"{source}: {entry.address}"
        if entry.address in specs or entry.address in earlier:
            raise UserError(f"{where}: address used twice")
        entry = _named(entry, {**earlier, **specs}, where)
        problem = name_problem(entry.type, entry.name)
        if problem:
            raise UserError(f"{where}.name: {problem}")
        _check_body(entry, where)
        parent = (specs.get(entry.parent) or earlier.get(entry.parent)) if entry.parent else None
        if entry.parent and parent is None:
            raise UserError(f"{where}.parent: {entry.parent!r} is not an earlier entry of this or an earlier step")
        resource_id = _resource_id(entry, subscription_id, parent, where)
        body = {key: getattr(entry, key) for key in BODY_KEYS if getattr(entry, key) is not None}
        referenced = sorted({address for address, _ in refs_in(body)})
        for address in referenced:
            if address not in specs and address not in earlier:
                raise UserError(f"{where}: ref({address!r}, ...) names no earlier entry of this or an earlier step")
        depends = [*entry.depends_on, *([entry.parent] if entry.parent else []), *referenced]
        specs[entry.address] = ResourceSpec(
            address=entry.address,
            type=entry.type,
            api_version=api_version(entry.type),
            id=resource_id,
            body=body,
            step=step,
            depends_on=tuple(dict.fromkeys(depends)),
            write_only=tuple(entry.write_only),
            create_only=tuple(entry.create_only),
        )
    return list(specs.values())


def _named(entry: Entry, known: Mapping[str, ResourceSpec], where: str) -> Entry:
    """Resolve an assignment_name(...) token: uuid5 of the scope's and principal's ids and the role."""
    parts = assignment_parts(entry.name)
    if parts is None:
        return entry
    scope, principal, role = parts
    for address in (scope, principal):
        if address not in known:
            raise UserError(f"{where}.name: assignment_name names {address!r}, which is no earlier entry")
    return entry.model_copy(update={"name": assignment_guid(known[scope].id, known[principal].id, role)})


def _check_body(entry: Entry, where: str) -> None:
    """What Azure would refuse in the body: an unknown region, a resource group's name, tags over its limits."""
    if entry.location is not None and entry.location.lower() != GLOBAL_LOCATION:
        problem = region_problem(entry.location)
        if problem:
            raise UserError(f"{where}.location: {problem}")
    if entry.resource_group is not None:
        problem = name_problem(RESOURCE_GROUP_TYPE, entry.resource_group)
        if problem:
            raise UserError(f"{where}.resource_group: {problem}")
    if entry.tags:
        tag_problem = tags_problem(entry.tags)
        if tag_problem:
            tag, why = tag_problem
            raise UserError(f"{where}.tags{'.' + tag if tag else ''}: {why}")


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
