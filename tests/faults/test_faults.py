"""Fault injection: the real daemon, the simulator's live stream and every
kind of receiver, broken in the ways production breaks them. Each scenario
prints, per sink, events expected, delivered, missing and duplicated, and
fails on any loss or on duplicates beyond the documented bound: the batches
in flight at each kill (``BATCH + PAGE`` events per kill and sink).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from forwarder.simulator import Fault
from forwarder.timestamps import utc_now
from tests.daemon_process import read_gids, wait_for
from tests.faults.harness import BATCH, PAGE, Stack, check, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture
def show(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a scenario's figures even when pytest captures output."""

    def printer(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}")

    return printer


def test_twenty_sigkills_over_twenty_thousand_events(
    tmp_path: Path, show: Callable[[str], None]
) -> None:
    """SIGKILL at 20 random moments (seeded) while five sinks forward a live
    stream of 20,000 events: every sink gets every event it accepts."""
    rng = random.Random(6)
    kills = 20
    with running_stack(
        tmp_path, backlog=4000, rate=1500, total=20_000, seed=6
    ) as stack:
        for _ in range(kills):
            daemon = stack.start_daemon()
            try:
                # The moment: once the file sink has grown by a random amount,
                # so every life of the daemon makes some progress.
                target = len(read_gids(stack.file_output)) + rng.randint(50, 900)
                wait_for(
                    lambda t=target: _grown(stack, t),
                    60,  # type: ignore[misc]
                    "progress before the kill",
                )
            finally:
                daemon.kill()
        stack.drain()
        check(
            stack.report("20 SIGKILLs"),
            duplicate_bound=kills * (BATCH + PAGE),
            print_report=show,
            scenario="20 SIGKILLs, 20,000 events",
        )


def _grown(stack: Stack, target: int) -> bool:
    return len(read_gids(stack.file_output)) >= target


def test_api_faults_lose_nothing(tmp_path: Path, show: Callable[[str], None]) -> None:
    """The API answers with random 429s (Retry-After in both forms), 5xx,
    dropped connections and slow replies, and expires every offset once;
    nothing is lost and, without kills, nothing is repeated."""
    with (
        running_stack(tmp_path, backlog=2000, rate=500, total=8000, seed=7) as stack,
        _api_chaos(stack, seed=7),
    ):
        daemon = stack.start_daemon()
        try:
            wait_for(lambda: _grown(stack, 4000), 120, "delivery through the faults")
            stack.simulator.expire_offsets()
            wait_for(
                lambda: "offset_recovery" in daemon.output, 60, "the offset recovery"
            )
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            daemon.stop()
        stack.drain()
        check(
            stack.report("API faults"),
            duplicate_bound=0,
            print_report=show,
            scenario="API faults and an expired offset",
        )


