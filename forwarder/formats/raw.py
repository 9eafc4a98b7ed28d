"""``raw``: the Asana event untouched, unknown fields included, in an envelope.

{"workspace_gid": "...", "forwarder_version": "...",
 "received_at": "...", "event": {...the event as the API sent it...}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forwarder import __version__
from forwarder.formats.jsonbytes import dumps

if TYPE_CHECKING:
    from forwarder.formats import EventContext


def render(event: dict[str, Any], context: EventContext) -> bytes:
    return dumps(
        {
            "workspace_gid": context.workspace_gid,
            "forwarder_version": __version__,
            "received_at": context.received_at,
            "event": event,
        }
    )
