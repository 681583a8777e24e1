"""Operator rules as data: strict TTLs and addresses, and rule names that carry owner, address and expiry.

No I/O here. A rule's name is the only record of who opened it and until when, so `whitelist.list`
needs no store of its own: the name is built within each service's naming rules (PostgreSQL
allows letters, digits, '-', '_', '.'; Redis only letters and digits; Azure tag names anything
but `<>%&\\?/`) and parsed back. Owners are lower-cased (sign-in names ignore case, ARM names
too); a character a service does not allow is written as an escape character and two hex
digits per UTF-8 byte, the escape character itself included, so every name parses back exactly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass

from deploykit.clock import utc_text
from deploykit.errors import UserError

PREFIX = "dkwl"  # "deploykit whitelist": names without it are not ours and never touched
TTL_SHAPE = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
TTL_UNITS = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1)}
# A re-add within this much of the rule's expiry changes nothing ("add again: no change").
RENEW_TOLERANCE = dt.timedelta(minutes=5)


def parse_ttl(text: str, flag: str = "--ttl") -> dt.timedelta:
    """'30m', '8h', '1d': a positive whole number and one unit, nothing else."""
    match = TTL_SHAPE.fullmatch(str(text).strip())
    if not match:
        raise UserError(f"{flag}: {text!r} is not a duration; allowed: a whole number with m, h or d, e.g. 30m, 8h, 1d")
    return int(match.group(1)) * TTL_UNITS[match.group(2)]


def show_ttl(delta: dt.timedelta) -> str:
    """A duration as the flags spell it, e.g. 8h, 90m, 1d."""
    minutes = int(delta.total_seconds() // 60)
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def time_left(expires: dt.datetime, now: dt.datetime) -> str:
    """'7h58m', '12m', 'under 1m', or 'expired 3h10m ago'."""
    seconds = int((expires - now).total_seconds())
    if 0 < seconds < 60:
        return "under 1m"
    hours, rest = divmod(abs(seconds) // 60, 60)
    text = f"{hours}h{rest:02d}m" if hours else f"{rest}m"
    return text if seconds > 0 else f"expired {text} ago"


def expiry(now: dt.datetime, ttl: dt.timedelta) -> dt.datetime:
    """now + ttl, rounded up to the minute: names hold minutes, never a time earlier than asked."""
    moment = now.astimezone(dt.UTC) + ttl
    rounded = moment.replace(second=0, microsecond=0)
    return rounded if rounded == moment else rounded + dt.timedelta(minutes=1)


RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _why_not_public(network: ipaddress.IPv4Network) -> str | None:
    checks = (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "the unspecified"),
        ("is_reserved", "a reserved"),
    )
    for attribute, words in checks:
        if getattr(network, attribute):
            return f"is {words} address"
    if any(network.subnet_of(private) for private in RFC1918):
        return "is a private (RFC 1918) address"
    if not network.is_global:
        return "is not a public address (shared, benchmarking or documentation range)"
    return None


def parse_network(text: str, widest_prefix: int, ipv4_only_services: list[str]) -> ipaddress.IPv4Network:
    """An operator's public IPv4 address or small CIDR; anything Azure would not need or could misuse is refused."""
    flag = "--ip"
    value = str(text).strip()
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise UserError(
                f"{flag}: {value!r} is not an address ({exc}); allowed: a public IPv4 address or CIDR, e.g. 52.1.2.3"
            ) from None
        raise UserError(
            f"{flag}: {value!r} has host bits set; did you mean {loose}? allowed: a network address with its prefix"
        ) from None
    if network.version != 4:
        services = ", ".join(ipv4_only_services) or "these services"
        raise UserError(f"{flag}: {value} is IPv6, and {services} accept IPv4 only; allowed: a public IPv4 address or CIDR")
    assert isinstance(network, ipaddress.IPv4Network)
    problem = _why_not_public(network)
    if problem:
        raise UserError(f"{flag}: {value} {problem}; allowed: your public IPv4 address (the one Azure sees you connect from)")
    if network.prefixlen < widest_prefix:
        raise UserError(
            f"{flag}: {value} is wider than /{widest_prefix}; allowed: /{widest_prefix} to /32 "
            "(whitelist.widest_prefix in config/shared.yaml)"
        )
    return network


def address_text(network: ipaddress.IPv4Network) -> str:
    """'52.1.2.3' for one address, else the CIDR."""
    return str(network.network_address) if network.prefixlen == 32 else str(network)


# ---- names -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NameStyle:
    """How one service's names hold (expiry, network, owner)."""

    style: str  # "dotted", "alphanumeric" or "tag"
    allowed: str  # owner characters written as themselves (a regex character class)
    escape: str  # the escape character
    max_length: int


STYLES = {
    # PostgreSQL firewall rules: ^[-\w\._]+$ (azure-facts.md 3.8); maximum length unverified, 128 kept.
    "dotted": NameStyle("dotted", "[a-z0-9.-]", "_", 128),
    # Redis firewall rules: 1-256 alphanumerics (azure-facts.md 3.10).
    "alphanumeric": NameStyle("alphanumeric", "[a-y0-9]", "z", 256),
    # Tag names (vault and registry lists): anything but <>%&\?/, up to 512.
    "tag": NameStyle("tag", "[a-z0-9.@-]", "_", 512),
}


