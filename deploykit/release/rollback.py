"""`invoke release.rollback --env ENV --app APP [--revision NAME]`: back to an earlier image, verified.

The target is the revision named, or else the newest revision older than the serving one that
runs another image and did not fail (the previous healthy one). Apps run in Single mode, so
returning to it is a rollout of that revision's image: a new revision, verified as step 5 does
(azure-facts-2.md 3.2: redeploying is the Single-mode rollback the facts verify; activating an
old revision there is UNVERIFIED). Planned, confirmed and audited by the one flow.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Set as AbstractSet
from typing import Any

from deploykit.engine.flow import RunContext, Work, run
from deploykit.engine.model import Action, Change, Plan
from deploykit.errors import ApplyError, UserError
from deploykit.release.revisions import (
    APP_TYPE,
    AppRef,
    app_ref,
    digest_of,
    list_revisions,
    main_image,
    props,
    read_app,
    read_revision,
    roll,
    rollout_body,
    verify,
)

FAILED_STATES = {"failed"}


def rollback(req: Any) -> int:
    return run(req, plan_rollback)


def plan_rollback(ctx: RunContext) -> Work:
    from deploykit.engine.runner import load_for

    options = ctx.options
    ctx.platform = platform = load_for(options)
    app_ref(platform, options.env or "", getattr(options, "app", None), "-")  # --app checked before Azure is read
    provider = ctx.provider()
    ref = app_ref(platform, options.env or "", options.app, provider.target.subscription_id)  # type: ignore[attr-defined]
    actual = read_app(provider, ref)
    revisions = list_revisions(provider, ref)
    serving = props(actual).get("latestReadyRevisionName")
    target = choose(ref, revisions, serving, getattr(options, "revision", None), rejected_images(options.env, ref))
    image = main_image(target, ref)
    if not image:
        raise UserError(f"--revision: {target.get('name')} runs no image of {ref.app.name}; allowed: another revision")
    change = _change(ref, actual, revisions, target, image)
    title = f"Plan for release.rollback of {ref.app.name} on {options.target}, env {ref.env.env}"
    appliers = {change.address: functools.partial(_apply, ctx, ref, target, image)} if change.action is Action.UPDATE else {}
    return Work(
        title,
        Plan((change,)),
        appliers,
        verify=lambda: Plan((_change(ref, read_app(provider, ref), list_revisions(provider, ref), target, image),)),
        no_changes=f"No changes: {ref.app.name} already serves {image}.",
    )


def rejected_images(env: str | None, ref: AppRef) -> set[str]:
    """Images this app was taken off (audit log): a failed release's, and what a rollback replaced.

    A revision that failed readiness looks like any other once inactive, and "previous" after a
    rollback would otherwise be the release just rolled back; neither is a healthy target.
    """
    from deploykit.paths import audit_dir

    path = audit_dir() / "audit.jsonl"
    if not path.exists():
        return set()
    found: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if not isinstance(record, dict) or record.get("env") != env or record.get("address") != ref.address:
            continue
        for key in ("failed_image", "replaced_image"):
            if isinstance(record.get(key), str) and record.get("result") == "ok":
                found.add(record[key])
    return found


def choose(
    ref: AppRef, revisions: list[dict[str, Any]], serving: str | None, named: str | None, rejected: AbstractSet[str] = frozenset()
) -> dict[str, Any]:
    """The revision named (by full name or suffix), else the previous healthy one (never a rejected image)."""
    names = [str(r.get("name")) for r in revisions]
    if named:
        wanted = {named.lower(), f"{ref.resource_name}--{named}".lower()}
        found = next((r for r in revisions if str(r.get("name")).lower() in wanted), None)
        if found is None:
            raise UserError(f"--revision: {named!r} is not a revision of {ref.resource_name}; allowed: {', '.join(names)}")
        if str(props(found).get("provisioningState", "")).lower() in FAILED_STATES:
            raise UserError(f"--revision: {found.get('name')} failed to provision; allowed: a revision that ran")
        return found
    index = next((i for i, r in enumerate(revisions) if str(r.get("name")).lower() == str(serving or "").lower()), None)
    if index is None:
        raise UserError(f"--app: {ref.resource_name} serves no revision; name one with --revision (allowed: {', '.join(names)})")
    now = main_image(revisions[index], ref)
    for revision in reversed(revisions[:index]):
        failed = str(props(revision).get("provisioningState", "")).lower() in FAILED_STATES
        image = main_image(revision, ref)
        if not failed and image not in (None, now) and image not in rejected:
            return revision
    raise UserError(
        f"--revision: {ref.resource_name} has no earlier healthy revision with another image than {now} "
        f"(images of failed or rolled-back releases are skipped); allowed: one of {', '.join(names)}"
    )


def _change(ref: AppRef, actual: dict[str, Any], revisions: list[dict[str, Any]], target: dict[str, Any], image: str) -> Change:
    p = props(actual)
    serving = p.get("latestReadyRevisionName")
    serving_image = main_image(next((r for r in revisions if r.get("name") == serving), None), ref)
    if serving_image == image and serving == p.get("latestRevisionName") and main_image(actual, ref) == image:
        return Change(ref.address, APP_TYPE, ref.id, Action.UNCHANGED, f"revision {serving} serves {image}")
    where = f"properties.template.containers[{ref.app.name}].image"
    reason = f"return to revision {target.get('name')}'s image as a new revision; serving now: {serving} ({serving_image})"
    return Change(ref.address, APP_TYPE, ref.id, Action.UPDATE, reason, {where: {"old": main_image(actual, ref), "new": image}})


def _apply(ctx: RunContext, ref: AppRef, target: dict[str, Any], image: str) -> dict[str, Any]:
    provider = ctx.provider()
    actual = read_app(provider, ref)
    replaced = main_image(read_revision(provider, ref, props(actual).get("latestReadyRevisionName")), ref)
    roll(provider, ref, rollout_body(provider, ref, actual, image))
    health, _ = verify(ctx, ref)
    if not health.ok:
        raise ApplyError(f"the rollback to {target.get('name')}'s image is not healthy: {health.problem}")
    return {
        "image": image,
        "digest": digest_of(image),
        "revision": health.revision,
        "returned_to": target.get("name"),
        "replaced_image": replaced,  # never chosen again as "the previous healthy" image
    }
