"""``normalized``: one flat schema with stable field names across event types.

The fields are documented one by one in docs/normalized-schema.md. A field
the event lacks, or carries with the wrong type, is null: an incomplete
event is still forwarded with what it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forwarder.formats.jsonbytes import dumps

if TYPE_CHECKING:
    from forwarder.formats import EventContext

SCHEMA_VERSION = 1


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def normalize(event: dict[str, Any], context: EventContext) -> dict[str, Any]:
    actor = _object(event.get("actor"))
    resource = _object(event.get("resource"))
    origin = _object(event.get("context"))
    on_behalf_of = origin.get("on_behalf_of_user_id")
    return {
        "schema_version": SCHEMA_VERSION,
        "time": _text(event.get("created_at")),
        "event_id": _text(event.get("gid")),
        "action": _text(event.get("event_type")),
        "category": _text(event.get("event_category")),
        "workspace_id": context.workspace_gid,
        "actor_type": _text(actor.get("actor_type")),
        "actor_id": _text(actor.get("gid")),
        "actor_name": _text(actor.get("name")),
        "actor_email": _text(actor.get("email")),
        "target_type": _text(resource.get("resource_type")),
        "target_subtype": _text(resource.get("resource_subtype")),
        "target_id": _text(resource.get("gid")),
        "target_name": _text(resource.get("name")),
        "target_email": _text(resource.get("email")),
        "context_type": _text(origin.get("context_type")),
        "source_ip": _text(origin.get("client_ip_address")),
        "user_agent": _text(origin.get("user_agent")),
        "auth_method": _text(origin.get("api_authentication_method")),
        "oauth_app": _text(origin.get("oauth_app_name")),
        "rule_name": _text(origin.get("rule_name")),
        "on_behalf_of_user_id": (
            str(on_behalf_of)
            if isinstance(on_behalf_of, int | str)
            and not isinstance(on_behalf_of, bool)
            else None
        ),
        "details": event.get("details")
        if isinstance(event.get("details"), dict)
        else {},
        "received_at": context.received_at,
    }


def render(event: dict[str, Any], context: EventContext) -> bytes:
    return dumps(normalize(event, context))
