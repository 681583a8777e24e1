"""The sandbox side of operator IP whitelisting: firewall rules, IP lists, ETags, address discovery.

Seen through the real SDK (sandbox.provider) and, where headers matter (ETag, text/plain), raw
HTTPS with the sandbox's CA. Shapes and rules: tests/data/arm-examples and azure-facts.md 3.3,
3.5, 3.8, 3.10, 5, 6; the sandbox's own choices are in docs/sandbox.md ("Network rules").
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError
from tests.conftest import Sandbox, load_example

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-netrules"
SERVER = f"{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers/psql-netrules"
REDIS = f"{RG}/providers/Microsoft.Cache/Redis/redis-netrules"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-netrules"
REGISTRY = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrnetrules"
API = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules": "2026-10-01",
    "Microsoft.Cache/redis/firewallRules": "2024-11-01",
    "Microsoft.KeyVault/vaults": "2026-05-15",
    "Microsoft.ContainerRegistry/registries": "2025-11-01",
}
PG_RULE = "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules"
REDIS_RULE = "Microsoft.Cache/redis/firewallRules"
KV = "Microsoft.KeyVault/vaults"
ACR = "Microsoft.ContainerRegistry/registries"
VAULT_BODY = {
    "location": "centralus",
    "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
}
PRECONDITION = "The condition specified using HTTP conditional header(s) is not met."


# ---- helpers -------------------------------------------------------------------------------------
def put(box: Sandbox, kind: str, rid: str, body: dict) -> dict:
    return box.provider.put(ResourceSpec("t", kind, API[kind], rid, {}, "t"), body)


def refused(box: Sandbox, kind: str, rid: str, body: dict) -> AzureOperationError:
    with pytest.raises(AzureOperationError) as caught:
        put(box, kind, rid, body)
    return caught.value


def conditional_put(box: Sandbox, kind: str, rid: str, body: dict, if_match: str) -> dict:
    """A PUT carrying If-Match, through the SDK's own headers= pass-through; the final GET's JSON."""
    poller = box.provider.resources.resources.begin_create_or_update_by_id(
        rid, body, api_version=API[kind], headers={"If-Match": if_match}, polling_interval=0.01, cls=_json
    )
    return poller.result()


def _json(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    """The answer's JSON as sent (the SDK's GenericResource model has no etag)."""
    return pipeline_response.http_response.json()


def conditional_delete(box: Sandbox, kind: str, rid: str, if_match: str) -> None:
    box.provider.resources.resources.begin_delete_by_id(
        rid, api_version=API[kind], headers={"If-Match": if_match}, polling_interval=0.01
    ).result()


def http(box: Sandbox, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Raw HTTPS to the sandbox: (status, headers, body), errors included."""
    request = urllib.request.Request(f"{box.url}{path}", method=method, headers=headers or {})  # noqa: S310 - the sandbox
    context = ssl.create_default_context(cafile=box.ca)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def arm_get(box: Sandbox, rid: str, kind: str) -> tuple[int, dict[str, str], dict]:
    status, headers, raw = http(box, "GET", f"{rid}?api-version={API[kind]}", {"Authorization": "Bearer x"})
    return status, headers, json.loads(raw)


def group(box: Sandbox) -> None:
    put(box, "Microsoft.Resources/resourceGroups", RG, {"location": "centralus"})


def parents(box: Sandbox) -> None:
    """A group, a PostgreSQL server and a cache, seeded as records (rules need only their parent)."""
    group(box)
    box.control("POST", "/seed", {"id": SERVER, "body": {"location": "centralus", "properties": {"version": "16"}}})
    box.control("POST", "/seed", {"id": REDIS, "body": {"location": "centralus", "properties": {"sku": {"name": "Basic"}}}})


