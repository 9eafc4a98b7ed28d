"""Steady-state lag: how long after its ``created_at`` an event is indexed.

The simulator creates events live at a steady rate; the daemon runs (not
``--once``) with ``poll_interval = 2s`` into the HEC double, which notes
when it indexed each event. Once the first event has arrived (start-up
done), every event created during the measuring window counts. The target
is one poll interval plus a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.daemon import daemon_document, hec_sink, source_section, start_daemon
from bench.receivers import TimedHecDouble
from bench.results import RunResult
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.timestamps import parse_timestamp

POLL_INTERVAL = 2.0
TARGET_SECONDS = POLL_INTERVAL + 1.0
WARM_UP_TIMEOUT = 30.0
# After the live stream stops, the last events still need a poll and a batch.
DRAIN_TIMEOUT = 3 * POLL_INTERVAL + 10.0
STOP_TIMEOUT = 30.0


def steady_state_lag(
    seconds: float, rate: float, directory: Path, startup_cpu: float
) -> RunResult:
    directory.mkdir(parents=True, exist_ok=True)
    settings = SimulatorSettings(events_per_second=rate)
    with AuditLogSimulator(settings) as simulator, TimedHecDouble() as hec:
        source = source_section(simulator, poll_interval=f"{POLL_INTERVAL:g}s")
        document = daemon_document(directory, source, [hec_sink(hec.url)])
        process = start_daemon(directory, document, once=False)
        try:
            _wait_until(lambda: bool(hec.arrivals), WARM_UP_TIMEOUT)
            window = (time.time(), time.time() + seconds)
            time.sleep(seconds)
            simulator.stop_live()
            created = {
                event["gid"]: parse_timestamp(event["created_at"]).timestamp()
                for event in simulator.events()
            }
            _wait_until(lambda: created.keys() <= set(hec.gids()), DRAIN_TIMEOUT)
            process.terminate()
            usage = process.wait(STOP_TIMEOUT)
        finally:
            process.stop()
        arrivals = hec.timed_gids()
    lags = sorted(
        arrived - created[gid]
        for gid, arrived in arrivals
        if gid in created and window[0] <= created[gid] < window[1]
    )
    result = RunResult.measured(
        "lag/hec",
        usage,
        expected=set(created),
        received=[gid for gid, _ in arrivals],
        startup_cpu_seconds=startup_cpu,
    )
    result.notes += [
        f"{rate:g} events/s live, poll_interval {POLL_INTERVAL:g}s",
        "CPU/event includes idle polling",
    ]
    result.extra.update(
        window_seconds=seconds,
        window_events=len(lags),
        lag_p50_seconds=nearest_rank(lags, 0.50),
        lag_p99_seconds=nearest_rank(lags, 0.99),
        lag_max_seconds=round(lags[-1], 3) if lags else None,
        lag_target_seconds=TARGET_SECONDS,
    )
    return result


def nearest_rank(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank quantile of a sorted list."""
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return round(ordered[rank], 3)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
