"""The pipeline: per-sink reading, delivery, checkpoints and recovery."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from forwarder.backfill import BackfillSettings
from forwarder.checkpoint import Checkpoint, Cursor, FileCheckpointStore
from forwarder.deadletter import DeadLetterFile
from forwarder.filters import EventTypeFilter
from forwarder.formats import RENDERERS
from forwarder.health import Health
from forwarder.metrics import Metrics
from forwarder.pipeline import RunnerOptions, SinkRunner, StreamSettings
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff
from forwarder.secrets import Secret
from forwarder.source import AuditLogClient, PageReader
from tests.fake_api import FakeAuditLog, make_event
from tests.memory_sink import MemorySink

pytestmark = pytest.mark.anyio


class Pipeline:
    """Runners over the fake API with a file checkpoint store in tmp_path."""

    def __init__(self, api: FakeAuditLog, state: Path) -> None:
        self.api = api
        self.state = state
        self.metrics = Metrics(CollectorRegistry())
        self.health = Health(poll_interval=0.01)
        self.store = FileCheckpointStore(state)
        self.store.prepare()

    def runner(
        self,
        sink: MemorySink,
        http: httpx.AsyncClient,
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        batch_max_events: int = 50,
        recovery_margin: float = 300.0,
        once: bool = True,
        page_size: int = 20,
        backfill: BackfillSettings | None = None,
        requests_per_minute: int = 1500,
    ) -> SinkRunner:
        client = AuditLogClient(
            http,
            base_url="https://app.asana.test/api/1.0",
            workspace_gid="1111",
            token=Secret("pipeline-token"),
            page_size=page_size,
        )
        reader = PageReader(
            client,
            RequestBudget(requests_per_minute),
            self.metrics,
            self.health,
            backoff=Backoff(0.001, 0.002),
        )
        return SinkRunner(
            sink,
            RunnerOptions(
                format_name="raw",
                renderer=RENDERERS["raw"],
                event_filter=EventTypeFilter(include or ["*"], exclude or []),
                batch_max_events=batch_max_events,
                batch_max_wait=60,
                backoff=Backoff(0.001, 0.002),
            ),
            settings=StreamSettings(
                workspace_gid="1111",
                poll_interval=0.001,
                start_at=None,
                filters="f",
                recovery_margin=recovery_margin,
                once=once,
                backfill=backfill or BackfillSettings(),
            ),
            reader=reader,
            store=self.store,
            checkpoint=self.store.load(sink.name),
            metrics=self.metrics,
            health=self.health,
            dead_letters=DeadLetterFile(self.state, sink.name),
            rng=random.Random(1),
        )

    async def drain(self, *sinks: MemorySink, **options: Any) -> None:
        """Run each sink's runner until caught up (once mode)."""
        async with (
            httpx.AsyncClient(transport=self.api.transport()) as http,
            anyio.create_task_group() as group,
        ):
            for sink in sinks:
                group.start_soon(self.runner(sink, http, **options).run)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def gids(events: list[Any]) -> list[str]:
    return [event["gid"] for event in events]


async def test_every_event_reaches_every_sink_with_a_checkpoint(tmp_path: Path) -> None:
    """A backlog is drained into two sinks; each checkpoint records the offset
    after the last page and the newest delivered created_at."""
    api = FakeAuditLog()
    api.add(135)
    pipeline = Pipeline(api, tmp_path)
    first, second = MemorySink("first"), MemorySink("second")
    await pipeline.drain(first, second)

    assert first.gids == gids(api.events)
    assert second.gids == gids(api.events)
    checkpoint = pipeline.store.load("first")
    assert checkpoint is not None
    assert checkpoint.cursor.offset == "p:135:0"
    assert checkpoint.newest_created_at == api.events[-1]["created_at"]
    assert checkpoint.delivered_total == 135
    assert (
        pipeline.sample("asana_forwarder_sink_events_delivered_total", sink="second")
        == 135
    )


async def test_raw_format_passes_events_through_untouched(tmp_path: Path) -> None:
    """raw output holds the API's event exactly, unknown fields, unicode and
    control characters included, inside the documented envelope."""
    api = FakeAuditLog()
    odd = make_event(0)
    odd["future_field"] = {"nested": [1, 2.5, None, True]}
    odd["details"] = {"new_value": '\u0000\u2028 "quoted" \U0001f600 \x1b[31m'}
    api.events.append(odd)
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    await pipeline.drain(sink)

    document = sink.documents[0]
    assert document["event"] == odd
    assert document["workspace_gid"] == "1111"
    assert set(document) == {
        "workspace_gid",
        "forwarder_version",
        "received_at",
        "event",
    }


