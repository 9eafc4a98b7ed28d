"""Syslog messages around a rendered payload: RFC 5424 and RFC 3164 headers,
explicit truncation, and RFC 6587 framing for streams.

RFC 5424::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [asana@32473 ...] BOM MSG

PRI is facility * 8 + the event's severity (``forwarder.formats.severity``),
TIMESTAMP the event's ``created_at``, MSGID its ``event_type``. The one SD
element carries the fields a receiver can index without parsing MSG. 32473 is
the private enterprise number RFC 5612 reserves for documentation examples:
it stands in until the project registers its own with IANA.

RFC 3164::

    <PRI>Mmm dd hh:mm:ss HOST TAG: MSG

with the time in UTC, as the format has no zone.

A message longer than the limit is cut so that it stays valid (never inside
a UTF-8 sequence or after a lone escaping backslash) and says so: RFC 5424
adds ``truncated="true" original_size="N"`` to the SD element, RFC 3164
appends a marker. N is the payload's size in bytes before the cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from forwarder.formats.severity import rate_event
from forwarder.timestamps import format_timestamp, parse_timestamp, utc_now

Syntax = Literal["rfc5424", "rfc3164"]
Framing = Literal["octet-counting", "lf"]

PRIVATE_ENTERPRISE_NUMBER = 32473
SD_ID = f"asana@{PRIVATE_ENTERPRISE_NUMBER}"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"

HOSTNAME_MAX = 255
APP_NAME_MAX = 48
PROCID_MAX = 128
MSGID_MAX = 32
TAG_MAX = 32
# Each SD value is capped so that a huge field cannot crowd out the payload.
SD_VALUE_MAX_BYTES = 256
# RFC 5426: every receiver must accept 480 octets; below that even the
# header and the truncation marker may not fit.
MIN_MESSAGE_BYTES = 480

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{number}": 16 + number for number in range(8)},
}

# RFC 3164 months, whatever the locale.
MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

# (SD PARAM-NAME, path into the event). Names are valid PARAM-NAMEs:
# printable ASCII without '=', ']', '"' or space, at most 32 characters.
SD_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gid", ("gid",)),
    ("event_type", ("event_type",)),
    ("event_category", ("event_category",)),
    ("actor_type", ("actor", "actor_type")),
    ("actor_gid", ("actor", "gid")),
    ("actor_email", ("actor", "email")),
    ("resource_type", ("resource", "resource_type")),
    ("resource_gid", ("resource", "gid")),
    ("client_ip", ("context", "client_ip_address")),
)


def parse_facility(value: object) -> int:
    """A facility from its name ("local0") or number (0-23)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 23:
            return value
        raise ValueError(f"facility {value} is out of range; expected 0 to 23")
    if isinstance(value, str) and value.strip().lower() in FACILITIES:
        return FACILITIES[value.strip().lower()]
    raise ValueError(
        f"unknown facility {value!r}; expected a number 0-23 or one of "
        + ", ".join(FACILITIES)
    )


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """One message without framing; ``original_size`` is the payload's size
    before any truncation."""

    data: bytes
    truncated: bool
    original_size: int


@dataclass(frozen=True, slots=True)
class MessageFormat:
    """What a sink puts around every payload."""

    syntax: Syntax
    facility: int
    hostname: str
    app_name: str
    max_bytes: int

    def __post_init__(self) -> None:
        if not 0 <= self.facility <= 23:
            raise ValueError(f"facility {self.facility} is out of range")
        if self.max_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MESSAGE_BYTES}")

    def build(
        self, event: dict[str, Any], payload: bytes, now: datetime | None = None
    ) -> SyslogMessage:
        if self.syntax == "rfc5424":
            return self._rfc5424(event, payload, now)
        return self._rfc3164(event, payload, now)

    def _pri(self, event: dict[str, Any]) -> int:
        return self.facility * 8 + int(rate_event(event).syslog)

    def _rfc5424(
        self, event: dict[str, Any], payload: bytes, now: datetime | None
    ) -> SyslogMessage:
        event_type = event.get("event_type")
        head = " ".join(
            (
                f"<{self._pri(event)}>1",
                format_timestamp(_event_time(event, now)),
                header_token(self.hostname, HOSTNAME_MAX),
                header_token(self.app_name, APP_NAME_MAX),
                NILVALUE,
                header_token(
                    event_type if isinstance(event_type, str) else "", MSGID_MAX
                ),
                "",
            )
        )
        params = sd_params(event)
        data = _join(head, params, payload)
        if len(data) <= self.max_bytes:
            return SyslogMessage(data, False, len(payload))
        marker = [("truncated", "true"), ("original_size", str(len(payload)))]
        prefix = _join(head, params + marker, b"")
        if len(prefix) > self.max_bytes:
            # Long SD values would leave no room: the marker matters more.
            prefix = _join(head, marker, b"")
        kept = safe_prefix(payload, self.max_bytes - len(prefix))
        return SyslogMessage(prefix + kept, True, len(payload))

    def _rfc3164(
        self, event: dict[str, Any], payload: bytes, now: datetime | None
    ) -> SyslogMessage:
        moment = _event_time(event, now)
        stamp = f"{MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S}"
        host = header_token(self.hostname, HOSTNAME_MAX)
        head = f"<{self._pri(event)}>{stamp} {host} {tag(self.app_name)}: ".encode()
        if len(head) + len(payload) <= self.max_bytes:
            return SyslogMessage(head + payload, False, len(payload))
        marker = f" [truncated, original_size={len(payload)}]".encode()
        kept = safe_prefix(payload, self.max_bytes - len(head) - len(marker))
        return SyslogMessage(head + kept + marker, True, len(payload))


