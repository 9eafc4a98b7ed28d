"""The bench's report: a table of runs, the comparisons between them, and
each figure beside the target it is held to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench.backfill import CEILING_EVENTS_PER_SECOND, ceiling_fraction
from bench.lag import TARGET_SECONDS
from bench.results import RunResult

CPU_TARGET_US = 15.0
CEILING_TARGET = 0.80
SPEEDUP_TARGET = 5.0
RSS_TARGET_MIB = 100.0
# Runs of the daemon (not of the scripts), whose memory is held to the target.
_SCRIPT_RUNS = ("drain/sdk-hec", "drain/floor-hec", "backfill/sdk")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float | None  # None: not measured (a run failed or was skipped)
    goal: str
    met: bool | None
    detail: str

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        return f"  {self.name:<34} {self.detail:<46} target {self.goal}: {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 3),
            "goal": self.goal,
            "met": self.met,
            "detail": self.detail,
        }


def _measured(runs: dict[str, RunResult], name: str) -> RunResult | None:
    run = runs.get(name)
    return run if run is not None and run.complete else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(runs: dict[str, RunResult]) -> dict[str, float | None]:
    """The comparisons the brief asks for, None where a run is missing."""

    def wall(name: str) -> float | None:
        run = _measured(runs, name)
        return None if run is None else run.wall_seconds

    def cpu(name: str) -> float | None:
        run = _measured(runs, name)
        return None if run is None else run.cpu_us_per_event

    default = wall("backfill/default")
    return {
        "backfill_default_vs_concurrency_1": _ratio(wall("backfill/conc-1"), default),
        "backfill_default_vs_sdk": _ratio(wall("backfill/sdk"), default),
        "sdk_cpu_per_event_vs_daemon_hec": _ratio(
            cpu("drain/sdk-hec"), cpu("drain/hec")
        ),
        "backfill_uneven_vs_even": _ratio(wall("backfill/default-uneven"), default),
        "daemon_hec_cpu_per_event_vs_floor": _ratio(
            cpu("drain/hec"), cpu("drain/floor-hec")
        ),
    }


def targets(runs: dict[str, RunResult]) -> list[Target]:
    found = ratios(runs)
    hec = _measured(runs, "drain/hec")
    floor = _measured(runs, "drain/floor-hec")
    lag = _measured(runs, "lag/hec")
    cpu = None if hec is None else hec.cpu_us_per_event
    p99 = None if lag is None else lag.extra.get("lag_p99_seconds")
    ceiling = "the budget's ceiling"
    cpu_target = _at_most("CPU per event into HEC", cpu, CPU_TARGET_US, "µs", "{:.1f}")
    if cpu is not None and floor is not None and floor.cpu_us_per_event is not None:
        # Beside the figure: what the same libraries cost doing nothing else.
        cpu_target = replace(
            cpu_target,
            detail=f"{cpu_target.detail} (floor of the stack "
            f"{floor.cpu_us_per_event:.1f})",
        )
    return [
        cpu_target,
        _at_least(
            "backfill, share of rate ceiling",
            _share_of_ceiling(runs, "backfill/default"),
            CEILING_TARGET,
            ceiling,
        ),
        _at_least(
            "same, uneven history",
            _share_of_ceiling(runs, "backfill/default-uneven"),
            CEILING_TARGET,
            ceiling,
        ),
        _speedup(
            "backfill vs concurrency 1", found["backfill_default_vs_concurrency_1"]
        ),
        _speedup("backfill vs official SDK", found["backfill_default_vs_sdk"]),
        _peak_rss(runs),
        _at_most("lag p99", p99, TARGET_SECONDS, "s", "{:.2f}"),
    ]


def _share_of_ceiling(runs: dict[str, RunResult], name: str) -> float | None:
    run = _measured(runs, name)
    return None if run is None else ceiling_fraction(run.delivered, run.wall_seconds)


def _at_most(
    name: str, value: float | None, goal: float, unit: str, shown: str
) -> Target:
    detail = "-" if value is None else f"{shown.format(value)} {unit}"
    met = None if value is None else value <= goal
    return Target(name, value, f"≤ {goal:g} {unit}", met, detail)


def _at_least(name: str, value: float | None, goal: float, of: str) -> Target:
    detail = "-" if value is None else f"{value:.0%} of {of}"
    met = None if value is None else value >= goal
    return Target(name, value, f"≥ {goal:.0%}", met, detail)


def _speedup(name: str, value: float | None) -> Target:
    detail = "-" if value is None else f"default is {value:.1f}x faster"
    met = None if value is None else value >= SPEEDUP_TARGET
    return Target(name, value, f"≥ {SPEEDUP_TARGET:g}x", met, detail)


def _peak_rss(runs: dict[str, RunResult]) -> Target:
    daemon_runs = [
        run
        for run in runs.values()
        if run.scenario not in _SCRIPT_RUNS and run.failure is None and run.peak_rss_mib
    ]
    if not daemon_runs:
        return Target("peak RSS of the daemon", None, "< 100 MiB", None, "-")
    largest = max(daemon_runs, key=lambda run: run.peak_rss_mib)
    detail = f"{largest.peak_rss_mib:.1f} MiB at most ({largest.scenario})"
    met = largest.peak_rss_mib < RSS_TARGET_MIB
    return Target(
        "peak RSS of the daemon", largest.peak_rss_mib, "< 100 MiB", met, detail
    )


# -- the table -----------------------------------------------------------------

_COLUMNS = (
    ("scenario", 24, "<"),
    ("events", 9, ">"),
    ("wall s", 8, ">"),
    ("events/s", 9, ">"),
    ("CPU µs/ev", 9, ">"),
    ("CPU s/100k", 10, ">"),
    ("RSS MiB", 8, ">"),
)


def table(runs: list[RunResult]) -> str:
    header = "  ".join(f"{name:{align}{width}}" for name, width, align in _COLUMNS)
    lines = [header + "  status; notes", "-" * (len(header) + 16)]
    for run in runs:
        cells = (
            run.scenario,
            f"{run.delivered:,}",
            f"{run.wall_seconds:.1f}",
            f"{run.events_per_second:,.0f}",
            _optional(run.cpu_us_per_event, "{:.1f}"),
            _optional(run.cpu_seconds_per_100k, "{:.2f}"),
            f"{run.peak_rss_mib:.1f}",
        )
        row = "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
        )
        lines.append(row + "  " + "; ".join([run.status(), *run.notes]))
    return "\n".join(lines)


def _optional(value: float | None, shown: str) -> str:
    return "-" if value is None else shown.format(value)


def comparison_lines(runs: dict[str, RunResult]) -> list[str]:
    """Backfill, SDK and lag figures in words."""
    found = ratios(runs)
    lines = []
    backfill = runs.get("backfill/default")
    if backfill is not None and backfill.complete:
        lines.append(
            f"backfill: {backfill.delivered:,} events over 90 days, "
            f"{backfill.wall_seconds:.1f} s at the default concurrency, "
            f"{backfill.events_per_second:,.0f} events/s = "
            f"{ceiling_fraction(backfill.delivered, backfill.wall_seconds):.0%} "
            f"of what the budget allows in that time ("
            f"{CEILING_EVENTS_PER_SECOND:,.0f} events/s after a burst of 5 s)"
        )
    for key, text in (
        ("backfill_default_vs_concurrency_1", "concurrency 1 takes {:.1f}x as long"),
        ("backfill_default_vs_sdk", "the official SDK takes {:.1f}x as long"),
        ("backfill_uneven_vs_even", "uneven history takes {:.2f}x as long as even"),
        (
            "sdk_cpu_per_event_vs_daemon_hec",
            "the SDK script spends {:.1f}x the daemon's CPU per event into HEC",
        ),
        (
            "daemon_hec_cpu_per_event_vs_floor",
            "the daemon spends {:.1f}x the CPU per event of the floor script (its "
            "own libraries moving the bytes, nothing else)",
        ),
    ):
        value = found[key]
        lines.append(text.format(value) if value is not None else f"{key}: -")
    lag = runs.get("lag/hec")
    if lag is not None and lag.failure is None:
        extra = lag.extra
        lines.append(
            f"lag: p50 {extra['lag_p50_seconds']} s, p99 {extra['lag_p99_seconds']} s,"
            f" max {extra['lag_max_seconds']} s over {extra['window_events']} events"
            f" (target p99 ≤ poll_interval + 1 s = {TARGET_SECONDS:g} s)"
        )
    return lines