@contextlib.contextmanager
def _api_chaos(stack: Stack, *, seed: int) -> Iterator[None]:
    """Inject a random API fault every few requests until the block ends."""
    rng = random.Random(seed)
    stopping = threading.Event()

    def faults() -> None:
        next_at = stack.simulator.requests + rng.randint(2, 8)
        while not stopping.wait(0.02):
            if stack.simulator.requests < next_at:
                continue
            stack.simulator.inject(_random_fault(rng))
            next_at = stack.simulator.requests + rng.randint(2, 8)

    thread = threading.Thread(target=faults, name="api-chaos", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join()


def _random_fault(rng: random.Random) -> Fault:
    in_two_seconds = format_datetime(utc_now() + timedelta(seconds=2), usegmt=True)
    return rng.choice(
        [
            Fault(status=429, retry_after="1"),
            Fault(status=429, retry_after=in_two_seconds),
            Fault(status=500),
            Fault(status=502),
            Fault(status=503, retry_after="1"),
            Fault(drop_connection=True),
            # Slower than the configured request timeout of 5 s.
            Fault(status=504, delay=6.0),
            Fault(
                status=200, body=b"<html>proxy error</html>", content_type="text/html"
            ),
        ]
    )


def test_receivers_going_away_do_not_hold_back_the_others(
    tmp_path: Path, show: Callable[[str], None]
) -> None:
    """Splunk busy and losing acks, Sumo throttling, and rsyslog stopped: the
    file sink keeps flowing meanwhile, and each receiver catches up after."""
    with running_stack(tmp_path, backlog=3000, rate=800, total=9000, seed=8) as stack:
        daemon = stack.start_daemon()
        try:
            wait_for(lambda: _grown(stack, 1000), 60, "first deliveries")
            stack.hec.inject(*[stack.hec.busy()] * 15)
            stack.hec.lose_acks(2)
            stack.sumo.inject(*[stack.sumo.throttled("1")] * 10)
            before = len(read_gids(stack.file_output))
            wait_for(
                lambda: _grown(stack, before + 1500),
                60,
                "the file sink while the others fail",
            )
            assert stack.hec.faults_left > 0 or stack.sumo.faults_left > 0
            # Syslog acknowledges nothing, so a receiver stopped mid-stream
            # may drop what it had not read yet (docs/syslog.md); stop it
            # while the daemon is caught up, then make new events.
            wait_for(lambda: _caught_up(stack), 120, "the daemon to catch up")
            stack.rsyslog.stop()
            stack.simulator.append_events(500)
            wait_for(
                lambda: _grown(stack, len(stack.simulator.events())),
                60,
                "the file sink while rsyslog is down",
            )
            stack.rsyslog.start()
            wait_for(lambda: _syslog_caught_up(stack), 60, "syslog to catch up")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            daemon.stop()
        stack.drain()
        # A lost acknowledgement re-sends its request: one batch per outage.
        check(
            stack.report("receiver outages"),
            duplicate_bound=2 * (BATCH + PAGE),
            print_report=show,
            scenario="receivers going away and coming back",
        )


def _caught_up(stack: Stack) -> bool:
    total = len(stack.simulator.events())
    delivered = stack.delivered()
    return total == stack.simulator.settings.max_events and all(
        len(set(delivered[sink])) >= len(stack.expected()[sink])
        for sink in ("file", "splunk", "sumo", "syslog")
    )


def _syslog_caught_up(stack: Stack) -> bool:
    return set(stack.delivered()["syslog"]) >= stack.expected()["syslog"]


def test_unwritable_state_directory_pauses_then_recovers(
    tmp_path: Path, show: Callable[[str], None]
) -> None:
    """When checkpoints cannot be saved, the daemon says so at error level and
    stops advancing them; once they can, it goes on, losing nothing."""
    with running_stack(tmp_path, backlog=3000, rate=500, total=7000, seed=9) as stack:
        daemon = stack.start_daemon()
        checkpoints = tmp_path / "state" / "checkpoints"
        try:
            wait_for(
                lambda: len(list(checkpoints.glob("*.json"))) == 5,
                60,
                "every sink's first checkpoint",
            )
            # A directory where the temporary file must go makes every save
            # fail, as a full or read-only disk would (root ignores modes).
            blockers = [
                checkpoints / f".{name}.json.tmp"
                for name in ("file", "splunk", "sumo", "http", "syslog")
            ]
            for blocker in blockers:
                wait_for(
                    lambda blocker=blocker: _block(blocker),
                    10,
                    f"{blocker.name} free of a save in progress",
                )
            wait_for(
                lambda: daemon.output.count("checkpoint_save_failed") >= 10,
                60,
                "save failures",
            )
            frozen = {p.name: p.read_bytes() for p in checkpoints.glob("*.json")}
            wait_for(
                lambda: daemon.output.count("checkpoint_save_failed") >= 20,
                60,
                "more save failures",
            )
            assert frozen == {
                p.name: p.read_bytes() for p in checkpoints.glob("*.json")
            }
            assert '"level":"error"' in daemon.output
            for blocker in blockers:
                blocker.rmdir()
            wait_for(lambda: _grown(stack, 5000), 60, "delivery after recovery")
        finally:
            daemon.kill()
        stack.drain()
        check(
            stack.report("unwritable state"),
            duplicate_bound=2 * (BATCH + PAGE),
            print_report=show,
            scenario="state directory unwritable mid-run",
        )


def test_sigterm_under_load_leaves_no_duplicate_anywhere(
    tmp_path: Path, show: Callable[[str], None]
) -> None:
    """Three SIGTERMs under load, then a drain: every sink holds every event
    it accepts exactly once."""
    with running_stack(tmp_path, backlog=3000, rate=1000, total=9000, seed=10) as stack:
        for round_number in range(3):
            daemon = stack.start_daemon()
            try:
                target = len(read_gids(stack.file_output)) + 1000
                wait_for(
                    lambda t=target: _grown(stack, t),
                    60,  # type: ignore[misc]
                    "delivery under load",
                )
                daemon.signal(signal.SIGTERM)
                assert daemon.wait(30) == 0, (round_number, daemon.output[-2000:])
            finally:
                daemon.stop()
        stack.drain()
        check(
            stack.report("SIGTERM"),
            duplicate_bound=0,
            print_report=show,
            scenario="3 SIGTERMs under load",
        )


def _block(temporary: Path) -> bool:
    """Put a directory where a checkpoint's temporary file goes; False while
    a save in progress holds the file (its rename frees the name)."""
    try:
        temporary.mkdir()
    except FileExistsError:
        return temporary.is_dir()
    return True
