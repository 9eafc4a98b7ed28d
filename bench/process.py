"""A subprocess measured the way the kernel accounts for it.

CPU time (user + system) is the process's own, from ``wait4``'s rusage when
it is reaped: nothing the bench process does in its threads (the simulator,
the receivers) is counted.

Peak memory is the kernel's high-water mark of the process's resident set,
``VmHWM`` in /proc/PID/status, read every few milliseconds while it runs (a
high-water mark only grows, so a reading misses at most the growth of the
last interval). Not ``ru_maxrss``: on Linux a child's counts the memory of
the parent it was forked from, here the bench process with its simulator.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
KIB_PER_MIB = 1024
SAMPLE_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Usage:
    """What a finished process cost."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float  # user + system
    peak_rss_mib: float
    timed_out: bool = False


class MeasuredProcess:
    """A subprocess reaped by a thread of its own with ``wait4``.

    Output goes to ``log_path``. ``wait`` returns its Usage; ``stop`` kills
    it if it still runs, so that a failing bench leaves nothing behind.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT,
            env={**os.environ, "PYTHONPATH": str(PROJECT), **(env or {})},
        )
        self._done = threading.Event()
        self._usage: Usage | None = None
        self._timed_out = False
        self._reaper = threading.Thread(
            target=self._reap, name=f"reaper-{self.pid}", daemon=True
        )
        self._reaper.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def _reap(self) -> None:
        """Sample the high-water mark until the process exits, then reap it."""
        peak_kib = 0
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _high_water_kib(self.pid))
            time.sleep(SAMPLE_SECONDS)
        ended = time.monotonic()
        code = os.waitstatus_to_exitcode(status)
        # Popen must not wait for a child that is reaped already.
        self.process.returncode = code
        self._usage = Usage(
            exit_code=code,
            wall_seconds=ended - self.started,
            cpu_seconds=_cpu_seconds(usage),
            peak_rss_mib=peak_kib / KIB_PER_MIB,
            timed_out=self._timed_out,
        )
        self._log.close()
        self._done.set()

    def wait(self, timeout: float) -> Usage:
        """The process's usage once it exits; killed after ``timeout`` s."""
        if not self._done.wait(timeout):
            self._timed_out = True
            self.kill()
            self._done.wait()
        assert self._usage is not None
        return self._usage

    def terminate(self) -> None:
        """SIGTERM: the daemon's graceful stop."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Kill the process if it still runs and reap it."""
        if self.running:
            self.kill()
        self._done.wait()

    def _signal(self, signum: int) -> None:
        # Only while not reaped: the pid could belong to another process then.
        # Not Popen.send_signal: it polls, and could reap the child before
        # wait4 reads its usage.
        if self.running:
            os.kill(self.pid, signum)

    def output_tail(self, characters: int = 3000) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-characters:]


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _high_water_kib(pid: int) -> int:
    """VmHWM of a running process, in KiB (0 if it cannot be read now)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
