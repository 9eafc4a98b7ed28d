"""The real daemon in a subprocess against the simulator over loopback HTTP:
crashes, signals, probes, and start-up refusals."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import os
import random
import signal
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from tests.daemon_process import (
    PROJECT,
    DaemonProcess,
    free_port,
    probe,
    read_gids,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

TOKEN = "simulated-token-for-daemon-tests"
BATCH = 200
PAGE = 100


@pytest.fixture
def simulator() -> Iterator[AuditLogSimulator]:
    settings = SimulatorSettings(
        token=TOKEN, backlog=3000, backlog_span=3600, events_per_second=400, seed=7
    )
    with AuditLogSimulator(settings) as running:
        yield running


def config_for(tmp_path: Path, simulator: AuditLogSimulator, **server: Any) -> Path:
    return write_config(
        tmp_path / "forwarder.toml",
        {
            "source": {
                "workspace_gid": simulator.settings.workspace_gid,
                "token": TOKEN,
                "base_url": simulator.base_url,
                "allow_insecure_http": True,
                "poll_interval": "100ms",
                "max_requests_per_minute": 1500,
            },
            "state": {"directory": str(tmp_path / "state")},
            "server": {"listen": f"127.0.0.1:{server.get('port', free_port())}"},
            "log": {"level": "info", "format": "json"},
            "daemon": {"shutdown_grace": "5s"},
            "sinks": [
                {
                    "name": "archive",
                    "type": "file",
                    "format": "raw",
                    "path": str(tmp_path / "out" / "events.jsonl"),
                    "delivery": {"batch_max_events": BATCH},
                },
            ],
        },
    )


def simulator_gids(simulator: AuditLogSimulator) -> list[str]:
    return [event["gid"] for event in simulator.events()]


def drain_once(config: Path) -> DaemonProcess:
    """Run with --once until caught up; the process must exit 0."""
    daemon = DaemonProcess(config, "--once")
    code = daemon.wait(timeout=120)
    assert code == 0, daemon.output
    return daemon


def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """Killed with SIGKILL six times while forwarding a live stream, restarted
    each time, the daemon delivers every event; duplicates stay within the
    batches in flight at each kill."""
    config = config_for(tmp_path, simulator)
    output = tmp_path / "out" / "events.jsonl"
    rng = random.Random(20261203)
    kills = 6
    for _ in range(kills):
        daemon = DaemonProcess(config)
        try:
            target = len(read_gids(output)) + rng.randint(50, 1500)
            wait_for(
                lambda t=target: len(read_gids(output)) >= t,
                60,  # type: ignore[misc]
                "the file sink to grow",
            )
        finally:
            daemon.kill()
    simulator.stop_live()
    drain_once(config)

    delivered = read_gids(output)
    expected = simulator_gids(simulator)
    counts = collections.Counter(delivered)
    duplicates = sum(count - 1 for count in counts.values())
    assert set(expected) - set(counts) == set(), "events were lost"
    assert set(counts) == set(expected)
    assert duplicates <= kills * (BATCH + PAGE)


def test_sigterm_leaves_zero_duplicates(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """SIGTERM under load stops fetching, saves the checkpoint and exits 0;
    the restart delivers the rest without a single duplicate."""
    config = config_for(tmp_path, simulator)
    output = tmp_path / "out" / "events.jsonl"
    for round_number in range(3):
        daemon = DaemonProcess(config)
        try:
            target = len(read_gids(output)) + 500
            wait_for(
                lambda t=target: len(read_gids(output)) >= t,
                60,  # type: ignore[misc]
                "delivery under load",
            )
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0, daemon.output
        finally:
            daemon.stop()
        assert '"event":"forwarder_stopped"' in daemon.output, round_number
    simulator.stop_live()
    drain_once(config)

    delivered = read_gids(output)
    assert len(delivered) == len(set(delivered))
    assert sorted(delivered) == sorted(simulator_gids(simulator))


def test_probes_and_metrics_over_http(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """/healthz answers at once, /readyz once a page was fetched, and /metrics
    carries the documented series without the token."""
    port = free_port()
    daemon = DaemonProcess(config_for(tmp_path, simulator, port=port))
    try:
        wait_for(lambda: _ok(port, "/readyz"), 30, "readiness")
        assert probe(port, "/healthz").status_code == 200
        metrics = probe(port, "/metrics").text
    finally:
        daemon.stop()

    for name in (
        "asana_forwarder_events_fetched_total",
        'asana_forwarder_api_requests_total{status="200"}',
        "asana_forwarder_api_request_duration_seconds_bucket",
        'asana_forwarder_sink_events_delivered_total{sink="archive"}',
        'asana_forwarder_sink_lag_seconds{sink="archive"}',
        'asana_forwarder_sink_checkpoint_age_seconds{sink="archive"}',
        "asana_forwarder_last_successful_poll_timestamp_seconds",
        "asana_forwarder_build_info{version=",
    ):
        assert name in metrics
    assert TOKEN not in metrics
    assert TOKEN not in daemon.output


def test_a_refused_token_makes_the_daemon_unready_not_dead(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """With a token the API refuses, the daemon stays up, /readyz says why,
    and the API's own message is logged at error level."""
    port = free_port()
    config = config_for(tmp_path, simulator, port=port)
    config.write_text(config.read_text().replace(TOKEN, "revoked-token-value"))
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: "api_access_refused" in daemon.output, 30, "the refusal")
        ready = probe(port, "/readyz")
        alive = probe(port, "/healthz")
        running = daemon.process.poll() is None
    finally:
        daemon.stop()

    assert ready.status_code == 503
    assert "HTTP 401" in ready.text
    assert alive.status_code == 200
    assert running
    assert "revoked-token-value" not in daemon.output


