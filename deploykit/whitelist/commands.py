"""whitelist.add, .list, .remove, .prune: plans of rule changes through the one flow.

Every input is checked before anything is read or sent (exit 2, nothing changed). Each service
is one or more changes in the plan; the audit line of each carries owner, address, service and
expiry of what it opened or closed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from deploykit.azure.target import credentials_error
from deploykit.clock import now as clock_now
from deploykit.clock import utc_text
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import ApplyError, AzureOperationError, ResourceLockedError, UserError
from deploykit.report import Reporter
from deploykit.whitelist.rules import (
    RENEW_TOLERANCE,
    Rule,
    address_text,
    expiry,
    parse_network,
    parse_ttl,
    show_ttl,
    time_left,
)
from deploykit.whitelist.services import Grant, Service, load_services

SERVICE_NAMES = ("postgres", "redis", "vault", "registry")
RULE_WORKERS = 4  # child rules are independent resources: a few at once
MAX_TAGS = 50  # Azure's limit of tags per resource; each vault or registry address takes one


@dataclass(frozen=True)
class WhitelistRequest(RunOptions):
    ip: str | None = None
    ttl: str | None = None
    services: str | None = None
    reason: str | None = None
    all_mine: bool = False


@dataclass
class Session:
    """One run's config, services, owner and clock."""

    ctx: RunContext
    services: dict[str, Service]
    now: dt.datetime

    @property
    def req(self) -> WhitelistRequest:
        return self.ctx.options  # type: ignore[return-value]

    @property
    def settings(self) -> Any:
        assert self.ctx.platform is not None
        return self.ctx.platform.shared.whitelist

    def owner(self) -> str:
        from deploykit.whitelist.owner import signed_in_owner

        provider = self.ctx.provider()
        return signed_in_owner(self.req.target, provider.target.credential, provider.target.credential_scope)

    def read(self, names: list[str]) -> list[Service]:
        """Read the services asked for, at once; one that does not exist yet is reported by the caller."""
        provider = self.ctx.provider()
        chosen = [self.services[n] for n in names]
        try:
            with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
                list(pool.map(lambda s: s.read(provider), chosen))
        except AzureOperationError as exc:
            if exc.code == "AuthenticationFailed":
                raise credentials_error(exc) from None
            raise ApplyError(f"could not read the services: {exc}") from None
        return chosen


def _session(ctx: RunContext) -> Session:
    """Config, the env check (prod has no public endpoints), the services and the clock."""
    from deploykit.engine.runner import load_for

    req: WhitelistRequest = ctx.options  # type: ignore[assignment]
    ctx.platform = platform = load_for(req)
    env_cfg = platform.envs[req.env or ""]
    if env_cfg.network_model == "private":
        raise UserError(
            f"--env {req.env}: {req.env} has no public data endpoints (network_model: private); operators reach it "
            f"through the point-to-site VPN (`invoke vpn.client --env {req.env} NAME`, runbooks/vpn.client.md), "
            "never through a firewall rule; nothing was changed"
        )
    if req.target == "azure" and not req.dry_run and os.environ.get("DEPLOYKIT_NOW"):
        raise UserError(
            "DEPLOYKIT_NOW: set while writing to real Azure; rule expiries would follow a rehearsal clock. "
            "Unset it (it is for dry runs and the sandbox); nothing was changed"
        )
    subscription = ctx.provider().target.subscription_id
    return Session(ctx, load_services(platform, req.env or "", subscription), clock_now())


def _service_names(text: str | None, default: list[str]) -> list[str]:
    if text is None:
        return list(default)
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if not names or unknown:
        raise UserError(f"--services: {', '.join(unknown) or repr(text)} is not a service; allowed: {', '.join(SERVICE_NAMES)}")
    return list(dict.fromkeys(names))


def _require_existing(services: list[Service], env: str | None) -> None:
    missing = [s for s in services if not s.exists]
    if missing:
        what = ", ".join(f"{s.name} ({s.entry.resource.name})" for s in missing)
        raise UserError(f"{what}: not deployed; run `invoke step3 --env {env}` (and step2b for the registry) first")


# ---- one service's changes -------------------------------------------------------------------------
def _opened(service: Service, grant: Grant, reason: str | None) -> dict[str, Any]:
    return {
        "service": service.name,
        "owner": grant.owner,
        "address": address_text(grant.network),
        "expires": utc_text(grant.expires),
        **({"reason": reason} if reason else {}),
    }


