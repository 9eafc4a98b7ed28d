"""Small pieces: durations, backoff, Retry-After, the request budget, filters."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from forwarder.durations import format_duration, parse_duration
from forwarder.filters import EventTypeFilter
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff, parse_retry_after
from forwarder.secrets import Secret, redact
from forwarder.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 604800),
        (3, 3.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    """Operators' durations parse to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1s", "m5", True])
def test_bad_durations(text: object) -> None:
    """Anything else is refused with a hint."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    """Messages show the shortest exact unit."""
    assert [format_duration(s) for s in (15, 300, 90, 0.5)] == [
        "15s",
        "5m",
        "90s",
        "0.5s",
    ]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    """Delays double each attempt, drawn between half and all of the nominal
    value, and never exceed the maximum."""
    backoff = Backoff(initial=1, maximum=30)
    rng = random.Random(3)
    delays = [backoff.delay(attempt, rng) for attempt in range(10)]
    for attempt, delay in enumerate(delays):
        nominal = min(30, 2**attempt)
        assert nominal / 2 <= delay <= nominal


def test_retry_after_both_forms() -> None:
    """Retry-After is read as delta-seconds or as an HTTP-date."""
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Tue, 01 Dec 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.anyio
async def test_budget_paces_requests_to_the_configured_rate() -> None:
    """After the small initial burst, requests are spaced at 60/rate seconds."""
    clock = FakeClock()
    budget = RequestBudget(60, clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(25):
        await budget.acquire()

    assert clock.now == pytest.approx(20, abs=0.01)


@pytest.mark.anyio
async def test_budget_pause_holds_every_request() -> None:
    """A Retry-After pause delays the next request until it ends."""
    clock = FakeClock()
    budget = RequestBudget(600, clock=lambda: clock.now, sleep=clock.sleep)
    budget.pause_for(42)
    waited = await budget.acquire()

    assert waited == pytest.approx(42)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_event_type_filter_globs() -> None:
    """Include and exclude lists are glob patterns; exclude wins."""
    only_logins = EventTypeFilter(["user_login_*"], ["*_failed"])
    assert only_logins.accepts("user_login_succeeded")
    assert not only_logins.accepts("user_login_failed")
    assert not only_logins.accepts("task_deleted")
    assert only_logins.accepts(None)
    assert not EventTypeFilter([], []).accepts("task_deleted")
    assert not only_logins.accepts_everything


def test_event_type_filter_cache_is_bounded() -> None:
    """Made-up types past the cache's limit are still answered, not kept."""
    only_logins = EventTypeFilter(["user_login_*"], [])
    for number in range(EventTypeFilter.CACHE_LIMIT + 100):
        assert not only_logins.accepts(f"made_up_{number}")
    assert only_logins.accepts("user_login_succeeded")
    assert len(only_logins._answers) == EventTypeFilter.CACHE_LIMIT


def test_event_type_filter_knows_when_it_accepts_everything() -> None:
    """Only "*" with nothing excluded lets the pipeline skip the question."""
    assert EventTypeFilter(["*"], []).accepts_everything
    assert EventTypeFilter(["user_*", "*"], []).accepts_everything
    assert not EventTypeFilter(["*"], ["task_*"]).accepts_everything
    assert not EventTypeFilter(["*_*"], []).accepts_everything


def test_redaction_blanks_known_secrets() -> None:
    """Every resolved secret is blanked out of any text."""
    Secret("a-very-private-value")
    assert redact("header a-very-private-value!") == "header ***!"
    assert str(Secret("another-private")) == "***"


@pytest.mark.parametrize("year", [1, 5, 999, 1000, 2026, 9999])
def test_timestamps_have_four_digits_of_year_and_read_back(year: int) -> None:
    """The API's form, whatever the year: a time written is a time read."""
    moment = datetime(year, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    text = format_timestamp(moment)
    assert text == f"{year:04d}-01-02T03:04:05.678Z"
    assert parse_timestamp(text) == moment.replace(microsecond=678_000)
