"""One token per scope per run, shared by every SDK client and thread.

azure-core's BearerTokenCredentialPolicy caches a token per pipeline, and has no lock: the
parallel first read wave (16 threads, several clients) asks the credential once per thread and
client. With DefaultAzureCredential over `az login` each ask is an Azure CLI process start
(0.5-1 s). `SharedTokenCredential` wraps any credential and asks it once per scope (and tenant,
CAE flag) until the token is close to expiry; callers of the same scope wait on one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

LOG = logging.getLogger(__name__)

# Renew this long before expiry (azure-core's policies renew 5 minutes before, less jitter: ours
# renews first, so they never find our cached token stale). Halved for short-lived tokens.
REFRESH_MARGIN_SECONDS = 300
# A failed renewal falls back to the cached token while it stays valid at least this long.
MIN_USABLE_SECONDS = 30

_Key = tuple[tuple[str, ...], str | None, bool]


@dataclass(frozen=True)
class _Cached:
    info: AccessTokenInfo
    refresh_at: float


def _key(scopes: Iterable[str], options: TokenRequestOptions) -> _Key:
    return (tuple(scopes), options.get("tenant_id") or None, bool(options.get("enable_cae", False)))


class SharedTokenCredential:
    """A caching, thread-safe wrapper implementing azure-core's TokenCredential and SupportsTokenInfo.

    A request carrying `claims` (a Continuous Access Evaluation challenge after a rejected token)
    always goes to the wrapped credential, and its answer replaces the cached token.
    """

    def __init__(self, credential: Any) -> None:
        self._credential = credential
        self._lock = threading.Lock()  # guards the two dicts, never held while acquiring
        self._scope_locks: dict[_Key, threading.Lock] = {}
        self._tokens: dict[_Key, _Cached] = {}

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        options: TokenRequestOptions = {}
        if claims:
            options["claims"] = claims
        if tenant_id:
            options["tenant_id"] = tenant_id
        if enable_cae:
            options["enable_cae"] = True
        info = self._token(scopes, options, kwargs)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        return self._token(scopes, dict(options or {}), {})  # type: ignore[arg-type]

    def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> SharedTokenCredential:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def _token(self, scopes: tuple[str, ...], options: TokenRequestOptions, extra: dict[str, Any]) -> AccessTokenInfo:
        if not scopes:
            raise ValueError("get_token: at least one scope is required")
        key = _key(scopes, options)
        challenged = bool(options.get("claims"))
        with self._lock:
            cached = self._tokens.get(key)
            scope_lock = self._scope_locks.setdefault(key, threading.Lock())
        if cached is not None and not challenged and time.time() < cached.refresh_at:
            return cached.info
        with scope_lock:
            cached = self._tokens.get(key)
            now = time.time()
            if cached is not None and not challenged and now < cached.refresh_at:
                return cached.info  # another thread renewed it while this one waited
            try:
                info = self._acquire(scopes, options, extra)
            except Exception:
                if cached is not None and not challenged and cached.info.expires_on - now > MIN_USABLE_SECONDS:
                    LOG.warning("token renewal for %s failed; using the cached token until it expires", scopes[0])
                    return cached.info
                raise
            with self._lock:
                self._tokens[key] = _Cached(info, _refresh_at(info, time.time()))
            return info

    def _acquire(self, scopes: tuple[str, ...], options: TokenRequestOptions, extra: dict[str, Any]) -> AccessTokenInfo:
        if hasattr(self._credential, "get_token_info") and not extra:
            return self._credential.get_token_info(*scopes, options=options)
        token = self._credential.get_token(*scopes, **options, **extra)
        return AccessTokenInfo(token.token, token.expires_on)


def _refresh_at(info: AccessTokenInfo, now: float) -> float:
    """When to renew: the token's own refresh_on if it has one, else a margin before expiry."""
    if info.refresh_on:
        return float(min(info.refresh_on, info.expires_on))
    margin = min(REFRESH_MARGIN_SECONDS, max(0.0, info.expires_on - now) / 2)
    return info.expires_on - margin
