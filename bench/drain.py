"""Drain throughput: a backlog read as fast as the API answers, into one
sink, with ``run --once``: the daemon's own CPU and memory per event.

The simulator answers without latency or rate limit, and the daemon's
request budget is as high as its configuration allows; the backlog spans a
day, so the daemon reads it with its default backfill settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.daemon import (
    daemon_document,
    file_sink,
    hec_sink,
    run_once,
    source_section,
    syslog_sink,
)
from bench.receivers import TimedHecDouble, file_sink_gids, rsyslog_receiver
from bench.results import RunResult, backlog_gids
from forwarder.simulator import AuditLogSimulator, SimulatorSettings

SINKS = ("file", "hec", "syslog")
BACKLOG_SPAN = 86400.0
SINK_NOTES = {
    "file": "raw JSON lines, fsync per batch",
    "hec": "HEC double in the bench process, gzip",
    "syslog": "rsyslogd over TCP, RFC 5424",
}

# What a run's receiver holds, read once the daemon has exited.
ReadGids = Callable[[int], list[str]]


def drain(
    sink: str, events: int, directory: Path, startup_cpu: float, timeout: float
) -> RunResult:
    """Drain a backlog of ``events`` into ``sink`` (one of SINKS)."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = SimulatorSettings(backlog=events, backlog_span=BACKLOG_SPAN)
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(AuditLogSimulator(settings))
        sink_config, read_gids = _receiver(stack, sink, directory)
        document = daemon_document(directory, source_section(simulator), [sink_config])
        usage = run_once(directory, document, timeout)
        result = RunResult.measured(
            f"drain/{sink}",
            usage,
            expected=backlog_gids(events),
            received=read_gids(events),
            startup_cpu_seconds=startup_cpu,
        )
        result.notes.append(SINK_NOTES[sink])
        result.extra.update(
            api_requests=simulator.requests,
            backlog_span_seconds=BACKLOG_SPAN,
            daemon_log=str(directory / "daemon.log"),
        )
        return result


def _receiver(
    stack: contextlib.ExitStack, sink: str, directory: Path
) -> tuple[dict[str, Any], ReadGids]:
    if sink == "file":
        output = directory / "out" / "events.jsonl"
        return file_sink(output), lambda _: file_sink_gids(output)
    if sink == "hec":
        hec = stack.enter_context(TimedHecDouble())
        return hec_sink(hec.url), lambda _: hec.gids()
    if sink == "syslog":
        rsyslog = stack.enter_context(rsyslog_receiver(directory / "rsyslog"))

        def settled_gids(expected: int) -> list[str]:
            rsyslog.settle(expected)
            return rsyslog.gids()

        return syslog_sink(rsyslog.port), settled_gids
    raise ValueError(f"unknown sink {sink!r}; expected one of {', '.join(SINKS)}")
