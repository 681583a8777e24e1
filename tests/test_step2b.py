"""Step 2b: the shared registry; a failed long-running operation, then a re-run that completes."""

from __future__ import annotations

from deploykit.engine.model import Action
from tests.helpers import plan_for, run, spec

STEPS = ["step1", "step2b"]


def test_step2b_creates_premium_registry_with_retention(sandbox) -> None:
    assert run(STEPS) == 0
    acr = spec(STEPS, "acr.shared")
    body = sandbox.provider.read(acr.id, acr.api_version)
    assert body["sku"]["name"] == "Premium"
    assert body["properties"]["adminUserEnabled"] is False
    assert body["properties"]["policies"]["retentionPolicy"]["days"] == 30
    assert body["properties"]["policies"]["retentionPolicy"]["status"] == "enabled"
    assert body["properties"]["loginServer"] == "acrtradingshared.azurecr.io"


def test_failed_operation_reports_azure_code_then_rerun_completes(sandbox, capsys) -> None:
    assert run(["step1"]) == 0
    sandbox.faults(
        rules=[
            {
                "method": "PUT",
                "path_contains": "registries",
                "count": 1,
                "lro_fail": {"code": "RegistryProvisioningFailed", "message": "Capacity is exhausted in centralus."},
            }
        ]
    )
    assert run(STEPS) == 1
    out = capsys.readouterr().out
    assert "RegistryProvisioningFailed" in out and "Capacity is exhausted in centralus." in out
    [change] = [c for c in plan_for(sandbox, STEPS).changes if c.address == "acr.shared"]
    assert change.action is Action.UPDATE and "failed" in change.reason
    assert run(STEPS) == 0
    acr = spec(STEPS, "acr.shared")
    assert sandbox.provider.read(acr.id, acr.api_version)["properties"]["provisioningState"] == "Succeeded"
    assert all(c.action is Action.UNCHANGED for c in plan_for(sandbox, STEPS).changes)
