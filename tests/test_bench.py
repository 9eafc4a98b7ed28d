"""The benchmark's building blocks, at a tiny size: every event is delivered
once, and what is measured is the measured process's own. No timing is
asserted: the bench reports figures, it does not judge them here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import floor_script
from bench.backfill import ceiling_events
from bench.drain import drain
from bench.lag import nearest_rank
from bench.process import MeasuredProcess, Usage
from bench.report import ratios, targets
from bench.results import RunResult, backlog_gids
from bench.sdk import FLOOR_SCRIPT, sdk_run
from forwarder.simulator import SimulatorSettings
from forwarder.sinks import http_delivery

TIMEOUT = 60.0


def test_sdk_baseline_pages_the_whole_backlog_into_hec(tmp_path: Path) -> None:
    """The official SDK's script stops at the first empty page (the API's
    next_page never does) and indexes each of 300 events once."""
    settings = SimulatorSettings(backlog=300, backlog_span=3600.0)
    result = sdk_run("drain/sdk-hec", settings, tmp_path, 0.0, TIMEOUT)
    assert result.failure is None, (tmp_path / "sdk.log").read_text()
    assert (result.delivered, result.missing, result.duplicates) == (300, 0, 0)
    assert result.extra["script_output"]["pages"] == 3
    # Three pages of events and the empty one that ends the run.
    assert result.extra["api_requests"] == 4


def test_floor_script_pages_the_whole_backlog_into_hec(tmp_path: Path) -> None:
    """The floor script posts every event of 1,500 once: full posts of 1,000
    and the rest when the log runs out."""
    settings = SimulatorSettings(backlog=1500, backlog_span=3600.0)
    result = sdk_run("drain/floor-hec", settings, tmp_path, 0.0, TIMEOUT, FLOOR_SCRIPT)
    assert result.failure is None, (tmp_path / "sdk.log").read_text()
    assert (result.delivered, result.missing, result.duplicates) == (1500, 0, 0)
    assert result.extra["script_output"]["pages"] == 15
    assert result.extra["api_requests"] == 16


def test_floor_script_compresses_as_the_daemon_does() -> None:
    """The floor's gzip level is the HEC sink's, or the floor is no floor."""
    assert floor_script.GZIP_LEVEL == http_delivery.GZIP_LEVEL


def test_cpu_target_shows_the_floor_beside_the_daemon() -> None:
    """The daemon's CPU per event is judged against the target and shown with
    what the floor script spent, and their ratio."""
    runs = {
        name: RunResult(
            name, expected=1000, delivered=1000, wall_seconds=1.0, cpu_seconds=cpu
        )
        for name, cpu in (("drain/hec", 0.030), ("drain/floor-hec", 0.020))
    }
    cpu_target = next(t for t in targets(runs) if t.name == "CPU per event into HEC")
    assert cpu_target.met is False
    assert cpu_target.detail == "30.0 µs (floor of the stack 20.0)"
    assert ratios(runs)["daemon_hec_cpu_per_event_vs_floor"] == pytest.approx(1.5)


@pytest.mark.parametrize("sink", ["file", "hec"])
def test_drain_delivers_every_event_once(tmp_path: Path, sink: str) -> None:
    """A drain run of 1,000 events through the real daemon (run --once)
    finds each of them once in the receiver, and measures the daemon."""
    result = drain(sink, 1000, tmp_path, startup_cpu=0.0, timeout=TIMEOUT)
    assert result.failure is None, (tmp_path / "daemon.log").read_text()[-3000:]
    assert (result.delivered, result.missing, result.duplicates) == (1000, 0, 0)
    assert result.complete
    assert result.cpu_seconds > 0
    assert result.peak_rss_mib > 20  # a Python process with its libraries


def test_peak_memory_is_the_child_s_own(tmp_path: Path) -> None:
    """The peak resident set is the measured process's high-water mark: a
    child that touches 120 MiB shows at least that, and a tiny one shows
    little, however large the process that started it."""
    allocate = "b = bytearray(120 * 2**20); import time; time.sleep(0.3)"
    big = MeasuredProcess([sys.executable, "-c", allocate], tmp_path / "big.log")
    small = MeasuredProcess(
        [sys.executable, "-c", "import time; time.sleep(0.3)"], tmp_path / "small.log"
    )
    big_usage, small_usage = big.wait(TIMEOUT), small.wait(TIMEOUT)
    assert big_usage.exit_code == small_usage.exit_code == 0
    assert big_usage.peak_rss_mib >= 120
    assert 0 < small_usage.peak_rss_mib < 40


def test_measured_run_counts_missing_and_duplicated_events() -> None:
    """Delivered counts distinct expected events; repeats are duplicates."""
    usage = Usage(exit_code=0, wall_seconds=2.0, cpu_seconds=1.5, peak_rss_mib=50)
    expected = backlog_gids(4)
    received = sorted(expected)[:3] + sorted(expected)[:1]
    result = RunResult.measured(
        "drain/file",
        usage,
        expected=expected,
        received=received,
        startup_cpu_seconds=0.5,
    )
    assert (result.delivered, result.missing, result.duplicates) == (3, 1, 1)
    assert not result.complete
    assert result.cpu_us_per_event == pytest.approx(1.0 / 3 * 1e6)
    assert result.status() == "INCOMPLETE: 1 missing, 1 duplicated"


def test_targets_compare_the_runs() -> None:
    """Backfill at 85% of what the budget allows in its time and five times
    concurrency 1 meets its targets, uneven history at 70% misses its own;
    a target whose run failed is not measured."""
    allowed = round(ceiling_events(60.0))
    runs = {
        "backfill/default": RunResult(
            "backfill/default",
            expected=allowed,
            delivered=round(0.85 * allowed),
            wall_seconds=60.0,
        ),
        "backfill/conc-1": RunResult(
            "backfill/conc-1", expected=allowed, delivered=allowed, wall_seconds=300.0
        ),
        "backfill/default-uneven": RunResult(
            "backfill/default-uneven",
            expected=allowed,
            delivered=round(0.7 * allowed),
            wall_seconds=60.0,
        ),
        "drain/hec": RunResult("drain/hec", failure="exit code 1"),
    }
    assert ratios(runs)["backfill_default_vs_concurrency_1"] == pytest.approx(5.0)
    verdicts = {target.name: target.met for target in targets(runs)}
    assert verdicts["backfill, share of rate ceiling"] is True
    assert verdicts["same, uneven history"] is False
    assert verdicts["backfill vs concurrency 1"] is True
    assert verdicts["CPU per event into HEC"] is None


def test_the_ceiling_is_the_budget_burst_then_its_rate() -> None:
    """1,500 requests a minute of 100 events: 2,500 events a second, after
    the budget's burst of five seconds' worth."""
    assert ceiling_events(0.0) == pytest.approx(125 * 100)
    assert ceiling_events(60.0) == pytest.approx((125 + 1500) * 100)


def test_lagnearest_ranks_are_nearest_rank() -> None:
    lags = [float(n) for n in range(1, 101)]
    assert nearest_rank(lags, 0.50) == 50.0
    assert nearest_rank(lags, 0.99) == 99.0
    assert nearest_rank([], 0.5) is None
