"""`invoke cost` (a read-only estimate) and `invoke cost.refresh` (the price table, through the one flow)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.markup import escape
from rich.table import Table

from deploykit.config import Platform, available_envs, load_platform
from deploykit.cost.estimate import Estimate, estimate_specs
from deploykit.cost.pricing import Pricing, load_pricing
from deploykit.cost.table import PriceRow, PriceTable, dollars, load_table, table_path, write_table
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan, ResourceSpec
from deploykit.errors import UserError
from deploykit.paths import config_dir, display
from deploykit.report import Reporter

TARGET = "local"  # neither task talks to Azure: the estimate is offline, the refresh writes a repo file
FETCH_WORKERS = 4


def estimate(env: str, as_json: bool) -> int:
    """Render the environment's steps as `deploy` does, price each spec, print the estimate."""
    envs = available_envs(config_dir())
    if env not in envs:
        raise UserError(f"--env: {env!r} is not an environment; allowed: {', '.join(envs)}")
    platform = load_platform(config_dir(), [env])
    pricing = load_pricing()
    env_cfg = platform.envs[env]
    table = load_table(env_cfg.location)
    specs = render_env(platform, env)
    result = estimate_specs(specs, shared_addresses(platform, specs), pricing, table, env)
    reporter = Reporter("cost", env, TARGET, True, as_json)
    document = estimate_document(result, pricing, table, list(env_cfg.steps))
    if as_json:
        reporter.emit_json(Plan(()), [], extra=document)
    else:
        show_estimate(reporter, result, pricing, table, document)
    return 0


def render_env(platform: Platform, env: str) -> list[ResourceSpec]:
    """The specs `deploy --env` would plan: every step the env's config lists, no Azure read."""
    from deploykit.engine.runner import PLACEHOLDER_SUBSCRIPTION, render_steps

    return render_steps(platform, list(platform.envs[env].steps), env, PLACEHOLDER_SUBSCRIPTION, {}, {})


def shared_addresses(platform: Platform, specs: list[ResourceSpec]) -> set[str]:
    """Shared: rendered by a shared-scope step, or by step1-like `all` steps inside the shared group."""
    from deploykit.engine.steps import STEPS

    group = f"/resourcegroups/{platform.shared.resource_group.name.lower()}"
    shared = set()
    for spec in specs:
        scope = STEPS[spec.step].scope if spec.step in STEPS else "env"
        in_group = f"{spec.id.lower()}/".find(f"{group}/") != -1
        if scope == "shared" or (scope == "all" and in_group):
            shared.add(spec.address)
    return shared


def estimate_document(result: Estimate, pricing: Pricing, table: PriceTable, steps: list[str]) -> dict[str, Any]:
    """The estimate as data: the --json keys, and what the text output is printed from."""
    own, shared = result.total(shared=False), result.total(shared=True)
    expected = pricing.expected_monthly.get(result.env)
    with_shared = own + shared
    assumptions = pricing.assumption_values(result.env)
    for_shared = pricing.assumption_values("shared")
    return {
        "region": result.region,
        "currency": pricing.currency,
        "steps": steps,
        "resources": [line.to_json() for line in result.lines],
        "not_priced": result.free,
        "unpriced": result.unpriced,
        "complete": result.complete,
        "assumptions": [
            {"name": name, "value": assumptions[name], "shared_value": for_shared[name], "what": a.what}
            for name, a in pricing.assumptions.items()
        ],
        "usage": [line.to_json() for line in result.lines if line.usage],
        "totals": {"environment": round(own, 2), "shared": round(shared, 2), "with_shared": round(with_shared, 2)},
        "expected": None
        if expected is None
        else {
            "low": expected.low,
            "high": expected.high,
            "compared": "with_shared",
            "verdict": _verdict(with_shared, expected.low, expected.high),
        },
        "price_table": {
            "path": display(table_path(table.region)),
            "region": table.region,
            "source": table.source,
            "updated": table.updated,
            "rows": len(table.rows),
            "reference_rows": table.reference_rows,
            "fetched": sorted({r.fetched for r in table.rows}),
        },
    }


def _verdict(total: float, low: float, high: float) -> str:
    return "within" if low <= total <= high else ("below" if total < low else "above")


