"""`release.promote`: beta's image T copied by digest to prod's tag prod-T in the shared registry.

Prod never builds images: the manifest that ran in beta is imported (ARM importImage, by digest)
under prod's tag, then read back. One change per app: create (import), unchanged (the same digest
is already there), update (--force over a different digest). A different digest without --force,
or a source tag that does not exist, stops the run before anything is imported (exit 2).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploykit.engine.flow import RunContext, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import ApplyError, AzureOperationError, UserError

if TYPE_CHECKING:
    from deploykit.config import AppConfig, EnvConfig
    from deploykit.registry import Registry
    from deploykit.release.commands import ReleaseRequest

CHANGE_TYPE = "image tag"  # what the plan table shows; the id is the full image reference
READERS = 8  # tag reads are independent data-plane GETs
IMPORTERS = 4  # imports are independent ARM operations


@dataclass(frozen=True)
class Promotion:
    """One app's promotion as read: source repo:T and its digest, target repo:prod-T and its digest (or None)."""

    app: str
    repository: str
    source_tag: str
    target_tag: str
    source_digest: str | None
    target_digest: str | None

    @property
    def source(self) -> str:
        return f"{self.repository}:{self.source_tag}"

    @property
    def target(self) -> str:
        return f"{self.repository}:{self.target_tag}"


def promote(req: ReleaseRequest) -> int:
    """Check the flags (exit 2 before anything is read), then plan and apply through the one flow."""
    if req.app and req.all:
        raise UserError("--app/--all: give one of them, not both; allowed: --app NAME (one app) or --all (every app)")
    if not req.app and not req.all:
        raise UserError("--app/--all: missing; allowed: --app NAME (one app of config/prod.yaml) or --all (every app)")
    return run(req, _plan)


def _chosen_apps(req: ReleaseRequest, env: EnvConfig) -> list[AppConfig]:
    if req.all:
        return list(env.apps)
    found = [a for a in env.apps if a.name == req.app]
    if not found:
        names = ", ".join(a.name for a in env.apps) or "(none)"
        raise UserError(f"--app: {req.app!r} is not an app of prod; allowed: {names} (config/prod.yaml apps)")
    return found


def _plan(ctx: RunContext) -> Work:
    from deploykit.engine.runner import load_for

    req: ReleaseRequest = ctx.options  # type: ignore[assignment]
    ctx.platform = platform = load_for(req)
    env = platform.envs[req.env or "prod"]
    if env.promote_from is None:
        raise UserError("config/prod.yaml: promote_from: not set; allowed: beta (prod runs the images beta ran)")
    apps = _chosen_apps(req, env)
    tag = req.tag or env.image_tag
    if env.deployed_tag(tag) == tag:
        raise UserError("config/prod.yaml: image_tag_prefix: empty; allowed: a prefix such as 'prod-' (prod-T must differ)")
    registry = _open_registry(ctx)
    if registry is None:
        return _offline(req, env, apps, tag, platform.shared.registry.name)

    def read_all() -> list[Promotion]:
        with ThreadPoolExecutor(max_workers=min(READERS, len(apps))) as pool:
            return list(pool.map(lambda app: _read(registry, app, tag, env.deployed_tag(tag)), apps))

    promotions = read_all()
    _refuse(promotions, req.force, env.promote_from, "--tag" if req.tag else "config/prod.yaml: image_tag")
    changes = tuple(_change(registry, p) for p in promotions)

    def verify() -> Plan:
        return Plan(tuple(_change(registry, p) for p in read_all()))

    return Work(
        f"Plan for release.promote on {req.target}: {env.promote_from}'s {tag} -> prod's {env.deployed_tag(tag)} "
        f"in {registry.login_server}",
        Plan(changes),
        {_address(p): _applier(registry, p, req.force) for p in promotions},
        workers=IMPORTERS,
        verify=verify,
        no_changes=f"No changes: {env.deployed_tag(tag)} already holds {tag}'s digest for every app asked for.",
    )


