"""`invoke release --env ENV --app APP --tag T`: ship one image to one app, verified.

Planned through the one flow: the app's pending migrations (`db.migrate` for the databases the
app owns) and the app's new revision pinned to the digest the registry has for the tag (prod
runs `prod-T`, `EnvConfig.deployed_tag`). Applied in that order (the app change depends on the
migrations, so a failed migration leaves the app untouched). The app's change rolls the image
and verifies the new revision as step 5 does; when it is not healthy in time the previous image
is rolled out again (Single mode: the failed revision never took traffic), the rollback gets its
own audit line, and the run exits 1 naming the revision and why. Migrations are never rolled
back (expand, then contract: runbooks/release.md).
"""

from __future__ import annotations

import functools
from typing import Any

from deploykit.engine.flow import RunContext, Work, merge, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import ApplyError, UserError
from deploykit.release.revisions import (
    APP_TYPE,
    AppRef,
    app_ref,
    digest_of,
    main_image,
    props,
    read_app,
    read_revision,
    registry_server,
    roll,
    rollout_body,
    verify,
)
from deploykit.report import audit


def release(req: Any) -> int:
    return run(req, plan_release)


def plan_release(ctx: RunContext) -> Work:
    from deploykit.engine.runner import load_for

    options = ctx.options
    ctx.platform = platform = load_for(options)
    tag = getattr(options, "tag", None)
    ref = app_ref(platform, options.env or "", getattr(options, "app", None), "-")
    if not tag:
        raise UserError(f"--tag: required; allowed: an image tag of {ref.app.image} in the shared registry")
    provider = ctx.provider()
    ref = app_ref(platform, options.env or "", ref.app.name, provider.target.subscription_id)
    actual = read_app(provider, ref)
    server = registry_server(actual, ref)
    deployed = ref.env.deployed_tag(tag)
    digest = lookup_digest(ctx, server, ref.app.image, deployed)
    if digest is None:
        hint = " (promote beta's image first: invoke release.promote)" if ref.env.promote_from else ""
        raise UserError(
            f"--tag: {ref.app.image}:{deployed} does not exist in {server}{hint}; "
            "allowed: a tag pushed to the registry (nothing was changed)"
        )
    ctx.reporter.info(f"{server}/{ref.app.image}:{deployed} is {digest}")
    image = f"{server}/{ref.app.image}@{digest}"
    serving = props(actual).get("latestReadyRevisionName")
    previous = main_image(read_revision(provider, ref, serving), ref) if serving else None
    change = _app_change(ref, actual, image, tag, digest, serving, previous)
    title = f"Plan for release of {ref.app.name} {deployed} on {options.target}, env {ref.env.env}"
    app_work = Work(
        title,
        Plan((change,)),
        {change.address: functools.partial(_apply, ctx, ref, image, tag, digest, serving, previous)}
        if change.action is Action.UPDATE
        else {},
        verify=lambda: Plan((_app_change(ref, read_app(provider, ref), image, tag, digest, serving, previous),)),
    )
    migrations = _migrations(ctx, ref)
    if migrations is None:
        return app_work
    extra = {change.address: tuple(c.address for c in migrations.plan.changes)}
    work = merge(title, [migrations, app_work], extra)
    work.no_changes = f"No changes: {ref.app.name} already runs {deployed} ({digest}) and its migrations are applied."
    return work


def lookup_digest(ctx: RunContext, server: str, repository: str, tag: str) -> str | None:
    """The digest the shared registry has for repository:tag (deploykit/registry), None when the tag is missing.

    `server` is the login server the app pulls from; it must be the shared registry's.
    """
    from deploykit.registry import shared_registry

    registry = shared_registry(ctx)
    if registry.login_server.lower() != server.lower():
        raise UserError(
            f"--app: pulls from {server}, not the shared registry {registry.login_server}; allowed: apps step 5 deployed"
        )
    return registry.digest(repository, tag)