# ---- PostgreSQL and Redis firewall rules ---------------------------------------------------------------
def test_pg_rule_names_follow_the_spec_pattern(sandbox) -> None:
    parents(sandbox)
    name = "dkwl-20261124T0130Z-52.1.2.3_32-alice.smith_40contoso-fx.com"
    body = {"properties": {"startIpAddress": "52.1.2.3", "endIpAddress": "52.1.2.3"}}
    rule = put(sandbox, PG_RULE, f"{SERVER}/firewallRules/{name}", body)
    example = load_example("postgresql-firewall-rule/FirewallRulesGet.json")["responses"]["200"]["body"]
    assert rule["name"] == name and set(rule) == set(example)
    assert rule["properties"] == body["properties"]
    for bad in ("alice@contoso", "alice%40contoso", "bad%20name"):
        error = refused(sandbox, PG_RULE, f"{SERVER}/firewallRules/{bad}", body)
        assert (error.status, error.code) == (400, "InvalidParameterValue")
        assert "^[-\\w\\._]+$" in error.message
    kept = sandbox.provider.list_at(f"{SERVER}/firewallRules", API[PG_RULE])
    assert [r["name"] for r in kept] == [name]  # nothing stored for the refused names


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("2001:db8::1", "2001:db8::1", "not a valid IPv4 address"),
        ("52.1.2.9", "52.1.2.3", "greater than the end IP address"),
        ("52.1.2.3/32", "52.1.2.3", "not a valid IPv4 address"),
        ("052.1.2.3", "52.1.2.3", "not a valid IPv4 address"),
        ("52.1.2", "52.1.2.3", "not a valid IPv4 address"),
        ("52.1.2.3", "", "needs properties.startIpAddress and properties.endIpAddress"),
    ],
)
def test_pg_rules_take_two_ipv4_ends_in_order(sandbox, start: str, end: str, why: str) -> None:
    parents(sandbox)
    rid = f"{SERVER}/firewallRules/operator1"
    error = refused(sandbox, PG_RULE, rid, {"properties": {"startIpAddress": start, "endIpAddress": end}})
    assert (error.status, error.code) == (400, "InvalidParameterValue") and why in error.message
    assert sandbox.provider.read(rid, API[PG_RULE]) is None


def test_pg_rule_range_and_single_address_are_kept_as_sent(sandbox) -> None:
    parents(sandbox)
    rid = f"{SERVER}/firewallRules/office"
    body = {"properties": {"startIpAddress": "52.1.2.0", "endIpAddress": "52.1.2.255"}}
    assert put(sandbox, PG_RULE, rid, body)["properties"] == body["properties"]
    azure = {"properties": {"startIpAddress": "0.0.0.0", "endIpAddress": "0.0.0.0"}}  # noqa: S104 - azure-facts.md 5
    assert put(sandbox, PG_RULE, f"{SERVER}/firewallRules/AllowAllAzureServices", azure)["properties"] == azure["properties"]


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("2001:db8::1", "2001:db8::2", "not a valid IPv4 address"),
        ("52.1.2.9", "52.1.2.3", "greater than the end IP address"),
        ("52.1.2.3", None, "needs properties.startIP and properties.endIP"),
    ],
)
def test_redis_rules_take_two_ipv4_ends_in_order(sandbox, start: str, end: str | None, why: str) -> None:
    parents(sandbox)
    rid = f"{REDIS}/firewallRules/operator1"
    error = refused(sandbox, REDIS_RULE, rid, {"properties": {"startIP": start, "endIP": end}})
    assert (error.status, error.code) == (400, "InvalidRequestBody") and why in error.message
    assert sandbox.provider.read(rid, API[REDIS_RULE]) is None


def test_redis_rules_are_listed_with_their_cache_name(sandbox) -> None:
    parents(sandbox)
    body = {"properties": {"startIP": "52.1.2.3", "endIP": "52.1.2.3"}}
    put(sandbox, REDIS_RULE, f"{REDIS}/firewallRules/dkwl20261124alice", body)
    put(sandbox, REDIS_RULE, f"{REDIS}/firewallRules/dkwl20261125bob", body)
    listed = sandbox.provider.list_at(f"{REDIS}/firewallRules", API[REDIS_RULE])
    assert [r["name"] for r in listed] == ["redis-netrules/dkwl20261124alice", "redis-netrules/dkwl20261125bob"]
    assert all(r["properties"] == body["properties"] and r["type"] == "Microsoft.Cache/Redis/firewallRules" for r in listed)
    assert refused(sandbox, REDIS_RULE, f"{REDIS}/firewallRules/dkwl-alice", body).status == 400  # alphanumerics only
    missing = f"{RG}/providers/Microsoft.Cache/Redis/nope/firewallRules"
    with pytest.raises(AzureOperationError) as caught:
        sandbox.provider.list_at(missing, API[REDIS_RULE])
    assert caught.value.status == 404


