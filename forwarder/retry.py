"""The retry policy, in one place: exponential backoff with jitter, and
the reading of ``Retry-After`` in both of its forms."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``.

    Each delay is drawn between half and all of its nominal value, so that
    several forwarders (or sinks) failing together do not retry in lockstep.
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (0 for the first retry)."""
        nominal = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        draw = (rng or random).random()
        return nominal / 2 + nominal / 2 * draw


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or HTTP-date.

    Returns None when the header is absent or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return min(3600.0, max(0.0, (moment - now).total_seconds()))
