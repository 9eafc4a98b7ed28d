"""What a process costs with no events at all: start-up (importing its
libraries, reading its configuration) and shutdown. Scenarios subtract it,
so that CPU per event measures the work per event."""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.daemon import daemon_document, file_sink, run_once, source_section
from bench.process import Usage
from bench.receivers import TimedHecDouble
from bench.sdk import SCRIPT, run_script
from forwarder.simulator import AuditLogSimulator, SimulatorSettings


def daemon_startup(directory: Path, timeout: float) -> Usage:
    """``run --once`` into a file sink over an empty log."""
    directory.mkdir(parents=True, exist_ok=True)
    with AuditLogSimulator(SimulatorSettings()) as simulator:
        sinks = [file_sink(directory / "out" / "events.jsonl")]
        document = daemon_document(directory, source_section(simulator), sinks)
        return run_once(directory, document, timeout)


def script_startup(directory: Path, timeout: float, script: Path = SCRIPT) -> Usage:
    """A comparison script (the SDK's by default) over an empty log."""
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(AuditLogSimulator(SimulatorSettings()))
        hec = stack.enter_context(TimedHecDouble())
        return run_script(simulator, hec.url, directory, timeout, script)