def _open_registry(ctx: RunContext) -> Registry | None:
    """The shared registry, or None in a dry run against Azure that cannot read it (no subscription or credentials)."""
    from deploykit.azure.target import credentials_error
    from deploykit.registry import shared_registry

    offline_ok = ctx.options.dry_run and ctx.options.target == "azure"
    try:
        ctx.target()  # no subscription: a UserError naming how to choose one
    except UserError as exc:
        if not offline_ok:
            raise
        ctx.reporter.warn(f"planning without reading Azure: {exc}")
        return None
    try:
        return shared_registry(ctx)  # a UserError (exit 2) when step2b has not created it
    except AzureOperationError as exc:
        if exc.code != "AuthenticationFailed":
            raise ApplyError(f"could not read the shared registry: {exc}") from None
        if not offline_ok:
            raise credentials_error(exc) from None
        ctx.reporter.warn(f"planning without reading Azure: {exc.message}")
    return None


def _offline(req: ReleaseRequest, env: EnvConfig, apps: list[AppConfig], tag: str, registry: str) -> Work:
    """A dry-run plan without reading Azure: every target tag assumed absent (state_read false in --json)."""
    changes = tuple(
        Change(
            f"image.{app.name}",
            CHANGE_TYPE,
            f"{registry}.azurecr.io/{app.image}:{env.deployed_tag(tag)}",
            Action.CREATE,
            "state not read (no Azure subscription or credentials); assumed absent",
            {"source": {"old": None, "new": f"{app.image}:{tag}"}},
        )
        for app in apps
    )
    return Work(f"Plan for release.promote on {req.target} (not read)", Plan(changes, state_read=False))


def _read(registry: Registry, app: AppConfig, tag: str, target_tag: str) -> Promotion:
    """Both digests of one app; a failed read stops planning (nothing was changed)."""
    try:
        source = registry.digest(app.image, tag)
        target = registry.digest(app.image, target_tag)
    except AzureOperationError as exc:
        raise ApplyError(f"could not read {app.image} in {registry.login_server}: {exc}") from None
    return Promotion(app.name, app.image, tag, target_tag, source, target)


def _refuse(promotions: list[Promotion], force: bool, source_env: str, tag_from: str) -> None:
    """A missing source or (without --force) a different digest at the target: exit 2, nothing imported.

    `tag_from` names where T came from: the --tag flag, or prod's image_tag.
    """
    missing = [p.source for p in promotions if p.source_digest is None]
    if missing:
        raise UserError(
            f"{tag_from}: {', '.join(missing)} not found in the shared registry; allowed: a tag {source_env} was deployed "
            "with (push and deploy it to beta first); nothing was imported"
        )
    clashes = [p for p in promotions if p.target_digest not in (None, p.source_digest)]
    if clashes and not force:
        detail = "; ".join(f"{p.target} holds {p.target_digest}, {p.source} is {p.source_digest}" for p in clashes)
        raise UserError(f"--force: needed to overwrite a different digest ({detail}); nothing was imported")


def _address(p: Promotion) -> str:
    return f"image.{p.app}"


def _change(registry: Registry, p: Promotion) -> Change:
    """create (import), unchanged (same digest), update (a different digest, overwritten with --force)."""
    ref = registry.reference(p.repository, p.target_tag)
    if p.target_digest == p.source_digest:
        return Change(_address(p), CHANGE_TYPE, ref, Action.UNCHANGED, f"already holds {p.source}'s digest {p.source_digest}")
    if p.target_digest is None:
        diff = {"digest": {"old": None, "new": p.source_digest}, "source": {"old": None, "new": p.source}}
        return Change(_address(p), CHANGE_TYPE, ref, Action.CREATE, f"import {p.source} by digest", diff)
    diff = {"digest": {"old": p.target_digest, "new": p.source_digest}}
    return Change(_address(p), CHANGE_TYPE, ref, Action.UPDATE, f"--force: overwrite with {p.source}'s digest", diff)


def _applier(registry: Registry, p: Promotion, force: bool) -> Any:
    """Import by digest (Force only when overwriting), then read the target back: it must hold the source's digest."""

    def apply() -> dict[str, Any]:
        assert p.source_digest is not None
        overwrite = force and p.target_digest is not None
        registry.import_by_digest(p.repository, p.source_digest, [p.target], force=overwrite)
        now = registry.digest(p.repository, p.target_tag)
        if now != p.source_digest:
            raise ApplyError(f"{p.target} holds {now} after the import, not {p.source_digest}")
        return {
            "source": registry.reference(p.repository, p.source_tag),
            "digest": p.source_digest,
            "previous_digest": p.target_digest,
            "mode": "Force" if overwrite else "NoForce",
        }

    return apply
