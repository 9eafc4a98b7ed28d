"""The stack the fault-injection scenarios run: the simulator's live stream,
every kind of receiver, and the real daemon as a subprocess configured with
a sink for each. After a scenario, ``Stack.report`` compares, sink by sink,
what the simulator served with what each receiver holds."""

from __future__ import annotations

import collections
import contextlib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from tests.daemon_process import DaemonProcess, free_port, read_gids, write_config
from tests.doubles import HecDouble, HecToken, HttpReceiver, SumoDouble
from tests.receivers import Receiver, rsyslog_receiver

TOKEN = "fault-suite-asana-token"
HEC_TOKEN = "fault-suite-hec-token"
BATCH = 300
PAGE = 100
# The http sink leaves deletions out: "every sink whose filters accept it".
HTTP_EXCLUDE = ["*_deleted"]


@dataclass(frozen=True, slots=True)
class SinkFigures:
    sink: str
    expected: int
    delivered: int
    missing: int
    duplicated: int


@dataclass
class Stack:
    directory: Path
    simulator: AuditLogSimulator
    hec: HecDouble
    sumo: SumoDouble
    http: HttpReceiver
    rsyslog: Receiver
    config: Path
    port: int

    def start_daemon(self, *extra: str) -> DaemonProcess:
        return DaemonProcess(self.config, *extra)

    def drain(self) -> DaemonProcess:
        """Stop the live stream, then run with --once until caught up."""
        self.simulator.stop_live()
        daemon = DaemonProcess(self.config, "--once")
        code = daemon.wait(timeout=180)
        assert code == 0, daemon.output[-3000:]
        return daemon

    @property
    def file_output(self) -> Path:
        return self.directory / "out" / "events.jsonl"

    def delivered(self) -> dict[str, list[str]]:
        """The gids each receiver holds, in arrival order."""
        return {
            "file": read_gids(self.file_output),
            "splunk": [event["event"]["gid"] for event in self.hec.indexed()],
            "sumo": [orjson.loads(line)["event_id"] for line in self.sumo.messages()],
            "http": [document["metadata"]["uid"] for document in self.http.documents],
            "syslog": [
                orjson.loads(record["msg"].lstrip("\ufeff"))["event"]["gid"]
                for record in self.rsyslog.records()
            ],
        }

    def expected(self) -> dict[str, set[str]]:
        events = [e for e in self.simulator.events() if isinstance(e, dict)]
        every = {event["gid"] for event in events}
        kept = {
            event["gid"]
            for event in events
            if not any(
                fnmatch.fnmatchcase(event["event_type"], p) for p in HTTP_EXCLUDE
            )
        }
        return {
            "file": every,
            "splunk": every,
            "sumo": every,
            "http": kept,
            "syslog": every,
        }

    def report(self, scenario: str) -> list[SinkFigures]:
        expected = self.expected()
        figures = []
        for sink, gids in self.delivered().items():
            counts = collections.Counter(gids)
            figures.append(
                SinkFigures(
                    sink=sink,
                    expected=len(expected[sink]),
                    delivered=len(gids),
                    missing=len(expected[sink] - set(counts)),
                    duplicated=sum(n - 1 for n in counts.values()),
                )
            )
        return figures


def format_report(scenario: str, figures: list[SinkFigures]) -> str:
    lines = [
        f"{scenario}:",
        f"  {'sink':8} {'expected':>9} {'delivered':>9} "
        f"{'missing':>8} {'duplicated':>10}",
    ]
    lines += [
        f"  {f.sink:8} {f.expected:9d} {f.delivered:9d} {f.missing:8d} "
        f"{f.duplicated:10d}"
        for f in figures
    ]
    return "\n".join(lines)


def check(
    figures: list[SinkFigures],
    *,
    duplicate_bound: int,
    print_report: Callable[[str], None],
    scenario: str,
) -> None:
    """Fail on any loss, and on duplicates beyond the documented bound."""
    print_report(format_report(scenario, figures))
    for figure in figures:
        assert figure.missing == 0, f"{scenario}: {figure.sink} lost events"
        assert figure.duplicated <= duplicate_bound, (
            f"{scenario}: {figure.sink} has {figure.duplicated} duplicates, "
            f"more than {duplicate_bound}"
        )


@contextlib.contextmanager
def running_stack(
    directory: Path, *, backlog: int, rate: float, total: int, seed: int
) -> Iterator[Stack]:
    """Every receiver, the simulator and a configuration naming them all."""
    settings = SimulatorSettings(
        token=TOKEN,
        backlog=backlog,
        backlog_span=6 * 3600,
        events_per_second=rate,
        max_events=total,
        seed=seed,
    )
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(AuditLogSimulator(settings))
        hec = stack.enter_context(HecDouble([HecToken(HEC_TOKEN, ack=True)]))
        sumo = stack.enter_context(SumoDouble())
        http = stack.enter_context(HttpReceiver())
        rsyslog = stack.enter_context(
            rsyslog_receiver(directory / "rsyslog", udp=False, tcp=True)
        )
        port = free_port()
        config = write_config(
            directory / "forwarder.toml",
            _document(directory, simulator, hec, sumo, http, rsyslog, port),
        )
        yield Stack(directory, simulator, hec, sumo, http, rsyslog, config, port)


def _document(
    directory: Path,
    simulator: AuditLogSimulator,
    hec: HecDouble,
    sumo: SumoDouble,
    http: HttpReceiver,
    rsyslog: Receiver,
    port: int,
) -> dict[str, Any]:
    delivery = {
        "batch_max_events": BATCH,
        "retry_initial_delay": "50ms",
        "retry_max_delay": "500ms",
    }
    return {
        "source": {
            "workspace_gid": simulator.settings.workspace_gid,
            "token": TOKEN,
            "base_url": simulator.base_url,
            "allow_insecure_http": True,
            "poll_interval": "100ms",
            "max_requests_per_minute": 1500,
            "request_timeout": "5s",
        },
        "state": {"directory": str(directory / "state")},
        "server": {"listen": f"127.0.0.1:{port}"},
        "log": {"level": "info", "format": "json"},
        "daemon": {"shutdown_grace": "10s", "access_retry_interval": "1s"},
        "sinks": [
            {
                "name": "file",
                "type": "file",
                "format": "raw",
                "path": str(directory / "out" / "events.jsonl"),
                "delivery": delivery,
            },
            {
                "name": "splunk",
                "type": "splunk_hec",
                "format": "raw",
                "url": hec.url,
                "token": HEC_TOKEN,
                "acknowledgements": True,
                "ack_poll_interval": "50ms",
                "ack_timeout": "5s",
                "delivery": delivery,
            },
            {
                "name": "sumo",
                "type": "sumo_logic",
                "format": "normalized",
                "url": sumo.source_url,
                "delivery": delivery,
            },
            {
                "name": "http",
                "type": "http",
                "format": "ocsf",
                "url": f"{http.url}/ingest",
                "exclude_event_types": HTTP_EXCLUDE,
                "delivery": delivery,
            },
            {
                "name": "syslog",
                "type": "syslog",
                "format": "raw",
                "address": f"tcp://127.0.0.1:{rsyslog.ports['tcp']}",
                "delivery": delivery,
            },
        ],
    }
