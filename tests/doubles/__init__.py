"""Test doubles of the receivers the HTTP sinks talk to: real HTTP servers
on 127.0.0.1 that speak the receivers' documented protocols, and helpers to
make the batches the pipeline would hand a sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from forwarder.config import parse_config
from forwarder.daemon import Daemon
from forwarder.formats import RENDERERS, EventContext
from forwarder.simulator import AuditLogSimulator
from forwarder.sinks.base import Batch, Sink
from tests.doubles.hec import HecDouble, HecEvent, HecToken
from tests.doubles.http_receiver import DoubleServer, HttpReceiver, Request, Response
from tests.doubles.sumo import SumoDouble, SumoRequest

__all__ = [
    "DoubleServer",
    "HecDouble",
    "HecEvent",
    "HecToken",
    "HttpReceiver",
    "Request",
    "Response",
    "SumoDouble",
    "SumoRequest",
    "audit_event",
    "batch_of",
    "forward_once",
]

CONTEXT = EventContext(workspace_gid="1111", received_at="2026-01-01T00:00:01.000Z")


def audit_event(number: int, **changes: Any) -> dict[str, Any]:
    """An audit-log event shaped like the API's, numbered for assertions."""
    event: dict[str, Any] = {
        "gid": f"{1_000_000 + number}",
        "created_at": f"2026-01-01T00:00:{number % 60:02d}.{number % 1000:03d}Z",
        "event_type": "user_login_succeeded",
        "event_category": "logins",
        "actor": {"actor_type": "user", "gid": "42", "name": "Ada", "email": "a@x.io"},
        "resource": {"resource_type": "user", "gid": "42", "name": "Ada"},
        "context": {"context_type": "web", "client_ip_address": "192.0.2.1"},
        "details": {},
    }
    event.update(changes)
    return event


def batch_of(events: list[dict[str, Any]], format_name: str = "raw") -> Batch:
    """The batch the pipeline would deliver: events and their rendered bytes."""
    render = RENDERERS[format_name]
    return Batch(
        events=list(events), payloads=[render(event, CONTEXT) for event in events]
    )


async def forward_once(
    simulator: AuditLogSimulator,
    sink: Sink,
    state: Path,
    *,
    batch_max_events: int = 100,
) -> None:
    """Run the real daemon once over the simulated audit log, delivering to
    ``sink`` (in place of the placeholder stdout sink of the configuration),
    until it has caught up."""
    config = parse_config(
        {
            "source": {
                "workspace_gid": simulator.settings.workspace_gid,
                "token": simulator.settings.token or "any-token",
                "base_url": simulator.base_url,
                "allow_insecure_http": True,
                "poll_interval": "50ms",
            },
            "state": {"directory": str(state / "state")},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": [
                {
                    "name": sink.name,
                    "type": "stdout",
                    "delivery": {
                        "batch_max_events": batch_max_events,
                        "retry_initial_delay": "20ms",
                        "retry_max_delay": "200ms",
                    },
                }
            ],
        }
    )
    daemon = Daemon(config, once=True, sink_factory=lambda *_: sink)
    with anyio.fail_after(60):
        await daemon.run(serve_probes=False)
