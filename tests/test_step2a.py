"""Step 2a: the shared vault; drift, soft-deleted vault recovery, purge protection."""

from __future__ import annotations

import pytest

from deploykit.engine.model import Action
from deploykit.errors import AzureOperationError
from tests.helpers import plan_for, run, spec

STEPS = ["step1", "step2a"]


def test_step2a_creates_vault_as_declared(sandbox) -> None:
    assert run(STEPS) == 0
    vault = spec(STEPS, "kv.shared")
    props = sandbox.provider.read(vault.id, vault.api_version)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["softDeleteRetentionInDays"] == 90
    assert props["sku"] == {"family": "A", "name": "standard"}
    assert props["vaultUri"].startswith("https://127.0.0.1:")


def test_drift_is_planned_with_old_and_new_values_then_fixed(sandbox) -> None:
    assert run(STEPS) == 0
    vault = spec(STEPS, "kv.shared")
    sandbox.control("POST", "/mutate", {"id": vault.id, "set": {"properties.enableRbacAuthorization": False}})
    [change] = [c for c in plan_for(sandbox, STEPS).changes if c.action is not Action.UNCHANGED]
    assert change.address == "kv.shared" and change.action is Action.UPDATE
    assert change.diff == {"properties.enableRbacAuthorization": {"old": False, "new": True}}
    assert run(STEPS) == 0
    assert all(c.action is Action.UNCHANGED for c in plan_for(sandbox, STEPS).changes)


def test_soft_deleted_vault_is_recovered_then_reapplied(sandbox) -> None:
    assert run(STEPS) == 0
    vault = spec(STEPS, "kv.shared")
    client = sandbox.provider.secret_client(sandbox.provider.read(vault.id, vault.api_version)["properties"]["vaultUri"])
    client.set_secret("github-token", "kept-across-recovery")
    sandbox.control("POST", "/mutate", {"id": vault.id, "set": {"properties.publicNetworkAccess": "Disabled"}})
    sandbox.provider.delete(vault.id, vault.api_version)
    assert sandbox.provider.read_deleted_vault(vault.name, "centralus") is not None

    [change] = [c for c in plan_for(sandbox, STEPS).changes if c.address == "kv.shared"]
    assert change.action is Action.RECOVER and "soft-deleted" in change.reason
    mark = sandbox.journal_mark()
    assert run(STEPS) == 0
    puts = [e for e in sandbox.control("GET", f"/journal?since={mark}")["entries"] if e["method"] == "PUT"]
    assert len(puts) == 2  # the recover PUT, then the declared properties re-applied
    props = sandbox.provider.read(vault.id, vault.api_version)["properties"]
    assert props["publicNetworkAccess"] == "Enabled"
    assert sandbox.provider.read_deleted_vault(vault.name, "centralus") is None
    client = sandbox.provider.secret_client(props["vaultUri"])
    assert client.get_secret("github-token").value == "kept-across-recovery"


def test_plain_create_over_a_soft_deleted_vault_conflicts(sandbox) -> None:
    """What Azure does without the recovery path: 409 ConflictError (azure-facts.md 4)."""
    assert run(STEPS) == 0
    vault = spec(STEPS, "kv.shared")
    sandbox.provider.delete(vault.id, vault.api_version)
    with pytest.raises(AzureOperationError) as caught:
        sandbox.provider.put(vault, vault.body)
    assert caught.value.code == "ConflictError"


def test_purge_is_refused_under_purge_protection(sandbox) -> None:
    assert run(STEPS) == 0
    vault = spec(STEPS, "kv.shared")
    sandbox.provider.delete(vault.id, vault.api_version)
    with pytest.raises(Exception) as caught:  # the SDK's HttpResponseError, straight from the typed client
        sandbox.provider.keyvault.vaults.begin_purge_deleted(vault.name, "centralus").result()
    assert "PurgeProtectionEnabled" in str(caught.value)
