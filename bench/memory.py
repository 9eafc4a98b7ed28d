"""Peak memory with a large backlog while one sink is down.

The daemon runs (not ``--once``) with a file sink that works and a Splunk
HEC sink pointed at a port where nothing listens. A sink that is down must
not make the daemon hold the backlog for it: it reads it again from the API
when the sink returns. Once the file sink has every event (the daemon's own
``/metrics`` says so), the daemon is stopped with SIGTERM and its peak
resident set is read from the kernel.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.daemon import (
    daemon_document,
    delivered,
    file_sink,
    hec_sink,
    source_section,
    start_daemon,
)
from bench.process import MeasuredProcess
from bench.receivers import file_sink_gids, free_port
from bench.results import RunResult, backlog_gids
from forwarder.simulator import AuditLogSimulator, SimulatorSettings

BACKLOG_SPAN = 86400.0
POLL_SECONDS = 0.25
STOP_TIMEOUT = 30.0


def one_sink_down(
    events: int, directory: Path, startup_cpu: float, timeout: float
) -> RunResult:
    directory.mkdir(parents=True, exist_ok=True)
    settings = SimulatorSettings(backlog=events, backlog_span=BACKLOG_SPAN)
    output = directory / "out" / "events.jsonl"
    metrics_port = free_port()
    with AuditLogSimulator(settings) as simulator:
        sinks = [
            file_sink(output),
            hec_sink(f"http://127.0.0.1:{free_port()}", name="splunk-down"),
        ]
        document = daemon_document(
            directory, source_section(simulator), sinks, metrics_port=metrics_port
        )
        process = start_daemon(directory, document, once=False)
        try:
            caught_up = _wait_for_file_sink(metrics_port, events, process, timeout)
            process.terminate()
            usage = process.wait(STOP_TIMEOUT)
        finally:
            process.stop()
        result = RunResult.measured(
            "memory/1-sink-down",
            usage,
            expected=backlog_gids(events),
            received=file_sink_gids(output),
            startup_cpu_seconds=startup_cpu,
            wall_seconds=caught_up,
        )
        if caught_up is None:
            result.failure = "the file sink did not catch up"
        result.notes.append("file sink up, splunk_hec sink down")
        result.extra.update(
            api_requests=simulator.requests,
            run_seconds=round(usage.wall_seconds, 3),
            exit_code=usage.exit_code,
        )
        return result


def _wait_for_file_sink(
    metrics_port: int, events: int, process: MeasuredProcess, timeout: float
) -> float | None:
    """Seconds from the daemon's start until the file sink delivered
    ``events``, as its /metrics reports; None if it did not in time."""
    deadline = process.started + timeout
    while process.running and time.monotonic() < deadline:
        if delivered(metrics_port, "file") >= events:
            return time.monotonic() - process.started
        time.sleep(POLL_SECONDS)
    return None
