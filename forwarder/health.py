"""What /healthz and /readyz report, kept as plain state the loop updates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """Liveness and readiness of the daemon.

    Alive while the event loop keeps beating. Ready when the API answered a
    page recently, accepts our token, and no sink has been failing for longer
    than ``sink_stuck_after``.
    """

    poll_interval: float
    sink_stuck_after: float = 300.0
    last_heartbeat: float = field(default_factory=time.monotonic)
    last_poll: float | None = None
    api_problem: str | None = None
    failing_sinks: dict[str, float] = field(default_factory=dict)

    def beat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def polled(self) -> None:
        self.last_poll = time.monotonic()
        self.api_problem = None

    def api_refused(self, problem: str) -> None:
        self.api_problem = problem

    def sink_failing(self, sink: str) -> None:
        self.failing_sinks.setdefault(sink, time.monotonic())

    def sink_delivered(self, sink: str) -> None:
        self.failing_sinks.pop(sink, None)

    def alive(self) -> tuple[bool, str]:
        silent = time.monotonic() - self.last_heartbeat
        if silent > 30:
            return False, f"event loop silent for {silent:.0f}s"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self.api_problem is not None:
            return False, f"API refuses access: {self.api_problem}"
        window = max(3 * self.poll_interval, 60.0)
        if self.last_poll is None:
            return False, "no page fetched yet"
        if now - self.last_poll > window:
            return False, f"no page fetched for {now - self.last_poll:.0f}s"
        stuck = [
            name
            for name, since in self.failing_sinks.items()
            if now - since > self.sink_stuck_after
        ]
        if stuck:
            return False, f"sinks failing to deliver: {', '.join(sorted(stuck))}"
        return True, "ready"
