"""The pipeline: for each sink, read the audit log from the sink's own
checkpoint, filter, render, batch, deliver, then move the checkpoint.

Every sink has its own ``SinkRunner`` and its own position in the log, so a
sink that is down or slow never holds the others back; it catches up later
by re-reading the API. Runners at the same position share requests and
rendering through ``PageReader``'s short page cache, so in the common case
(all sinks keeping up) each page is fetched and decoded once, and each
event rendered once per format.

The order of each unit of work is what makes delivery at-least-once:
a checkpoint is saved only after the sink reported its batch delivered, so
a crash at any moment repeats at most the batch in flight, never skips one.
Batches end on page boundaries, so each cursor of a checkpoint is a plain
offset.

A sink far behind reads its backlog in concurrent time slices (see
``backfill``): each slice has a reader task and a cursor of its own in the
checkpoint, and the runner's loop takes their pages one at a time, so a sink
sees slices interleave, each in order.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from forwarder.backfill import RETENTION, BackfillSettings, cut_point, live_slices
from forwarder.checkpoint import Checkpoint, CheckpointStore, Cursor
from forwarder.deadletter import DeadLetterFile
from forwarder.errors import OffsetRejected, SinkError, StateError
from forwarder.filters import EventTypeFilter
from forwarder.formats import EventContext, Renderer
from forwarder.health import Health
from forwarder.metrics import Metrics, SinkMetrics
from forwarder.retry import Backoff
from forwarder.sinks.base import Batch, Sink
from forwarder.source import Page, PageReader
from forwarder.timestamps import (
    epoch_seconds,
    format_timestamp,
    parse_timestamp,
    utc_now,
)

log = structlog.get_logger("forwarder.pipeline")

T = TypeVar("T")

# How often a caught-up sink saves its position although nothing was
# delivered, so that the checkpoint age stays a useful alarm.
IDLE_SAVE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What every runner shares about the stream it reads."""

    workspace_gid: str
    poll_interval: float
    start_at: str | None
    filters: str
    recovery_margin: float
    recent_limit: int = 10_000
    once: bool = False
    backfill: BackfillSettings = field(default_factory=BackfillSettings)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """One sink's choices: format, filters, batching and retry."""

    format_name: str
    renderer: Renderer
    event_filter: EventTypeFilter
    batch_max_events: int
    batch_max_wait: float
    backoff: Backoff


@dataclass(eq=False, slots=True)
class _Slice:
    """One cursor of a sink being read: a bounded backfill slice, or the
    live stream (always the last slice)."""

    # After the last page taken into the pending batch: what the checkpoint
    # holds once that batch is delivered.
    taken: Cursor
    # created_at of the newest event taken, to know how much is left.
    reached: datetime | None = None
    # Ended: its last page was taken, or it was cut short by a split.
    done: bool = False
    # A reader task is fetching for it: set when the task starts, cleared
    # when the runner takes its last arrival (so a pass that stops once no
    # slice is reading cannot miss a page still on its way).
    reading: bool = False
    # Its last page came back full: more follow, so it is worth sharing. A
    # slice not yet answered may be empty; cutting it would only add requests.
    crowded: bool = False
    # created_at span of that full page: how dense the history is here.
    page_span: timedelta | None = None


@dataclass(frozen=True, slots=True)
class _Arrival:
    """What a slice's reader hands to the runner: a page, or its offset
    rejected by the API, or (neither) word that it stopped for a slice that
    had ended; ``last`` when its reader has ended."""

    slice: _Slice
    page: Page | None = None
    rejected: OffsetRejected | None = None
    last: bool = False


