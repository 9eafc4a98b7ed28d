"""``raw``: the Asana event untouched, unknown fields included, in an envelope.

{"workspace_gid": "...", "forwarder_version": "...",
 "received_at": "...", "event": {...the event as the API sent it...}}
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from forwarder import __version__
from forwarder.formats.jsonbytes import dumps

if TYPE_CHECKING:
    from forwarder.formats import EventContext


def render(event: dict[str, Any], context: EventContext) -> bytes:
    # The envelope's head is the same for every event of a page: encoded
    # once, and the event's own encoding spliced in after it.
    return _head(context.workspace_gid, context.received_at) + dumps(event) + b"}"


@lru_cache(maxsize=16)
def _head(workspace_gid: str, received_at: str) -> bytes:
    fields = dumps(
        {
            "workspace_gid": workspace_gid,
            "forwarder_version": __version__,
            "received_at": received_at,
        }
    )
    return fields[:-1] + b',"event":'
