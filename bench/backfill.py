"""Backfill: 90 days of history behind an API that answers in 0.3 s and
allows 1,500 requests a minute and 50 in flight, as Asana does.

Read one page after another, such a backlog takes pages x latency; the
request budget allows far more. The ceiling is the budget itself: 1,500
requests a minute of 100 events, 2,500 events/s, after the daemon's budget
lets its first few seconds' worth go at once (``ceiling_events``). Runs: the
daemon with
``backfill_concurrency = 1``, with its default (the key left out), the
default over uneven history (half the backlog within one day), and the
official SDK's sequential script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.daemon import daemon_document, file_sink, run_once, source_section
from bench.receivers import file_sink_gids
from bench.results import RunResult, backlog_gids, failed
from bench.sdk import sdk_run
from forwarder.errors import ConfigError
from forwarder.ratelimit import RequestBudget
from forwarder.simulator import AuditLogSimulator, SimulatorSettings

SPAN = 90 * 86400.0
LATENCY = 0.3
REQUESTS_PER_MINUTE = 1500
CONCURRENCY_LIMIT = 50
PAGE_SIZE = 100
CEILING_EVENTS_PER_SECOND = REQUESTS_PER_MINUTE * PAGE_SIZE / 60
UNEVEN_BURST = 0.5


def ceiling_events(wall_seconds: float) -> float:
    """The most events the request budget lets through in ``wall_seconds``:
    its burst, then its rate, 100 events a request."""
    budget = RequestBudget(REQUESTS_PER_MINUTE)
    return (budget.capacity + budget.rate * wall_seconds) * PAGE_SIZE


def ceiling_fraction(delivered: int, wall_seconds: float) -> float:
    return delivered / ceiling_events(wall_seconds)


def simulator_settings(events: int, burst: float = 0.0) -> SimulatorSettings:
    return SimulatorSettings(
        backlog=events,
        backlog_span=SPAN,
        backlog_burst=burst,
        latency=LATENCY,
        requests_per_minute=REQUESTS_PER_MINUTE,
        max_concurrent_requests=CONCURRENCY_LIMIT,
    )


def scenario_name(concurrency: int | None, burst: float) -> str:
    name = "backfill/" + ("default" if concurrency is None else f"conc-{concurrency}")
    return name + ("-uneven" if burst else "")


def backfill(
    events: int,
    directory: Path,
    startup_cpu: float,
    timeout: float,
    *,
    concurrency: int | None,
    burst: float = 0.0,
) -> RunResult:
    """The daemon over the backlog into a file sink; ``concurrency`` None
    leaves ``backfill_concurrency`` out of the configuration."""
    directory.mkdir(parents=True, exist_ok=True)
    scenario = scenario_name(concurrency, burst)
    settings = simulator_settings(events, burst)
    with AuditLogSimulator(settings) as simulator:
        keys: dict[str, Any] = (
            {} if concurrency is None else {"backfill_concurrency": concurrency}
        )
        source = source_section(
            simulator, requests_per_minute=REQUESTS_PER_MINUTE, **keys
        )
        output = directory / "out" / "events.jsonl"
        try:
            document = daemon_document(directory, source, [file_sink(output)])
        except ConfigError as error:
            return failed(scenario, f"configuration refused: {error}")
        usage = run_once(directory, document, timeout)
        result = RunResult.measured(
            scenario,
            usage,
            expected=backlog_gids(events),
            received=file_sink_gids(output),
            startup_cpu_seconds=startup_cpu,
        )
        if burst:
            result.notes.append(f"{burst:.0%} of the backlog within one day")
        _describe(result, simulator.requests, events)
        return result


def sdk_backfill(
    events: int, directory: Path, startup_cpu: float, timeout: float
) -> RunResult:
    result = sdk_run(
        "backfill/sdk", simulator_settings(events), directory, startup_cpu, timeout
    )
    _describe(result, int(result.extra.get("api_requests", 0)), events)
    return result


def _describe(result: RunResult, requests: int, events: int) -> None:
    pages = -(-events // PAGE_SIZE)
    result.extra.update(
        api_requests=requests,
        pages_needed=pages,
        ceiling_events_per_second=CEILING_EVENTS_PER_SECOND,
        ceiling_events=round(ceiling_events(result.wall_seconds)),
        ceiling_fraction=round(
            ceiling_fraction(result.delivered, result.wall_seconds), 3
        ),
    )
    if requests > pages + 1:
        result.notes.append(f"{requests} requests for {pages} pages")
