"""Backfill: a sink far behind reads its backlog in concurrent time slices.

The fake API honours start_at (inclusive), end_at (exclusive) and offsets,
answers after a short latency so that requests overlap, and counts how many
are in flight at once.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from structlog.testing import capture_logs

from forwarder.backfill import (
    MIN_SPLIT,
    PAGES_BEFORE_CUT,
    BackfillSettings,
    cut_point,
    live_slices,
)
from forwarder.pipeline import SinkRunner
from forwarder.sinks.base import Batch, DeliveryReport
from forwarder.timestamps import format_timestamp, parse_timestamp
from tests.fake_api import FakeAuditLog, make_event
from tests.memory_sink import MemorySink
from tests.test_pipeline import Pipeline

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC).replace(microsecond=0)
SETTINGS = BackfillSettings(
    concurrency=4,
    threshold=timedelta(hours=1),
    late_event_margin=timedelta(minutes=30),
)


@dataclass
class SlowAuditLog(FakeAuditLog):
    """The fake audit log behind a latency, counting requests in flight."""

    latency: float = 0.005
    in_flight: int = 0
    most_in_flight: int = 0

    def transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await anyio.sleep(self.latency)
                return self.handle(request)
            finally:
                self.in_flight -= 1

        return httpx.MockTransport(handle)

    def add_at(self, moments: list[datetime]) -> None:
        """Events created at ``moments`` (sorted), appended to the log."""
        first = len(self.events)
        for number, moment in enumerate(moments, start=first):
            event = make_event(number)
            event["created_at"] = format_timestamp(moment)
            self.events.append(event)


def spread(count: int, start: datetime, end: datetime) -> list[datetime]:
    step = (end - start) / count
    return [start + step * i for i in range(count)]


def history(count: int = 2000, recent: int = 20) -> SlowAuditLog:
    """``count`` events over 60 days ending two hours ago, and ``recent``
    events of the last ten minutes (after the handover)."""
    api = SlowAuditLog()
    api.add_at(spread(count, NOW - timedelta(days=60), NOW - timedelta(hours=2)))
    api.add_at(spread(recent, NOW - timedelta(minutes=10), NOW - timedelta(minutes=1)))
    return api


def all_gids(api: FakeAuditLog) -> list[str]:
    return [event["gid"] for event in api.events]


def bounded_queries(api: FakeAuditLog) -> list[httpx.QueryParams]:
    return [r.url.params for r in api.requests if "end_at" in r.url.params]


# -- where slices are cut ------------------------------------------------------


def test_a_stream_within_the_threshold_is_not_cut() -> None:
    position = NOW - timedelta(minutes=59)
    assert live_slices(position, NOW, SETTINGS) is None
    far = NOW - timedelta(days=3)
    assert live_slices(far, NOW, BackfillSettings(concurrency=1)) is None


def test_slices_cover_the_backlog_up_to_the_handover() -> None:
    """Boundaries start at the position, rise strictly, fall on whole
    minutes inside, and end late_event_margin before now: one slice per
    reader."""
    position = NOW - timedelta(days=10, seconds=17)
    cuts = live_slices(position, NOW, SETTINGS)
    assert cuts is not None
    assert cuts[0] == position
    assert cuts == sorted(set(cuts))
    assert len(cuts) - 1 == SETTINGS.concurrency
    handover = cuts[-1]
    assert handover.second == handover.microsecond == 0
    assert NOW - timedelta(minutes=31) < handover <= NOW - timedelta(minutes=30)
    assert all(cut.second == 0 for cut in cuts[1:])


def test_a_slice_is_cut_in_the_middle_of_what_it_has_left() -> None:
    reached = NOW - timedelta(hours=4)
    cut = cut_point(reached, NOW)
    assert cut == reached + timedelta(hours=2)
    too_short = reached + 2 * MIN_SPLIT - timedelta(seconds=1)
    assert cut_point(reached, too_short) is None


def test_a_crowded_slice_is_cut_a_few_pages_ahead() -> None:
    """A full page that spanned ten minutes, with days left: the cut comes
    PAGES_BEFORE_CUT pages' worth ahead, inside the crowd, not days away;
    never closer than the smallest slice; and a slice with only a few pages
    left at its density is not cut at all."""
    reached = NOW - timedelta(days=10)
    cut = cut_point(reached, NOW, timedelta(minutes=10))
    assert cut == reached + PAGES_BEFORE_CUT * timedelta(minutes=10)
    assert cut_point(reached, NOW, timedelta(0)) == reached + MIN_SPLIT
    few_pages = (NOW - reached) / (2 * PAGES_BEFORE_CUT - 1)
    assert cut_point(reached, NOW, few_pages) is None
    enough = (NOW - reached) / (2 * PAGES_BEFORE_CUT)
    assert cut_point(reached, NOW, enough) == reached + timedelta(days=5)


# -- reading through the pipeline -----------------------------------------------


async def test_a_far_behind_sink_reads_its_backlog_concurrently_once_each(
    tmp_path: Path,
) -> None:
    """With no checkpoint and 60 days of history, the backlog is read in
    slices at once (several requests in flight, each bounded by end_at) and
    every event reaches the sink exactly once; the events of the live
    stream, after the handover, arrive in order. Afterwards the checkpoint
    is the live stream alone."""
    api = history()
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    with capture_logs() as logs:
        await pipeline.drain(sink, backfill=SETTINGS, page_size=100)

    assert sorted(sink.gids) == sorted(all_gids(api))
    assert len(sink.gids) == len(set(sink.gids))
    assert 2 <= api.most_in_flight <= SETTINGS.concurrency + 1
    assert len(bounded_queries(api)) >= SETTINGS.concurrency
    live = [gid for gid in sink.gids if gid in set(all_gids(api)[-20:])]
    assert live == all_gids(api)[-20:]
    (started,) = [line for line in logs if line["event"] == "backfill_started"]
    assert started["slices"] == SETTINGS.concurrency
    saved = pipeline.store.load("memory")
    assert saved is not None
    assert len(saved.cursors) == 1
    assert not saved.cursor.bounded
    assert saved.delivered_total == len(api.events)
    assert pipeline.sample("asana_forwarder_sink_backfill_slices", sink="memory") == 0


async def test_concurrency_1_reads_the_backlog_in_order(tmp_path: Path) -> None:
    """backfill_concurrency = 1 reads one page after another, oldest first,
    with no bounded query."""
    api = history(count=600)
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    await pipeline.drain(sink, backfill=BackfillSettings(concurrency=1), page_size=100)

    assert sink.gids == all_gids(api)
    assert bounded_queries(api) == []
    assert api.most_in_flight == 1


async def test_a_restart_in_the_middle_of_a_backfill_resumes_every_slice(
    tmp_path: Path,
) -> None:
    """Stopped after a few batches, the checkpoint holds the unfinished
    slices (bounded, before the open-ended live stream); the next run goes on
    from their offsets, and the two runs together deliver every event once."""
    api = history()
    pipeline = Pipeline(api, tmp_path)
    first = MemorySink()
    async with httpx.AsyncClient(transport=api.transport()) as http:
        runner = pipeline.runner(
            first, http, backfill=SETTINGS, page_size=100, once=False
        )

        def stop_after_three_batches() -> None:
            if len(first.batches) == 2:
                runner.stop()

        first.on_deliver = stop_after_three_batches
        await runner.run()
    saved = pipeline.store.load("memory")
    assert saved is not None
    assert len(saved.cursors) > 1
    assert all(cursor.bounded for cursor in saved.cursors[:-1])
    assert not saved.cursors[-1].bounded
    assert any(cursor.offset for cursor in saved.cursors[:-1])
    requests_before = len(api.requests)

    second = MemorySink()
    await pipeline.drain(second, backfill=SETTINGS, page_size=100)

    delivered = first.gids + second.gids
    assert sorted(delivered) == sorted(all_gids(api))
    assert len(delivered) == len(set(delivered))
    resumed = {r.url.params.get("offset") for r in api.requests[requests_before:]}
    assert {c.offset for c in saved.cursors if c.offset} <= resumed


async def test_uneven_history_is_shared_out_where_the_events_are(
    tmp_path: Path,
) -> None:
    """Nine tenths of the backlog within one day: when a reader runs out of
    slice, a crowded slice is cut a few pages ahead, so several readers
    share the crowded day; every event still arrives once, and the cuts cost
    a request or two each."""
    api = SlowAuditLog()
    day = NOW - timedelta(days=20)
    api.add_at(
        sorted(
            spread(300, NOW - timedelta(days=60), NOW - timedelta(hours=2))
            + spread(2700, day, day + timedelta(days=1))
        )
    )
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    with capture_logs() as logs:
        await pipeline.drain(
            sink, backfill=SETTINGS, page_size=10, requests_per_minute=100_000
        )

    assert sorted(sink.gids) == sorted(all_gids(api))
    assert len(sink.gids) == len(set(sink.gids))
    splits = [line for line in logs if line["event"] == "backfill_slice_split"]
    inside_the_day = {
        line["at"]
        for line in splits
        if day < parse_timestamp(line["at"]) < day + timedelta(days=1)
    }
    assert len(inside_the_day) >= 2
    # Each split costs at most a page or two of overlap, not a re-read.
    assert len(api.requests) <= 3000 // 10 + 2 * (len(splits) + SETTINGS.concurrency)


async def test_a_sparse_history_costs_a_few_requests_per_slice(
    tmp_path: Path,
) -> None:
    """Ninety days holding a handful of events: no page comes back full, so
    no slice is cut again; each slice costs a request or two, not a
    cascade of splits down to the smallest slice."""
    api = SlowAuditLog()
    api.add_at(spread(5, NOW - timedelta(days=3), NOW - timedelta(days=2)))
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    with capture_logs() as logs:
        await pipeline.drain(sink, backfill=SETTINGS, page_size=100)

    assert sorted(sink.gids) == sorted(all_gids(api))
    assert not [line for line in logs if line["event"] == "backfill_slice_split"]
    assert len(api.requests) <= 2 * SETTINGS.concurrency + 2


async def test_a_rejected_offset_in_a_slice_resumes_it_by_time(
    tmp_path: Path,
) -> None:
    """When offsets expire in the middle of a backfill, each slice resumes
    by time from the newest event it delivered (start_at, inclusive, with its
    own end_at), skipping the events of that millisecond it delivered:
    nothing is lost, nothing is repeated."""
    api = history()
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    slow = api.transport()

    async def expire_once(request: httpx.Request) -> httpx.Response:
        # In the middle of the backfill, as a request with an offset comes in
        # (so at least that request's slice must recover).
        with_offset = "offset" in request.url.params
        if with_offset and len(api.requests) >= 8 and api.generation == 0:
            api.expire_offsets()
        return await slow.handle_async_request(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(expire_once)) as http:
        await pipeline.runner(sink, http, backfill=SETTINGS, page_size=100).run()

    assert set(sink.gids) == set(all_gids(api))
    repeats = collections.Counter(sink.gids) - collections.Counter(set(sink.gids))
    recoveries = pipeline.sample("asana_forwarder_offset_recoveries_total")
    assert recoveries >= 1
    assert not repeats
    skipped = pipeline.sample(
        "asana_forwarder_sink_duplicates_skipped_total", sink="memory"
    )
    assert skipped >= recoveries
    resumed: list[dict[str, Any]] = [
        dict(params)
        for params in bounded_queries(api)
        if "offset" not in params and "start_at" in params
    ]
    assert any(
        params["start_at"] in {e["created_at"] for e in api.events}
        for params in resumed
    )


class StoppingSink(MemorySink):
    """Asks its runner to stop during its first delivery, then lets the
    other tasks run before it returns."""

    runner: SinkRunner | None = None

    async def deliver(self, batch: Batch) -> DeliveryReport:
        if self.runner is not None and not self.batches:
            self.runner.stop()
            await anyio.lowlevel.checkpoint()
        return await super().deliver(batch)


async def test_a_stop_while_delivering_before_a_recovery_ends_cleanly(
    tmp_path: Path,
) -> None:
    """An offset rejected in a slice first delivers what is pending; a stop
    arriving during that delivery ends the runner once it is delivered and
    saved, without starting the slice's reader again."""
    api = history()
    pipeline = Pipeline(api, tmp_path)
    sink = StoppingSink()
    slow = api.transport()

    async def expire_at_first_offset(request: httpx.Request) -> httpx.Response:
        if "offset" in request.url.params and api.generation == 0:
            api.expire_offsets()
        return await slow.handle_async_request(request)

    transport = httpx.MockTransport(expire_at_first_offset)
    async with httpx.AsyncClient(transport=transport) as http:
        runner = pipeline.runner(
            sink, http, backfill=SETTINGS, page_size=100, batch_max_events=10_000
        )
        sink.runner = runner
        with anyio.fail_after(10):
            await runner.run()

    assert sink.gids
    saved = pipeline.store.load("memory")
    assert saved is not None
    assert saved.delivered_total == len(sink.gids)


async def test_a_stale_offset_cut_into_a_slice_repeats_nothing(
    tmp_path: Path,
) -> None:
    """A sink back after ten days: its live cursor is cut into slices, the
    old offset (kept for the first slice) has expired, and that slice
    resumes by time from the newest event delivered, skipping the events of
    that millisecond it had delivered: nothing is lost or repeated."""
    api = SlowAuditLog()
    api.add_at(spread(300, NOW - timedelta(days=20), NOW - timedelta(days=10)))
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    await pipeline.drain(sink, backfill=BackfillSettings(concurrency=1), page_size=100)
    before = pipeline.store.load("memory")
    assert before is not None
    assert before.cursor.offset is not None

    api.add_at(
        spread(700, NOW - timedelta(days=10) + MIN_SPLIT, NOW - timedelta(hours=2))
    )
    api.expire_offsets()
    await pipeline.drain(sink, backfill=SETTINGS, page_size=100)

    assert pipeline.sample("asana_forwarder_offset_recoveries_total") >= 1
    assert sorted(sink.gids) == sorted(all_gids(api))
    assert len(sink.gids) == len(set(sink.gids))
