"""Who is opening the door: the signed-in identity, never a free-text flag.

On Azure, the access token's claims: a user's sign-in name (upn, unique_name or
preferred_username), else a service principal's application id. The token is only decoded
(its signature is Azure's business), and never printed. On the sandbox, the OS user.
"""

from __future__ import annotations

import base64
import getpass
import json
from typing import Any

from deploykit.errors import UserError

USER_CLAIMS = ("upn", "unique_name", "preferred_username")


def claims_owner(claims: dict[str, Any]) -> str | None:
    """The owner a token's claims name, lower-cased; None when they name nobody."""
    for claim in USER_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    app = claims.get("appid") or claims.get("azp")
    if isinstance(app, str) and app.strip():
        return f"app-{app.strip().lower()}"
    return None


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def signed_in_owner(target: str, credential: Any, scope: str) -> str:
    if target != "azure":
        try:
            return getpass.getuser().lower()
        except (KeyError, OSError):
            raise UserError("owner: the OS user cannot be determined (set USER)") from None
    owner = claims_owner(token_claims(credential.get_token(scope).token))
    if owner is None:
        raise UserError("owner: the Azure token names no user or application; sign in with `az login`")
    return owner
