"""The forwarder daemon as the bench runs it: its configuration, checked
before it starts, and the real ``run`` command in a measured subprocess."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from bench.process import MeasuredProcess, Usage
from bench.receivers import HEC_TOKEN
from forwarder.config import parse_config
from forwarder.simulator import AuditLogSimulator
from tests.daemon_process import write_config

# As fast as the configuration allows: the simulator imposes no limit in the
# drain scenarios.
UNLIMITED_REQUESTS_PER_MINUTE = 100_000
# No rotation in the middle of a measurement: a million events is ~700 MB.
FILE_MAX_BYTES = 16 * 1024**3
_DELIVERED = re.compile(
    r'^asana_forwarder_sink_events_delivered_total\{sink="(?P<sink>[^"]+)"\} '
    r"(?P<value>\S+)$",
    re.MULTILINE,
)


def source_section(
    simulator: AuditLogSimulator,
    *,
    requests_per_minute: int = UNLIMITED_REQUESTS_PER_MINUTE,
    poll_interval: str = "100ms",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "workspace_gid": simulator.settings.workspace_gid,
        "token": simulator.settings.token or "any-token",
        "base_url": simulator.base_url,
        "allow_insecure_http": True,
        "poll_interval": poll_interval,
        "max_requests_per_minute": requests_per_minute,
        **extra,
    }


def file_sink(path: Path) -> dict[str, Any]:
    return {
        "name": "file",
        "type": "file",
        "format": "raw",
        "path": str(path),
        "max_bytes": FILE_MAX_BYTES,
    }


def hec_sink(url: str, name: str = "splunk") -> dict[str, Any]:
    """The splunk_hec sink with its defaults: gzip, batches, raw events."""
    return {
        "name": name,
        "type": "splunk_hec",
        "format": "raw",
        "url": url,
        "token": HEC_TOKEN,
    }


def syslog_sink(port: int) -> dict[str, Any]:
    return {
        "name": "syslog",
        "type": "syslog",
        "format": "raw",
        "address": f"tcp://127.0.0.1:{port}",
    }


def daemon_document(
    directory: Path,
    source: dict[str, Any],
    sinks: list[dict[str, Any]],
    *,
    metrics_port: int = 0,
) -> dict[str, Any]:
    """A configuration the daemon accepts; ConfigError naming the keys it
    refuses, before any process is started."""
    document = {
        "source": source,
        "state": {"directory": str(directory / "state")},
        "server": {"listen": f"127.0.0.1:{metrics_port}"},
        "log": {"level": "info", "format": "json"},
        "daemon": {"shutdown_grace": "5s"},
        "sinks": sinks,
    }
    parse_config(copy.deepcopy(document))
    return document


def start_daemon(
    directory: Path, document: dict[str, Any], *, once: bool
) -> MeasuredProcess:
    """``python3 -m forwarder.cli run --config ...`` in a measured process."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory / "forwarder.toml", copy.deepcopy(document))
    argv = [sys.executable, "-m", "forwarder.cli", "run", "--config", str(config)]
    if once:
        argv.append("--once")
    return MeasuredProcess(argv, directory / "daemon.log")


def delivered(metrics_port: int, sink: str) -> int:
    """The daemon's count of events ``sink`` delivered (0 while unreachable)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    for found in _DELIVERED.finditer(text):
        if found["sink"] == sink:
            return int(float(found["value"]))
    return 0


def run_once(directory: Path, document: dict[str, Any], timeout: float) -> Usage:
    """Run the daemon with ``--once`` until it exits (killed at ``timeout``)."""
    process = start_daemon(directory, document, once=True)
    try:
        return process.wait(timeout)
    finally:
        process.stop()
