"""Key Vault secrets as playbook entries: compared through the data plane, written only on change.

A secret's value is never returned by ARM (azure-facts.md 3.4), so the plan reads it from the
vault and compares it in constant time; the plan shows only "(sensitive)". A value of
`generated_password()` is generated once, when the secret is absent, and never regenerated
while the vault holds it (the PostgreSQL admin password: stored before the server exists).
"""

from __future__ import annotations

import hmac
import secrets
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deploykit.azure.arm import read_secret
from deploykit.azure.plugins import TypePlugin
from deploykit.engine.model import Action, Change, ResourceSpec
from deploykit.engine.references import GENERATE, SENSITIVE, UNKNOWN, Unresolved, refs_in, resolve
from deploykit.errors import ApplyError
from deploykit.parallel import each
from deploykit.report import redact_value

if TYPE_CHECKING:
    from deploykit.engine.plan import StateCache

PASSWORD_LENGTH = 32
_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "-_.~")


def generate_password() -> str:
    """32 characters from all four classes Azure's password rules count (3 of 4 are required)."""
    alphabet = "".join(_CLASSES)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if all(any(c in group for c in value) for group in _CLASSES):
            return value


def _vault_address(spec: ResourceSpec, cache: StateCache) -> str:
    vault_id = spec.id.lower().rsplit("/secrets/", 1)[0]
    for address, other in cache.specs.items():
        if other.id.lower() == vault_id:
            return address
    raise ApplyError(f"{spec.address}: its vault is not an entry of the playbooks (parent: the vault's address)")


def _client(spec: ResourceSpec, cache: StateCache) -> Any | None:
    return cache.provider.client_for_vault(cache.get(_vault_address(spec, cache)))


def _value_spec(spec: ResourceSpec) -> Any:
    return (spec.body.get("properties") or {}).get("value")


def _hide(spec: ResourceSpec, value: str) -> None:
    """Redact the value from every output, unless it is the playbook's own literal.

    A literal (the admin login from config/<env>.yaml) is already in the repository; redacting
    it only hid the admin's name wherever it appears ("owner [redacted]"). A generated value, one
    taken from another resource (a key), or a stored value that differs from the literal is
    redacted as before.
    """
    raw = _value_spec(spec)
    if isinstance(raw, str) and raw != GENERATE and not refs_in(raw) and value == raw:
        return
    redact_value(value)


def _content_type(spec: ResourceSpec) -> str | None:
    return (spec.body.get("properties") or {}).get("contentType")


SECRET_TYPE = "Microsoft.KeyVault/vaults/secrets"  # noqa: S105 - an ARM type, not a value


def secret_change(
    address: str, secret_id: str, current: str | None, desired: Any, context: str = "", unknown: str = "value known after apply"
) -> Change:
    """One secret value planned: compared in constant time, shown only as "(sensitive)".

    `desired` None or UNKNOWN: not known yet (written when applied). Used by every task that
    writes a secret (playbook entries, secrets.set, db.create's database URLs).
    """
    prefix = f"{context}: " if context else ""

    def change(action: Action, reason: str, shown: bool = True) -> Change:
        diff = {"value": {"old": None if current is None else SENSITIVE, "new": SENSITIVE}} if shown else {}
        return Change(address, SECRET_TYPE, secret_id, action, prefix + reason, diff)

    if desired is None or desired is UNKNOWN:
        return change(Action.CREATE if current is None else Action.UPDATE, unknown)
    if current is None:
        return change(Action.CREATE, "does not exist")
    if hmac.compare_digest(current.encode(), str(desired).encode()):
        return change(Action.UNCHANGED, "value matches (compared, not shown)", False)
    return change(Action.UPDATE, "value differs (not shown)")


def plan(spec: ResourceSpec, cache: StateCache) -> Change:
    def change(action: Action, reason: str, shown: bool = True) -> Change:
        diff = {"value": {"old": None if action is Action.CREATE else SENSITIVE, "new": SENSITIVE}} if shown else {}
        return Change(spec.address, spec.type, spec.id, action, reason, diff)

    raw = _value_spec(spec)
    client = _client(spec, cache)
    if client is None:
        what = "generated when applied" if raw == GENERATE else "value known after apply"
        return change(Action.CREATE, f"the vault is created in this run; {what}")
    if raw == GENERATE or not refs_in(raw):
        current, desired = read_secret(client, spec.name), raw
    else:  # the vault's value and what it refers to (a key from listKeys) in one round, not two
        reads = [lambda: read_secret(client, spec.name), lambda: resolve(raw, cache.lookup)]
        current, desired = each(lambda read: read(), reads, 2, "secret")
    if current is not None:
        _hide(spec, current)
    cache.remember(spec.address, current)
    if raw == GENERATE:
        if current is not None:
            return change(Action.UNCHANGED, "generated once and stored; never regenerated while the vault holds it", False)
        return change(Action.CREATE, "does not exist; generated when applied (never shown)")
    if desired is not UNKNOWN:
        _hide(spec, str(desired))
    return secret_change(
        spec.address, spec.id, current, desired, unknown="value known after apply (from a resource created in this run)"
    )


def apply(change: Change, spec: ResourceSpec, cache: StateCache) -> Mapping[str, Any]:
    client = _client(spec, cache)
    if client is None:
        raise ApplyError(f"{spec.address}: the vault does not exist")
    raw = _value_spec(spec)
    if raw == GENERATE:
        stored = read_secret(client, spec.name)  # again, just before: never overwrite a password another run stored
        if stored is not None:
            redact_value(stored)
            cache.remember(spec.address, stored, applying=True)
            return {"value": "kept: already generated and stored"}
        value = generate_password()
    else:
        try:
            value = str(resolve(raw, cache.lookup, strict=True))
        except Unresolved as exc:
            raise ApplyError(f"{spec.address}: its value is still unknown ({exc})") from None
    _hide(spec, value)
    from deploykit.azure.arm import translated_errors

    with translated_errors(spec.name):
        client.set_secret(spec.name, value, content_type=_content_type(spec))
    cache.forget(spec.address)
    cache.remember(spec.address, value, applying=True)  # what refers to it (the server's password) need not read it back
    return {"value": "(not recorded)"}


def read_value(spec: ResourceSpec, path: str, cache: StateCache) -> Any:
    """ref("secret.x", "value"): the secret's value from the vault (sensitive)."""
    if path != "value":
        from deploykit.engine.references import dig

        return dig(cache.get(spec.address), path)
    found, value = cache.recall(spec.address, applying=True)  # never a value read while planning: it may be stale now
    if not found:
        client = _client(spec, cache)
        value = read_secret(client, spec.name) if client is not None else None
    if value is None:
        raise Unresolved(f"{spec.address} has no value yet")
    _hide(spec, value)
    return value


PLUGIN = TypePlugin(plan=plan, apply=apply, read_value=read_value, arm_state=False)