def _app_change(
    ref: AppRef,
    actual: dict[str, Any],
    image: str,
    tag: str,
    digest: str,
    serving: str | None,
    previous: str | None,
) -> Change:
    p = props(actual)
    current = main_image(actual, ref)
    latest = p.get("latestRevisionName")
    if current == image and latest and latest == p.get("latestReadyRevisionName"):
        return Change(ref.address, APP_TYPE, ref.id, Action.UNCHANGED, f"revision {latest} already runs {tag} ({digest})")
    where = f"properties.template.containers[{ref.app.name}].image"
    reason = f"release {tag} as a new revision pinned to {digest}; serving now: {serving or 'nothing'} ({previous or '-'})"
    return Change(ref.address, APP_TYPE, ref.id, Action.UPDATE, reason, {where: {"old": current, "new": image}})


def _apply(
    ctx: RunContext,
    ref: AppRef,
    image: str,
    tag: str,
    digest: str,
    serving: str | None,
    previous: str | None,
) -> dict[str, Any]:
    """Roll out, verify; an unhealthy revision is rolled back to the previous image and the run fails."""
    provider = ctx.provider()
    roll(provider, ref, rollout_body(provider, ref, read_app(provider, ref), image))
    health, interrupted = verify(ctx, ref)
    record = {"tag": tag, "digest": digest, "image": image, "previous_revision": serving, "previous_image": previous}
    if health.ok:
        return {**record, "revision": health.revision}
    failed, why = health.revision, health.problem or "not verified"
    if interrupted:
        raise ApplyError(f"{why}; nothing was rolled back: see `invoke release.status --env {ref.env.env}`")
    if not previous:
        raise ApplyError(f"revision {failed} is not healthy: {why}; no earlier revision to return to")
    back = rollback_to(ctx, ref, previous, f"release {tag}: revision {failed} not healthy", failed, why, image)
    raise ApplyError(f"revision {failed} is not healthy: {why}; rolled back: {back} runs {previous} again (audit log: rollback)")


def rollback_to(ctx: RunContext, ref: AppRef, image: str, reason: str, failed: str | None, why: str, failed_image: str) -> str:
    """Roll the previous image out again after a failed release, verify it, audit it; its revision's name."""
    provider = ctx.provider()
    roll(provider, ref, rollout_body(provider, ref, read_app(provider, ref), image))
    health, _ = verify(ctx, ref)
    options = ctx.options
    record = {
        "address": ref.address,
        "type": APP_TYPE,
        "id": ref.id,
        "action": "rollback",
        "changed_fields": [f"properties.template.containers[{ref.app.name}].image"],
        "reason": reason,
        "failed_revision": failed,
        "failed_image": failed_image,  # release.rollback never returns to it
        "failure": why,
        "image": image,
        "digest": digest_of(image),
        "revision": health.revision,
        "result": "ok" if health.ok else "failed",
    }
    if not health.ok:
        record["error"] = health.problem
    audit(options.task, options.env, options.target, [record])
    if not health.ok:
        raise ApplyError(
            f"revision {failed} is not healthy: {why}; the rollback to {image} is not healthy either: {health.problem}"
        )
    return str(health.revision)


def _migrations(ctx: RunContext, ref: AppRef) -> Work | None:
    """db.migrate's work for the databases this app owns (None when it owns none with a folder)."""
    from deploykit.db.database import DbContext, DbRequest, migrations_dir
    from deploykit.db.migration_runs import migrate_work

    owned = [d for d in ref.env.databases if d.owner == ref.app.name]
    if not owned:
        return None
    options = ctx.options
    request = DbRequest(options.task, options.env, options.target, options.dry_run, options.as_json, options.yes)
    assert ctx.platform is not None
    db = DbContext(request, ctx, ctx.platform, ref.env.model_copy(update={"databases": owned}))
    if not any(migrations_dir(db, d).exists() for d in owned):
        return None
    return migrate_work(db)