def test_a_corrupt_checkpoint_stops_start_up_with_the_recovery_command(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """A corrupt state file is never replaced: start-up fails, naming the
    file and the command that resets the sink."""
    config = config_for(tmp_path, simulator)
    checkpoint = tmp_path / "state" / "checkpoints" / "archive.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b'{"version": 1, "sink": "arch')
    daemon = DaemonProcess(config)
    code = daemon.wait(timeout=30)

    assert code == 1
    assert f"checkpoint file {checkpoint} is corrupt" in daemon.output
    assert f"state reset --config {config} --sink archive" in daemon.output
    assert checkpoint.read_bytes() == b'{"version": 1, "sink": "arch'


def _ok(port: int, path: str) -> bool:
    try:
        return probe(port, path).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def stuck_on_stdout(
    tmp_path: Path, simulator: AuditLogSimulator, grace: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon whose stdout sink nobody reads: once the pipe is full, its
    delivery blocks for good. Killed at the end if still running."""
    config = config_for(tmp_path, simulator)
    text = config.read_text().replace('type = "file"', 'type = "stdout"')
    text = "\n".join(line for line in text.splitlines() if "events.jsonl" not in line)
    config.write_text(
        text.replace('shutdown_grace = "5s"', f'shutdown_grace = "{grace}"')
    )
    environment = {**os.environ, "PYTHONPATH": str(PROJECT)}
    with (tmp_path / "daemon.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "forwarder.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=log,
            env=environment,
        )
        try:
            wait_for(lambda: _pipe_full(process), 30, "stdout to fill up")
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_a_second_signal_exits_at_once(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """A daemon stuck delivering waits out its grace period after one SIGTERM,
    but a second SIGTERM ends it immediately."""
    with stuck_on_stdout(tmp_path, simulator, "1h") as process:
        process.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)

    assert code == 128 + signal.SIGTERM


def test_the_grace_period_bounds_shutdown(
    tmp_path: Path, simulator: AuditLogSimulator
) -> None:
    """After the grace period, a batch still in flight is abandoned (it will
    be delivered again after the restart) and the daemon exits 0."""
    with stuck_on_stdout(tmp_path, simulator, "1s") as process:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)

    assert code == 0
    assert "shutdown_grace_expired" in (tmp_path / "daemon.log").read_text()


def _pipe_full(process: subprocess.Popen[bytes]) -> bool:
    """True when the daemon's stdout pipe holds as much as the kernel allows."""
    assert process.stdout is not None
    unread = ctypes.c_int()
    fcntl.ioctl(process.stdout.fileno(), termios.FIONREAD, unread)
    return unread.value >= 60000
