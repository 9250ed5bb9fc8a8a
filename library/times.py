"""The times the library's queries take from clients, parsed into bounds on the stored
`recordedAt` strings. Any string gives a bound or a ValidationFailed naming its field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from core.errors import ValidationFailed

_EPOCH = re.compile(r"[0-9]{9,13}")  # ASCII only: \d and int() also take other scripts' digits
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _refused(field: str, value: str, why: str) -> ValidationFailed:
    message = f"{field}: {value!r} {why}"
    return ValidationFailed(message, details=[{"field": field, "message": message}])


def instant_parse(value: str, *, field: str) -> datetime:
    """An aware UTC instant from epoch seconds or milliseconds, or ISO 8601 (UTC if no
    zone)."""
    text = value.strip()
    try:
        if _EPOCH.fullmatch(text):
            number = int(text)
            return datetime.fromtimestamp(number / 1000 if len(text) >= 12 else number, tz=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise _refused(field, value, "is not a time (epoch seconds or ms, or ISO 8601).")
    except OverflowError:  # a zone offset that moves year 1 or 9999 out of range
        raise _refused(field, value, "is out of the supported range of times.")


def _bound(moment: datetime) -> str:
    # Stored times are ISO strings ending in Z, maybe with fractions; a bound without the Z
    # sorts before every stored time of the same second. isoformat keeps 4-digit years.
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def day_or_time(value: str, *, field: str, end: bool) -> datetime:
    """The start of a `YYYY-MM-DD` day or an instant, or (`end`) the moment just after it,
    so an end day is inclusive."""
    if _DAY.fullmatch(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
        except ValueError:
            raise _refused(field, value, "is not a calendar day (YYYY-MM-DD).")
        step = timedelta(days=1)
    else:
        moment = instant_parse(value, field=field)
        step = timedelta(seconds=1)
    try:
        return moment + step if end else moment
    except OverflowError:
        raise _refused(field, value, "is too late: the day after it is out of range.")


def day_or_time_bound(value: str, *, field: str, end: bool) -> str:
    """`day_or_time` as a bound on the stored `recordedAt` strings."""
    return _bound(day_or_time(value, field=field, end=end))


def window_bounds(value: str, *, field: str, around: timedelta) -> tuple[str, str]:
    """The bounds `[instant - around, instant + around)` of an instant."""
    moment = instant_parse(value, field=field)
    try:
        return _bound(moment - around), _bound(moment + around)
    except OverflowError:
        raise _refused(field, value, f"is too close to the end of time (±{around}).")
