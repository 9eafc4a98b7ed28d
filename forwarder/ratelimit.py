"""Our own cap on API requests, shared by every reader of one token.

The service-account token may be shared with other tools, and Asana counts
even rejected requests against its quota, so the forwarder paces itself
below a configured rate instead of running into 429s. A ``Retry-After`` from
the API pauses every reader until the time it names.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


class RequestBudget:
    """A token bucket of ``per_minute`` requests, refilled continuously.

    The bucket holds at most a few seconds' worth of requests, so a burst
    after an idle period stays small.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, min(float(per_minute), self.rate * 5))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    def pause_until(self, moment: float) -> None:
        """Hold every request until ``moment`` (on this budget's clock)."""
        self._paused_until = max(self._paused_until, moment)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    async def acquire(self) -> float:
        """Wait for the right to send one request; return the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(
                    self.capacity, self._tokens + (now - self._updated) * self.rate
                )
                self._updated = now
                if now < self._paused_until:
                    delay = self._paused_until - now
                elif self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                else:
                    delay = (1.0 - self._tokens) / self.rate
                await self._sleep(delay)
                waited += delay
