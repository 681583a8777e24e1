"""The services an operator can be let in to, as data (playbooks/whitelist.yaml.j2), and how each is read and written.

Two kinds, by how the service stores addresses:
- `rules`: one child firewall rule per address (PostgreSQL, Redis). Each write is its own
  resource, so two operators never race.
- `list`: a list inside the resource (Key Vault networkAcls, registry networkRuleSet). Owner and
  expiry live in one tag per address; every write is a read-modify-write of the whole resource
  sent with `If-Match` (the ETag it was read with) and checked by reading it back, retried when
  someone else wrote in between, so concurrent adds never drop each other's address.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from deploykit.azure.api_versions import api_version
from deploykit.config import Platform, WhitelistService, describe_validation_error
from deploykit.engine.model import ResourceSpec
from deploykit.errors import ApplyError, AzureOperationError, UserError
from deploykit.whitelist.rules import (
    PREFIX,
    Rule,
    address_text,
    parse_rule_name,
    rule_name,
    tag_expiry,
    tag_value,
)

# Read-modify-write attempts on a list before giving up (each loss means another writer won).
LIST_ATTEMPTS = 6
# Without an ETag, a second read-back this long after writing catches a writer that overlapped.
NO_ETAG_SETTLE_SECONDS = 3.0
STRIPPED = ("id", "name", "type", "etag", "systemData")  # read-only envelope of a GET, never PUT back


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceRef(_Strict):
    type: str
    name: str
    resource_group: str


class RulesSpec(_Strict):
    type: str  # child type segment, e.g. firewallRules
    start: str  # property names of the first and last address
    end: str
    names: Literal["dotted", "alphanumeric"]


class Restricted(_Strict):
    path: str
    value: str


class ListSpec(_Strict):
    path: str  # dotted path of the list inside the resource
    item: dict[str, str]  # one item; "{cidr}" and "{address}" are filled in
    restricted: Restricted | None = None


class ServiceEntry(_Strict):
    service: WhitelistService
    resource: ResourceRef
    rules: RulesSpec | None = None
    list: ListSpec | None = None


class ServicesBook(_Strict):
    services: list[ServiceEntry]


@dataclass(frozen=True)
class Grant:
    """An address to let in for an owner until a time."""

    owner: str
    network: ipaddress.IPv4Network
    expires: dt.datetime


@dataclass
class Service:
    """One service of one environment: where it is, and what it holds now (after `read`)."""

    entry: ServiceEntry
    resource_id: str
    actual: dict[str, Any] | None = None
    rules: list[Rule] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.entry.service

    @property
    def resource_type(self) -> str:
        return self.entry.resource.type

    @property
    def rule_type(self) -> str:
        assert self.entry.rules is not None
        return f"{self.resource_type}/{self.entry.rules.type}"

    @property
    def exists(self) -> bool:
        return self.actual is not None

    def restricted(self) -> bool:
        """A list service whose resource denies by default: operators need an entry to get in."""
        spec = self.entry.list
        if spec is None or spec.restricted is None or self.actual is None:
            return False
        return str(_dig(self.actual, spec.restricted.path) or "").lower() == spec.restricted.value.lower()

    # ---- reading -------------------------------------------------------------------------------
    def read(self, provider: Any) -> None:
        self.actual = provider.read(self.resource_id, api_version(self.resource_type))
        if self.actual is None:
            self.rules = []
        elif self.entry.rules is not None:
            children = provider.list_children(self.resource_id, self.entry.rules.type, api_version(self.rule_type))
            self.rules = [self._rule_from_child(child) for child in children]
        else:
            self.rules = list_rules(self.name, self.entry.list, self.actual)

    def _rule_from_child(self, child: Mapping[str, Any]) -> Rule:
        spec = self.entry.rules
        assert spec is not None
        name = str(child.get("name", "")).rsplit("/", 1)[-1]  # Redis answers "cache/rule" (azure-facts.md 2.3)
        props = child.get("properties") or {}
        network = _range_network(str(props.get(spec.start, "")), str(props.get(spec.end, "")))
        parsed = parse_rule_name(spec.names, name)
        if parsed is None or parsed.network != network:
            return Rule(self.name, name, network)
        return Rule(self.name, name, network, parsed.owner, parsed.expires)

    # ---- writing child rules -------------------------------------------------------------------
    def rule_name_for(self, grant: Grant) -> str:
        assert self.entry.rules is not None
        return rule_name(self.entry.rules.names, grant.owner, grant.network, grant.expires)

    def rule_id(self, name: str) -> str:
        assert self.entry.rules is not None
        return f"{self.resource_id}/{self.entry.rules.type}/{name}"

    def put_rule(self, provider: Any, grant: Grant) -> str:
        spec = self.entry.rules
        assert spec is not None
        name = self.rule_name_for(grant)
        body = {"properties": {spec.start: str(grant.network[0]), spec.end: str(grant.network[-1])}}
        rule = ResourceSpec(
            f"{self.name}:{name}", self.rule_type, api_version(self.rule_type), self.rule_id(name), body, "whitelist"
        )
        provider.put(rule, body)
        return name

    def delete_rule(self, provider: Any, name: str) -> None:
        provider.delete(self.rule_id(name), api_version(self.rule_type))

    # ---- writing a list ------------------------------------------------------------------------
    def write_list(self, provider: Any, add: list[Grant], remove: list[Rule], settle: float = NO_ETAG_SETTLE_SECONDS) -> int:
        """Read, edit, PUT with If-Match, read back; again when another writer got in first. Returns attempts.

        A resource that carries no ETag (Key Vault and registry examples show none: If-Match
        cannot guard them) is read back twice: at once, and again after `settle` seconds, so a
        writer that read before our write and wrote after it is caught and our entry written
        again. That narrows the window to writers slower than `settle`; it cannot close it.
        """
        spec = self.entry.list
        assert spec is not None
        resource_api = api_version(self.resource_type)
        target = ResourceSpec(self.name, self.resource_type, resource_api, self.resource_id, {}, "whitelist")
        for attempt in range(1, LIST_ATTEMPTS + 1):
            current = provider.read(self.resource_id, resource_api)
            if current is None:
                raise ApplyError(f"{self.name}: {self.entry.resource.name} no longer exists")
            body = edited_list(spec, current, add, remove)
            etag = current.get("etag")
            if body is not None:
                try:
                    provider.put(target, body, if_match=etag)
                except AzureOperationError as exc:
                    if exc.status != 412:
                        raise
                    _jitter(attempt)  # another writer won: read its version and edit that
                    continue
            if self._holds(provider, spec, add, remove) and (
                etag or body is None or self._holds_after(provider, spec, add, remove, settle)
            ):
                return attempt
            _jitter(attempt)
        raise ApplyError(
            f"{self.name}: {self.entry.resource.name} kept changing under us ({LIST_ATTEMPTS} attempts); "
            "run the same command again"
        )

    def _holds(self, provider: Any, spec: ListSpec, add: list[Grant], remove: list[Rule]) -> bool:
        after = provider.read(self.resource_id, api_version(self.resource_type))
        return after is not None and edited_list(spec, after, add, remove) is None

    def _holds_after(self, provider: Any, spec: ListSpec, add: list[Grant], remove: list[Rule], settle: float) -> bool:
        time.sleep(settle)
        return self._holds(provider, spec, add, remove)


def _jitter(attempt: int) -> None:
    time.sleep(random.uniform(0.05, 0.3) * attempt)  # noqa: S311 - spreads retrying writers, not security


def _dig(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _range_network(start: str, end: str) -> ipaddress.IPv4Network:
    """The network a start-end range covers (a manual range that is not one network: its first address)."""
    try:
        first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
        found = list(ipaddress.summarize_address_range(first, last))
        return found[0] if len(found) == 1 else ipaddress.IPv4Network(f"{first}/32")
    except ValueError:
        return ipaddress.IPv4Network("0.0.0.0/32")


def _item_network(item: Any) -> ipaddress.IPv4Network | None:
    value = item.get("value") if isinstance(item, Mapping) else None
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        return None


def _our_tags(tags: Mapping[str, str]) -> dict[str, tuple[str, ipaddress.IPv4Network, dt.datetime | None]]:
    """Tag name -> (owner, network, expiry) for the tags that are ours."""
    found = {}
    for name, value in (tags or {}).items():
        parsed = parse_rule_name("tag", name) if name.lower().startswith(PREFIX) else None
        if parsed is not None:
            found[name] = (parsed.owner, parsed.network, tag_expiry(value))
    return found


def list_rules(service: str, spec: ListSpec | None, actual: Mapping[str, Any]) -> list[Rule]:
    """A list's items: ours where one of our tags names the address, manual otherwise."""
    assert spec is not None
    items = _dig(actual, spec.path) or []
    networks = [n for n in (_item_network(i) for i in items) if n is not None]
    tags = _our_tags(actual.get("tags") or {})
    rules = []
    for network in networks:
        mine = [(name, owner, expires) for name, (owner, net, expires) in tags.items() if net == network]
        if not mine:
            rules.append(Rule(service, address_text(network), network))
        for name, owner, expires in mine:
            rules.append(Rule(service, name, network, owner, expires))
    return rules


