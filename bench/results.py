"""One measured run of a scenario: what was delivered and what it cost."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.process import Usage
from forwarder.simulator import EVENT_GID_BASE


def backlog_gids(count: int) -> set[str]:
    """The gids of a simulator's backlog of ``count`` events."""
    return {str(EVENT_GID_BASE + sequence) for sequence in range(count)}


@dataclass
class RunResult:
    """A scenario's run. CPU per event is net of the process's start-up and
    shutdown (``startup_cpu_seconds``, measured on an empty log), so that
    small runs are not dominated by importing libraries."""

    scenario: str
    expected: int = 0
    delivered: int = 0  # distinct events the receiver holds
    duplicates: int = 0
    missing: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    startup_cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None

    @classmethod
    def measured(
        cls,
        scenario: str,
        usage: Usage,
        *,
        expected: set[str],
        received: Iterable[str],
        startup_cpu_seconds: float,
        wall_seconds: float | None = None,
    ) -> RunResult:
        counts = collections.Counter(received)
        result = cls(
            scenario=scenario,
            expected=len(expected),
            delivered=len(counts.keys() & expected),
            duplicates=sum(n - 1 for n in counts.values()),
            missing=len(expected - counts.keys()),
            wall_seconds=usage.wall_seconds if wall_seconds is None else wall_seconds,
            cpu_seconds=usage.cpu_seconds,
            startup_cpu_seconds=startup_cpu_seconds,
            peak_rss_mib=usage.peak_rss_mib,
        )
        if usage.timed_out:
            result.failure = "timed out"
        elif usage.exit_code != 0:
            result.failure = f"exit code {usage.exit_code}"
        return result

    @property
    def complete(self) -> bool:
        return self.failure is None and self.missing == 0 and self.duplicates == 0

    @property
    def events_per_second(self) -> float:
        return self.delivered / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def net_cpu_seconds(self) -> float:
        return max(self.cpu_seconds - self.startup_cpu_seconds, 0.0)

    @property
    def cpu_us_per_event(self) -> float | None:
        if not self.delivered:
            return None
        return self.net_cpu_seconds / self.delivered * 1e6

    @property
    def cpu_seconds_per_100k(self) -> float | None:
        per_event = self.cpu_us_per_event
        return None if per_event is None else per_event / 10

    def status(self) -> str:
        if self.failure is not None:
            return f"FAILED: {self.failure}"
        if self.missing or self.duplicates:
            return f"INCOMPLETE: {self.missing} missing, {self.duplicates} duplicated"
        return "all delivered once"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "expected_events": self.expected,
            "delivered_events": self.delivered,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "complete": self.complete,
            "failure": self.failure,
            "wall_seconds": round(self.wall_seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "startup_cpu_seconds": round(self.startup_cpu_seconds, 3),
            "cpu_us_per_event": _rounded(self.cpu_us_per_event, 2),
            "cpu_seconds_per_100k_events": _rounded(self.cpu_seconds_per_100k, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "notes": self.notes,
            **self.extra,
        }


def failed(scenario: str, reason: str, **extra: Any) -> RunResult:
    """A run that could not be measured, with why."""
    return RunResult(scenario=scenario, failure=reason, extra=dict(extra))


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
