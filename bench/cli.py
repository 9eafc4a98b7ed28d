"""``bench/run``: choose the sizes, run the scenarios, print and save."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench.backfill import PAGE_SIZE, UNEVEN_BURST, backfill, sdk_backfill
from bench.drain import SINKS, drain
from bench.lag import steady_state_lag
from bench.machine import describe_machine, machine_line
from bench.memory import one_sink_down
from bench.receivers import BenchError
from bench.report import comparison_lines, ratios, table, targets
from bench.results import RunResult, failed
from bench.sdk import FLOOR_SCRIPT, SCRIPT, sdk_run
from bench.startup import daemon_startup, script_startup
from forwarder.simulator import SimulatorSettings

GROUPS = ("drain", "sdk", "backfill", "memory", "lag")
# A run that takes longer than this has hung; generous on slow machines.
RUN_TIMEOUT = 900.0
STARTUP_TIMEOUT = 60.0
# The runs side by side, in the order the table shows them.
ORDER = (
    "backfill/default",
    "backfill/default-uneven",
    "backfill/conc-1",
    "backfill/sdk",
    "lag/hec",
)
# A run: its scenario name and what runs it in a given directory.
Lane = tuple[str, Callable[[Path], RunResult]]


@dataclass(frozen=True, slots=True)
class Sizes:
    drain_events: int
    backfill_events: int
    memory_events: int
    lag_seconds: float
    lag_rate: float


FULL = Sizes(
    drain_events=200_000,
    backfill_events=100_000,
    memory_events=1_000_000,
    lag_seconds=60.0,
    lag_rate=20.0,
)
QUICK = Sizes(
    drain_events=20_000,
    backfill_events=10_000,
    memory_events=100_000,
    lag_seconds=15.0,
    lag_rate=20.0,
)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    sizes = _sizes(arguments)
    groups = _groups(arguments.only)
    directory = Path(tempfile.mkdtemp(prefix="asana-forwarder-bench-"))
    started = time.monotonic()
    machine = describe_machine()
    print(machine_line(machine), flush=True)
    try:
        bench = Bench(directory, sizes, started)
        bench.run(groups)
    finally:
        if arguments.keep:
            print(f"work files kept in {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    document = _document(bench, machine, sizes, groups, time.monotonic() - started)
    _print_report(bench, document)
    arguments.json.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    )
    print(f"\nresults written to {arguments.json}")
    return 0 if all(run.complete for run in bench.runs) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Measure the forwarder daemon against the simulated API.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of a minute"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="GROUP",
        help=f"run only these groups, comma-separated: {', '.join(GROUPS)}",
    )
    parser.add_argument("--drain-events", type=int, metavar="N")
    parser.add_argument("--backfill-events", type=int, metavar="N")
    parser.add_argument("--memory-events", type=int, metavar="N")
    parser.add_argument("--lag-seconds", type=float, metavar="S")
    parser.add_argument("--lag-rate", type=float, metavar="EVENTS_PER_S")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work files (logs, outputs)"
    )
    return parser


def _sizes(arguments: argparse.Namespace) -> Sizes:
    sizes = QUICK if arguments.quick else FULL
    chosen = {
        name: getattr(arguments, name)
        for name in asdict(sizes)
        if getattr(arguments, name) is not None
    }
    for name, value in chosen.items():
        if value <= 0:
            raise SystemExit(f"bench/run: --{name.replace('_', '-')} must be > 0")
    return replace(sizes, **chosen)


def _groups(only: list[str] | None) -> tuple[str, ...]:
    if not only:
        return GROUPS
    chosen = {name.strip() for item in only for name in item.split(",")}
    unknown = chosen - set(GROUPS)
    if unknown:
        raise SystemExit(
            f"bench/run: unknown group {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(GROUPS)}"
        )
    return tuple(group for group in GROUPS if group in chosen)


class Bench:
    """Runs the scenarios in order, each in a directory of its own."""

    def __init__(self, directory: Path, sizes: Sizes, started: float) -> None:
        self.directory = directory
        self.sizes = sizes
        self.started = started
        self.runs: list[RunResult] = []
        self.daemon_startup_cpu = 0.0
        self.sdk_startup_cpu = 0.0
        self.floor_startup_cpu = 0.0

    def run(self, groups: tuple[str, ...]) -> None:
        """CPU-bound runs one at a time, then the runs that mostly wait."""
        self._measure_startup(groups)
        if "drain" in groups:
            for sink in SINKS:
                self._record(
                    f"drain/{sink}",
                    partial(
                        drain,
                        sink,
                        self.sizes.drain_events,
                        startup_cpu=self.daemon_startup_cpu,
                        timeout=RUN_TIMEOUT,
                    ),
                )
            self._record("drain/floor-hec", self._floor_drain)
        if "sdk" in groups:
            self._record("drain/sdk-hec", self._sdk_drain)
        if "memory" in groups:
            self._record("memory/1-sink-down", self._memory)
        self._side_by_side(self._waiting_lanes(groups))

    def _measure_startup(self, groups: tuple[str, ...]) -> None:
        usage = daemon_startup(self.directory / "startup-daemon", STARTUP_TIMEOUT)
        self.daemon_startup_cpu = usage.cpu_seconds
        self._progress(
            f"daemon start-up and shutdown: {usage.cpu_seconds:.2f} s CPU, "
            f"{usage.peak_rss_mib:.1f} MiB"
        )
        if "drain" in groups:
            usage = script_startup(
                self.directory / "startup-floor", STARTUP_TIMEOUT, FLOOR_SCRIPT
            )
            self.floor_startup_cpu = usage.cpu_seconds
            self._progress(
                f"floor script start-up and shutdown: {usage.cpu_seconds:.2f} s CPU"
            )
        if "sdk" in groups:
            usage = script_startup(self.directory / "startup-sdk", STARTUP_TIMEOUT)
            self.sdk_startup_cpu = usage.cpu_seconds
            self._progress(
                f"SDK script start-up and shutdown: {usage.cpu_seconds:.2f} s CPU"
            )

    def _waiting_lanes(self, groups: tuple[str, ...]) -> list[list[Lane]]:
        """The runs bound by the API's latency or by the clock, in lanes.

        Backfill against a 0.3 s API and live lag spend their time waiting
        and use a few percent of a core: lanes run side by side, each run
        with its own simulator, runs within a lane one after another. The
        two sequential readers (concurrency 1 and the SDK) take longest, so
        each has a lane; the rest share one.
        """
        events = self.sizes.backfill_events
        lanes: list[list[Lane]] = []
        shared: list[Lane] = []
        if "backfill" in groups:
            lanes.append([("backfill/conc-1", self._backfill_run(1, 0.0))])
            shared += [
                ("backfill/default", self._backfill_run(None, 0.0)),
                ("backfill/default-uneven", self._backfill_run(None, UNEVEN_BURST)),
            ]
        if "sdk" in groups:
            lanes.append([("backfill/sdk", self._sdk_backfill)])
        if "lag" in groups:
            shared.append(("lag/hec", self._lag))
        if shared:
            lanes.append(shared)
        if len(lanes) > 1:
            self._progress(
                f"{', '.join(name for lane in lanes for name, _ in lane)}: side by "
                f"side, about {events / PAGE_SIZE * 0.31:.0f} s"
            )
        return lanes

    def _backfill_run(
        self, concurrency: int | None, burst: float
    ) -> Callable[[Path], RunResult]:
        return partial(
            backfill,
            self.sizes.backfill_events,
            startup_cpu=self.daemon_startup_cpu,
            timeout=RUN_TIMEOUT,
            concurrency=concurrency,
            burst=burst,
        )

    def _side_by_side(self, lanes: list[list[Lane]]) -> None:
        if not lanes:
            return
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            futures = [pool.submit(self._run_lane, lane) for lane in lanes]
            finished = [result for future in futures for result in future.result()]
        # In the table: backfill runs first, in the order of ORDER.
        finished.sort(key=lambda result: ORDER.index(result.scenario))
        self.runs += finished

    def _run_lane(self, lane: list[Lane]) -> list[RunResult]:
        results = []
        for name, run in lane:
            result = self._measure(name, run)
            self._progress_of(result)
            results.append(result)
        return results

    def _sdk_drain(self, path: Path) -> RunResult:
        return self._script_drain("drain/sdk-hec", SCRIPT, self.sdk_startup_cpu, path)

    def _floor_drain(self, path: Path) -> RunResult:
        return self._script_drain(
            "drain/floor-hec", FLOOR_SCRIPT, self.floor_startup_cpu, path
        )

    def _script_drain(
        self, scenario: str, script: Path, startup_cpu: float, path: Path
    ) -> RunResult:
        """The drain backlog read by a comparison script into the HEC double."""
        settings = SimulatorSettings(
            backlog=self.sizes.drain_events, backlog_span=86400.0
        )
        return sdk_run(scenario, settings, path, startup_cpu, RUN_TIMEOUT, script)

    def _sdk_backfill(self, path: Path) -> RunResult:
        return sdk_backfill(
            self.sizes.backfill_events, path, self.sdk_startup_cpu, RUN_TIMEOUT
        )

    def _memory(self, path: Path) -> RunResult:
        return one_sink_down(
            self.sizes.memory_events, path, self.daemon_startup_cpu, RUN_TIMEOUT
        )

    def _lag(self, path: Path) -> RunResult:
        return steady_state_lag(
            self.sizes.lag_seconds,
            self.sizes.lag_rate,
            path,
            self.daemon_startup_cpu,
        )

    def _record(self, name: str, run: Callable[[Path], RunResult]) -> None:
        result = self._measure(name, run)
        self._progress_of(result)
        self.runs.append(result)

    def _measure(self, name: str, run: Callable[[Path], RunResult]) -> RunResult:
        try:
            return run(self.directory / name.replace("/", "-"))
        except BenchError as error:
            return failed(name, str(error))

    def _progress_of(self, result: RunResult) -> None:
        cpu = result.cpu_us_per_event
        self._progress(
            f"{result.scenario}: {result.delivered:,} events in "
            f"{result.wall_seconds:.1f} s, "
            f"{'-' if cpu is None else f'{cpu:.1f}'} µs CPU/event, "
            f"{result.peak_rss_mib:.1f} MiB; {result.status()}"
        )

    def _progress(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.0f}s] {text}", file=sys.stderr, flush=True)


def _document(
    bench: Bench,
    machine: dict[str, Any],
    sizes: Sizes,
    groups: tuple[str, ...],
    seconds: float,
) -> dict[str, Any]:
    by_name = {run.scenario: run for run in bench.runs}
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "sizes": asdict(sizes),
        "groups": list(groups),
        "duration_seconds": round(seconds, 1),
        "startup_cpu_seconds": {
            "daemon": round(bench.daemon_startup_cpu, 3),
            "sdk_script": round(bench.sdk_startup_cpu, 3),
            "floor_script": round(bench.floor_startup_cpu, 3),
        },
        "runs": [run.to_json() for run in bench.runs],
        "ratios": {
            key: None if value is None else round(value, 3)
            for key, value in ratios(by_name).items()
        },
        "targets": [target.to_json() for target in targets(by_name)],
    }


def _print_report(bench: Bench, document: dict[str, Any]) -> None:
    by_name = {run.scenario: run for run in bench.runs}
    startup = document["startup_cpu_seconds"]
    print()
    print(table(bench.runs))
    print(
        f"\nCPU per event excludes start-up and shutdown, measured on an empty "
        f"log: daemon {startup['daemon']:.2f} s, SDK script "
        f"{startup['sdk_script']:.2f} s, floor script "
        f"{startup['floor_script']:.2f} s. events/s counts the whole process; the "
        f"simulator and the HEC double share the bench process's cores. Drain "
        f"and memory runs ran alone; backfill and lag runs, which wait on the "
        f"API's latency or the clock, ran side by side, each with its own "
        f"simulator."
    )
    print()
    for line in comparison_lines(by_name):
        print(line)
    print("\ntargets:")
    for target in targets(by_name):
        print(target.line())
    print(f"\nbench took {document['duration_seconds']:.0f} s")
