"""Rule names, TTLs and addresses: what whitelist.list reads back is exactly what whitelist.add wrote."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re

import pytest

from deploykit.errors import UserError
from deploykit.whitelist.rules import STYLES, expiry, parse_network, parse_rule_name, parse_ttl, rule_name, show_ttl

OWNERS = ["alice.smith@contoso-fx.com", "o'neil+ops@example.co.uk", "svc_deploy-01", "zoë@bank.example", "app-1b2c3d4e"]
VALID = {
    "dotted": re.compile(r"^[-\w._]+$"),  # PostgreSQL firewall rule names (azure-facts.md 3.8)
    "alphanumeric": re.compile(r"^[A-Za-z0-9]{1,256}$"),  # Redis firewall rule names (3.10)
    "tag": re.compile(r"^[^<>%&\\?/]{1,512}$"),  # Azure tag names
}
WHEN = dt.datetime(2026, 11, 24, 1, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("owner", OWNERS)
def test_names_are_valid_for_the_service_and_parse_back(style: str, owner: str) -> None:
    network = ipaddress.IPv4Network("52.1.2.0/29")
    name = rule_name(style, owner, network, WHEN)
    assert VALID[style].fullmatch(name), name
    parsed = parse_rule_name(style, name)
    assert parsed is not None
    assert (parsed.owner, parsed.network) == (owner.lower(), network)
    assert parsed.expires == (None if style == "tag" else WHEN)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_names_not_ours_are_not_parsed(style: str) -> None:
    for name in ("AllowAllAzureServicesAndResourcesWithinAzureIps_2026", "office", "dkwl", "dkwl-garbage", "dkwlzz"):
        assert parse_rule_name(style, name) is None


def test_ttl_is_strict() -> None:
    assert [parse_ttl(t) for t in ("30m", "8h", "1d")] == [dt.timedelta(minutes=30), dt.timedelta(hours=8), dt.timedelta(days=1)]
    assert [show_ttl(parse_ttl(t)) for t in ("90m", "8h", "1d")] == ["90m", "8h", "1d"]
    for bad in ("forever", "8", "0h", "-1h", "1.5h", "8 h", "1w", "", "08h"):
        with pytest.raises(UserError, match="not a duration"):
            parse_ttl(bad)


def test_expiry_rounds_up_to_the_minute() -> None:
    start = dt.datetime(2026, 11, 23, 17, 30, 1, tzinfo=dt.UTC)
    assert expiry(start, dt.timedelta(hours=1)) == dt.datetime(2026, 11, 23, 18, 31, tzinfo=dt.UTC)
    assert expiry(start.replace(second=0), dt.timedelta(hours=1)) == dt.datetime(2026, 11, 23, 18, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10.0.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.10.1", "link-local"),
        ("224.0.0.5", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.1.1", "not a public address"),
        ("2001:db8::1", "IPv6"),
        ("52.0.0.0/8", "wider than /29"),
        ("52.1.2.3/29", "host bits"),
        ("not-an-ip", "not an address"),
    ],
)
def test_addresses_that_are_refused(text: str, words: str) -> None:
    with pytest.raises(UserError, match=re.escape(words)):
        parse_network(text, 29, ["postgres"])


def test_public_addresses_and_small_networks_are_accepted() -> None:
    assert str(parse_network("52.1.2.3", 29, [])) == "52.1.2.3/32"
    assert str(parse_network("52.1.2.0/29", 29, [])) == "52.1.2.0/29"


def _jwt(claims: dict) -> str:
    import base64
    import json

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_the_owner_is_the_tokens_user_or_application() -> None:
    from deploykit.whitelist.owner import claims_owner, token_claims

    user = token_claims(_jwt({"upn": "Alice.Smith@Contoso-FX.com", "appid": "x", "oid": "y"}))
    assert claims_owner(user) == "alice.smith@contoso-fx.com"
    guest = token_claims(_jwt({"unique_name": "live.com#bob@example.com"}))
    assert claims_owner(guest) == "live.com#bob@example.com"
    app = token_claims(_jwt({"appid": "1B2C3D4E-0000-0000-0000-000000000000", "oid": "z"}))
    assert claims_owner(app) == "app-1b2c3d4e-0000-0000-0000-000000000000"
    assert claims_owner(token_claims("not-a-token")) is None