# ---- Key Vault networkAcls.ipRules -------------------------------------------------------------------------
def _vault_with(rules: list[dict[str, Any]]) -> dict:
    acls = {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": rules}
    return {**VAULT_BODY, "properties": {**VAULT_BODY["properties"], "networkAcls": acls}}


def test_vault_single_address_is_answered_as_its_32(sandbox) -> None:
    group(sandbox)
    created = put(sandbox, KV, VAULT, _vault_with([{"value": "52.1.2.3"}, {"value": "52.1.3.0/24"}]))
    wanted = [{"value": "52.1.2.3/32"}, {"value": "52.1.3.0/24"}]
    assert created["properties"]["networkAcls"]["ipRules"] == wanted
    assert sandbox.provider.read(VAULT, API[KV])["properties"]["networkAcls"]["ipRules"] == wanted
    again = put(sandbox, KV, VAULT, _vault_with(wanted))  # sending back what was read changes nothing
    assert again["properties"]["networkAcls"]["ipRules"] == wanted


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("52.1.2", "is not an IPv4 address or IPv4 CIDR range"),
        ("2001:db8::/64", "is not an IPv4 address or IPv4 CIDR range"),
        ("52.1.2.3/33", "is not an IPv4 address or IPv4 CIDR range"),
        ("10.1.2.3", "belongs to forbidden range 10.0.0.0–10.255.255.255 (private IP addresses)"),
    ],
)
def test_vault_refuses_bad_ip_rules(sandbox, value: str, why: str) -> None:
    group(sandbox)
    error = refused(sandbox, KV, VAULT, _vault_with([{"value": "52.1.2.3"}, {"value": value}]))
    assert (error.status, error.code) == (400, "BadRequest")
    assert error.message.startswith("Invalid value found at properties.networkAcls.ipRules[1].value:") and why in error.message
    assert sandbox.provider.read(VAULT, API[KV]) is None


# ---- Container Registry networkRuleSet.ipRules ----------------------------------------------------------------
def _registry(sku: str, rule_set: dict | None = None) -> dict:
    props: dict[str, Any] = {"adminUserEnabled": False}
    if rule_set is not None:
        props["networkRuleSet"] = rule_set
    return {"location": "centralus", "sku": {"name": sku}, "properties": props}


def test_registry_default_rule_set_matches_registry_get(sandbox) -> None:
    group(sandbox)
    example = load_example("container-registry/RegistryGet.json")["responses"]["200"]["body"]["properties"]
    created = put(sandbox, ACR, REGISTRY, _registry("Basic"))
    assert created["properties"]["networkRuleSet"] == example["networkRuleSet"] == {"defaultAction": "Allow", "ipRules": []}
    # What a GET answered can be sent back on any SKU.
    again = put(sandbox, ACR, REGISTRY, _registry("Basic", example["networkRuleSet"]))
    assert again["properties"]["networkRuleSet"] == example["networkRuleSet"]


def test_registry_ip_rules_are_kept_on_premium(sandbox) -> None:
    group(sandbox)
    rules = [{"value": "52.1.2.3"}, {"action": "Allow", "value": "52.1.3.0/24"}]
    created = put(sandbox, ACR, REGISTRY, _registry("Premium", {"defaultAction": "Deny", "ipRules": rules}))
    kept = [{"action": "Allow", "value": "52.1.2.3"}, {"action": "Allow", "value": "52.1.3.0/24"}]  # action defaulted
    wanted = {"defaultAction": "Deny", "ipRules": kept}
    assert created["properties"]["networkRuleSet"] == wanted
    assert sandbox.provider.read(REGISTRY, API[ACR])["properties"]["networkRuleSet"] == wanted
    bad = refused(sandbox, ACR, REGISTRY, _registry("Premium", {"defaultAction": "Deny", "ipRules": [{"value": "2001:db8::1"}]}))
    assert (bad.status, bad.code) == (400, "BadRequest") and "networkRuleSet.ipRules[0].value" in bad.message
    assert sandbox.provider.read(REGISTRY, API[ACR])["properties"]["networkRuleSet"] == wanted


