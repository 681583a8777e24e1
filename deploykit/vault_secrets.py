"""`secrets.set`: store a provider secret from stdin or a file; an unchanged value is not rewritten."""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.azure.arm import read_secret, translated_errors
from deploykit.config import VaultConfig
from deploykit.engine.flow import RunContext, RunOptions, Work, run
from deploykit.engine.model import Change, Plan
from deploykit.engine.runner import load_for
from deploykit.engine.steps import run_first
from deploykit.errors import ApplyError, AzureOperationError, UserError
from deploykit.report import redact_value

MAX_SECRET_BYTES = 25 * 1024  # Key Vault's limit for a secret value


@dataclass(frozen=True)
class SecretRequest(RunOptions):
    name: str = ""
    file: str | None = None


def read_value(file: str | None, name: str) -> str:
    """The value from a file or stdin (never argv); one trailing newline is dropped."""
    where = "--file" if file else "stdin"
    try:
        if file:
            raw = Path(file).read_text(encoding="utf-8")
        elif sys.stdin.isatty():
            raw = getpass.getpass(f"Value for {name} (input hidden): ")
        else:
            raw = sys.stdin.read()
    except OSError as exc:
        raise UserError(f"{where}: cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: {file or 'the input'} is not UTF-8 text; a secret value must be UTF-8") from None
    except EOFError:
        raise UserError(f"{where}: end of input before a value; nothing was changed") from None
    value = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith("\n") else raw
    if not value:
        raise UserError(f"{where}: the secret value is empty; nothing was changed")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise UserError(f"{where}: the value is over {MAX_SECRET_BYTES} bytes (Key Vault's limit)")
    return value


def set_secret(req: SecretRequest) -> int:
    return run(req, _plan)


def _plan(ctx: RunContext) -> Work:
    req: SecretRequest = ctx.options  # type: ignore[assignment]
    ctx.platform = platform = load_for(req, extra_envs=("shared",))
    allowed = [s.name for s in platform.shared.provider_secrets]
    if req.name not in allowed:
        raise UserError(
            f"--name: {req.name!r} is not a provider secret; allowed: {', '.join(allowed)} (config/shared.yaml provider_secrets)"
        )
    value = read_value(req.file, req.name)
    redact_value(value)
    vault, _ = platform.vault_for(req.env or "shared")
    provider = ctx.provider()
    vault_id = provider.vault_id(platform, req.env)
    client = _client_for(provider, vault_id, vault, req.env or "shared")
    change = _plan_secret(client, vault_id, req.name, value)

    def apply() -> dict[str, Any]:
        with translated_errors(vault_id):
            client.set_secret(req.name, value, content_type="text/plain")
        return {"value": "(not recorded)"}

    return Work(
        f"Plan for secrets.set on {req.target}, vault {vault.name}",
        Plan((change,)),
        {change.address: apply},
        verify=lambda: Plan((_plan_secret(client, vault_id, req.name, value),)),
        no_changes=f"No changes: {req.name} already holds this value (not rewritten).",
    )


def _client_for(provider: Any, vault_id: str, vault: VaultConfig, env: str) -> Any:
    client = provider.vault_secret_client(vault_id)
    if client is None:
        step = "step2a" if env == "shared" else "step3"
        raise UserError(f"vault {vault.name} does not exist yet; {run_first(step)} (nothing was changed)")
    return client


def _plan_secret(client: Any, vault_id: str, name: str, value: str) -> Change:
    from deploykit.azure.plugins.secrets import secret_change

    address = f"secret.{name}"
    try:
        current = read_secret(client, name)
    except AzureOperationError as exc:
        raise ApplyError(f"{address}: could not read the current value: {exc}") from None
    return secret_change(address, f"{vault_id}/secrets/{name}", current, value)
