"""The scripts the daemon is compared with, each run as its own measured
process against the simulator, posting to the HEC double: the official SDK's
baseline (``bench/sdk_baseline.py``) and the floor of the daemon's own stack
(``bench/floor_script.py``)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import orjson

from bench.process import PROJECT, MeasuredProcess, Usage
from bench.receivers import HEC_TOKEN, TimedHecDouble, sdk_hec_gids
from bench.results import RunResult, backlog_gids
from forwarder.simulator import AuditLogSimulator, SimulatorSettings

SCRIPT = PROJECT / "bench" / "sdk_baseline.py"
FLOOR_SCRIPT = PROJECT / "bench" / "floor_script.py"
NOTES = {
    SCRIPT: "official asana SDK, one page after another",
    FLOOR_SCRIPT: "httpx, orjson and gzip alone: no checkpoint, no retry",
}


def sdk_run(
    scenario: str,
    settings: SimulatorSettings,
    directory: Path,
    startup_cpu: float,
    timeout: float,
    script: Path = SCRIPT,
) -> RunResult:
    """Run ``script`` over the simulator's backlog into the HEC double."""
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(AuditLogSimulator(settings))
        hec = stack.enter_context(TimedHecDouble())
        usage = run_script(simulator, hec.url, directory, timeout, script)
        result = RunResult.measured(
            scenario,
            usage,
            expected=backlog_gids(settings.backlog),
            received=sdk_hec_gids(hec),
            startup_cpu_seconds=startup_cpu,
        )
        result.notes.append(NOTES[script])
        result.extra.update(
            api_requests=simulator.requests,
            script_output=_last_line(directory / "sdk.log"),
        )
        return result


def run_script(
    simulator: AuditLogSimulator,
    hec_url: str,
    directory: Path,
    timeout: float,
    script: Path = SCRIPT,
) -> Usage:
    # As a module of the bench package (the bench runs from the project's
    # root), so that the scripts share their command line.
    argv = [
        sys.executable,
        "-m",
        f"bench.{script.stem}",
        "--base-url",
        simulator.base_url,
        "--workspace",
        simulator.settings.workspace_gid,
        "--token",
        simulator.settings.token or "any-token",
        "--hec-url",
        hec_url,
        "--hec-token",
        HEC_TOKEN,
    ]
    process = MeasuredProcess(argv, directory / "sdk.log")
    try:
        return process.wait(timeout)
    finally:
        process.stop()


def _last_line(log: Path) -> object:
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        return orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        return lines[-1][-500:]