@pytest.mark.parametrize("sku", ["Basic", "Standard"])
def test_registry_ip_rules_need_premium(sandbox, sku: str) -> None:
    group(sandbox)
    rules = {"defaultAction": "Allow", "ipRules": [{"action": "Allow", "value": "52.1.2.3"}]}
    error = refused(sandbox, ACR, REGISTRY, _registry(sku, rules))
    assert (error.status, error.code) == (400, "NetworkRuleNotSupported")
    assert error.message == f"The requested feature ip rule is not supported for the SKU {sku}."
    deny = refused(sandbox, ACR, REGISTRY, _registry(sku, {"defaultAction": "Deny", "ipRules": []}))
    assert (deny.status, deny.code) == (400, "NetworkRuleNotSupported")
    assert sandbox.provider.read(REGISTRY, API[ACR]) is None


# ---- ETags and If-Match ----------------------------------------------------------------------------------------
def test_every_put_stores_a_new_etag_answered_in_body_and_header(sandbox) -> None:
    group(sandbox)
    first = put(sandbox, KV, VAULT, VAULT_BODY)
    status, headers, body = arm_get(sandbox, VAULT, KV)
    assert status == 200 and body["etag"] == headers["ETag"] == first["etag"]
    assert first["etag"].startswith('"') and first["etag"].endswith('"') and len(first["etag"]) > 2
    second = put(sandbox, KV, VAULT, {**VAULT_BODY, "etag": '"chosen-by-the-client"'})  # read-only: ignored
    assert second["etag"] not in (first["etag"], '"chosen-by-the-client"')
    assert arm_get(sandbox, VAULT, KV)[1]["ETag"] == second["etag"]
    registry = put(sandbox, ACR, REGISTRY, _registry("Premium"))
    assert registry["etag"] != put(sandbox, ACR, REGISTRY, _registry("Premium"))["etag"]
    assert arm_get(sandbox, REGISTRY, ACR)[1]["ETag"] == sandbox.provider.read(REGISTRY, API[ACR])["etag"]


def test_stale_if_match_is_refused_and_changes_nothing(sandbox) -> None:
    group(sandbox)
    stale = put(sandbox, KV, VAULT, _vault_with([{"value": "52.1.2.3/32"}]))["etag"]
    current = put(sandbox, KV, VAULT, _vault_with([{"value": "52.1.2.4/32"}]))  # someone else's write
    with pytest.raises(HttpResponseError) as put_refused:
        conditional_put(sandbox, KV, VAULT, _vault_with([]), stale)
    with pytest.raises(HttpResponseError) as delete_refused:
        conditional_delete(sandbox, KV, VAULT, stale)
    for caught in (put_refused, delete_refused):
        assert caught.value.status_code == 412
        assert (caught.value.error.code, caught.value.error.message) == ("PreconditionFailed", PRECONDITION)
    after = sandbox.provider.read(VAULT, API[KV])
    assert after["etag"] == current["etag"]
    assert after["properties"]["networkAcls"]["ipRules"] == [{"value": "52.1.2.4/32"}]