def _closed(rule: Rule) -> dict[str, Any]:
    return {
        "service": rule.service,
        "owner": rule.owner,
        "address": address_text(rule.network),
        "expires": utc_text(rule.expires) if rule.expires else None,
    }


def _locked_hint(exc: ResourceLockedError, closing: list[Rule]) -> ResourceLockedError:
    names = ", ".join(r.name for r in closing)
    return ResourceLockedError(
        exc.code,
        f"{names} not removed: a management lock forbids deletes in this group (never lifted by this tool; "
        "see runbooks/whitelist.remove.md); everything else was applied",
        exc.status,
    )


Applier = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Planned:
    """One change of a whitelist plan, its applier (None when unchanged) and what it waits for."""

    change: Change
    applier: Applier | None = None
    after: tuple[str, ...] = ()


def _live_match(service: Service, grant: Grant, now: dt.datetime) -> tuple[list[Rule], list[Rule], list[Rule]]:
    """(the owner's live rules for the address, those close enough to the asked expiry, manual ones)."""
    mine = [r for r in service.rules if r.ours and r.owner == grant.owner and r.network == grant.network and not r.expired(now)]
    close = [r for r in mine if r.expires and abs(r.expires - grant.expires) <= RENEW_TOLERANCE]
    manual = [r for r in service.rules if not r.ours and r.network == grant.network]
    return mine, close, manual


def _close_change(session: Session, service: Service, rule: Rule, after: tuple[str, ...] = (), why: str = "") -> Planned:
    provider = session.ctx.provider()
    if not why:
        why = f"{time_left(rule.expires, session.now)}" if rule.expired(session.now) and rule.expires else "removed"
    diff = {
        "address": {"old": address_text(rule.network), "new": None},
        "owner": {"old": rule.owner, "new": None},
        "expires": {"old": _when(rule.expires), "new": None},
    }

    def close_rule() -> dict[str, Any]:
        try:
            service.delete_rule(provider, rule.name)
        except ResourceLockedError as exc:
            raise _locked_hint(exc, [rule]) from None
        return {"closed": [_closed(rule)]}

    change = Change(
        f"{service.name}:{rule.name}", service.rule_type, service.rule_id(rule.name), Action.DELETE, f"{why} ({rule.owner})", diff
    )
    return Planned(change, close_rule, after)


def rule_changes(session: Session, service: Service, grant: Grant | None, closing: list[Rule]) -> list[Planned]:
    """A child-rule service: one change per rule opened or closed; a renewal opens the new rule, then closes the old."""
    provider = session.ctx.provider()
    reason_text = session.req.reason
    out: list[Planned] = []
    replaced: list[Rule] = []
    if grant is not None:
        mine, close, manual = _live_match(service, grant, session.now)
        new_name = service.rule_name_for(grant)
        address = f"{service.name}:{new_name}"
        if close:
            rule = close[0]
            assert rule.expires is not None
            why = f"open for {rule.owner} until {_when(rule.expires)} ({time_left(rule.expires, session.now)} left)"
            out.append(
                Planned(
                    Change(f"{service.name}:{rule.name}", service.rule_type, service.rule_id(rule.name), Action.UNCHANGED, why)
                )
            )
        elif manual and not mine:
            why = f"already let in by {manual[0].name}, a rule not made by this tool; left alone"
            out.append(Planned(Change(address, service.rule_type, service.rule_id(manual[0].name), Action.UNCHANGED, why)))
        else:
            replaced = mine
            diff = {
                "address": {"old": None, "new": address_text(grant.network)},
                "owner": {"old": None, "new": grant.owner},
                "expires": {"old": _when(mine[0].expires) if mine else None, "new": _when(grant.expires)},
            }
            reason = (
                "renewal: the new expiry is a new rule" if mine else f"let {address_text(grant.network)} in for {grant.owner}"
            )

            def open_rule() -> dict[str, Any]:
                service.put_rule(provider, grant)
                return {"opened": [_opened(service, grant, reason_text)]}

            out.append(
                Planned(Change(address, service.rule_type, service.rule_id(new_name), Action.CREATE, reason, diff), open_rule)
            )
            for old in replaced:
                out.append(_close_change(session, service, old, (address,), "replaced by the renewed rule"))
    out.extend(_close_change(session, service, rule) for rule in closing if rule not in replaced)
    return out


