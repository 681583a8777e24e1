"""playbooks/pricing.yaml: which meters price which ARM type and SKU, and the usage assumptions.

Quantities and SKUs are Jinja expressions over the rendered spec (the playbooks' own language),
evaluated in a sandbox, so a new type or SKU is a data change, never a code change.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploykit.config import describe_validation_error, parse_yaml, read_text_file
from deploykit.errors import UserError
from deploykit.paths import display, playbook_dir

MAPPING_NAME = "pricing.yaml"
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Gi|Mi|G|M)?\s*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(Strict):
    low: float = Field(ge=0)
    high: float = Field(ge=0)


class Assumption(Strict):
    value: float
    per_env: dict[str, float] = {}
    what: str

    def for_env(self, env: str) -> float | int:
        value = self.per_env.get(env, self.value)
        return int(value) if float(value).is_integer() else value  # shown as 100000, not 100000.0


class Meter(Strict):
    # Retail Prices API fields and values, compared case-sensitively by the API.
    filter: dict[str, str]
    region: str | None = None  # a pricing zone ("Zone 1") instead of the configured region
    unit: str  # the unitOfMeasure the quantities are written for; a refresh refuses another

    @model_validator(mode="after")
    def _known_fields(self) -> Meter:
        allowed = {"serviceName", "productName", "skuName", "meterName", "armSkuName", "serviceFamily"}
        unknown = sorted(set(self.filter) - allowed)
        if unknown or "serviceName" not in self.filter:
            raise ValueError(f"filter fields {unknown or 'without serviceName'}; allowed: serviceName plus {sorted(allowed)}")
        return self


class SkuCharge(Strict):
    meter: str | None = None
    quantity: str | None = None
    explain: str = ""
    free: str | None = None  # this SKU has no charge: why

    @model_validator(mode="after")
    def _meter_or_free(self) -> SkuCharge:
        if (self.free is None) == (self.meter is None or self.quantity is None):
            raise ValueError("needs meter and quantity, or free (the reason); allowed: one of the two")
        return self


class Charge(Strict):
    what: str
    usage: bool = False  # usage-based: shown with the assumptions
    meter: str | None = None
    quantity: str | None = None
    explain: str = ""
    by_sku: dict[str, SkuCharge] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Charge:
        if (self.by_sku is None) == (self.meter is None or self.quantity is None):
            raise ValueError("needs meter and quantity, or by_sku; allowed: one of the two")
        return self

    def for_sku(self, sku: str) -> SkuCharge | None:
        if self.by_sku is None:
            return SkuCharge(meter=self.meter, quantity=self.quantity, explain=self.explain)
        return self.by_sku.get(sku)


class PricedType(Strict):
    type: str
    sku: str  # expression giving the SKU label shown and matched against by_sku
    let: dict[str, str] = {}
    charges: list[Charge]


class Pricing(Strict):
    hours_per_month: float = Field(gt=0)
    currency: str
    expected_monthly: dict[str, Range]
    assumptions: dict[str, Assumption]
    meters: dict[str, Meter]
    priced: list[PricedType]
    free: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> Pricing:
        seen: set[str] = set()
        for i, entry in enumerate(self.priced):
            key = entry.type.lower()
            if key in seen or key in {t.lower() for t in self.free}:
                raise ValueError(f"priced[{i}].type {entry.type} is listed twice; allowed: once, in priced or free")
            seen.add(key)
            for charge in entry.charges:
                options = [charge.for_sku(s) for s in charge.by_sku] if charge.by_sku else [charge.for_sku("")]
                for option in options:
                    if option and option.meter and option.meter not in self.meters:
                        raise ValueError(f"priced[{i}] {entry.type} {charge.what}: meter {option.meter!r} is not under meters")
        return self

    def rule_for(self, arm_type: str) -> PricedType | None:
        return next((p for p in self.priced if p.type.lower() == arm_type.lower()), None)

    def free_reason(self, arm_type: str) -> str | None:
        return next((why for t, why in self.free.items() if t.lower() == arm_type.lower()), None)

    def assumption_values(self, env: str) -> dict[str, float | int]:
        """The assumptions for `env`; shared resources take "shared" (the plain value unless per_env names it)."""
        return {name: a.for_env(env) for name, a in self.assumptions.items()}


def mapping_path() -> Path:
    return playbook_dir() / MAPPING_NAME


def load_pricing() -> Pricing:
    path = mapping_path()
    shown = display(path)
    data = parse_yaml(read_text_file(path, shown, missing="pricing map not found"), shown)
    try:
        return Pricing.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{shown}: {describe_validation_error(exc, Pricing)}") from None


def gib(value: Any) -> float:
    """A container memory size in GiB: 1Gi, 0.5Gi, 512Mi (ARM's own spelling)."""
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory size (e.g. 1Gi, 512Mi)")
    number = float(match.group(1))
    return number / 1024 if match.group(2) in ("Mi", "M") else number


@functools.cache
def _environment() -> SandboxedEnvironment:
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    environment.filters["gib"] = gib
    return environment


class Evaluator:
    """Expressions of one priced type for one spec: `let` values first, then SKU and charges."""

    def __init__(self, where: str, context: Mapping[str, Any]) -> None:
        self.where = where
        self.context = dict(context)

    def value(self, label: str, expression: str) -> Any:
        try:
            result = _environment().compile_expression(expression, undefined_to_none=False)(**self.context)
            if isinstance(result, jinja2.Undefined):
                str(result)  # raises: StrictUndefined refuses to be used
            return result
        except (jinja2.TemplateError, TypeError, ValueError, ZeroDivisionError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise UserError(f"{self.where}: {label} {expression!r}: {message}; allowed: an expression over the spec") from None

    def number(self, label: str, expression: str) -> float:
        result = self.value(label, expression)
        if isinstance(result, bool) or not isinstance(result, int | float):
            raise UserError(f"{self.where}: {label} {expression!r} gave {result!r}; allowed: a number")
        return float(result)

    def text(self, label: str, template: str) -> str:
        try:
            return _environment().from_string(template).render(**self.context)
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise UserError(f"{self.where}: {label} {template!r}: {message}") from None

    def bind(self, lets: Mapping[str, str]) -> None:
        for name, expression in lets.items():
            self.context[name] = self.value(f"let {name}", expression)