def test_matching_or_star_if_match_writes(sandbox) -> None:
    group(sandbox)
    first = put(sandbox, ACR, REGISTRY, _registry("Premium"))
    rules = {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.1.2.3"}]}
    matched = conditional_put(sandbox, ACR, REGISTRY, _registry("Premium", rules), first["etag"])
    assert matched["etag"] != first["etag"]
    assert matched["properties"]["networkRuleSet"] == rules
    starred = conditional_put(sandbox, ACR, REGISTRY, _registry("Premium"), "*")
    assert starred["etag"] != matched["etag"]
    assert sandbox.provider.read(REGISTRY, API[ACR])["properties"]["networkRuleSet"]["ipRules"] == []
    conditional_delete(sandbox, ACR, REGISTRY, starred["etag"])
    assert sandbox.provider.read(REGISTRY, API[ACR]) is None


def test_if_match_on_a_missing_resource_is_refused(sandbox) -> None:
    group(sandbox)
    for if_match in ("*", '"anything"'):
        with pytest.raises(HttpResponseError) as caught:
            conditional_put(sandbox, KV, VAULT, VAULT_BODY, if_match)
        assert (caught.value.status_code, caught.value.error.code) == (412, "PreconditionFailed")
    with pytest.raises(HttpResponseError) as caught:
        conditional_delete(sandbox, KV, VAULT, "*")
    assert caught.value.status_code == 412
    assert sandbox.provider.read(VAULT, API[KV]) is None


def test_two_read_modify_write_clients_cannot_both_win(sandbox) -> None:
    group(sandbox)
    read = put(sandbox, KV, VAULT, _vault_with([]))["etag"]
    start = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def client(address: str) -> None:
        start.wait()
        try:
            outcomes[address] = conditional_put(sandbox, KV, VAULT, _vault_with([{"value": address}]), read)
        except HttpResponseError as exc:
            outcomes[address] = exc.status_code

    threads = [threading.Thread(target=client, args=(a,)) for a in ("52.1.2.3", "52.1.2.4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(type(o).__name__ for o in outcomes.values()) == ["dict", "int"]
    winner = next(a for a, o in outcomes.items() if isinstance(o, dict))
    assert [o for o in outcomes.values() if isinstance(o, int)] == [412]
    assert sandbox.provider.read(VAULT, API[KV])["properties"]["networkAcls"]["ipRules"] == [{"value": f"{winner}/32"}]


def test_types_without_etags_ignore_if_match(sandbox) -> None:
    parents(sandbox)
    body = {"properties": {"startIpAddress": "52.1.2.3", "endIpAddress": "52.1.2.3"}}
    rule = conditional_put(sandbox, PG_RULE, f"{SERVER}/firewallRules/operator1", body, '"stale"')
    assert rule["properties"] == body["properties"] and "etag" not in rule


# ---- public address discovery --------------------------------------------------------------------------------
def discover(box: Sandbox, n: int) -> tuple[int, str, str]:
    status, headers, raw = http(box, "GET", f"/_sandbox/ip/{n}")
    return status, headers.get("Content-Type", ""), raw.decode()


def test_discovery_answers_one_public_address_as_text(sandbox) -> None:
    for n in (1, 2, 7):
        assert discover(sandbox, n) == (200, "text/plain; charset=utf-8", "20.42.73.18\n")
    assert discover(sandbox, 0)[0] == 404


def test_discovery_answers_per_service_then_fails_then_resets(sandbox) -> None:
    sandbox.control("PUT", "/ip", {"answers": ["52.1.2.3", "52.1.2.4"]})
    assert [discover(sandbox, n)[2] for n in (1, 2, 3, 9)] == ["52.1.2.3\n", "52.1.2.4\n", "52.1.2.4\n", "52.1.2.4\n"]
    sandbox.control("PUT", "/ip", {"status": 503})
    assert [discover(sandbox, n)[0] for n in (1, 2, 3)] == [503, 503, 503]
    sandbox.control("DELETE", "/ip")
    assert discover(sandbox, 1)[2] == "20.42.73.18\n"
    sandbox.control("PUT", "/ip", {"answers": ["52.9.9.9"]})
    sandbox.control("POST", "/reset")
    assert discover(sandbox, 1)[2] == "20.42.73.18\n"
    status, _, body = http(sandbox, "PUT", "/_sandbox/ip", {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["answers"] == ["20.42.73.18"]  # an empty body: the default


def test_discovery_control_refuses_malformed_settings(sandbox) -> None:
    for bad in ({"answers": []}, {"answers": "52.1.2.3"}, {"status": 200}, {"status": "503"}):
        request = urllib.request.Request(  # noqa: S310 - the sandbox
            f"{sandbox.url}/_sandbox/ip", data=json.dumps(bad).encode(), method="PUT"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, context=ssl.create_default_context(cafile=sandbox.ca), timeout=10)  # noqa: S310
        assert caught.value.code == 400
    assert discover(sandbox, 1)[2] == "20.42.73.18\n"


def test_discovery_requests_are_not_journaled(sandbox) -> None:
    group(sandbox)
    mark = sandbox.journal_mark()
    sandbox.control("PUT", "/ip", {"status": 503})
    for n in (1, 2, 3):
        discover(sandbox, n)
    sandbox.control("DELETE", "/ip")
    discover(sandbox, 1)
    assert sandbox.requests_since(mark)["requests"] == 0
    sandbox.provider.read(RG, API["Microsoft.Resources/resourceGroups"])
    assert sandbox.requests_since(mark) == {"requests": 1, "reads": 1, "writes": 0, "by_method": {"GET": 1}}