def _escape(owner: str, style: NameStyle) -> str:
    out = []
    for char in owner.lower():
        if char != style.escape and re.fullmatch(style.allowed, char):
            out.append(char)
        else:
            out.extend(f"{style.escape}{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def _unescape(text: str, style: NameStyle) -> str | None:
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == style.escape:
            pair = text[i + 1 : i + 3]
            if not re.fullmatch(r"[0-9a-f]{2}", pair):
                return None
            raw.append(int(pair, 16))
            i += 3
        else:
            raw.extend(text[i].encode("utf-8"))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


_DOTTED = re.compile(rf"^{PREFIX}-(\d{{8}}t\d{{4}})z-(\d+\.\d+\.\d+\.\d+)_(\d{{1,2}})-(.+)$")
_ALNUM = re.compile(rf"^{PREFIX}(\d{{12}})([0-9a-f]{{8}})(\d{{2}})(.+)$")
_TAG = re.compile(rf"^{PREFIX}-(\d+\.\d+\.\d+\.\d+)_(\d{{1,2}})-(.+)$")


def rule_name(style_name: str, owner: str, network: ipaddress.IPv4Network, expires: dt.datetime) -> str:
    """The rule's name (a tag's name for list services, whose expiry is the tag's value)."""
    style = STYLES[style_name]
    who = _escape(owner, style)
    when = expires.astimezone(dt.UTC)
    if style.style == "dotted":
        name = f"{PREFIX}-{when:%Y%m%dT%H%M}Z-{network.network_address}_{network.prefixlen}-{who}"
    elif style.style == "alphanumeric":
        name = f"{PREFIX}{when:%Y%m%d%H%M}{int(network.network_address):08x}{network.prefixlen:02d}{who}"
    else:
        name = f"{PREFIX}-{network.network_address}_{network.prefixlen}-{who}"
    if len(name) > style.max_length:
        raise UserError(
            f"owner {owner!r}: too long for a {style.style} rule name ({len(name)} > {style.max_length} characters); "
            "sign in with a shorter identity or ask for a permanent rule in the playbooks"
        )
    return name


@dataclass(frozen=True)
class Parsed:
    owner: str
    network: ipaddress.IPv4Network
    expires: dt.datetime | None  # None for tag names: the expiry is the tag's value


def parse_rule_name(style_name: str, name: str) -> Parsed | None:
    """The owner, network and expiry a name holds; None when the name is not one of ours."""
    style = STYLES[style_name]
    try:
        if style.style == "dotted":
            match = _DOTTED.fullmatch(name.lower())  # ARM names ignore case; Azure may answer another
            if not match:
                return None
            expires = dt.datetime.strptime(match.group(1), "%Y%m%dt%H%M").replace(tzinfo=dt.UTC)
            network = ipaddress.IPv4Network(f"{match.group(2)}/{int(match.group(3))}")
            owner = _unescape(match.group(4), style)
        elif style.style == "alphanumeric":
            match = _ALNUM.fullmatch(name.lower())
            if not match:
                return None
            expires = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M").replace(tzinfo=dt.UTC)
            address = ipaddress.IPv4Address(int(match.group(2), 16))
            network = ipaddress.IPv4Network(f"{address}/{int(match.group(3))}")
            owner = _unescape(match.group(4), style)
        else:
            match = _TAG.fullmatch(name.lower())
            if not match:
                return None
            expires = None
            network = ipaddress.IPv4Network(f"{match.group(1)}/{int(match.group(2))}")
            owner = _unescape(match.group(3), style)
    except ValueError:
        return None
    return Parsed(owner, network, expires) if owner else None


def tag_expiry(value: str) -> dt.datetime | None:
    """A list service's tag value: the expiry as 2026-11-24T01:30Z."""
    try:
        return dt.datetime.strptime(str(value).strip(), "%Y-%m-%dT%H:%MZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def tag_value(expires: dt.datetime) -> str:
    return f"{expires.astimezone(dt.UTC):%Y-%m-%dT%H:%M}Z"


@dataclass(frozen=True)
class Rule:
    """One address let in to one service: ours (owner and expiry known) or manual (left alone)."""

    service: str
    name: str  # the rule's name; for list services our tag's name, or the address of a manual item
    network: ipaddress.IPv4Network
    owner: str | None = None  # None: not made by this tool
    expires: dt.datetime | None = None

    @property
    def ours(self) -> bool:
        return self.owner is not None and self.expires is not None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def to_json(self, now: dt.datetime) -> dict[str, object]:
        data: dict[str, object] = {"service": self.service, "name": self.name, "address": address_text(self.network)}
        if self.ours:
            assert self.expires is not None
            data.update(
                owner=self.owner,
                expires=utc_text(self.expires),
                seconds_left=int((self.expires - now).total_seconds()),
                expired=self.expired(now),
            )
        return data
