"""`invoke cost` and `invoke cost.refresh` through the real CLI; refresh against a local fake of the
Azure Retail Prices API (paged JSON, case-sensitive `eq` filters) on loopback."""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit.cost.estimate import estimate_specs
from deploykit.cost.pricing import load_pricing
from deploykit.cost.table import PriceTable, dollars, load_table, tiered_cost, unit_size
from deploykit.engine.model import ResourceSpec
from tests.conftest import REPO, run_invoke
from tests.helpers import copy_project, set_yaml_value, specs_for

PAGE_SIZE = 3
_CLAUSE = re.compile(r"(\w+) eq '((?:[^']|'')*)'")


# ---- helpers ------------------------------------------------------------------------------------


def project(tmp_path: Path) -> Path:
    """A copy of the project's data (config, playbooks, price tables) that a test may change."""
    return copy_project(tmp_path / "project", "data")


def cli(root: Path | None, *args: str, prices_url: str | None = None):
    """The real CLI on `root` (None: the repository); the audit log goes where conftest points it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYKIT_ROOT", "DEPLOYKIT_PRICES_URL")}
    if root is not None:
        env["DEPLOYKIT_ROOT"] = str(root)
    if prices_url:
        env["DEPLOYKIT_PRICES_URL"] = prices_url
    return run_invoke(*args, env=env)


def estimate_json(root: Path | None, env: str) -> dict[str, Any]:
    result = cli(root, "cost", "--env", env, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def line(document: dict[str, Any], address: str, charge: str) -> dict[str, Any]:
    return next(r for r in document["resources"] if r["address"] == address and r["charge"] == charge)


# ---- the fake Retail Prices API ---------------------------------------------------------------


class FakePrices:
    """Serves `items` as the Retail Prices API does: `$filter` of `field eq 'value'` joined by
    `and`, compared case-sensitively; PAGE_SIZE items a page with an absolute NextPageLink."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                clauses = _CLAUSE.findall(query.get("$filter", [""])[0])
                wanted = [(field, value.replace("''", "'")) for field, value in clauses]
                matched = [i for i in fake.items if all(i.get(f) == v for f, v in wanted)]
                skip = int(query.get("$skip", ["0"])[0])
                page = matched[skip : skip + PAGE_SIZE]
                following = None
                if skip + PAGE_SIZE < len(matched):
                    rest = {**{k: v[0] for k, v in query.items()}, "$skip": str(skip + PAGE_SIZE)}
                    following = f"{fake.url}?{urllib.parse.urlencode(rest, quote_via=urllib.parse.quote)}"
                body = json.dumps(
                    {
                        "BillingCurrency": "USD",
                        "CustomerEntityId": "Default",
                        "CustomerEntityType": "Retail",
                        "Items": page,
                        "NextPageLink": following,
                        "Count": len(page),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/retail/prices"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def api_items(region: str = "centralus") -> list[dict[str, Any]]:
    """One primary Consumption item per meter of playbooks/pricing.yaml (two tiers where the shipped
    table has two), prices unlike the shipped ones, plus rows the filters must not take."""
    pricing = load_pricing()
    shipped = load_table("centralus")
    items: list[dict[str, Any]] = []
    for n, (key, meter) in enumerate(pricing.meters.items(), start=1):
        tiers = shipped.tiers(key)
        for tier in tiers:
            item = {
                "currencyCode": "USD",
                "armRegionName": meter.region or region,
                "location": "US Central",
                "serviceName": meter.filter["serviceName"],
                "productName": meter.filter.get("productName", "Product " + key),
                "skuName": meter.filter.get("skuName", "Sku " + key),
                "meterName": meter.filter.get("meterName", "Meter " + key),
                "meterId": f"meter-{n}",
                "unitOfMeasure": meter.unit,
                "retailPrice": round(tier.unitPrice * (1.5 + n / 1000), 8),
                "unitPrice": 0.0,
                "tierMinimumUnits": tier.tierMinimumUnits,
                "effectiveStartDate": "2026-10-01T00:00:00Z",
                "type": "Consumption",
                "priceType": "Consumption",
                "isPrimaryMeterRegion": True,
            }
            items.append(item)
            # What a case-insensitive or region-blind filter would also take:
            items.append({**item, "serviceName": item["serviceName"].lower(), "retailPrice": 999.0, "meterId": f"x-{n}"})
            items.append({**item, "armRegionName": "eastus", "retailPrice": 998.0, "meterId": f"y-{n}"})
            items.append({**item, "type": "Reservation", "priceType": "Reservation", "retailPrice": 997.0})
            items.append({**item, "isPrimaryMeterRegion": False, "retailPrice": 996.0, "meterId": f"z-{n}"})
    return items


@pytest.fixture()
def fake_api() -> Iterator[FakePrices]:
    fake = FakePrices(api_items())
    try:
        yield fake
    finally:
        fake.stop()


def served(fake: FakePrices, meter: str) -> list[dict[str, Any]]:
    """The primary centralus (or zone) Consumption items for one meter, as the fake holds them."""
    pricing = load_pricing()
    spec = pricing.meters[meter]
    return [
        i
        for i in fake.items
        if i["priceType"] == "Consumption"
        and i["isPrimaryMeterRegion"]
        and i["armRegionName"] == (spec.region or "centralus")
        and all(i.get(f) == v for f, v in spec.filter.items())
    ]


# ---- cost --env ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["beta", "prod"])
def test_every_rendered_resource_is_priced_or_listed_free(env: str) -> None:
    document = estimate_json(None, env)
    platform_steps = yaml.safe_load((REPO / "config" / f"{env}.yaml").read_text())["steps"]
    rendered = {s.address for s in specs_for(platform_steps, env)}
    accounted = {r["address"] for r in document["resources"]} | {f["address"] for f in document["not_priced"]}
    assert document["unpriced"] == []
    assert document["complete"] is True
    assert accounted == rendered
    own = sum(r["monthly"] for r in document["resources"] if not r["shared"])
    shared = sum(r["monthly"] for r in document["resources"] if r["shared"])
    assert document["totals"]["environment"] == pytest.approx(own, abs=0.01 * len(document["resources"]))
    assert document["totals"]["with_shared"] == pytest.approx(own + shared, abs=0.01 * len(document["resources"]))
    expected = yaml.safe_load((REPO / "playbooks" / "pricing.yaml").read_text())["expected_monthly"][env]
    assert (document["expected"]["low"], document["expected"]["high"]) == (expected["low"], expected["high"])
    assert document["price_table"]["path"] == "data/prices/centralus.json"
    assert set(document) >= {"task", "env", "target", "dry_run", "summary", "changes"}


def test_shared_resources_are_flagged_and_priced_alike_in_both_estimates() -> None:
    beta, prod = estimate_json(None, "beta"), estimate_json(None, "prod")
    shared_beta = {(r["address"], r["charge"]): r["monthly"] for r in beta["resources"] if r["shared"]}
    shared_prod = {(r["address"], r["charge"]): r["monthly"] for r in prod["resources"] if r["shared"]}
    assert {a for a, _ in shared_beta} >= {"acr.shared", "kv.shared"}
    assert shared_beta == shared_prod
    assert beta["totals"]["shared"] == prod["totals"]["shared"]


def test_changing_a_sku_in_config_changes_the_estimate(tmp_path: Path) -> None:
    root = project(tmp_path)
    before = estimate_json(root, "beta")
    set_yaml_value(root / "config" / "beta.yaml", ["postgres", "sku_name"], "Standard_D2ds_v4")
    set_yaml_value(root / "config" / "beta.yaml", ["postgres", "tier"], "GeneralPurpose")
    after = estimate_json(root, "beta")

    old, new = line(before, "pg.beta", "compute"), line(after, "pg.beta", "compute")
    assert (old["sku"], new["sku"]) == ("Standard_B1ms", "Standard_D2ds_v4")
    table = json.loads((root / "data" / "prices" / "centralus.json").read_text())
    price = next(r["unitPrice"] for r in table["rows"] if r["meter"] == new["meter"])
    hours = yaml.safe_load((root / "playbooks" / "pricing.yaml").read_text())["hours_per_month"]
    assert new["quantity"] == 2 * hours  # 2 vCores of Standard_D2ds_v4
    assert new["monthly"] == pytest.approx(price * 2 * hours, abs=0.01)
    difference = after["totals"]["environment"] - before["totals"]["environment"]
    assert difference == pytest.approx(new["monthly"] - old["monthly"], abs=0.02)
    assert difference != 0


def test_a_sku_without_a_meter_is_reported_not_dropped(tmp_path: Path) -> None:
    root = project(tmp_path)
    for key, value in (("sku", "Standard"), ("family", "C"), ("capacity", 1)):
        set_yaml_value(root / "config" / "beta.yaml", ["redis", key], value)
    document = estimate_json(root, "beta")
    [missing] = document["unpriced"]
    assert missing["address"] == "redis.beta"
    assert "'Standard C1'" in missing["reason"]
    assert document["complete"] is False
    text = cli(root, "cost", "--env", "beta")
    assert text.returncode == 0
    assert "not priced: redis.beta" in text.stdout
    assert "Incomplete" in text.stdout


def test_text_estimate_shows_rows_assumptions_totals_range_and_table_source() -> None:
    result = cli(None, "cost", "--env", "beta")
    assert result.returncode == 0, result.stderr
    document = estimate_json(None, "beta")
    out = result.stdout
    for row in document["resources"]:
        assert row["address"] in out
    for item in document["usage"]:
        assert f"{item['address']} {item['charge']}: {item['inputs']}" in out
    for assumption in document["assumptions"]:
        assert f"assumption {assumption['name']} = " in out
    low, high = document["expected"]["low"], document["expected"]["high"]
    assert f"${low:,.2f}-${high:,.2f}" in out
    assert f"Total beta: ${document['totals']['environment']:,.2f}" in out
    info = document["price_table"]
    assert f"Prices: {info['path']} (updated {info['updated']}" in out
    assert info["source"] in out
    assert f"{info['reference_rows']} of {info['rows']} price rows are reference prices" in out


def test_a_mistake_in_the_pricing_map_is_one_line_naming_it(tmp_path: Path) -> None:
    root = project(tmp_path)
    mapping = root / "playbooks" / "pricing.yaml"
    text = mapping.read_text()
    assert "quantity: body.properties.storage.storageSizeGB" in text
    mapping.write_text(
        text.replace("quantity: body.properties.storage.storageSizeGB", "quantity: body.properties.storage.sizeGB")
    )
    result = cli(root, "cost", "--env", "beta")
    assert result.returncode == 2
    [message] = result.stderr.strip().splitlines()
    assert message.startswith(
        "error: playbooks/pricing.yaml: Microsoft.DBforPostgreSQL/flexibleServers (pg.beta): storage quantity"
    )
    assert "sizeGB" in message


def test_unknown_env_exits_2_with_one_line() -> None:
    result = cli(None, "cost", "--env", "staging")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --env: 'staging' is not an environment; allowed: beta, prod"]
    as_json = cli(None, "cost", "--env", "staging", "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["exit_status"] == 2


def test_prod_only_types_are_all_mapped() -> None:
    """The network, private endpoint and DNS types of steps 6-9, from a small test playbook."""
    entries = yaml.safe_load((REPO / "tests" / "data" / "cost" / "prod-network.yaml").read_text())
    specs = [ResourceSpec(e["address"], e["type"], "test", f"/x/{e['address']}", e["body"], "test") for e in entries]
    pricing, table = load_pricing(), load_table("centralus")
    result = estimate_specs(specs, set(), pricing, table, "prod")
    assert result.unpriced == []
    priced = {line.address for line in result.lines}
    free = {item["address"] for item in result.free}
    assert priced | free == {e["address"] for e in entries}
    assert priced.isdisjoint(free)
    hours = pricing.hours_per_month
    compute = next(x for x in result.lines if x.address == "pg.t" and x.what == "compute")
    assert compute.quantity == 2 * 2 * hours  # zone-redundant HA: a standby of the same 2 vCores
    app = {x.what: x for x in result.lines if x.address == "app.t.api"}
    share = pricing.assumptions["aca_active_share"].for_env("prod")
    assert app["vCPU active"].quantity == pytest.approx(0.5 * 2 * hours * 3600 * share)
    assert app["vCPU idle"].quantity == pytest.approx(0.5 * 2 * hours * 3600 * (1 - share))


def test_tiers_apply_to_the_estimates_total_use_of_a_meter() -> None:
    """The free grant is counted once per estimate, shared out by each app's use."""
    document = estimate_json(None, "beta")
    table = load_table("centralus")
    rows = [r for r in document["resources"] if r["meter"] == "aca-vcpu-active"]
    tiers = table.tiers("aca-vcpu-active")
    units = sum(r["quantity"] for r in rows) / unit_size(tiers[0].unitOfMeasure)
    assert sum(r["monthly"] for r in rows) == pytest.approx(tiered_cost(units, tiers), abs=0.01 * len(rows))


# ---- cost.refresh -------------------------------------------------------------------------------


def test_refresh_follows_pages_and_writes_every_meter(tmp_path: Path, fake_api: FakePrices) -> None:
    root = project(tmp_path)
    result = cli(root, "cost.refresh", "--json", prices_url=fake_api.url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    [change] = document["changes"]
    assert change["action"] == "update" and change["result"] == "ok"
    table = PriceTable.model_validate_json((root / "data" / "prices" / "centralus.json").read_text())
    pricing = load_pricing()
    assert {r.meter for r in table.rows} == set(pricing.meters)
    for key in pricing.meters:
        expected = sorted((i["tierMinimumUnits"], i["retailPrice"]) for i in served(fake_api, key))
        assert [(r.tierMinimumUnits, r.unitPrice) for r in table.tiers(key)] == expected
        assert all(r.source.startswith(fake_api.url) and "priceType eq 'Consumption'" in r.source for r in table.tiers(key))
    # Every filter also matches its distractors' primary twins only by case or region: more than
    # one page was needed for at least the tiered meters.
    assert any("%24skip=" in path or "$skip=" in path for path in fake_api.requests)
    tiered = [k for k in pricing.meters if len(table.tiers(k)) > 1]
    assert tiered, "the shipped table has tiered meters (free grants)"
    shown = change["diff"]
    assert any(name.startswith(tiered[0]) for name in shown)


def test_refresh_dry_run_shows_old_and_new_prices_and_writes_nothing(tmp_path: Path, fake_api: FakePrices) -> None:
    root = project(tmp_path)
    path = root / "data" / "prices" / "centralus.json"
    before = path.read_bytes()
    text = cli(root, "cost.refresh", "--dry-run", prices_url=fake_api.url)
    as_json = cli(root, "cost.refresh", "--dry-run", "--json", prices_url=fake_api.url)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    assert path.read_bytes() == before
    old = load_table("centralus").tiers("pg-storage")[0]
    new = served(fake_api, "pg-storage")[0]
    old_text = f"{dollars(old.unitPrice)} / {old.unitOfMeasure}"
    new_text = f"{dollars(new['retailPrice'])} / {new['unitOfMeasure']}"
    [change] = json.loads(as_json.stdout)["changes"]
    assert change["action"] == "update" and "result" not in change
    assert change["diff"]["pg-storage"] == {"old": old_text, "new": new_text}
    assert f"pg-storage: {old_text} -> {new_text}" in text.stdout


def test_second_refresh_changes_nothing(tmp_path: Path, fake_api: FakePrices) -> None:
    root = project(tmp_path)
    assert cli(root, "cost.refresh", prices_url=fake_api.url).returncode == 0
    path = root / "data" / "prices" / "centralus.json"
    written = path.read_bytes()
    again = cli(root, "cost.refresh", "--json", prices_url=fake_api.url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"][0]["action"] == "unchanged"
    assert path.read_bytes() == written
    # And the estimate now says its prices come from the API.
    document = estimate_json(root, "beta")
    assert document["price_table"]["reference_rows"] == 0


def _refresh_fails(tmp_path: Path, items: list[dict[str, Any]]) -> tuple[str, bytes, bytes]:
    root = project(tmp_path)
    path = root / "data" / "prices" / "centralus.json"
    before = path.read_bytes()
    fake = FakePrices(items)
    try:
        result = cli(root, "cost.refresh", prices_url=fake.url)
    finally:
        fake.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr, before, path.read_bytes()


def test_a_filter_matching_no_row_fails_loudly_and_writes_nothing(tmp_path: Path) -> None:
    meter = load_pricing().meters["redis-premium-p1"]
    items = [i for i in api_items() if i.get("meterName") != meter.filter["meterName"]]
    stderr, before, after = _refresh_fails(tmp_path, items)
    assert "filter matched no price" in stderr
    assert f"meterName eq '{meter.filter['meterName']}'" in stderr
    assert after == before


def test_a_filter_matching_two_meters_fails_loudly(tmp_path: Path) -> None:
    items = api_items()
    twin = next(
        i for i in items if i["meterName"] == "P1 Cache" and i["priceType"] == "Consumption" and i["isPrimaryMeterRegion"]
    )
    items.append({**twin, "meterId": "another-p1", "retailPrice": 0.7})
    stderr, before, after = _refresh_fails(tmp_path, items)
    assert "matched 2 meters, not one" in stderr
    assert "meterName eq 'P1 Cache'" in stderr
    assert after == before


def test_two_prices_for_one_tier_fail_loudly(tmp_path: Path) -> None:
    items = api_items()
    twin = next(
        i for i in items if i["meterName"] == "P1 Cache" and i["priceType"] == "Consumption" and i["isPrimaryMeterRegion"]
    )
    items.append({**twin, "retailPrice": twin["retailPrice"] + 0.1})
    stderr, _, _ = _refresh_fails(tmp_path, items)
    assert "two prices for tier 0" in stderr


def test_refresh_refuses_an_unknown_region(tmp_path: Path) -> None:
    result = cli(project(tmp_path), "cost.refresh", "--region", "Central US", "--dry-run")
    assert result.returncode == 2
    assert "--region:" in result.stderr and "centralus" in result.stderr