async def test_restart_resumes_from_the_checkpoint_without_duplicates(
    tmp_path: Path,
) -> None:
    """A second run starts where the first stopped and sees only new events."""
    api = FakeAuditLog()
    api.add(30)
    pipeline = Pipeline(api, tmp_path)
    before = MemorySink()
    await pipeline.drain(before)
    api.add(12)
    after = MemorySink()
    await pipeline.drain(after)

    assert before.gids == gids(api.events[:30])
    assert after.gids == gids(api.events[30:])


async def test_expired_offset_recovers_by_time_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    """When the API rejects the saved offset, reading restarts from the newest
    delivered time minus the margin, and already delivered gids are skipped."""
    api = FakeAuditLog()
    api.add(40)
    pipeline = Pipeline(api, tmp_path)
    first = MemorySink()
    await pipeline.drain(first)
    api.add(25)
    api.expire_offsets()
    second = MemorySink()
    with capture_logs() as logs:
        await pipeline.drain(second, recovery_margin=20)

    assert first.gids + second.gids == gids(api.events)
    assert pipeline.sample("asana_forwarder_offset_recoveries_total") == 1
    assert (
        pipeline.sample("asana_forwarder_sink_duplicates_skipped_total", sink="memory")
        == 21
    )
    recovery = [line for line in logs if line["event"] == "offset_recovery"]
    assert recovery[0]["log_level"] == "warning"
    resumed = [
        r.url.params["start_at"] for r in api.requests if "start_at" in r.url.params
    ]
    assert resumed == ["2026-11-01T00:00:19.000Z"]


async def test_a_failing_sink_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """One sink fails repeatedly; the other is fully delivered meanwhile, and
    the failing one catches up from its own checkpoint once it recovers."""
    api = FakeAuditLog()
    api.add(60)
    pipeline = Pipeline(api, tmp_path)
    healthy, failing = MemorySink("healthy"), MemorySink("failing")
    failing.failures = 10**9
    delivered_while_failing: list[int] = []

    async with httpx.AsyncClient(transport=api.transport()) as http:
        failing_runner = pipeline.runner(failing, http, once=False)
        async with anyio.create_task_group() as group:
            group.start_soon(failing_runner.run)
            await pipeline.runner(healthy, http).run()
            delivered_while_failing.append(len(failing.documents))
            failing.failures = 0
            with anyio.fail_after(10):
                await failing.wait_until(lambda: len(failing.documents) >= 60)
            failing_runner.stop()

    assert healthy.gids == gids(api.events)
    assert delivered_while_failing == [0]
    assert failing.gids == gids(api.events)
    assert (
        pipeline.sample("asana_forwarder_sink_delivery_retries_total", sink="failing")
        >= 1
    )


async def test_filters_choose_events_per_sink(tmp_path: Path) -> None:
    """include and exclude glob patterns apply to each sink on its own."""
    api = FakeAuditLog()
    api.add(3, event_type="user_login_succeeded")
    api.add(3, event_type="user_login_failed")
    api.add(3, event_type="task_deleted")
    pipeline = Pipeline(api, tmp_path)
    logins, no_failures = MemorySink("logins"), MemorySink("no_failures")
    async with httpx.AsyncClient(transport=api.transport()) as http:
        await pipeline.runner(logins, http, include=["user_login_*"]).run()
        await pipeline.runner(no_failures, http, exclude=["*_failed"]).run()

    assert [d["event"]["event_type"] for d in logins.documents] == (
        ["user_login_succeeded"] * 3 + ["user_login_failed"] * 3
    )
    assert len(no_failures.documents) == 6
    assert (
        pipeline.sample("asana_forwarder_sink_events_filtered_total", sink="logins")
        == 3
    )


async def test_malformed_events_are_set_aside_not_dropped(tmp_path: Path) -> None:
    """Entries that are not JSON objects go to the dead-letter file and are
    counted; the events around them are delivered."""
    api = FakeAuditLog()
    api.add(2)
    api.events.append("not an event")
    api.events.append(None)
    api.events.append({"event_type": "no gid or time"})
    api.add(2)
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    await pipeline.drain(sink)

    assert len(sink.documents) == 5
    assert sink.documents[2]["event"] == {"event_type": "no gid or time"}
    dead = [
        orjson.loads(line)
        for line in (tmp_path / "dead-letter" / "memory.jsonl")
        .read_bytes()
        .splitlines()
    ]
    assert [d["event"] for d in dead] == ["not an event", None]
    assert dead[0]["reason"] == "not a JSON object"
    assert pipeline.sample("asana_forwarder_malformed_events_total") == 2
    assert (
        pipeline.sample(
            "asana_forwarder_sink_events_dead_lettered_total", sink="memory"
        )
        == 2
    )


