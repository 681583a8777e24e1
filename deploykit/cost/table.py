"""The price table shipped in the repo: data/prices/<region>.json, one row per meter and tier.

Rows keep the Retail Prices API's own field names, plus where each price came from and when it
was fetched, so an estimate can say how old and how trustworthy its prices are.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from deploykit.config import describe_validation_error
from deploykit.errors import UserError
from deploykit.paths import display, project_root

PRICES_DIR = Path("data") / "prices"
# "10K" operations, "1M" requests, "1 Hour", "1 GB/Month", "1/Day": the leading count is the unit size.
_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KM]?)(?![A-Za-z])")
_SCALE = {"": 1.0, "K": 1_000.0, "M": 1_000_000.0}


class PriceRow(BaseModel):
    """One price: a meter (the key in playbooks/pricing.yaml) at one tier, in USD."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    meter: str
    region: str  # where the price applies (armRegionName), or where a reference row was taken from
    serviceName: str  # the Retail Prices API's own field names
    productName: str
    skuName: str
    meterName: str
    unitOfMeasure: str
    unitPrice: float
    tierMinimumUnits: float = 0.0
    effectiveStartDate: str | None = None
    source: str  # the API filter, or the reference a derived row came from
    fetched: str  # the date (UTC) the row was fetched or derived

    def price_key(self) -> tuple[Any, ...]:
        """What a refresh compares: everything but the fetch date."""
        return (
            self.meter,
            self.tierMinimumUnits,
            self.unitPrice,
            self.unitOfMeasure,
            self.region,
            self.source,
            self.productName,
            self.skuName,
            self.meterName,
            self.effectiveStartDate,
        )


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    region: str  # the region this table prices
    currency: str = "USD"
    source: str  # one line: where the rows came from
    updated: str  # the date (UTC) the table was last written
    rows: list[PriceRow]

    def tiers(self, meter: str) -> list[PriceRow]:
        return sorted((r for r in self.rows if r.meter == meter), key=lambda r: r.tierMinimumUnits)

    @property
    def reference_rows(self) -> int:
        """Rows not fetched from the API for this region (seeded from reference prices)."""
        return sum(1 for r in self.rows if "$filter=" not in r.source)


def table_path(region: str) -> Path:
    return project_root() / PRICES_DIR / f"{region}.json"


def load_table(region: str) -> PriceTable:
    path = table_path(region)
    shown = display(path)
    if not path.is_file():
        raise UserError(f"{shown}: no price table for region {region!r}; allowed: run `invoke cost.refresh --region {region}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PriceTable.model_validate(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{shown}: not readable JSON ({type(exc).__name__}); allowed: the table cost.refresh writes") from None
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, PriceTable)}") from None


def table_text(table: PriceTable) -> str:
    """The file's bytes: stable key order and one row per line group, so diffs review well."""
    return json.dumps(table.model_dump(), indent=2, sort_keys=False) + "\n"


def write_table(path: Path, table: PriceTable) -> None:
    """Atomic: a temporary file in the same folder, flushed, then renamed over the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(table_text(table))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def unit_size(unit_of_measure: str) -> float:
    """How many natural units one unitOfMeasure holds ("10K" -> 10000, "1 Hour" -> 1)."""
    match = _UNIT.match(unit_of_measure)
    if not match:
        return 1.0
    return float(match.group(1)) * _SCALE[match.group(2)]


def tiered_cost(units: float, tiers: Sequence[PriceRow]) -> float:
    """Cost of `units` (in the meter's unitOfMeasure) over tiers; below the lowest tier is free."""
    total = 0.0
    ordered = sorted(tiers, key=lambda r: r.tierMinimumUnits)
    for i, row in enumerate(ordered):
        upper = ordered[i + 1].tierMinimumUnits if i + 1 < len(ordered) else math.inf
        billable = max(0.0, min(units, upper) - row.tierMinimumUnits)
        total += billable * row.unitPrice
    return total


def rate_text(tiers: Iterable[PriceRow]) -> str:
    """'$0.044 / 1 Hour', or each tier: '$0 from 0, $0.000034 from 180000 / 1 Second'."""
    rows = list(tiers)
    if not rows:
        return "(no price)"
    if len(rows) == 1:
        return f"{dollars(rows[0].unitPrice)} / {rows[0].unitOfMeasure}"
    parts = [f"{dollars(r.unitPrice)} from {r.tierMinimumUnits:,.10g}" for r in rows]
    return f"{', '.join(parts)} / {rows[0].unitOfMeasure}"


def dollars(price: float) -> str:
    """A unit price as written on a price list: $0.000034, never $3.4e-05."""
    text = f"{price:.10f}".rstrip("0").rstrip(".")
    return f"${text or '0'}"
