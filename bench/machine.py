"""The machine a bench ran on, printed beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")


def describe_machine() -> dict[str, Any]:
    return {
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    memory = machine["memory_gib"]
    return (
        f"machine: {machine['cores']} cores ({machine['cpu'] or 'unknown CPU'}), "
        f"{memory if memory is not None else '?'} GiB memory, "
        f"Python {machine['python']}, {machine['platform']}"
    )


def _memory_gib() -> float | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None
