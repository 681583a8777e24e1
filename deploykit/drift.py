"""`drift`: what differs between Azure and the environment's declared state, for a scheduled CI job.

The plan of every step of the environment (with its databases and migrations, as `deploy`
plans them), plus the orphans: resources in the managed resource groups that no playbook
declares any more. Nothing is ever applied or deleted. Exit 0 when nothing drifted, 3 when
something did; the JSON names each differing field with Azure's value ("old") and ours ("new"),
and each orphan by id.
"""

from __future__ import annotations

from typing import Any

from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.errors import AzureOperationError

GROUP_TYPE = "microsoft.resources/resourcegroups"


def drift(options: RunOptions) -> int:
    return run(options, plan_drift)


def plan_drift(ctx: RunContext) -> Work:
    from deploykit.deploy import plan_deploy

    work = plan_deploy(ctx)
    work.title = work.title.replace(f"Plan for {ctx.options.task}", "Drift check", 1)
    work.no_changes = "No drift: Azure matches every step, database and migration, and nothing undeclared was found."
    if work.plan.state_read:
        work.findings = {"orphans": orphans(ctx, work)}
    return work


def orphans(ctx: RunContext, work: Work) -> list[dict[str, Any]]:
    """Top-level resources in the groups the plan manages that the plan does not declare."""
    from deploykit.azure.api_versions import api_version

    declared = {change.id.lower() for change in work.plan.changes}
    groups = [c for c in work.plan.changes if c.type.lower() == GROUP_TYPE]
    provider = ctx.provider()
    found: list[dict[str, Any]] = []
    for group in groups:
        try:
            listed = provider.list_children(group.id, "resources", api_version("Microsoft.Resources/resourceGroups"))
        except AzureOperationError as exc:
            if exc.code == "ResourceGroupNotFound":
                continue  # the plan already shows the group as to be created
            raise
        for item in listed:
            rid = str(item.get("id", ""))
            if rid.lower() in declared:
                continue
            group_name = group.id.rsplit("/", 1)[-1]
            found.append(
                {
                    "id": rid,
                    "type": item.get("type"),
                    "name": item.get("name"),
                    "resource_group": group_name,
                    "summary": f"{item.get('type')} {item.get('name')} in {group_name}: in Azure, declared nowhere "
                    "(listed, never deleted)",
                }
            )
    return sorted(found, key=lambda o: o["id"].lower())
