"""Time as Memharbor stores and answers it: aware UTC datetimes, ISO 8601 with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | str | None) -> str | None:
    """ISO 8601 UTC ending in Z; strings (already ISO) and None pass through."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return moment