class SinkRunner:
    """Reads and delivers the audit log for one sink, from its checkpoint.

    One reader task per slice fetches pages (the live stream, plus backfill
    slices while the sink is far behind) and hands them to the runner's own
    loop, which alone takes events into the pending batch, delivers it and
    saves the checkpoint; so a checkpoint never runs ahead of a delivery.
    """

    def __init__(
        self,
        sink: Sink,
        options: RunnerOptions,
        *,
        settings: StreamSettings,
        reader: PageReader,
        store: CheckpointStore,
        checkpoint: Checkpoint | None,
        metrics: Metrics,
        health: Health,
        dead_letters: DeadLetterFile,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self._options = options
        self._settings = settings
        self._margin = timedelta(seconds=settings.recovery_margin)
        self._backfill = settings.backfill
        self._reader = reader
        self._store = store
        self._metrics = metrics
        self._sink_metrics: SinkMetrics = metrics.for_sink(sink.name)
        self._health = health
        self._dead_letters = dead_letters
        self._rng = rng or random.Random()
        self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._readers: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[_Arrival] | None = None

        # Gids to skip after a recovery by time, until events pass the newest
        # one delivered before it (set by _recovered).
        self._skip: set[str] = set()
        self._skip_until = ""
        self._checkpoint = self._starting_checkpoint(checkpoint)
        if self._checkpoint.skip_until is not None and not self._skip:
            # Restarted in the middle of re-reading after a recovery.
            self._skip = {gid for _, gid in self._checkpoint.recent}
            self._skip_until = self._checkpoint.skip_until
        self._slices = [_Slice(cursor) for cursor in self._checkpoint.cursors]
        self._saved_at = time.monotonic()
        self._pending = Batch()
        self._pending_since: float | None = None
        self._newest_epoch = (
            epoch_seconds(self._checkpoint.newest_created_at)
            if self._checkpoint.newest_created_at
            else None
        )
        self._sink_metrics.lag.set_function(self._lag)
        self._sink_metrics.checkpoint_age.set_function(
            lambda: time.monotonic() - self._saved_at
        )
        self._sink_metrics.backfill_slices.set_function(
            lambda: len(self._backfilling())
        )
        self._sink_metrics.backfill_remaining.set_function(self._backfill_remaining)

    # -- state -------------------------------------------------------------

    def _starting_checkpoint(self, saved: Checkpoint | None) -> Checkpoint:
        settings = self._settings
        if saved is None:
            return Checkpoint(
                sink=self.name,
                cursors=(Cursor(start_at=settings.start_at),),
                filters=settings.filters,
            )
        if saved.filters != settings.filters:
            # Offsets are only valid with the filters they were issued for.
            log.warning(
                "api_filters_changed",
                sink=self.name,
                action="resuming by time from the last delivered event",
            )
            bounded = tuple(_by_time(cursor) for cursor in saved.cursors[:-1])
            live = self._recovered(saved, reason="api filters changed")
            return replace(live, cursors=(*bounded, live.cursor))
        return saved

    def _recovered(self, checkpoint: Checkpoint, *, reason: str) -> Checkpoint:
        """The checkpoint to resume the live stream from when its offset
        cannot be used: by time, from the start of the recovery window,
        skipping what it delivered."""
        cursor = checkpoint.cursor
        start_at = cursor.start_at
        self._skip = set()
        if checkpoint.newest_created_at is not None:
            newest = parse_timestamp(checkpoint.newest_created_at)
            margin = timedelta(seconds=self._settings.recovery_margin)
            start_at = format_timestamp(newest - margin)
            if len(checkpoint.recent) >= self._settings.recent_limit:
                # The memory of gids is full: start where it begins, so that
                # everything re-read is either remembered or new.
                start_at = max(start_at, checkpoint.recent[0][0])
            # What backfill slices cover is theirs: the live stream starts
            # where the last of them ends.
            ends = [c.ends_at for c in checkpoint.cursors[:-1] if c.ends_at]
            start_at = max([start_at, *ends])
            self._skip = {gid for _, gid in checkpoint.recent}
            self._skip_until = checkpoint.newest_created_at
        log.warning(
            "offset_recovery",
            sink=self.name,
            reason=reason,
            start_at=start_at,
            skipping=len(self._skip),
        )
        return replace(
            checkpoint.with_cursor(Cursor(start_at=start_at)),
            filters=self._settings.filters,
            skip_until=checkpoint.newest_created_at,
        )

    def _lag(self) -> float:
        if self._newest_epoch is None:
            return math.nan
        return max(0.0, time.time() - self._newest_epoch)

    @property
    def delivered_total(self) -> int:
        return self._checkpoint.delivered_total

    @property
    def _live(self) -> _Slice:
        return self._slices[-1]

    def _backfilling(self) -> list[_Slice]:
        return [s for s in self._slices[:-1] if not s.done]

    def _backfill_remaining(self) -> float:
        """Seconds of history the backfill slices still have to read."""
        total = 0.0
        for part in self._backfilling():
            position = self._position(part)
            end = part.taken.ends_at
            if position is not None and end is not None:
                total += max(0.0, (parse_timestamp(end) - position).total_seconds())
        return total

    def _cursors(self) -> tuple[Cursor, ...]:
        """The cursors to save: every slice not ended, the live stream last."""
        bounded = sorted(
            (s.taken for s in self._backfilling()),
            key=lambda c: c.start_at or "",
        )
        return (*bounded, self._live.taken)

    # -- the loop ----------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching; a delivery under way goes on (bounded by the caller)."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        if self._readers is not None:
            self._readers.cancel_scope.cancel()

    async def run(self) -> None:
        try:
            if not await self._open_sink():
                return
            # Room for a page from every reader: readers wait while the runner
            # delivers, so a sink that is down holds a bounded amount of memory.
            send, receive = anyio.create_memory_object_stream[_Arrival](
                len(self._slices) + self._backfill.concurrency
            )
            async with send, receive, anyio.create_task_group() as group:
                self._send = send
                readers = await group.start(self._host_readers)
                if self._stopping:
                    readers.cancel_scope.cancel()
                self._plan()
                for part in self._slices:
                    self._start_reader(part)
                await self._consume(receive)
                readers.cancel_scope.cancel()
            await self._finish()
        finally:
            # Closing must happen even when the grace period ran out.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.sink.aclose()

    async def _host_readers(
        self, *, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]
    ) -> None:
        """The readers' task group, in a task of its own: stop() cancels it
        without cancelling a delivery the runner has under way."""
        try:
            async with anyio.create_task_group() as readers:
                self._readers = readers
                task_status.started(readers)
                await anyio.sleep_forever()
        finally:
            # Cancelled by stop(): no reader may be started any more.
            self._readers = None

    async def _consume(self, arrivals: MemoryObjectReceiveStream[_Arrival]) -> None:
        while not self._stopping:
            if self._settings.once and not any(s.reading for s in self._slices):
                return
            arrival = None
            with anyio.move_on_after(self._batch_wait_left()):
                arrival = await self._unless_stopped(arrivals.receive)
            if self._stopping:
                return
            if arrival is None:
                # The batch waited long enough for more events.
                if not await self._flush():
                    return
            elif not await self._handle(arrival):
                return

    async def _unless_stopped(
        self, function: Callable[..., Awaitable[T]], *args: Any
    ) -> T | None:
        """Run ``function`` unless or until ``stop()`` is called."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._stopping:
                scope.cancel()
            return await function(*args)
        self._scope = None
        return None

    def _poll_delay(self) -> float:
        return self._settings.poll_interval * self._rng.uniform(0.9, 1.1)

    def _batch_wait_left(self) -> float:
        if self._pending_since is None:
            return math.inf
        waited = time.monotonic() - self._pending_since
        return max(0.0, self._options.batch_max_wait - waited)

    def _batch_due(self) -> bool:
        return (
            len(self._pending) >= self._options.batch_max_events
            or self._batch_wait_left() <= 0
        )

    async def _open_sink(self) -> bool:
        attempt = 0
        while not self._stopping:
            try:
                await self.sink.open()
                return True
            except SinkError as error:
                delay = self._options.backoff.delay(attempt, self._rng)
                attempt += 1
                self._health.sink_failing(self.name)
                log.warning(
                    "sink_open_retry",
                    sink=self.name,
                    error=str(error),
                    delay_seconds=round(delay, 3),
                )
                await self._unless_stopped(anyio.sleep, delay)
        return False

    # -- readers -------------------------------------------------------------

    def _start_reader(self, part: _Slice) -> None:
        if self._stopping or self._readers is None or part.done or part.reading:
            return
        part.reading = True
        self._readers.start_soon(self._read_slice, part, part.taken)

    async def _read_slice(self, part: _Slice, cursor: Cursor) -> None:
        """Fetch the pages of one slice in order, handing each to the runner."""
        assert self._send is not None
        send = self._send
        # Never cancelled when its slice ends: it sees the end itself, at most
        # one page late (a request cancelled in its TLS handshake would leak
        # its socket); only stop() cancels readers.
        while not part.done:
            try:
                page = await self._reader.read(cursor)
            except OffsetRejected as error:
                await send.send(_Arrival(part, rejected=error, last=True))
                return
            if page.next_offset is not None:
                cursor = replace(cursor, offset=page.next_offset)
            # An empty page ends a slice of the past; the live stream polls
            # again, except in a single pass. A page reaching the slice's end
            # (which a cut may have moved) is its last: what follows is the
            # next slice's.
            last = not page.events and (part.taken.bounded or self._settings.once)
            last = last or _reaches(page.events, part.taken.ends_at)
            await send.send(_Arrival(part, page, last=last))
            if last:
                return
            if not page.events:
                await anyio.sleep(self._poll_delay())
        # Ended by the runner while this page was on its way.
        await send.send(_Arrival(part, last=True))

    async def _handle(self, arrival: _Arrival) -> bool:
        """Take one arrival; False when stopped before its work was done."""
        part = arrival.slice
        if arrival.last:
            part.reading = False
        if part.done:
            # Fetched before the slice was cut short: the next slice has these.
            return True
        if arrival.rejected is not None:
            # What was taken from the slice before is valid: deliver it, then
            # resume the slice by time.
            if self._pending and not await self._flush():
                return False
            self._recover(part, arrival.rejected)
            self._start_reader(part)
            return True
        page = arrival.page
        assert page is not None
        is_live = part is self._live
        part.crowded = len(page.events) >= self._reader.page_size
        if part.crowded:
            part.page_span = _span(page.events)
        ended = self._take(part, page, is_live)
        if ended or (not page.events and part.taken.bounded):
            part.done = True
            ended = True
        caught_up = is_live and not page.events
        flush_now = self._pending and (caught_up or self._batch_due())
        if flush_now and not await self._flush():
            return False
        if not self._pending and (caught_up or ended):
            await self._save_idle_position()
        self._plan()
        return True

    def _recover(self, part: _Slice, error: OffsetRejected) -> None:
        self._metrics.offset_recoveries.inc()
        if part is self._live:
            self._checkpoint = self._recovered(
                replace(self._checkpoint, cursors=self._cursors()),
                reason=f"offset rejected: {error}",
            )
            part.taken = self._checkpoint.cursor
            return
        part.taken = _by_time(part.taken)
        log.warning(
            "offset_recovery",
            sink=self.name,
            reason=f"offset rejected: {error}",
            start_at=part.taken.start_at,
            end_at=part.taken.end_at,
        )

    # -- backfill --------------------------------------------------------------

    def _position(self, part: _Slice) -> datetime | None:
        """How far a slice has got: its newest event taken, else where it
        starts; None when that is unknown."""
        cursor = part.taken
        if part.reached is not None:
            if cursor.bounded and cursor.start_at is not None:
                # Never before the slice's start, whatever the API sent.
                return max(part.reached, parse_timestamp(cursor.start_at))
            return part.reached
        if part is self._live and cursor.offset is not None:
            newest = self._checkpoint.newest_created_at
            return parse_timestamp(newest) if newest else None
        if cursor.start_at is not None:
            return parse_timestamp(cursor.start_at)
        # Reading from the oldest event: the API keeps RETENTION.
        return utc_now() - RETENTION

    def _plan(self) -> None:
        """Cut the live stream into backfill slices when it is far behind, and
        cut the slice with most left when a backfill reader is idle."""
        backfill = self._backfill
        if not backfill.enabled or self._stopping:
            return
        now = utc_now()
        active = self._backfilling()
        # Not while re-reading after a recovery: skipping follows the live
        # stream's order.
        if not active and not self._skip:
            position = self._position(self._live)
            if position is not None:
                cuts = live_slices(position, now, backfill)
                if cuts is not None:
                    self._cut_live(cuts)
                    active = self._backfilling()
        while 0 < len(active) < backfill.concurrency:
            # Of the slices known to hold more than a page, the one with the
            # most time left to read.
            widest: tuple[timedelta, _Slice, datetime, str] | None = None
            for part in active:
                end = part.taken.ends_at
                position = self._position(part)
                if end is None or position is None or not part.crowded:
                    continue
                ends = parse_timestamp(end)
                left = ends - position
                cut = cut_point(position, ends, part.page_span)
                if cut is not None and (widest is None or left > widest[0]):
                    widest = (left, part, cut, end)
            if widest is None:
                return
            _, part, cut, end = widest
            cut_at = format_timestamp(cut)
            part.taken = replace(part.taken, stop_at=cut_at)
            # Once per page: its half is cut again only if its next page is
            # full too, and the new slice only once it has shown its own.
            part.crowded = False
            fresh = _Slice(Cursor(start_at=cut_at, end_at=end))
            self._slices.insert(-1, fresh)
            self._start_reader(fresh)
            active.append(fresh)
            log.debug("backfill_slice_split", sink=self.name, at=cut_at, end_at=end)

    def _cut_live(self, cuts: list[datetime]) -> None:
        old = self._live
        cursor = old.taken
        marks = [format_timestamp(moment) for moment in cuts]
        if cursor.offset is not None:
            # Its offset stays valid only with its own query: stop it softly.
            # Should the offset be refused, the slice resumes by time from
            # the newest event delivered, skipping those of that millisecond.
            old.taken = replace(
                cursor,
                start_at=marks[0],
                stop_at=marks[1],
                delivered_at_start=self._delivered_since(cuts[0]),
            )
        else:
            old.taken = replace(cursor, end_at=marks[1])
        slices = [
            _Slice(Cursor(start_at=start, end_at=end))
            for start, end in itertools.pairwise(marks[1:])
        ]
        live = _Slice(Cursor(start_at=marks[-1]))
        self._slices.extend([*slices, live])
        for part in [*slices, live]:
            self._start_reader(part)
        log.info(
            "backfill_started",
            sink=self.name,
            start_at=marks[0],
            handover_at=marks[-1],
            slices=len(marks) - 1,
            concurrency=self._backfill.concurrency,
        )

    def _delivered_since(self, moment: datetime) -> tuple[str, ...]:
        """Gids of the remembered deliveries created at ``moment`` or later."""
        since = []
        for created_at, gid in self._checkpoint.recent:
            with contextlib.suppress(ValueError):
                if parse_timestamp(created_at) >= moment:
                    since.append(gid)
        return tuple(since)

    # -- one page ------------------------------------------------------------

    def _take(self, part: _Slice, page: Page, is_live: bool) -> bool:
        """Add the page's events for this sink to the pending batch; True when
        the page reached the slice's soft end (the slice is over)."""
        events = page.events
        count = len(events)
        ends_at = part.taken.ends_at
        if ends_at is not None and events:
            # Events from the end on belong to the next slice (end_at is
            # exclusive; an offset read past a soft stop_at returns them).
            count = _before(events, ends_at)
        previous = part.taken
        cursor = previous
        if page.next_offset is not None:
            cursor = replace(cursor, offset=page.next_offset)
        newest = _newest_time(events, count)
        if newest is not None and (part.reached is None or newest > part.reached):
            part.reached = newest
            if cursor.bounded and (
                cursor.start_at is None or newest > parse_timestamp(cursor.start_at)
            ):
                # Where to resume by time if the offset is ever refused.
                cursor = replace(cursor, start_at=format_timestamp(newest))
        if cursor.bounded and cursor.start_at is not None and count:
            cursor = _with_delivered_at_start(cursor, previous, events, count)
        part.taken = cursor
        if count:
            self._take_events(
                page, count, is_live, frozenset(previous.delivered_at_start)
            )
        return count < len(events)

    def _take_events(
        self, page: Page, count: int, is_live: bool, already: frozenset[str]
    ) -> None:
        """Take the first ``count`` events of ``page``, except those whose gid
        is in ``already`` (delivered from this slice before it resumed by
        time)."""
        rendered = page.rendered.setdefault(
            self._options.format_name, [None] * len(page.events)
        )
        context = EventContext(self._settings.workspace_gid, page.received_at)
        pending = self._pending
        event_filter = self._options.event_filter
        accepts = None if event_filter.accepts_everything else event_filter.accepts
        renderer = self._options.renderer
        events = page.events
        set_aside: list[tuple[Any, str]] = []
        filtered = 0
        skipped = 0
        for index in range(count):
            event = events[index]
            if not isinstance(event, dict):
                set_aside.append((event, "not a JSON object"))
                continue
            if already and event.get("gid") in already:
                skipped += 1
                continue
            if self._skip and self._already_delivered(event, is_live):
                skipped += 1
                continue
            if accepts is not None and not accepts(event.get("event_type")):
                filtered += 1
                continue
            payload = rendered[index]
            if payload is None:
                try:
                    payload = renderer(event, context)
                except (TypeError, ValueError) as error:
                    set_aside.append((event, f"cannot render: {error}"))
                    continue
                rendered[index] = payload
            pending.events.append(event)
            pending.payloads.append(payload)
        if pending and self._pending_since is None:
            self._pending_since = time.monotonic()
        self._count_page(filtered, skipped)
        self._set_aside(set_aside)
        self._sink_metrics.pending.set(len(pending))

    def _already_delivered(self, event: dict[str, Any], is_live: bool) -> bool:
        created_at = event.get("created_at")
        if isinstance(created_at, str) and created_at > self._skip_until:
            if is_live:
                # The live stream passed the newest event delivered before
                # the recovery: all it reads from now on is new.
                self._skip = set()
            return False
        gid = event.get("gid")
        return isinstance(gid, str) and gid in self._skip

    def _count_page(self, filtered: int, skipped: int) -> None:
        if filtered:
            self._sink_metrics.filtered.inc(filtered)
        if skipped:
            self._sink_metrics.duplicates_skipped.inc(skipped)

    def _set_aside(self, items: list[tuple[Any, str]]) -> None:
        if not items:
            return
        self._dead_letters.write(items)
        self._sink_metrics.dead_lettered.inc(len(items))
        log.warning(
            "events_dead_lettered",
            sink=self.name,
            count=len(items),
            reason=items[0][1],
            path=str(self._dead_letters.path),
        )

    # -- delivery and checkpoints ----------------------------------------------

    async def _flush(self) -> bool:
        """Deliver the pending batch, retrying until it is delivered; then save
        the checkpoint. False when stopped before the batch was delivered."""
        batch = self._pending
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                report = await self.sink.deliver(batch)
                break
            except SinkError as error:
                self._sink_metrics.failed.inc()
                self._health.sink_failing(self.name)
                if self._stopping:
                    log.warning(
                        "batch_abandoned",
                        sink=self.name,
                        events=len(batch),
                        error=str(error),
                    )
                    return False
                delay = self._options.backoff.delay(attempt, self._rng)
                if error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                attempt += 1
                self._sink_metrics.retried.inc()
                log.warning(
                    "sink_delivery_retry",
                    sink=self.name,
                    events=len(batch),
                    error=str(error),
                    delay_seconds=round(delay, 3),
                    attempt=attempt,
                )
                await self._unless_stopped(anyio.sleep, delay)
        self._sink_metrics.delivery_seconds.observe(time.monotonic() - started)
        rejected = {index for index, _ in report.rejected}
        if report.rejected:
            self._set_aside(
                [(batch.events[i], reason) for i, reason in report.rejected]
            )
        delivered = len(batch) - len(rejected)
        self._health.sink_delivered(self.name)
        self._sink_metrics.delivered.inc(delivered)
        self._sink_metrics.batches.inc()
        self._pending = Batch()
        self._pending_since = None
        self._sink_metrics.pending.set(0)
        log.debug("batch_delivered", sink=self.name, events=delivered)
        return await self._save(self._advanced(batch, delivered))

    def _usable_time(self, created_at: object) -> bool:
        """Whether ``created_at`` can serve as the newest delivered time: one
        that cannot be parsed, or overflows once the margin is taken off,
        would break every later recovery."""
        if not isinstance(created_at, str):
            return False
        try:
            parse_timestamp(created_at) - self._margin
        except (ValueError, OverflowError):
            return False
        return True

    def _advanced(self, batch: Batch, delivered: int) -> Checkpoint:
        """The checkpoint after ``batch``, of which ``delivered`` events were
        delivered (the rest set aside): the cursor past its last page, the
        newest event time, and the recovery window's gids."""
        previous = self._checkpoint
        newest = previous.newest_created_at
        recent = previous.recent
        # Times compare as the API writes them (a fixed-width UTC form); only
        # the times kept are parsed to make sure they are usable, not every
        # event's: the newest, and those within the recovery window.
        pairs = [
            (created_at, gid)
            for event in batch.events
            if isinstance(gid := event.get("gid"), str)
            and isinstance(created_at := event.get("created_at"), str)
        ]
        batch_newest = self._newest_usable(pairs)
        if batch_newest is not None:
            if newest is None or batch_newest > newest:
                newest = batch_newest
            cutoff = format_timestamp(parse_timestamp(newest) - self._margin)
            kept = [
                pair
                for pair in pairs
                if pair[0] >= cutoff and self._usable_time(pair[0])
            ]
            recent = tuple(
                pair for pair in (*previous.recent, *kept) if pair[0] >= cutoff
            )[-self._settings.recent_limit :]
            self._newest_epoch = epoch_seconds(newest)
        return replace(
            self._at_cursor(previous),
            newest_created_at=newest,
            recent=recent,
            delivered_total=previous.delivered_total + delivered,
        )

    def _newest_usable(self, pairs: list[tuple[str, str]]) -> str | None:
        """The newest usable time among ``pairs``: nearly always the newest
        string, unless a malformed time sorts after it."""
        if not pairs:
            return None
        newest = max(created_at for created_at, _ in pairs)
        if self._usable_time(newest):
            return newest
        for created_at in sorted({c for c, _ in pairs}, reverse=True):
            if self._usable_time(created_at):
                return created_at
        return None

    def _at_cursor(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` moved to the slices' cursors (called with nothing
        pending, so every page taken is delivered), with the skip phase of a
        recovery still under way, stamped now."""
        return replace(
            checkpoint,
            cursors=self._cursors(),
            skip_until=self._skip_until if self._skip else None,
            updated_at=format_timestamp(utc_now()),
        )

    async def _save(self, checkpoint: Checkpoint) -> bool:
        """Save durably, retrying while the state directory refuses: events
        are only ever reported delivered once their checkpoint is on disk.
        False when stopped before it could be saved."""
        attempt = 0
        while True:
            try:
                await anyio.to_thread.run_sync(self._store.save, checkpoint)
                break
            except StateError as error:
                delay = self._options.backoff.delay(attempt, self._rng)
                attempt += 1
                self._health.sink_failing(self.name)
                log.error(
                    "checkpoint_save_failed",
                    sink=self.name,
                    error=str(error),
                    delay_seconds=round(delay, 3),
                    consequence="delivery paused until the checkpoint can be saved",
                )
                if self._stopping:
                    return False
                await self._unless_stopped(anyio.sleep, delay)
        self._checkpoint = checkpoint
        self._saved_at = time.monotonic()
        # Ended slices are out of the saved checkpoint: forget them.
        self._slices = [s for s in self._slices if not s.done or s is self._live]
        return True

    async def _save_idle_position(self) -> None:
        moved = self._cursors() != self._checkpoint.cursors
        if moved or time.monotonic() - self._saved_at >= IDLE_SAVE_SECONDS:
            await self._save(self._at_cursor(self._checkpoint))

    async def _finish(self) -> None:
        """On stop: one attempt to deliver what is pending, then the checkpoint."""
        if self._pending:
            await self._flush()
        elif self._cursors() != self._checkpoint.cursors:
            await self._save_idle_position()
        log.info(
            "sink_stopped",
            sink=self.name,
            delivered_total=self._checkpoint.delivered_total,
        )


def _by_time(cursor: Cursor) -> Cursor:
    """A bounded slice's cursor without its offset: read again by time from
    the newest event delivered from it (inclusive: the events of that very
    millisecond come again, and those it lists as delivered are skipped)."""
    return Cursor(
        start_at=cursor.start_at,
        end_at=cursor.ends_at,
        delivered_at_start=cursor.delivered_at_start,
    )


def _with_delivered_at_start(
    cursor: Cursor, previous: Cursor, events: list[Any], count: int
) -> Cursor:
    """``cursor`` listing the gids, among the first ``count`` of ``events``,
    that reading by time from its ``start_at`` would return again: those
    created at or after it (the newest, in the same millisecond), added to
    the list ``previous`` kept if the start has not moved."""
    assert cursor.start_at is not None
    start = parse_timestamp(cursor.start_at)
    again: list[str] = []
    for index in range(count - 1, -1, -1):
        event = events[index]
        moment = _created(event)
        if moment is not None and moment < start:
            break
        gid = event.get("gid") if isinstance(event, dict) else None
        if moment is not None and isinstance(gid, str):
            again.append(gid)
    kept = previous.delivered_at_start if cursor.start_at == previous.start_at else ()
    return replace(cursor, delivered_at_start=tuple(dict.fromkeys((*kept, *again))))


def _created(event: Any) -> datetime | None:
    created_at = event.get("created_at") if isinstance(event, dict) else None
    if not isinstance(created_at, str):
        return None
    try:
        return parse_timestamp(created_at)
    except ValueError:
        return None


def _newest_time(events: list[Any], count: int) -> datetime | None:
    """created_at of the newest of the first ``count`` events (pages are in
    created_at order), skipping events without a usable one."""
    for index in range(count - 1, -1, -1):
        moment = _created(events[index])
        if moment is not None:
            return moment
    return None


def _reaches(events: list[Any], end: str | None) -> bool:
    """Whether the last of ``events`` was created at ``end`` or later."""
    if end is None or not events:
        return False
    last = _created(events[-1])
    return last is not None and last >= parse_timestamp(end)


def _span(events: list[Any]) -> timedelta | None:
    """created_at of the last event minus that of the first, when both can
    be read."""
    first, last = _created(events[0]), _created(events[-1])
    if first is None or last is None or last < first:
        return None
    return last - first


def _before(events: list[Any], end: str) -> int:
    """How many of ``events`` come before ``end``; an event without a usable
    created_at goes with its neighbours."""
    stop = parse_timestamp(end)
    last = _created(events[-1])
    if last is not None and last < stop:
        return len(events)
    for index, event in enumerate(events):
        moment = _created(event)
        if moment is not None and moment >= stop:
            return index
    return len(events)
