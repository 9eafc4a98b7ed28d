"""The receivers the bench delivers to, and how it reads back what they got.

- The Splunk HEC double of the tests, run in the bench process, with the
  time each event was indexed (for lag).
- A real rsyslogd on a 127.0.0.1 TCP port, writing each message's MSG as one
  line (the test receiver also parses structured data, which the bench does
  not need and which would slow rsyslog down).
- A port where nothing listens: a sink that is down.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.doubles.hec import HecDouble, HecToken
from tests.doubles.http_receiver import Request, Response

HEC_TOKEN = "bench-hec-token"
RSYSLOGD = Path("/usr/sbin/rsyslogd")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# rsyslog writes what it receives asynchronously: a count that has not
# moved for this long is final.
SETTLE_SECONDS = 2.0
_BOM = "\ufeff"


class BenchError(Exception):
    """A scenario could not run (a receiver missing, a daemon failing)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now; nothing listens on it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TimedHecDouble(HecDouble):
    """The HEC double, noting when each event was indexed (wall clock)."""

    def __init__(self) -> None:
        super().__init__([HecToken(HEC_TOKEN)])
        self.arrivals: list[float] = []

    def handle(self, request: Request) -> Response:
        before = len(self.events)
        response = super().handle(request)
        now = time.time()
        self.arrivals.extend([now] * (len(self.events) - before))
        return response

    def gids(self) -> list[str]:
        return [event["event"]["gid"] for event in self.indexed()]

    def timed_gids(self) -> list[tuple[str, float]]:
        """Each indexed event's gid with the time it was indexed."""
        with self.lock:
            return [
                (item.event["event"]["gid"], arrived)
                for item, arrived in zip(self.events, self.arrivals, strict=True)
            ]


def sdk_hec_gids(hec: HecDouble) -> list[str]:
    """Gids a comparison script indexed: its envelopes carry the API's event."""
    return [event["gid"] for event in hec.indexed()]


def file_sink_gids(path: Path) -> list[str]:
    """Gids in a file sink's output (raw format), rotated files included."""
    files = [*sorted(path.parent.glob(path.name + ".*"), reverse=True), path]
    gids: list[str] = []
    for file in files:
        if not file.exists():
            continue
        with file.open("rb") as lines:
            gids += [orjson.loads(line)["event"]["gid"] for line in lines]
    return gids


class RsyslogReceiver:
    """rsyslogd listening on TCP ``port``, writing messages to ``output``."""

    def __init__(self, directory: Path) -> None:
        if not RSYSLOGD.is_file():
            raise BenchError(f"{RSYSLOGD} not found (apt-get install rsyslog)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.output = directory / "received.log"
        self._conf = directory / "rsyslog.conf"
        self._conf.write_text(self._config())
        self._log = (directory / "rsyslogd.log").open("wb")
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        work = self.directory / "work"
        return "\n".join(
            [
                f'global(workDirectory="{work}" maxMessageSize="1000000"',
                '       net.enableDNS="off")',
                'module(load="imtcp" maxFrameSize="1000000")',
                'template(name="msg" type="string" string="%msg%\\n")',
                'ruleset(name="remote") {',
                f'  action(type="omfile" file="{self.output}" template="msg")',
                "}",
                f'input(type="imtcp" address="127.0.0.1" port="{self.port}" '
                'ruleset="remote")',
                "",
            ]
        )

    def start(self) -> None:
        pid_file = self.directory / "rsyslogd.pid"
        self._process = subprocess.Popen(
            [str(RSYSLOGD), "-n", "-f", str(self._conf), "-i", str(pid_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepting():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError("rsyslogd did not start; see rsyslogd.log")
            time.sleep(0.02)

    def _accepting(self) -> bool:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()

    def count(self) -> int:
        if not self.output.exists():
            return 0
        with self.output.open("rb") as lines:
            return sum(1 for _ in lines)

    def settle(self, expected: int, timeout: float = 60.0) -> None:
        """Wait until ``expected`` messages are written, or the count stops
        moving (some never came), or ``timeout``."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.count()
            if count >= expected:
                return
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since > SETTLE_SECONDS:
                return
            time.sleep(0.1)

    def gids(self) -> list[str]:
        if not self.output.exists():
            return []
        gids = []
        with self.output.open(encoding="utf-8") as lines:
            for line in lines:
                document: Any = orjson.loads(line.strip().lstrip(_BOM))
                gids.append(document["event"]["gid"])
        return gids


@contextlib.contextmanager
def rsyslog_receiver(directory: Path) -> Iterator[RsyslogReceiver]:
    receiver = RsyslogReceiver(directory)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