async def test_events_a_receiver_refuses_are_dead_lettered(tmp_path: Path) -> None:
    """A sink's per-event rejections are set aside; the batch still counts as
    delivered and the stream moves on."""
    api = FakeAuditLog()
    api.add(10)
    poison = api.events[4]["gid"]
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    sink.reject = lambda event: "too large" if event["gid"] == poison else None
    await pipeline.drain(sink)

    assert poison not in sink.gids
    assert len(sink.gids) == 9
    dead = (tmp_path / "dead-letter" / "memory.jsonl").read_bytes()
    assert poison.encode() in dead
    assert b"too large" in dead
    checkpoint = pipeline.store.load("memory")
    assert checkpoint is not None
    assert checkpoint.delivered_total == 9


async def test_checkpoint_moves_only_after_delivery(tmp_path: Path) -> None:
    """While a batch is being delivered, the saved checkpoint still points
    before it: a crash then repeats the batch instead of losing it."""
    api = FakeAuditLog()
    api.add(20)
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    seen: list[Checkpoint | None] = []
    sink.on_deliver = lambda: seen.append(pipeline.store.load("memory"))
    await pipeline.drain(sink, batch_max_events=10, page_size=10)

    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].cursor == Cursor(offset="p:10:0")
    assert seen[1].delivered_total == 10


async def test_stop_abandons_a_batch_that_cannot_be_delivered(tmp_path: Path) -> None:
    """Stopping while the sink is down leaves the checkpoint before the batch."""
    api = FakeAuditLog()
    api.add(5)
    pipeline = Pipeline(api, tmp_path)
    sink = MemorySink()
    sink.failures = 10**9
    async with httpx.AsyncClient(transport=api.transport()) as http:
        runner = pipeline.runner(sink, http, once=False)
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            with anyio.fail_after(5):
                await sink.wait_until(lambda: sink.attempts >= 3)
            runner.stop()

    assert sink.documents == []
    assert pipeline.store.load("memory") is None
    assert sink.closed


async def test_changed_api_filters_resume_by_time(tmp_path: Path) -> None:
    """Offsets belong to their filters: a checkpoint saved under other filters
    resumes by time, skipping what was delivered."""
    api = FakeAuditLog()
    api.add(10)
    pipeline = Pipeline(api, tmp_path)
    first = MemorySink()
    await pipeline.drain(first)
    saved = pipeline.store.load("memory")
    assert saved is not None
    pipeline.store.save(Checkpoint(**{**_fields(saved), "filters": "other"}))
    api.add(5)
    second = MemorySink()
    await pipeline.drain(second)

    assert second.gids == gids(api.events[10:])
    assert "offset" not in str(api.requests[-2].url.params)


def _fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {name: getattr(checkpoint, name) for name in checkpoint.__slots__}


async def test_a_restart_during_recovery_keeps_skipping(tmp_path: Path) -> None:
    """Stopped while re-reading already delivered events after a recovery,
    the next run goes on skipping them: the skip phase is in the checkpoint."""
    api = FakeAuditLog()
    api.add(40)
    pipeline = Pipeline(api, tmp_path)
    first = MemorySink()
    await pipeline.drain(first, page_size=5)
    api.add(10)
    api.expire_offsets()
    interrupted = MemorySink()
    async with httpx.AsyncClient(transport=api.transport()) as http:
        runner = pipeline.runner(
            interrupted, http, once=False, page_size=5, recovery_margin=30
        )

        def stop_after_two_recovered_pages(request: httpx.Request) -> httpx.Response:
            response = api.handle(request)
            if (
                sum(
                    "offset" in r.url.params
                    and r.url.params["offset"].endswith(f":{api.generation}")
                    for r in api.requests
                )
                >= 2
            ):
                runner.stop()
            return response

        http._transport = httpx.MockTransport(stop_after_two_recovered_pages)
        await runner.run()
    saved = pipeline.store.load("memory")
    assert saved is not None
    assert saved.skip_until == api.events[39]["created_at"]
    resumed = MemorySink()
    await pipeline.drain(resumed, page_size=5)

    assert interrupted.gids == []
    assert first.gids + resumed.gids == gids(api.events)
