"""Running the real daemon as a subprocess, for tests that kill it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, document: dict[str, Any]) -> Path:
    """Write a configuration document as TOML (the subset tests need)."""
    lines: list[str] = []
    sinks = document.pop("sinks", [])
    for section, values in document.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    for sink in sinks:
        lines.append("[[sinks]]")
        nested = {k: v for k, v in sink.items() if isinstance(v, dict)}
        lines += [f"{k} = {_toml(v)}" for k, v in sink.items() if k not in nested]
        for name, values in nested.items():
            lines.append(f"[sinks.{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return orjson.dumps(str(value)).decode()


class DaemonProcess:
    """``asana-audit-forwarder run`` in a subprocess; always stopped by stop()."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        self._log = self.log_path.open("wb")
        environment = {**os.environ, "PYTHONPATH": str(PROJECT)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forwarder.cli",
                "run",
                "--config",
                str(config),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=PROJECT,
        )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_gids(path: Path) -> list[str]:
    """Gids of the raw events in a file sink's output (whole lines only)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [orjson.loads(line)["event"]["gid"] for line in complete.splitlines()]


def probe(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
