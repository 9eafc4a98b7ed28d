"""``cef``: ArcSight Common Event Format, for ArcSight and the many SIEMs
that read it (usually as a syslog payload).

    CEF:0|Asana|Audit Log|<forwarder version>|<event_type>|<name>|<severity>|<extension>

Header fields escape '\\' and '|' (and a newline becomes a space, as a
header has no way to carry one); extension values escape '\\' and '=', and
newlines become '\\n' and '\\r'. Fields come from the normalized view of the
event (``forwarder.formats.normalized``); a field the event lacks is left
out. The extension keys are listed in docs/syslog.md.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from forwarder import __version__
from forwarder.formats.jsonbytes import dumps
from forwarder.formats.normalized import normalize
from forwarder.formats.severity import rate_event
from forwarder.timestamps import epoch_seconds

if TYPE_CHECKING:
    from forwarder.formats import EventContext

VENDOR = "Asana"
PRODUCT = "Audit Log"

# (label, normalized field) for the custom string slots, in slot order.
CUSTOM_STRINGS = (
    ("authMethod", "auth_method"),
    ("actorType", "actor_type"),
    ("resourceType", "target_type"),
    ("resourceName", "target_name"),
    ("resourceGid", "target_id"),
    ("details", "details"),
)
FLEX_STRINGS = (("contextType", "context_type"), ("oauthApp", "oauth_app"))


def render(event: dict[str, Any], context: EventContext) -> bytes:
    fields = normalize(event, context)
    event_type = fields["action"] or "unknown"
    header = (
        "CEF:0",
        header_escape(VENDOR),
        header_escape(PRODUCT),
        header_escape(__version__),
        header_escape(event_type),
        header_escape(event_type.replace("_", " ")),
        str(rate_event(event).cef),
    )
    extension = " ".join(
        f"{key}={extension_escape(value)}" for key, value in extension_of(fields)
    )
    return ("|".join(header) + "|" + extension).encode("utf-8", "replace")


def extension_of(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """The extension's (key, value) pairs, unescaped, in a stable order."""
    pairs: list[tuple[str, str | None]] = []
    time = fields["time"]
    seconds = epoch_seconds(time) if time else None
    if seconds is not None:
        pairs.append(("rt", str(round(seconds * 1000))))
    pairs += [
        ("externalId", fields["event_id"]),
        ("cat", fields["category"]),
        ("act", fields["action"]),
        ("suser", fields["actor_email"] or fields["actor_name"]),
        ("suid", fields["actor_id"]),
    ]
    if fields["target_type"] == "user":
        pairs.append(("duser", fields["target_email"] or fields["target_name"]))
        pairs.append(("duid", fields["target_id"]))
    pairs += [
        ("src", ip_address(fields["source_ip"])),
        ("requestClientApplication", fields["user_agent"]),
        ("deviceExternalId", fields["workspace_id"]),
    ]
    slots = [(f"cs{n}", label, key) for n, (label, key) in enumerate(CUSTOM_STRINGS, 1)]
    slots += [
        (f"flexString{n}", label, key) for n, (label, key) in enumerate(FLEX_STRINGS, 1)
    ]
    for slot, label, key in slots:
        value = fields[key]
        if key == "details":
            value = dumps(value).decode() if value else None
        pairs += [(f"{slot}Label", label if value else None), (slot, value)]
    return [(key, value) for key, value in pairs if value]


def ip_address(text: str | None) -> str | None:
    """``text`` when it is an IPv4 or IPv6 address: receivers reject a src
    that is not one."""
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def header_escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def extension_escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")
