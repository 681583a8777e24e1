"""The current time, which DEPLOYKIT_NOW (ISO 8601) can set: rehearse expiry and renewal on a chosen date."""

from __future__ import annotations

import datetime as dt
import os

from deploykit.errors import UserError


def now() -> dt.datetime:
    """Now in UTC, or the DEPLOYKIT_NOW time (a time without zone is taken as UTC)."""
    override = os.environ.get("DEPLOYKIT_NOW")
    if override:
        try:
            parsed = dt.datetime.fromisoformat(override)
        except ValueError:
            raise UserError(f"DEPLOYKIT_NOW: {override!r} is not an ISO 8601 time; allowed: e.g. 2026-11-23T17:30:00Z") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def utc_text(moment: dt.datetime) -> str:
    """An aware time as JSON and the audit log show it: ISO 8601 in UTC with a Z."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