def list_change(session: Session, service: Service, grant: Grant | None, closing: list[Rule]) -> list[Planned]:
    """A list service: one change for the resource, however many addresses it opens or closes."""
    provider = session.ctx.provider()
    reason_text = session.req.reason
    address = f"{service.name}:{service.entry.resource.name}"
    adds: list[Grant] = []
    notes: list[str] = []
    if grant is not None:
        mine, close, manual = _live_match(service, grant, session.now)
        if close:
            notes.append(f"open for {grant.owner} until {_when(close[0].expires)}")
        elif manual and not mine:
            notes.append(f"already let in by an entry not made by this tool ({manual[0].name}); left alone")
        else:
            adds.append(grant)
            tags = (service.actual or {}).get("tags") or {}
            if len(tags) >= MAX_TAGS and not mine:
                raise UserError(
                    f"{service.name}: {service.entry.resource.name} already has {len(tags)} tags (Azure allows {MAX_TAGS}), "
                    "one per operator address; run `invoke whitelist.prune` or remove entries first; nothing was changed"
                )
    removals = [r for r in closing if not (adds and r.owner == adds[0].owner and r.network == adds[0].network)]
    if not adds and not removals:
        why = "; ".join(notes) or "nothing to do"
        return [Planned(Change(address, service.resource_type, service.resource_id, Action.UNCHANGED, why))]
    diff: dict[str, dict[str, Any]] = {}
    path = service.entry.list.path if service.entry.list else "list"
    for g in adds:
        diff[f"{path}[{address_text(g.network)}]"] = {"old": None, "new": f"{g.owner} until {_when(g.expires)}"}
    for r in removals:
        diff[f"{path}[{address_text(r.network)}] {r.owner}"] = {"old": f"{r.owner} until {_when(r.expires)}", "new": None}
    reason = "read-modify-write of the list, guarded by the ETag (other entries kept)"

    def write() -> dict[str, Any]:
        attempts = service.write_list(provider, adds, removals)
        extra: dict[str, Any] = {"attempts": attempts}
        if adds:
            extra["opened"] = [_opened(service, g, reason_text) for g in adds]
        if removals:
            extra["closed"] = [_closed(r) for r in removals]
        return extra

    return [Planned(Change(address, service.resource_type, service.resource_id, Action.UPDATE, reason, diff), write)]


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "?"


def _work(session: Session, title: str, per_service: list[list[Planned]], no_changes: str) -> Work:
    planned = [p for group in per_service for p in group]
    changes = tuple(p.change for p in planned)
    appliers = {p.change.address: p.applier for p in planned if p.applier is not None}
    depends = {p.change.address: p.after for p in planned if p.after}
    return Work(title, Plan(changes), appliers, depends, workers=RULE_WORKERS, no_changes=no_changes)


def _changes_for(session: Session, service: Service, grant: Grant | None, closing: list[Rule]) -> list[Planned]:
    if service.entry.rules is not None:
        return rule_changes(session, service, grant, closing)
    return list_change(session, service, grant, closing)


# ---- the tasks -------------------------------------------------------------------------------------
def add(req: WhitelistRequest) -> int:
    def planner(ctx: RunContext) -> Work:
        session = _session(ctx)
        settings = session.settings
        ttl = parse_ttl(req.ttl if req.ttl is not None else settings.default_ttl)
        if ttl > parse_ttl(settings.max_ttl):
            raise UserError(f"--ttl: {req.ttl} is longer than {settings.max_ttl}; allowed: 1m to {settings.max_ttl} "
                            "(whitelist.max_ttl in config/shared.yaml; permanent rules belong in the playbooks)")  # fmt: skip
        asked = _service_names(req.services, [])
        if req.reason is not None and (not str(req.reason).strip() or len(str(req.reason)) > 200 or "\n" in str(req.reason)):
            raise UserError("--reason: allowed: one line of 1-200 characters")
        network = _network(session, asked or list(SERVICE_NAMES))
        everything = session.read(list(SERVICE_NAMES))  # one round: the owner's expired rules go everywhere
        names = asked or _default_services(session)
        _require_existing([session.services[n] for n in names], req.env)
        owner = session.owner()
        grant = Grant(owner, network, expiry(session.now, ttl))
        groups = []
        for service in everything:
            own_expired = [r for r in service.rules if r.ours and r.owner == owner and r.expired(session.now)]
            if service.name in names or own_expired:
                groups.append(_changes_for(session, service, grant if service.name in names else None, own_expired))
        ctx.note(
            f"Owner {owner}; {address_text(network)} open until {_when(grant.expires)} ({show_ttl(ttl)}) on {', '.join(names)}."
        )
        title = f"whitelist.add: {address_text(network)} for {owner}, {show_ttl(ttl)}"
        return _work(session, title, groups, "No changes: already open.")

    return run(req, planner)


