"""``test-sinks``: deliver one synthetic event to each configured sink and
say what happened, without reading the API or touching any checkpoint.

Operators run it while setting up: it shows a refused token, a wrong CA or an
unreachable port in seconds, sink by sink, instead of as retries in the logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from forwarder import __version__
from forwarder.config import Config, SinkConfig
from forwarder.errors import SinkError
from forwarder.formats import RENDERERS, EventContext
from forwarder.secrets import redact
from forwarder.sinks import Sink, build_sink
from forwarder.sinks.base import Batch
from forwarder.timestamps import format_timestamp, utc_now

TEST_EVENT_TYPE = "asana_audit_forwarder_test"


@dataclass(frozen=True, slots=True)
class SinkCheck:
    sink: str
    ok: bool
    detail: str
    seconds: float


def synthetic_event() -> dict[str, Any]:
    """An event shaped like Asana's, marked so that nobody mistakes it."""
    now = format_timestamp(utc_now())
    return {
        "gid": f"9{time.time_ns() % 10**15:015d}",
        "created_at": now,
        "event_type": TEST_EVENT_TYPE,
        "event_category": "forwarder_test",
        "actor": {"actor_type": "asana"},
        "resource": {"resource_type": "workspace", "gid": "0", "name": "test"},
        "context": {"context_type": "asana"},
        "details": {"message": f"test event from asana-audit-forwarder {__version__}"},
    }


async def check_sink(
    config: Config, sink_config: SinkConfig, build: Callable[[SinkConfig], Sink]
) -> SinkCheck:
    started = time.monotonic()
    event = synthetic_event()
    context = EventContext(config.source.workspace_gid, event["created_at"])
    payload = RENDERERS[sink_config.render_format](event, context)
    sink = build(sink_config)
    try:
        with anyio.fail_after(60):
            await sink.open()
            report = await sink.deliver(Batch(events=[event], payloads=[payload]))
        ok = not report.rejected
        detail = (
            "delivered"
            if ok
            else f"receiver refused the event: {report.rejected[0][1]}"
        )
    except SinkError as error:
        ok, detail = False, redact(str(error))
    except TimeoutError:
        ok, detail = False, "no answer within 60s"
    finally:
        with anyio.CancelScope(shield=True):
            await sink.aclose()
    return SinkCheck(sink_config.name, ok, detail, time.monotonic() - started)


async def check_sinks(
    config: Config, build: Callable[[SinkConfig], Sink] = build_sink
) -> list[SinkCheck]:
    return [await check_sink(config, sink, build) for sink in config.sinks]
