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
    # isoformat always writes four digits of year (strftime's %Y drops the
    # zeros of years before 1000, which no parser then reads back).
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def epoch_seconds(text: str) -> float | None:
    """Seconds since the epoch for an API timestamp, or None when unparseable."""
    try:
        return parse_timestamp(text).timestamp()
    except (ValueError, AttributeError, TypeError, OverflowError):
        return None


def utc_now() -> datetime:
    return datetime.now(UTC)