def _network(session: Session, services: list[str]) -> ipaddress.IPv4Network:
    req, settings = session.req, session.settings
    text = req.ip
    if text is None:
        from deploykit.whitelist.discovery import discover, discovery_urls

        opened = session.ctx.target()
        verify = opened.provider.target.connection_verify if opened.sandbox_url else True
        text = discover(discovery_urls(settings.discovery_urls, opened.sandbox_url), settings.discovery_timeout_seconds, verify)
        session.ctx.reporter.info(f"Your public address: {text} (two services agree).")
        try:
            return parse_network(text, settings.widest_prefix, services)
        except UserError as exc:
            problem = str(exc).removeprefix(f"--ip: {text} ")
            raise UserError(
                f"--ip: address discovery answered {text}, which {problem}; pass --ip with your public address"
            ) from None
    return parse_network(text, settings.widest_prefix, services)


def _default_services(session: Session) -> list[str]:
    """Config's default services, plus list services whose resource denies by default."""
    names = list(session.settings.default_services)
    return names + [n for n, s in session.services.items() if n not in names and s.restricted()]


def remove(req: WhitelistRequest) -> int:
    if bool(req.ip) == bool(req.all_mine):
        raise UserError("--ip, --all-mine: give one (your address, or every rule you own)")

    def planner(ctx: RunContext) -> Work:
        session = _session(ctx)
        names = _service_names(req.services, list(SERVICE_NAMES))
        network = parse_network(req.ip, session.settings.widest_prefix, names) if req.ip else None
        services = [s for s in session.read(names) if s.exists]
        owner = session.owner()
        groups = []
        for service in services:
            closing = [r for r in service.rules if r.ours and r.owner == owner and (network is None or r.network == network)]
            groups.append(_changes_for(session, service, None, closing))
        what = address_text(network) if network else "every address"
        return _work(session, f"whitelist.remove: {what} of {owner}", groups, f"No changes: {owner} has no such rule.")

    return run(req, planner)


def prune(req: WhitelistRequest) -> int:
    def planner(ctx: RunContext) -> Work:
        session = _session(ctx)
        services = [s for s in session.read(list(SERVICE_NAMES)) if s.exists]
        groups = []
        for service in services:
            expired = [r for r in service.rules if r.ours and r.expired(session.now)]
            if expired:
                groups.append(_changes_for(session, service, None, expired))
        return _work(
            session, f"whitelist.prune: expired rules at {_when(session.now)}", groups, "No changes: no rule has expired."
        )

    return run(req, planner)


def list_rules(req: WhitelistRequest) -> int:
    """Read-only: every service's rules, ours with owner and time left, manual ones apart."""
    with ExitStack() as stack:
        reporter = Reporter(req.task, req.env, req.target, True, req.as_json)
        ctx = RunContext(req, reporter, stack)
        session = _session(ctx)
        services = session.read(list(SERVICE_NAMES))
        ours = [r for s in services for r in s.rules if r.ours]
        manual = [r for s in services for r in s.rules if not r.ours]
        missing = [s.name for s in services if not s.exists]
        if req.as_json:
            reporter.emit_json(
                Plan(()),
                [],
                extra={
                    "now": utc_text(session.now),
                    "rules": [r.to_json(session.now) for r in ours],
                    "manual": [r.to_json(session.now) for r in manual],
                    "not_deployed": missing,
                },
            )
            return 0
        from rich.table import Table

        table = Table(title=f"Operator rules on {req.env} (now {_when(session.now)})", title_justify="left")
        for column in ("service", "owner", "address", "expires", "left", "rule"):
            table.add_column(column, overflow="fold")
        for rule in sorted(ours, key=lambda r: (r.service, r.owner or "", r.expires or session.now)):
            assert rule.expires is not None
            left = time_left(rule.expires, session.now)
            shown = f"[red]{left}[/]" if rule.expired(session.now) else left
            table.add_row(rule.service, rule.owner or "", address_text(rule.network), _when(rule.expires), shown, rule.name)
        reporter.console.print(table)
        expired = sum(1 for r in ours if r.expired(session.now))
        reporter.info(
            f"{len(ours)} rule(s) made by this tool, {expired} expired" + (" (`invoke whitelist.prune`)." if expired else ".")
        )
        for rule in manual:
            reporter.info(f"not made by this tool, left alone: {rule.service} {rule.name} ({address_text(rule.network)})")
        for name in missing:
            reporter.info(f"{name}: not deployed")
        return 0