def frame(message: bytes, framing: Framing) -> bytes:
    """RFC 6587 framing of one message for a stream."""
    if framing == "octet-counting":
        return b"%d %s" % (len(message), message)
    # Payloads never hold a raw newline (JSON, CEF and LEEF escape or
    # replace it); this guard keeps one message one line whatever comes.
    return message.replace(b"\n", b" ") + b"\n"


# Unicode's category Cc is exactly these 65 code points (C0, DEL and C1), a
# set its stability policy keeps fixed; one regular expression finds them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_HEADER_CHARACTER = re.compile(r"[^!-~]")


def header_token(text: str, limit: int) -> str:
    """A header field: printable ASCII only (others become '_'), at most
    ``limit`` characters, '-' when empty."""
    # Cut before the cache: a hostile megabyte event type must not be kept.
    return _header_token(text[:limit])


# Cached: the host name and app name are the same in every message, and an
# organization's event types (the MSGID) are a hundred-odd.
@lru_cache(maxsize=1024)
def _header_token(text: str) -> str:
    return _NOT_HEADER_CHARACTER.sub("_", text) or NILVALUE


@lru_cache(maxsize=64)  # one app name per sink
def tag(app_name: str) -> str:
    """An RFC 3164 TAG: letters, digits and '-_./' (receivers end the
    program name at '[', ':' or a space), at most 32 characters."""
    allowed = "-_./"
    token = "".join(
        c if (c.isascii() and c.isalnum()) or c in allowed else "_"
        for c in app_name[:TAG_MAX]
    )
    return token or "asana-audit"


def sd_params(event: dict[str, Any]) -> list[tuple[str, str]]:
    """The SD-PARAMs of an event, values neither escaped nor capped yet."""
    params = []
    for name, path in SD_FIELDS:
        value = _lookup(event, path)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        params.append((name, str(value)))
    return params


def sd_element(params: list[tuple[str, str]]) -> str:
    return "[" + SD_ID + "".join(f' {k}="{sd_value(v)}"' for k, v in params) + "]"


def sd_value(text: str) -> str:
    """A PARAM-VALUE: control characters replaced by U+FFFD (a raw newline
    would end an LF-framed message), capped at SD_VALUE_MAX_BYTES, then
    '"', '\\' and ']' escaped as RFC 5424 requires."""
    clean = text
    # Short printable ASCII, nearly every value, needs nothing but escaping.
    if not (len(text) <= SD_VALUE_MAX_BYTES and text.isascii() and text.isprintable()):
        encoded = _CONTROL.sub("\ufffd", text).encode("utf-8", "replace")
        clean = safe_prefix(encoded, SD_VALUE_MAX_BYTES, backslashes=False).decode()
    return clean.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def safe_prefix(data: bytes, limit: int, *, backslashes: bool = True) -> bytes:
    """The longest prefix of at most ``limit`` bytes that ends neither inside
    a UTF-8 sequence nor, when ``backslashes``, on a lone escaping backslash
    (CEF's '\\=' cut in half would escape whatever follows)."""
    if len(data) <= limit:
        return data
    cut = max(limit, 0)
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    prefix = data[:cut]
    if backslashes:
        run = len(prefix) - len(prefix.rstrip(b"\\"))
        if run % 2:
            prefix = prefix[:-1]
    return prefix


def _join(head: str, params: list[tuple[str, str]], payload: bytes) -> bytes:
    return (head + sd_element(params) + " ").encode() + BOM + payload


def _event_time(event: dict[str, Any], now: datetime | None) -> datetime:
    created_at = event.get("created_at")
    if isinstance(created_at, str):
        try:
            return parse_timestamp(created_at)
        except (ValueError, OverflowError):
            pass
    return now or utc_now()


def _lookup(event: dict[str, Any], path: tuple[str, ...]) -> object:
    value: object = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
