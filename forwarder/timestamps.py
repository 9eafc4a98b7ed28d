"""RFC 3339 timestamps as the Asana API writes them, and conversions."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp ("2026-01-02T03:04:05.678Z") into aware UTC."""
    # Python 3.11 reads "Z" itself; parsed so, the time is UTC already (the
    # common case, once per event: no conversion).
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add 'Z' for UTC")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """Format like the API does: UTC, milliseconds, 'Z'."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_seconds(text: str) -> float | None:
    """Seconds since the epoch for an API timestamp, or None when unparseable."""
    try:
        return parse_timestamp(text).timestamp()
    except (ValueError, AttributeError, TypeError, OverflowError):
        return None


def utc_now() -> datetime:
    return datetime.now(UTC)
