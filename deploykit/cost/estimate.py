"""An environment's monthly estimate: each rendered spec priced through playbooks/pricing.yaml.

Nothing is read from Azure: the specs are rendered exactly as `deploy` renders them, and values
known only after apply are not needed. A meter's tiers (free grants) apply to the estimate's total
use of that meter, shared out over the resources in proportion to their use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploykit.cost.pricing import Evaluator, Pricing
from deploykit.cost.table import PriceTable, rate_text, tiered_cost, unit_size
from deploykit.engine.model import ResourceSpec
from deploykit.paths import display


@dataclass
class Line:
    """One charge of one resource."""

    address: str
    type: str
    sku: str
    what: str
    meter: str
    quantity: float
    unit: str
    usage: bool
    explain: str
    shared: bool
    rate: str = ""
    monthly: float = 0.0
    priced: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "sku": self.sku,
            "charge": self.what,
            "meter": self.meter,
            "quantity": round(self.quantity, 4),
            "unit": self.unit,
            "unit_price": self.rate,
            "monthly": round(self.monthly, 2),
            "usage_based": self.usage,
            "inputs": self.explain,
            "shared": self.shared,
        }


@dataclass
class Estimate:
    env: str
    region: str
    lines: list[Line] = field(default_factory=list)
    free: list[dict[str, Any]] = field(default_factory=list)  # priced at nothing, with the reason
    unpriced: list[dict[str, Any]] = field(default_factory=list)  # could not be priced: the estimate is incomplete

    def total(self, shared: bool | None = None) -> float:
        return sum(line.monthly for line in self.lines if shared is None or line.shared == shared)

    @property
    def complete(self) -> bool:
        return not self.unpriced


def estimate_specs(specs: Sequence[ResourceSpec], shared: set[str], pricing: Pricing, table: PriceTable, env: str) -> Estimate:
    """Price every spec: a charge line per meter, a free entry, or an unpriced entry (never dropped)."""
    result = Estimate(env, table.region)
    hours = pricing.hours_per_month
    base = {"hours": hours, "days": hours / 24}
    mapping = display_mapping()
    for spec in specs:
        is_shared = spec.address in shared
        free_reason = pricing.free_reason(spec.type)
        if free_reason is not None:
            result.free.append({"address": spec.address, "type": spec.type, "reason": free_reason, "shared": is_shared})
            continue
        rule = pricing.rule_for(spec.type)
        if rule is None:
            result.unpriced.append(_unpriced(spec, "", f"type not in {mapping}", is_shared))
            continue
        where = f"{mapping}: {rule.type} ({spec.address})"
        # Shared resources are priced alike in every environment's estimate.
        values = pricing.assumption_values("shared" if is_shared else env)
        context = {**base, "a": values, "body": _plain(spec.body), "name": spec.name, "address": spec.address}
        evaluator = Evaluator(where, context)
        evaluator.bind(rule.let)
        sku = str(evaluator.value("sku", rule.sku))
        for charge in rule.charges:
            option = charge.for_sku(sku)
            if option is None:
                known = ", ".join(charge.by_sku or {})
                result.unpriced.append(
                    _unpriced(spec, sku, f"{charge.what}: SKU {sku!r} has no meter in {mapping} (priced: {known})", is_shared)
                )
                continue
            if option.free is not None:
                result.free.append({"address": spec.address, "type": spec.type, "reason": option.free, "shared": is_shared})
                continue
            assert option.meter is not None and option.quantity is not None
            quantity = evaluator.number(f"{charge.what} quantity", option.quantity)
            explain = evaluator.text(f"{charge.what} explain", option.explain) if option.explain else ""
            unit = pricing.meters[option.meter].unit
            line = Line(spec.address, spec.type, sku, charge.what, option.meter, quantity, unit, charge.usage, explain, is_shared)
            result.lines.append(line)
    _price(result, table)
    return result


def _price(result: Estimate, table: PriceTable) -> None:
    """Each meter's tiers over its total use in this estimate, shared out by each line's use."""
    by_meter: dict[str, list[Line]] = {}
    for line in result.lines:
        by_meter.setdefault(line.meter, []).append(line)
    for meter, lines in by_meter.items():
        tiers = table.tiers(meter)
        if not tiers:
            for line in lines:
                line.priced = False
                line.rate = "(no price)"
                result.unpriced.append(
                    {
                        "address": line.address,
                        "type": line.type,
                        "sku": line.sku,
                        "reason": f"{line.what}: meter {meter!r} has no row in data/prices/{table.region}.json "
                        f"(run `invoke cost.refresh --region {table.region}`)",
                        "shared": line.shared,
                    }
                )
            continue
        size = unit_size(tiers[0].unitOfMeasure)
        units = {id(line): line.quantity / size for line in lines}
        total_units = sum(units.values())
        cost = tiered_cost(total_units, tiers)
        for line in lines:
            line.rate = rate_text(tiers)
            line.monthly = cost * units[id(line)] / total_units if total_units else 0.0
    result.lines = [line for line in result.lines if line.priced]


def _unpriced(spec: ResourceSpec, sku: str, reason: str, shared: bool) -> dict[str, Any]:
    return {"address": spec.address, "type": spec.type, "sku": sku, "reason": reason, "shared": shared}


def _plain(value: Any) -> Any:
    """The spec body as plain dicts and lists (Jinja reads attributes of mappings by key)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def display_mapping() -> str:
    from deploykit.cost.pricing import mapping_path

    return display(mapping_path())