def edited_list(spec: ListSpec, current: Mapping[str, Any], add: list[Grant], remove: list[Rule]) -> dict[str, Any] | None:
    """The resource with the grants in and the removals out; None when it already is so."""
    body = {k: copy.deepcopy(v) for k, v in current.items() if k not in STRIPPED}
    tags = dict(body.get("tags") or {})
    ours = _our_tags(tags)
    for rule in remove:
        tags.pop(next((n for n in ours if n.lower() == rule.name.lower()), rule.name), None)
    items = list(_dig(body, spec.path) or [])
    present = {n for n in (_item_network(i) for i in items) if n is not None}
    for grant in add:
        if grant.network in present and not any(net == grant.network for _, net, _ in ours.values()):
            continue  # a manual entry already lets it in: left alone, not tagged
        name = rule_name("tag", grant.owner, grant.network, grant.expires)
        for old in [n for n in tags if n.lower() == name.lower()]:
            del tags[old]
        tags[name] = tag_value(grant.expires)
        if grant.network not in present:
            items.append(
                {k: v.format(cidr=str(grant.network), address=address_text(grant.network)) for k, v in spec.item.items()}
            )
            present.add(grant.network)
    for name, (_, net, _) in _our_tags(tags).items():
        if net not in present:
            del tags[name]  # its address was taken out of the list by hand: the tag is stale
    still_tagged = {net for _, net, _ in _our_tags(tags).values()}
    removed = {rule.network for rule in remove} - still_tagged
    items = [i for i in items if _item_network(i) not in removed]
    if tags == (current.get("tags") or {}) and items == (_dig(current, spec.path) or []):
        return None
    body["tags"] = tags
    node = body
    *parents, leaf = spec.path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = items
    return body


def load_services(platform: Platform, env: str, subscription_id: str) -> dict[str, Service]:
    """The environment's services, from playbooks/whitelist.yaml.j2 rendered with its config."""
    from deploykit.engine.playbook import render_template
    from deploykit.paths import display, playbook_dir

    path = playbook_dir() / "whitelist.yaml.j2"
    raw = render_template(path, {"shared": platform.shared, "env": platform.envs[env]})
    try:
        book = ServicesBook.model_validate(raw or {})
    except ValidationError as exc:
        raise UserError(f"{display(path)}: {describe_validation_error(exc, ServicesBook)}") from None
    services = {}
    for i, entry in enumerate(book.services):
        if (entry.rules is None) == (entry.list is None):
            raise UserError(f"{display(path)}: services.{i}: give exactly one of rules or list")
        ref = entry.resource
        rid = f"/subscriptions/{subscription_id}/resourceGroups/{ref.resource_group}/providers/{ref.type}/{ref.name}"
        services[entry.service] = Service(entry, rid)
    return services
