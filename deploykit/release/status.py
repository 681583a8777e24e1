"""`invoke release.status --env ENV [--json]`: what each app serves, read-only.

Per app: the serving revision (latestReadyRevisionName) with its image and digest, health,
replicas and the traffic split over active revisions, a newer revision that is not serving
(a failed release) and why, and who released what is serving and when (the audit log's last
successful release, rollback or release's automatic rollback of that app).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from deploykit.engine.flow import RunContext
from deploykit.engine.model import Plan
from deploykit.errors import DeployKitError
from deploykit.release.revisions import AppRef, all_apps, digest_of, list_revisions, main_image, props, registry_server, tag_of
from deploykit.report import Reporter

RELEASE_TASKS = ("release", "release.rollback")


def status(req: Any) -> int:
    from deploykit.engine.runner import load_for

    with ExitStack() as stack:
        reporter = Reporter(req.task, req.env, req.target, True, req.as_json)
        ctx = RunContext(req, reporter, stack)
        ctx.platform = platform = load_for(req)
        provider = ctx.provider()
        released = last_releases(req.env)
        rows = [_row(ctx, ref, released) for ref in all_apps(platform, req.env, provider.target.subscription_id)]
        if req.as_json:
            reporter.emit_json(Plan(()), [], extra={"apps": rows})
            return 0
        _table(reporter, req, rows)
        return 0


def _row(ctx: RunContext, ref: AppRef, released: dict[str, dict[str, Any]]) -> dict[str, Any]:
    provider = ctx.provider()
    actual = provider.read(ref.id, ref.version)
    row: dict[str, Any] = {"app": ref.app.name, "resource": ref.resource_name, "exists": actual is not None}
    if actual is None:
        return row
    p = props(actual)
    revisions = list_revisions(provider, ref)
    by_name = {str(r.get("name")): r for r in revisions}
    serving_name, latest_name = p.get("latestReadyRevisionName"), p.get("latestRevisionName")
    serving = by_name.get(str(serving_name))
    sp = props(serving)
    image = main_image(serving, ref)
    row.update(
        serving_revision=serving_name,
        image=image,
        tag=tag_of(image),
        digest=digest_of(image) or _digest_for_tag(ctx, actual, ref, image),
        health=sp.get("healthState"),
        running_state=sp.get("runningState"),
        replicas=sp.get("replicas"),
        traffic={str(r.get("name")): props(r).get("trafficWeight") for r in revisions if props(r).get("trafficWeight")},
        latest_revision=latest_name,
    )
    if latest_name and latest_name != serving_name:
        lp = props(by_name.get(str(latest_name)))
        row["latest_not_serving"] = {
            "revision": latest_name,
            "image": main_image(by_name.get(str(latest_name)), ref),
            "provisioningState": lp.get("provisioningState"),
            "runningState": lp.get("runningState"),
            "healthState": lp.get("healthState"),
            "provisioningError": lp.get("provisioningError"),
        }
    record = released.get(ref.address)
    row["tag"] = row["tag"] or released.get(f"tag {image}", {}).get("tag")
    if record is not None and (record.get("image") == image or record.get("revision") == serving_name):
        row["released"] = {k: record.get(k) for k in ("when", "who", "task", "action", "tag", "revision", "run")}
        row["released"]["tag"] = row["released"]["tag"] or row["tag"]
    else:
        row["released"] = None  # what serves was not put there by a release (step 5's deploy)
    failed = released.get(f"{ref.address} failed")
    if failed is not None and (record is None or str(failed.get("when")) >= str(record.get("when"))):
        row["last_failed"] = {k: failed.get(k) for k in ("when", "who", "task", "error")}
    return row


def _digest_for_tag(ctx: RunContext, actual: dict[str, Any], ref: AppRef, image: str | None) -> str | None:
    """A tag reference's digest, asked of the registry (None when it cannot say)."""
    tag = tag_of(image)
    if not image or not tag:
        return None
    from deploykit.release.deploy import lookup_digest

    try:
        return lookup_digest(ctx, registry_server(actual, ref), ref.app.image, tag)
    except (DeployKitError, ImportError, OSError):
        return None


def last_releases(env: str | None) -> dict[str, dict[str, Any]]:
    """The newest successful release, rollback or automatic rollback per app address in the audit log,
    the newest failed one (`"<address> failed"`) and the tag each pinned image was released as
    (`"tag <image>"`)."""
    from deploykit.paths import audit_dir

    path = audit_dir() / "audit.jsonl"
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if not isinstance(record, dict) or record.get("env") != env or record.get("task") not in RELEASE_TASKS:
            continue
        address = record.get("address")
        if not isinstance(address, str) or record.get("result") == "started":
            continue
        if record.get("result") == "ok" and record.get("image"):
            found[address] = record
            if record.get("tag"):
                found[f"tag {record['image']}"] = record  # which tag a pinned image was released as
        elif record.get("result") == "failed" and record.get("action") != "rollback":
            found[f"{address} failed"] = record
    return found


def _short_image(row: dict[str, Any]) -> str:
    """repository:tag for the table (the digest has its own column; JSON keeps the full reference)."""
    image = str(row.get("image") or "")
    if not image:
        return "-"
    repository = image.split("/", 1)[-1].split("@", 1)[0].rsplit(":", 1)[0] if "/" in image else image
    return f"{repository}:{row['tag']}" if row.get("tag") else repository


def _table(reporter: Reporter, req: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"Releases on {req.env} ({req.target})", title_justify="left")
    for column in ("app", "serving revision", "image", "digest", "health", "replicas", "traffic", "released"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if not row["exists"]:
            table.add_row(row["app"], "(not deployed)", "", "", "", "", "", "")
            continue
        released = row["released"]
        traffic = ", ".join(f"{name} {weight}%" for name, weight in row["traffic"].items()) or "none"
        table.add_row(
            row["app"],
            str(row["serving_revision"] or "none"),
            _short_image(row),
            str(row["digest"] or "-"),
            f"{row['health']} ({row['running_state']})",
            str(row["replicas"]),
            traffic,
            f"{released['tag'] or '-'} by {released['who']} at {released['when']} ({released['task']})" if released else "-",
        )
    reporter.console.print(table)
    for row in rows:
        failed = row.get("last_failed")
        if failed:
            reporter.warn(
                f"{row['app']}: the last {failed['task']} at {failed['when']} by {failed['who']} failed: {failed['error']}"
            )
        late = row.get("latest_not_serving")
        if late:
            reporter.warn(
                f"{row['app']}: newest revision {late['revision']} ({late['image']}) is not serving: "
                f"{late['provisioningState']}, {late['runningState']}, {late['healthState']}"
                + (f": {late['provisioningError']}" if late.get("provisioningError") else "")
            )
