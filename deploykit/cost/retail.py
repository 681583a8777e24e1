"""The Azure Retail Prices API (unauthenticated): one filter per meter, every page, checked.

Filters are case-sensitive from api-version 2023-01-01-preview (azure-facts-2.md 7.1). A filter
must match exactly one primary meter: several rows are accepted only as its tiers (distinct
tierMinimumUnits); no row, several meters, or two prices for one tier fail loudly.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from deploykit.cost.pricing import Meter
from deploykit.cost.table import PriceRow
from deploykit.errors import DeployKitError

DEFAULT_URL = "https://prices.azure.com/api/retail/prices"
API_VERSION = "2023-01-01-preview"
MAX_PAGES = 50  # a filter naming one meter returns a page or two; more means a runaway filter
TIMEOUT_SECONDS = 30


class PriceLookupError(DeployKitError):
    """The API answered something a price cannot be taken from: exit 1, nothing written."""


def prices_url() -> str:
    """DEPLOYKIT_PRICES_URL points at another endpoint (the tests' local fake)."""
    return os.environ.get("DEPLOYKIT_PRICES_URL") or DEFAULT_URL


def odata_filter(meter: Meter, region: str) -> str:
    """The OData filter: region and Consumption first, then the meter's own fields, quoted."""
    parts = {"armRegionName": meter.region or region, "priceType": "Consumption", **meter.filter}
    return " and ".join(f"{key} eq '{_quote(value)}'" for key, value in parts.items())


def _quote(value: str) -> str:
    return value.replace("'", "''")  # OData escapes a quote by doubling it


def fetch_meter(key: str, meter: Meter, region: str, fetched: str) -> list[PriceRow]:
    """The meter's rows (one per tier) for `region`, or PriceLookupError naming the filter."""
    query = odata_filter(meter, region)
    items = [i for i in _all_pages(query) if i.get("isPrimaryMeterRegion", True) is not False]
    if not items:
        raise PriceLookupError(f"cost.refresh: filter matched no price: {query}; check the names in playbooks/pricing.yaml")
    identities = {
        (i.get("meterId"), i.get("productName"), i.get("skuName"), i.get("meterName"), i.get("unitOfMeasure")) for i in items
    }
    if len(identities) > 1:
        names = "; ".join(sorted(f"{p} / {s} / {m}" for _, p, s, m, _ in identities))
        raise PriceLookupError(f"cost.refresh: filter matched {len(identities)} meters, not one: {query} (matched: {names})")
    by_tier: dict[float, dict[str, Any]] = {}
    for item in items:
        tier = float(item.get("tierMinimumUnits") or 0.0)
        other = by_tier.get(tier)
        if other is not None and other.get("retailPrice") != item.get("retailPrice"):
            raise PriceLookupError(
                f"cost.refresh: filter matched two prices for tier {tier:g} ({other.get('retailPrice')} and "
                f"{item.get('retailPrice')}): {query}"
            )
        by_tier[tier] = item
    unit = next(iter(identities))[4]
    if unit != meter.unit:
        raise PriceLookupError(
            f"cost.refresh: {key}: unitOfMeasure {unit!r} is not {meter.unit!r} "
            f"(the unit its quantities are written for): {query}"
        )
    source = f"{prices_url()}?api-version={API_VERSION}&$filter={query}"
    return [_row(key, item, tier, source, fetched) for tier, item in sorted(by_tier.items())]


def _row(key: str, item: Mapping[str, Any], tier: float, source: str, fetched: str) -> PriceRow:
    try:
        return PriceRow(
            meter=key,
            region=str(item["armRegionName"]),
            serviceName=str(item["serviceName"]),
            productName=str(item.get("productName", "")),
            skuName=str(item.get("skuName", "")),
            meterName=str(item.get("meterName", "")),
            unitOfMeasure=str(item["unitOfMeasure"]),
            unitPrice=float(item["retailPrice"]),
            tierMinimumUnits=tier,
            effectiveStartDate=str(item["effectiveStartDate"]) if item.get("effectiveStartDate") else None,
            source=source,
            fetched=fetched,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PriceLookupError(
            f"cost.refresh: {key}: an item lacks {exc} (armRegionName, serviceName, unitOfMeasure, retailPrice)"
        ) from None


def _all_pages(query: str) -> list[dict[str, Any]]:
    """Every item, following NextPageLink until it is null."""
    url: str | None = f"{prices_url()}?" + urllib.parse.urlencode(
        {"api-version": API_VERSION, "meterRegion": "'primary'", "$filter": query}, quote_via=urllib.parse.quote
    )
    items: list[dict[str, Any]] = []
    pages = 0
    while url:
        pages += 1
        if pages > MAX_PAGES:
            raise PriceLookupError(f"cost.refresh: more than {MAX_PAGES} pages for one filter: {query}")
        page = _get(url, query)
        found = page.get("Items")
        if not isinstance(found, list):
            raise PriceLookupError(f"cost.refresh: answer without an Items list for: {query}")
        items.extend(i for i in found if isinstance(i, dict))
        url = page.get("NextPageLink") or None
    return items


def _get(url: str, query: str) -> dict[str, Any]:
    if not url.startswith(("https://", "http://")):
        raise PriceLookupError(f"cost.refresh: NextPageLink {url!r} is not an HTTP(S) address")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise PriceLookupError(f"cost.refresh: the Retail Prices API answered {exc.code} for: {query}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PriceLookupError(f"cost.refresh: cannot reach {prices_url()} ({reason}); nothing was written") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PriceLookupError(f"cost.refresh: the answer is not JSON for: {query}") from None
