"""A vault's secret is one thing seen two ways: ARM's `vaults/secrets` and the vault's data plane.

Through the real SDKs over HTTPS to one sandbox for the module: the management plane with the
project's ArmProvider (azure-mgmt-resource's generic client), the data plane with
azure-keyvault-secrets. Shapes are checked against key-vault-secret/createSecret.json and
getSecret.json (tests/data/arm-examples).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.model import ResourceSpec
from deploykit.errors import AzureOperationError
from tests.conftest import Sandbox, load_example, module_sandbox

RG = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-vault-secrets"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-secrets-view"
SECRET_TYPE = "Microsoft.KeyVault/vaults/secrets"
API = "2026-05-15"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with module_sandbox(tmp_path_factory.mktemp("vault-secrets"), "vault-secrets", RG) as sandbox:
        sandbox.provider.put(
            ResourceSpec("v", "Microsoft.KeyVault/vaults", API, VAULT, {}, "t"),
            {
                "location": "centralus",
                "properties": {"tenantId": SANDBOX_SUBSCRIPTION, "sku": {"family": "A", "name": "standard"}},
            },
        )
        yield sandbox


def _vault_uri(box: Sandbox) -> str:
    vault = box.provider.read(VAULT, API)
    assert vault is not None
    return vault["properties"]["vaultUri"]


def _arm_put(box: Sandbox, name: str, body: dict) -> dict:
    answer = box.provider.put(ResourceSpec("s", SECRET_TYPE, API, f"{VAULT}/secrets/{name}", {}, "t"), body)
    assert answer is not None
    return answer


def _shape(body: dict) -> dict[str, object]:
    """The keys an answer has, at the top, under properties and under attributes."""
    props = body["properties"]
    return {"top": sorted(body), "properties": sorted(props), "attributes": sorted(props["attributes"])}


def test_an_arm_put_is_the_data_planes_latest_version(box: Sandbox) -> None:
    """Secrets_CreateOrUpdate adds a version the data plane serves; the answer has no value, 201 then 200."""
    example = load_example("key-vault-secret/createSecret.json")
    mark = box.journal_mark()
    first = _arm_put(box, "arm-made", {"properties": {"value": "first-value-Aa1"}})
    second = _arm_put(box, "arm-made", {"properties": {"value": "second-value-Bb2"}})
    statuses = [e["status"] for e in box.control("GET", f"/journal?since={mark}")["entries"] if e["method"] == "PUT"]
    assert statuses == [201, 200]
    assert _shape(first) == _shape(example["responses"]["201"]["body"])
    assert _shape(second) == _shape(example["responses"]["200"]["body"])
    assert "value" not in json.dumps(first) and "-value-" not in json.dumps(second)

    client = box.provider.secret_client(_vault_uri(box))
    latest = client.get_secret("arm-made")
    assert latest.value == "second-value-Bb2"
    assert second["properties"]["secretUri"] == f"{_vault_uri(box)}secrets/arm-made"
    assert second["properties"]["secretUriWithVersion"] == f"{second['properties']['secretUri']}/{latest.properties.version}"
    older = first["properties"]["secretUriWithVersion"].rsplit("/", 1)[-1]
    assert client.get_secret("arm-made", older).value == "first-value-Aa1"
    assert first["location"] == second["location"] == "centralus"  # the vault's, as in the example


def test_an_arm_get_shows_a_data_plane_secret_without_its_value(box: Sandbox) -> None:
    """A secret the data plane wrote is found by ARM, at its latest version, with its content type and no value."""
    example = load_example("key-vault-secret/getSecret.json")["responses"]["200"]["body"]
    client = box.provider.secret_client(_vault_uri(box))
    client.set_secret("plane-made", "plane-value-Cc3", content_type="text/plain")
    newer = client.set_secret("plane-made", "plane-value-Dd4")
    shown = box.provider.read(f"{VAULT}/secrets/plane-made", API)
    assert shown is not None
    assert _shape(shown) == _shape(example)
    assert shown["type"] == example["type"] and shown["name"] == "plane-made"
    assert shown["properties"]["secretUriWithVersion"].rsplit("/", 1)[-1] == newer.properties.version
    assert "plane-value" not in json.dumps(shown)
    assert box.provider.read(f"{VAULT}/secrets/never-written", API) is None


def test_listing_a_vaults_secrets_through_arm_shows_both_kinds(box: Sandbox) -> None:
    """Secrets_List: every secret of the vault, however it was written, each without its value."""
    _arm_put(box, "listed-arm", {"properties": {"value": "listed-Ee5", "contentType": "text/plain"}})
    box.provider.secret_client(_vault_uri(box)).set_secret("listed-plane", "listed-Ff6")
    listed = {s["name"]: s for s in box.provider.list_children(VAULT, "secrets", API)}
    assert {"listed-arm", "listed-plane"} <= set(listed)
    assert listed["listed-arm"]["properties"]["contentType"] == "text/plain"
    shown = json.dumps([listed["listed-arm"], listed["listed-plane"]])
    assert "listed-Ee5" not in shown and "listed-Ff6" not in shown


def test_an_arm_put_without_a_value_is_refused_and_changes_nothing(box: Sandbox) -> None:
    """No value: 400, and neither plane has the secret."""
    with pytest.raises(AzureOperationError) as caught:
        _arm_put(box, "no-value", {"properties": {"contentType": "text/plain"}})
    assert caught.value.status == 400 and "properties.value is required" in caught.value.message
    assert box.provider.read(f"{VAULT}/secrets/no-value", API) is None
    assert "no-value" not in {s.name for s in box.provider.secret_client(_vault_uri(box)).list_properties_of_secrets()}


def test_a_data_plane_secret_is_a_scope_for_a_lock(box: Sandbox) -> None:
    """An extension resource at a secret's id (here a management lock) needs the secret, wherever it was written."""
    box.provider.secret_client(_vault_uri(box)).set_secret("locked-scope", "locked-Gg7")
    lock_id = f"{VAULT}/secrets/locked-scope/providers/Microsoft.Authorization/locks/keep"
    lock = ResourceSpec("l", "Microsoft.Authorization/locks", "2020-05-01", lock_id, {}, "t")
    made = box.provider.put(lock, {"properties": {"level": "CanNotDelete", "notes": "test"}})
    assert made is not None and made["properties"]["level"] == "CanNotDelete"
    box.provider.delete(lock_id, "2020-05-01")
    missing = ResourceSpec(
        "l",
        "Microsoft.Authorization/locks",
        "2020-05-01",
        f"{VAULT}/secrets/none/providers/Microsoft.Authorization/locks/keep",
        {},
        "t",
    )
    with pytest.raises(AzureOperationError) as caught:
        box.provider.put(missing, {"properties": {"level": "CanNotDelete"}})
    assert caught.value.status == 404 and caught.value.code == "ParentResourceNotFound"


