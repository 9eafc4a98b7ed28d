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
Batches end on page boundaries, so a checkpoint is always a plain offset.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import structlog

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


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """One sink's choices: format, filters, batching and retry."""

    format_name: str
    renderer: Renderer
    event_filter: EventTypeFilter
    batch_max_events: int
    batch_max_wait: float
    backoff: Backoff


class SinkRunner:
    """Reads and delivers the audit log for one sink, from its checkpoint."""

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
        self._reader = reader
        self._store = store
        self._metrics = metrics
        self._sink_metrics: SinkMetrics = metrics.for_sink(sink.name)
        self._health = health
        self._dead_letters = dead_letters
        self._rng = rng or random.Random()
        self._stopping = False
        self._scope: anyio.CancelScope | None = None

        # Gids to skip after a recovery by time, until events pass the newest
        # one delivered before it (set by _recovered).
        self._skip: set[str] = set()
        self._skip_until = ""
        self._checkpoint = self._starting_checkpoint(checkpoint)
        if self._checkpoint.skip_until is not None and not self._skip:
            # Restarted in the middle of re-reading after a recovery.
            self._skip = {gid for _, gid in self._checkpoint.recent}
            self._skip_until = self._checkpoint.skip_until
        self._cursor = self._checkpoint.cursor
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
            return self._recovered(saved, reason="api filters changed")
        return saved

    def _recovered(self, checkpoint: Checkpoint, *, reason: str) -> Checkpoint:
        """The checkpoint to resume from when an offset cannot be used: by time,
        from the start of the recovery window, skipping what it delivered."""
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
            checkpoint,
            cursors=(Cursor(start_at=start_at, end_at=cursor.end_at),),
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

    # -- the loop ----------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching; a delivery under way goes on (bounded by the caller)."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        try:
            if not await self._open_sink():
                return
            while not self._stopping:
                page = await self._unless_stopped(self._read)
                if page is None:
                    break
                self._take(page)
                caught_up = not page.events
                flush_now = self._pending and (caught_up or self._batch_due())
                if flush_now and not await self._flush():
                    break
                if caught_up:
                    await self._save_idle_position()
                    if self._settings.once:
                        break
                    await self._unless_stopped(anyio.sleep, self._poll_delay())
            await self._finish()
        finally:
            # Closing must happen even when the grace period ran out.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.sink.aclose()

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

    def _batch_due(self) -> bool:
        if len(self._pending) >= self._options.batch_max_events:
            return True
        return (
            self._pending_since is not None
            and time.monotonic() - self._pending_since >= self._options.batch_max_wait
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

    async def _read(self) -> Page:
        while True:
            try:
                return await self._reader.read(self._cursor)
            except OffsetRejected as error:
                self._metrics.offset_recoveries.inc()
                # What was fetched but not delivered is re-read by time.
                self._pending = Batch()
                self._pending_since = None
                self._sink_metrics.pending.set(0)
                self._checkpoint = self._recovered(
                    self._checkpoint, reason=f"offset rejected: {error}"
                )
                self._cursor = self._checkpoint.cursor

    # -- one page ------------------------------------------------------------

    def _take(self, page: Page) -> None:
        """Add the page's events for this sink to the pending batch."""
        if page.next_offset is not None:
            self._cursor = replace(self._cursor, offset=page.next_offset)
        if not page.events:
            return
        rendered = page.rendered.setdefault(
            self._options.format_name, [None] * len(page.events)
        )
        context = EventContext(self._settings.workspace_gid, page.received_at)
        pending = self._pending
        accepts = self._options.event_filter.accepts
        set_aside: list[tuple[Any, str]] = []
        filtered = 0
        skipped = 0
        for index, event in enumerate(page.events):
            if not isinstance(event, dict):
                set_aside.append((event, "not a JSON object"))
                continue
            if self._skip and self._already_delivered(event):
                skipped += 1
                continue
            if not accepts(event.get("event_type")):
                filtered += 1
                continue
            payload = rendered[index]
            if payload is None:
                try:
                    payload = self._options.renderer(event, context)
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

    def _already_delivered(self, event: dict[str, Any]) -> bool:
        created_at = event.get("created_at")
        if isinstance(created_at, str) and created_at > self._skip_until:
            # Past the newest event delivered before the recovery: all new.
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
            parse_timestamp(created_at) - timedelta(
                seconds=self._settings.recovery_margin
            )
        except (ValueError, OverflowError):
            return False
        return True

    def _advanced(self, batch: Batch, delivered: int) -> Checkpoint:
        """The checkpoint after ``batch``, of which ``delivered`` events were
        delivered (the rest set aside): the cursor past its last page, the
        newest event time, and the recovery window's gids."""
        previous = self._checkpoint
        pairs = [
            (event["created_at"], event["gid"])
            for event in batch.events
            if isinstance(event.get("gid"), str)
            and self._usable_time(event.get("created_at"))
        ]
        newest = previous.newest_created_at
        recent = previous.recent
        if pairs:
            batch_newest = max(created_at for created_at, _ in pairs)
            if newest is None or batch_newest > newest:
                newest = batch_newest
            assert newest is not None
            cutoff = format_timestamp(
                parse_timestamp(newest)
                - timedelta(seconds=self._settings.recovery_margin)
            )
            recent = tuple(
                pair for pair in (*previous.recent, *pairs) if pair[0] >= cutoff
            )[-self._settings.recent_limit :]
            self._newest_epoch = epoch_seconds(newest)
        return replace(
            self._at_cursor(previous),
            newest_created_at=newest,
            recent=recent,
            delivered_total=previous.delivered_total + delivered,
        )

    def _at_cursor(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` moved to the current cursor, with the skip phase of
        a recovery still under way, stamped now."""
        return replace(
            checkpoint.with_cursor(self._cursor),
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
        return True

    async def _save_idle_position(self) -> None:
        moved = self._cursor != self._checkpoint.cursor
        if moved or time.monotonic() - self._saved_at >= IDLE_SAVE_SECONDS:
            await self._save(self._at_cursor(self._checkpoint))

    async def _finish(self) -> None:
        """On stop: one attempt to deliver what is pending, then the checkpoint."""
        if self._pending:
            await self._flush()
        elif self._cursor != self._checkpoint.cursor:
            await self._save_idle_position()
        log.info(
            "sink_stopped",
            sink=self.name,
            delivered_total=self._checkpoint.delivered_total,
        )