def show_estimate(reporter: Reporter, result: Estimate, pricing: Pricing, table: PriceTable, doc: dict[str, Any]) -> None:
    money = _money
    console = reporter.console
    title = f"Monthly estimate for {result.env} ({result.region}, {pricing.currency}) from steps {', '.join(doc['steps'])}"
    for shared, heading in ((False, title), (True, "Shared resources (in every environment's estimate; paid once)")):
        lines = [line for line in result.lines if line.shared == shared]
        if not lines:
            continue
        grid = Table(title=escape(heading), title_justify="left")
        for column in ("address", "type", "SKU", "charge", "quantity", "unit price", "monthly"):
            grid.add_column(column, justify="right" if column in ("quantity", "monthly") else "left", overflow="fold")
        for line in lines:
            grid.add_row(
                escape(line.address),
                escape(line.type),
                escape(line.sku),
                escape(line.what + (" (usage)" if line.usage else "")),
                f"{line.quantity:,.10g}",
                escape(line.rate),
                money(line.monthly),
            )
        console.print(grid)
    usage = [line for line in result.lines if line.usage]
    if usage:
        reporter.info("Usage-based charges (assumptions; inputs shown):")
        for line in usage:
            reporter.info(f"  {line.address} {line.what}: {line.explain} -> {money(line.monthly)}")
        for item in doc["assumptions"]:
            also = f" (shared resources: {item['shared_value']:,})" if item["shared_value"] != item["value"] else ""
            reporter.info(f"  assumption {item['name']} = {item['value']:,}{also}: {item['what']}")
    _show_free(reporter, result.free)
    for item in result.unpriced:
        reporter.warn(f"not priced: {item['address']} ({item['type']}): {item['reason']}")
    totals = doc["totals"]
    reporter.info(
        f"Total {result.env}: {money(totals['environment'])} a month; shared resources: {money(totals['shared'])}; "
        f"{result.env} with shared: {money(totals['with_shared'])}."
        + ("" if result.complete else " Incomplete: some resources could not be priced (above).")
    )
    expected = doc["expected"]
    if expected:
        reporter.info(
            f"Expected for {result.env} (playbooks/pricing.yaml, from platform.md): "
            f"{money(expected['low'])}-{money(expected['high'])}; this estimate (with shared) is {expected['verdict']} it."
        )
    info = doc["price_table"]
    reporter.info(
        f"Prices: {info['path']} (updated {info['updated']}; rows fetched {', '.join(info['fetched'])}): {info['source']}"
    )
    if info["reference_rows"]:
        reporter.warn(
            f"{info['reference_rows']} of {info['rows']} price rows are reference prices, not live {table.region} prices; "
            f"run `invoke cost.refresh --region {table.region}`"
        )


def _show_free(reporter: Reporter, free: list[dict[str, Any]]) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in free:
        by_type.setdefault(item["type"], []).append(item)
    if by_type:
        reporter.info(f"No charge ({len(free)} resources, listed, not priced):")
    for kind, items in by_type.items():
        addresses = ", ".join(i["address"] for i in items)
        reporter.info(f"  {kind} x{len(items)}: {items[0]['reason']} ({addresses})")


def _money(value: float) -> str:
    return f"${value:,.2f}"


# ---- cost.refresh -------------------------------------------------------------------------------


def refresh(region: str | None, dry_run: bool, as_json: bool, yes: bool) -> int:
    """Fetch every meter of playbooks/pricing.yaml; show the price changes; write the table at once."""
    options = RunOptions("cost.refresh", None, TARGET, dry_run, as_json, yes)
    return run(options, lambda ctx: plan_refresh(ctx, region))


def plan_refresh(ctx: RunContext, region: str | None) -> Work:
    from deploykit.clock import now
    from deploykit.cost.retail import fetch_meter, prices_url
    from deploykit.naming import region_problem

    if region is None:
        region = load_platform(config_dir(), []).shared.location
    problem = region_problem(region)
    if problem:
        raise UserError(f"--region: {problem}")
    pricing = load_pricing()
    today = now().date().isoformat()
    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        fetched = list(pool.map(lambda item: fetch_meter(item[0], item[1], region, today), pricing.meters.items()))
    rows = [row for meter_rows in fetched for row in meter_rows]
    path = table_path(region)
    old = _old_table(ctx, region)
    new = PriceTable(
        region=region,
        source=f"Azure Retail Prices API ({prices_url()}), Consumption, primary meter region",
        updated=today,
        rows=rows,
    )
    change = table_change(old, new, display(path))
    for name, prices in change.diff.items():  # one line each, beside the plan's one cell
        ctx.note(f"  {name}: {prices['old']} -> {prices['new']}")
    title = f"Plan for cost.refresh: {len(rows)} price rows for {len(pricing.meters)} meters in {region}"

    def apply() -> dict[str, Any]:
        write_table(path, new)
        return {"rows": len(rows)}

    def verify() -> Plan:
        return Plan((table_change(_old_table(ctx, region), new, display(path)),))

    return Work(
        title, Plan((change,)), {change.address: apply}, verify=verify, no_changes="No changes: every price matches the API."
    )


def _old_table(ctx: RunContext, region: str) -> PriceTable | None:
    if not table_path(region).is_file():
        return None
    try:
        return load_table(region)
    except UserError as exc:
        ctx.note(f"the current table is unreadable and will be replaced: {exc}")
        return None


def table_change(old: PriceTable | None, new: PriceTable, shown: str) -> Change:
    """One change for the whole file (it is written at once): each row's price old -> new."""
    address = f"prices.{new.region}"
    if old is None:
        return Change(address, "price table", shown, Action.CREATE, f"{len(new.rows)} rows from the API", {})
    before = {_row_name(r): r for r in old.rows}
    after = {_row_name(r): r for r in new.rows}
    diff: dict[str, dict[str, Any]] = {}
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or a.unitPrice != b.unitPrice or a.unitOfMeasure != b.unitOfMeasure:
            diff[name] = {"old": _price(a), "new": _price(b)}
    resourced = sum(1 for n in before.keys() & after.keys() if before[n].price_key() != after[n].price_key() and n not in diff)
    if not diff and not resourced:
        return Change(address, "price table", shown, Action.UNCHANGED, f"all {len(new.rows)} prices match the API")
    reason = f"{len(diff)} price(s) changed" + (
        f"; {resourced} row(s) now from the API (source or date of price)" if resourced else ""
    )
    return Change(address, "price table", shown, Action.UPDATE, reason, diff)


def _row_name(row: PriceRow) -> str:
    return row.meter + (f" [tier {row.tierMinimumUnits:g}]" if row.tierMinimumUnits else "")


def _price(row: PriceRow | None) -> str | None:
    return None if row is None else f"{dollars(row.unitPrice)} / {row.unitOfMeasure}"


__all__ = ["estimate", "refresh"]
