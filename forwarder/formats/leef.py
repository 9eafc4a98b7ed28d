"""``leef``: IBM QRadar's Log Event Extended Format 2.0, usually as a syslog
payload.

    LEEF:2.0|Asana|Audit Log|<forwarder version>|<event_type>|^|key=value^key=value

The attribute delimiter is '^', declared in the header. Not a tab (LEEF
1.0's): relays such as rsyslog rewrite control characters on reception
(a tab becomes '#011'), which would fuse every attribute into one. LEEF has
no escape sequences, so inside a value the delimiter becomes U+02C6 (modifier
letter circumflex) and newlines become spaces; in header fields '|' becomes
U+00A6 (broken bar). The
keys are listed in docs/syslog.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forwarder import __version__
from forwarder.formats.cef import ip_address
from forwarder.formats.jsonbytes import dumps
from forwarder.formats.normalized import normalize
from forwarder.formats.severity import rate_event
from forwarder.timestamps import format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from forwarder.formats import EventContext

VENDOR = "Asana"
PRODUCT = "Audit Log"
DELIMITER = "^"
DELIMITER_STAND_IN = "\u02c6"
PIPE_STAND_IN = "\u00a6"
# Java SimpleDateFormat, as QRadar reads it, for "2026-01-02T03:04:05.678Z".
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX"

# (LEEF key, normalized field): after QRadar's predefined keys, ours.
ATTRIBUTES = (
    ("cat", "category"),
    ("resource", "target_name"),
    ("externalId", "event_id"),
    ("actorGid", "actor_id"),
    ("actorName", "actor_name"),
    ("actorType", "actor_type"),
    ("resourceType", "target_type"),
    ("resourceGid", "target_id"),
    ("resourceEmail", "target_email"),
    ("authMethod", "auth_method"),
    ("userAgent", "user_agent"),
    ("contextType", "context_type"),
    ("oauthApp", "oauth_app"),
    ("workspaceGid", "workspace_id"),
)


def render(event: dict[str, Any], context: EventContext) -> bytes:
    fields = normalize(event, context)
    header = (
        "LEEF:2.0",
        header_value(VENDOR),
        header_value(PRODUCT),
        header_value(__version__),
        header_value(fields["action"] or "unknown"),
        DELIMITER,
    )
    attributes = DELIMITER.join(
        f"{key}={attribute_value(value)}" for key, value in attributes_of(event, fields)
    )
    return ("|".join(header) + "|" + attributes).encode("utf-8", "replace")


def attributes_of(
    event: dict[str, Any], fields: dict[str, Any]
) -> list[tuple[str, str]]:
    """The (key, value) attributes, unescaped, in a stable order."""
    pairs: list[tuple[str, str | None]] = []
    dev_time = _dev_time(fields["time"])
    if dev_time is not None:
        pairs += [("devTime", dev_time), ("devTimeFormat", DEV_TIME_FORMAT)]
    pairs.append(("sev", str(rate_event(event).leef)))
    pairs.append(("src", ip_address(fields["source_ip"])))
    pairs.append(("usrName", fields["actor_email"] or fields["actor_name"]))
    pairs += [(key, fields[field]) for key, field in ATTRIBUTES]
    if fields["action"] == "user_login_succeeded":
        pairs.append(("isLoginEvent", "true"))
    if fields["action"] == "user_logged_out":
        pairs.append(("isLogoutEvent", "true"))
    if fields["details"]:
        pairs.append(("details", dumps(fields["details"]).decode()))
    return [(key, value) for key, value in pairs if value]


def header_value(text: str) -> str:
    text = text.replace("|", PIPE_STAND_IN)
    return text.replace("\r", " ").replace("\n", " ")


def attribute_value(text: str) -> str:
    text = text.replace(DELIMITER, DELIMITER_STAND_IN)
    return text.replace("\r", " ").replace("\n", " ")


def _dev_time(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return format_timestamp(parse_timestamp(text))
    except (ValueError, OverflowError):
        return None
