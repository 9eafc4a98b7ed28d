"""Backfill: where to cut a sink's backlog into time slices read concurrently.

Read one page after another, a backlog of weeks takes hours: each request
waits a few hundred milliseconds for Asana, while the token's request budget
would allow dozens at once. So when a sink's live cursor is far behind, the
range between its position and the recent past is cut into slices, each read
with ``start_at``/``end_at`` by its own reader, and a new live cursor takes
over from the end of the last slice.

The end of the slices (the handover) stays ``late_event_margin`` before now:
Asana makes some events visible minutes after their ``created_at``, and only
an open-ended stream sees those. Older history is settled, so a bounded query
over it returns everything there will ever be.

History is rarely even (a migration day can hold more events than the month
around it), so slices are not fixed: when a reader finishes, a slice whose
last page came back full (more follow) is cut in two and the idle reader
takes the second part; where the events are crowded, the cut comes a few
pages ahead at that density rather than halfway, so that the crowd is what
gets shared. A slice not yet answered is never cut: it may be empty.
A slice already being read keeps its offset (an offset is only valid with the
query it came from); it gets a soft end instead, ``stop_at``, past which its
events are left to the new slice.

This module only computes times; the pipeline owns the cursors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# The API keeps 90 days: a stream without a start begins there.
RETENTION = timedelta(days=90)
# Below this, a slice is not worth cutting: one reader finishes it soon.
MIN_SPLIT = timedelta(minutes=1)
# A cut leaves at most this many pages' worth (at the density of the slice's
# last page) before it, and a slice with less than twice that is not cut:
# each cut costs a request or two, so slices stay at a dozen pages or more.
PAGES_BEFORE_CUT = 16


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    """How a sink's backlog is read: ``concurrency`` 1 reads it in order, one
    page after another (the default here; the configuration's is 16)."""

    concurrency: int = 1
    # A live cursor further behind than this is cut into slices.
    threshold: timedelta = timedelta(hours=1)
    # Slices end this long before now; the live stream covers the rest.
    late_event_margin: timedelta = timedelta(minutes=30)

    @property
    def enabled(self) -> bool:
        return self.concurrency > 1


def _whole_minute(moment: datetime) -> datetime:
    # Slices on whole minutes, so that sinks starting together cut the same
    # slices and share their pages through the reader's cache.
    return moment.replace(second=0, microsecond=0)


def live_slices(
    position: datetime, now: datetime, settings: BackfillSettings
) -> list[datetime] | None:
    """The boundaries ``[b0, b1, ..., handover]`` of the slices that cover a
    live cursor at ``position``, or None when it is not far enough behind.

    ``b0`` is ``position`` itself; the handover is where the new live cursor
    starts.
    """
    if not settings.enabled or now - position <= settings.threshold:
        return None
    handover = _whole_minute(now - settings.late_event_margin)
    span = handover - position
    if span < MIN_SPLIT:
        return None
    count = min(settings.concurrency, max(1, int(span / MIN_SPLIT)))
    step = span / count
    inner = [_whole_minute(position + step * i) for i in range(1, count)]
    cuts = sorted({cut for cut in inner if position < cut < handover})
    return [position, *cuts, handover]


def cut_point(
    reached: datetime, end: datetime, page_span: timedelta | None = None
) -> datetime | None:
    """Where to cut a slice that has read up to ``reached`` and ends at
    ``end``, or None when what is left is not worth sharing.

    ``page_span`` is how much time the slice's last full page covered. At
    that density, a slice with fewer than ``2 * PAGES_BEFORE_CUT`` pages left
    is not cut (each cut costs a request or two); otherwise the cut comes
    halfway, or ``PAGES_BEFORE_CUT`` pages ahead when that is sooner: where
    events are crowded, the middle may lie far past them, and the crowd is
    what needs sharing.
    """
    left = end - reached
    if left < 2 * MIN_SPLIT:
        return None
    cut = reached + left / 2
    if page_span is not None:
        if page_span > timedelta(0) and left / page_span < 2 * PAGES_BEFORE_CUT:
            return None
        cut = min(cut, reached + max(MIN_SPLIT, page_span * PAGES_BEFORE_CUT))
    # Whole seconds: a short cut is readable in logs and in the checkpoint.
    cut = cut.replace(microsecond=0)
    if not reached < cut < end:
        return None
    return cut