def test_arm_has_no_delete_for_a_secret(box: Sandbox) -> None:
    """Secrets_* has no Delete: the ARM DELETE is refused and the secret is still served by both planes."""
    _arm_put(box, "kept", {"properties": {"value": "kept-Hh8"}})
    with pytest.raises(AzureOperationError) as caught:
        box.provider.delete(f"{VAULT}/secrets/kept", API)
    assert caught.value.status == 405
    assert box.provider.read(f"{VAULT}/secrets/kept", API) is not None
    assert box.provider.secret_client(_vault_uri(box)).get_secret("kept").value == "kept-Hh8"


def test_a_disabled_secret_is_shown_but_its_value_is_refused(box: Sandbox) -> None:
    """attributes.enabled false (through ARM or the data plane): listed and shown, but a get answers 403 SecretDisabled."""
    shown = _arm_put(box, "switched-off", {"properties": {"value": "off-Ii9", "attributes": {"enabled": False}}})
    assert shown["properties"]["attributes"]["enabled"] is False
    client = box.provider.secret_client(_vault_uri(box))
    client.set_secret("plane-off", "off-Jj0", enabled=False)
    for name in ("switched-off", "plane-off"):
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret(name)
        assert caught.value.status_code == 403
        assert caught.value.error.code == "Forbidden" and "not allowed on a disabled secret" in caught.value.error.message
        assert "off-" not in str(caught.value)
    listed = {p.name: p.enabled for p in client.list_properties_of_secrets()}
    assert listed["switched-off"] is False and listed["plane-off"] is False
