"""A faithful simulator of Asana's audit log API, served over real HTTP.

``AuditLogSimulator`` answers ``GET /api/1.0/workspaces/{gid}/audit_log_events``
the way Asana documents it, so the forwarder can be tested over loopback and
users can try their SIEM pipeline without an Enterprise+ token:

- ``next_page`` is null only when nothing in the whole log matches the
  filters; otherwise it is always present, even when ``data`` is empty, so
  the client keeps polling with the latest offset as a stream.
- Offsets are opaque, signed (HMAC-SHA256 with a random per-simulator key,
  shaped like a JWT as Asana's are), bound to the filters they were issued
  for, and expire after ``offset_ttl`` or on ``expire_offsets()``.
- Errors use Asana's body ``{"errors": [{"message", "help", "phrase"}]}``;
  the rate limit is a sliding 60 s window per token that counts rejected
  requests too, answered with 429 and ``Retry-After`` in seconds.
- ``max_concurrent_requests`` plays Asana's limit on a token's requests in
  flight at once (about 50): a request over it is answered 429 with
  ``Retry-After: 1``, after the usual latency.

Ordering model. The log is kept in arrival order: every event gets a
sequence number when it is inserted. Events normally arrive in ``created_at``
order, so arrival order is ``created_at`` order. ``append_events`` with an
older ``created_at`` simulates a late-arriving event: it gets the next
sequence number, like every arrival. A page holds the matching events after
the offset's position in arrival order, so a client continuing from an
offset receives late events too and never skips or repeats one; a request
without an offset scans the whole log from the first arrival, filtered by
``created_at``. ``events()`` returns the log sorted by ``created_at`` (ties
in arrival order), as an observer of the audit trail would see it.

An offset carries its ``start_at``/``end_at``: a request continuing from an
offset may omit them (the forwarder sends only ``end_at``), but must not
change them. The other filters must be sent again unchanged, and are part
of ``next_page.path`` so that following ``path`` or ``uri`` works.

Events are stored as compact columns (arrival time, event type, actor and
resource indices) and turned into JSON objects only when served, from a
random generator seeded with the simulator's seed and the event's sequence
number: a backlog of a million events takes a few seconds and little memory,
and the same seed always gives the same events (apart from ``created_at``,
which follows the clock). Values given to ``append_raw`` match a request
only when it filters by nothing but time.

The backlog is spread evenly over ``backlog_span`` before now, unless
``backlog_burst`` puts that fraction of it within one day in the middle of
the span, as a migration day would: history that is not even.

Tests that run the simulator in another process drive it over HTTP, without
authentication (it is a loopback tool), under ``/_simulator/``:
``POST events?count=N`` appends N events and returns them, ``GET events``
returns ``{"events": [...]}``, ``POST expire-offsets``, ``POST faults`` with
a JSON list of ``Fault.to_json()`` objects, and ``GET status``.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hashlib
import heapq
import hmac
import importlib.resources
import itertools
import math
import random
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

__all__ = [
    "PREFIX",
    "AuditLogSimulator",
    "EventType",
    "Fault",
    "SimulatorSettings",
    "load_event_types",
    "serve_forever",
]

PREFIX = "/api/1.0"
ADMIN_PREFIX = "/_simulator"
HELP = (
    "For more information on API status codes and how to handle them, "
    "read the docs on errors: https://developers.asana.com/docs/errors"
)
OFFSET_INVALID = (
    "offset: Your pagination token has expired or is invalid. "
    "Restart your request without an offset."
)
TOO_MANY_REQUESTS = "You have made too many requests recently. Please, be chill."
ACTOR_TYPES = ("user", "asana", "asana_support", "anonymous", "external_administrator")
MAX_LIMIT = 100
RATE_WINDOW = 60.0
EVENT_GID_BASE = 1_204_000_000_000_000
MAX_ADMIN_COUNT = 100_000
MAX_BODY = 10 * 1024 * 1024
JSON = "application/json; charset=UTF-8"
_RAW = 0xFFFF  # event-type column value of an append_raw item
_DAY_MS = 86_400_000
# What a request over max_concurrent_requests is told to wait, in seconds.
CONCURRENCY_RETRY_AFTER = "1"
_API_PATH = re.compile(
    re.escape(PREFIX) + r"/workspaces/(?P<workspace>[^/]+)/audit_log_events"
)


@dataclass
class SimulatorSettings:
    """How the simulated API behaves; the defaults give a quiet, empty log."""

    workspace_gid: str = "1111111111111111"
    token: str | None = "simulated-token"  # required Bearer token; None: any
    backlog: int = 0  # events generated at construction, over backlog_span
    backlog_span: float = 86400.0  # seconds before now
    events_per_second: float = 0.0  # live stream rate; 0: no live generation
    offset_ttl: float = 3600.0  # seconds before an issued offset expires
    requests_per_minute: int | None = None  # per token; over it: 429
    latency: float = 0.0  # seconds added to every API request
    # Requests of one token in flight at once; over it: 429. None: no limit.
    max_concurrent_requests: int | None = None
    # The fraction of the backlog created within one day in the middle of
    # backlog_span (a migration day), the rest spread evenly over the span.
    backlog_burst: float = 0.0
    seed: int = 1
    max_events: int | None = None  # live generation stops at this log size


@dataclass(frozen=True)
class Fault:
    """One injected answer, used for the next API request instead of the real one."""

    status: int = 500
    retry_after: str | None = None  # raw Retry-After value: "2" or an HTTP-date
    body: bytes | None = None  # None: Asana's error JSON for the status
    delay: float = 0.0  # seconds to wait before answering
    drop_connection: bool = False  # close the socket without answering
    content_type: str = "application/json"

    def to_json(self) -> dict[str, Any]:
        """The object ``POST /_simulator/faults`` accepts (bodies as UTF-8 text)."""
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "body": None if self.body is None else self.body.decode("utf-8", "replace"),
            "delay": self.delay,
            "drop_connection": self.drop_connection,
            "content_type": self.content_type,
        }


# --------------------------------------------------------------------------
# The event catalogue and the simulated organization


@dataclass(frozen=True, slots=True)
class EventType:
    """One documented event type, from ``forwarder/data/event_types.tsv``."""

    section: str
    name: str
    resource_type: str

    @property
    def category(self) -> str:
        # The TSV holds the docs' section names; the API's values are snake_case.
        return self.section.replace(" ", "_")


def load_event_types() -> tuple[EventType, ...]:
    """The event types shipped with the package."""
    resource = importlib.resources.files("forwarder") / "data" / "event_types.tsv"
    lines = resource.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    header, *body = rows
    if header != ["section", "event_type", "resource_type"]:
        raise ValueError(f"event_types.tsv: unexpected header {header!r}")
    if any(len(row) != 3 for row in body):
        raise ValueError("event_types.tsv: every row needs three columns")
    return tuple(EventType(*row) for row in body)


# How often each kind of event happens, so that a backlog looks like a real
# organization: mostly logins and everyday work, rarely admin changes.
_SECTION_WEIGHTS = {
    "user updates": 2.0,
    "admin settings": 0.3,
    "roles": 0.5,
    "content export": 1.0,
    "access control": 4.0,
    "apps": 1.0,
    "creation": 4.0,
    "deletion": 3.0,
}
_TYPE_WEIGHTS = {
    "user_login_succeeded": 40.0,
    "user_login_failed": 6.0,
    "user_logged_out": 12.0,
    "task_deleted": 10.0,
    "attachment_downloaded": 8.0,
}
# Who acts: the user themself, an admin (or the identity provider), anyone.
_SELF = 0
_FAILED_LOGIN = 1
_ADMIN = 2
_ANYONE = 3
_SELF_TYPES = frozenset(
    {
        "user_login_succeeded",
        "user_logged_out",
        "user_forgot_password_started",
        "user_password_reset",
        "user_password_changed",
        "user_two_factor_auth_enabled",
        "user_two_factor_auth_disabled",
        "user_app_authorized",
        "user_app_revoked",
        "user_personal_access_token_authorized",
        "user_personal_access_token_revoked",
    }
)
_SCIM_TYPES = frozenset({"user_invited", "user_deprovisioned", "user_reprovisioned"})
_ADMIN_SECTIONS = frozenset({"admin settings", "roles", "content export"})
_LOGIN_SECTION = "logins"

# fmt: off
_FIRST_NAMES = (
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines",
    "Jamal", "Kira", "Luca", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa",
    "Sami", "Tomas",
)
_LAST_NAMES = (
    "Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Kowalski", "Haddad",
    "Novak", "Reyes", "Schmidt", "Osei", "Park", "Rossi", "Nguyen", "Fischer",
    "Ahmed", "Byrne", "Costa", "Dubois", "Ivanova",
)
_TOPICS = (
    "Q3", "Marketing", "Website", "Mobile", "Security", "Onboarding", "Roadmap",
    "Hiring", "Compliance", "Launch", "Billing", "Support",
)
_THINGS = (
    "plan", "review", "budget", "audit", "redesign", "migration", "campaign",
    "backlog", "retro", "rollout",
)
# fmt: on
class _Weighted:
    """A weighted choice, with its cumulative weights computed once."""

    def __init__(self, *options: tuple[str, float]) -> None:
        self.values = [value for value, _ in options]
        self.cumulative = list(itertools.accumulate(w for _, w in options))

    def pick(self, rng: random.Random) -> str:
        roll = rng.random() * self.cumulative[-1]
        return self.values[bisect.bisect(self.cumulative, roll)]


_SUBTYPES = {
    "task": _Weighted(("default_task", 85), ("milestone", 10), ("approval", 5)),
    "custom_field": _Weighted(("enum", 4), ("text", 3), ("number", 2), ("people", 1)),
    "status_update": _Weighted(
        ("project_status_update", 3), ("portfolio_status_update", 1)
    ),
    "attachment": _Weighted(("asana", 8), ("gdrive", 1), ("onedrive", 1)),
    "story": _Weighted(("comment_added", 1)),
}
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
)
_DESKTOP_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Asana/2.3.0 Chrome/124.0.6367.243 Electron/30.1.2 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Asana/2.3.0 Chrome/124.0.6367.243 Electron/30.1.2 Safari/537.36",
)
_MOBILE_AGENTS = (
    "Asana/8.52.1 (iPhone; iOS 17.5.1; Scale/3.00)",
    "Asana/8.51.0 (Linux; Android 14; Pixel 8)",
)
_API_AGENTS = ("python-asana/5.0.10", "node-asana/3.0.9", "curl/8.5.0", "Zapier")
_OAUTH_APPS = ("Zapier", "Slack", "Microsoft Teams", "Tableau", "Harvest")
_SCIM_APPS = ("Okta", "Microsoft Entra ID", "OneLogin")
_RULES = (
    "When task is completed, move it to Done",
    "When task is added to this project, set assignee",
    "When due date is approaching, notify collaborators",
)
_CONTEXTS = _Weighted(("web", 60), ("desktop", 15), ("mobile", 10), ("api", 15))
_LOGIN_CONTEXTS = _Weighted(("web", 70), ("desktop", 20), ("mobile", 10))
_API_METHODS = _Weighted(
    ("oauth", 45),
    ("personal_access_token", 30),
    ("service_account", 20),
    ("cookie", 5),
)
_CHANGE_VALUES = (
    ("privacy", ("public", "private", "members_only")),
    ("role", ("member", "admin", "super_admin", "guest")),
    ("duration", ("1 day", "7 days", "14 days", "30 days")),
    ("password", ("weak", "medium", "strong")),
    ("email", ("security@example.com", "it-alerts@example.com", "soc@example.com")),
    ("name", ("CI bot", "Reporting bot", "Backup bot")),
    ("url", ("https://idp.example.com/saml", "https://sso.example.com/saml2")),
    ("", ("disabled", "enabled", "admins_only")),
)
_USERS = 40
_ADMINS = 4
_POOL = 30  # resources of each type, so that resource_gid filters match several


def _gid(rng: random.Random) -> str:
    return str(rng.randrange(1_100_000_000_000_000, 1_200_000_000_000_000))


def _ip_address(rng: random.Random) -> str:
    # Documentation ranges (RFC 5737, RFC 3849): realistic, never a real host.
    if rng.random() < 0.3:
        return f"2001:db8:{rng.randrange(0x10000):x}::{rng.randrange(1, 0x10000):x}"
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randrange(1, 255)}"


class _World:
    """The simulated organization: users, resources, and how events are drawn.

    Actors and resources are indexed tables, so each event only stores small
    integers; filters by gid become sets of indices.
    """

    def __init__(self, rng: random.Random, workspace_gid: str) -> None:
        self.types = load_event_types()
        self.users = self._make_users(rng)
        self.actors = [{"actor_type": "user", **user} for user in self.users] + [
            {"actor_type": kind} for kind in ACTOR_TYPES[1:]
        ]
        # The actors that are not users follow the users, in ACTOR_TYPES order.
        self.asana, self.support, self.anonymous, self.external = range(
            len(self.users), len(self.actors)
        )
        self.home_ip = [_ip_address(rng) for _ in self.users]
        self.resources: list[dict[str, Any]] = []
        self.pools: dict[str, tuple[int, int]] = {}
        self._add_pool("user", [{"resource_type": "user", **u} for u in self.users])
        self._add_pool("workspace", [self._workspace(workspace_gid)])
        self._add_pool("domain", [self._workspace(workspace_gid, "domain")])
        for resource_type in sorted({t.resource_type for t in self.types}):
            if resource_type not in self.pools:
                made = [self._resource(rng, resource_type) for _ in range(_POOL)]
                self._add_pool(resource_type, made)
        self.divisions = [self._resource(rng, "division") for _ in range(3)]
        self.modes = [self._mode(t) for t in self.types]
        weights = (self._weight(t) for t in self.types)
        self.cum_weights = list(itertools.accumulate(weights))
        self.kind_ids = list(range(len(self.types)))

    @staticmethod
    def _make_users(rng: random.Random) -> list[dict[str, str]]:
        names = rng.sample(
            [(f, la) for f in _FIRST_NAMES for la in _LAST_NAMES], _USERS
        )
        return [
            {
                "gid": _gid(rng),
                "name": f"{first} {last}",
                "email": f"{first}.{last}@example.com".lower(),
            }
            for first, last in names
        ]

    @staticmethod
    def _workspace(gid: str, resource_type: str = "workspace") -> dict[str, Any]:
        return {"resource_type": resource_type, "gid": gid, "name": "Example Org"}

    @staticmethod
    def _resource(rng: random.Random, resource_type: str) -> dict[str, Any]:
        topic, thing = rng.choice(_TOPICS), rng.choice(_THINGS)
        name: str | None = f"{topic} {thing}"
        if resource_type == "attachment":
            name = f"{topic}-{thing}.pdf".lower()
        elif resource_type in {"story", "message", "search"}:
            name = None  # comments and searches carry no title
        made: dict[str, Any] = {"resource_type": resource_type}
        if resource_type in _SUBTYPES:
            made["resource_subtype"] = _SUBTYPES[resource_type].pick(rng)
        made.update(gid=_gid(rng), name=name)
        return made

    def _add_pool(self, resource_type: str, resources: list[dict[str, Any]]) -> None:
        self.pools[resource_type] = (len(self.resources), len(resources))
        self.resources.extend(resources)

    @staticmethod
    def _mode(event_type: EventType) -> int:
        if event_type.name == "user_login_failed":
            return _FAILED_LOGIN
        if event_type.name in _SELF_TYPES:
            return _SELF
        if event_type.name == "attachment_downloaded":
            return _ANYONE
        if (
            event_type.section in _ADMIN_SECTIONS
            or event_type.name in _SCIM_TYPES
            or event_type.name.startswith("service_account_")
        ):
            return _ADMIN
        return _ANYONE

    @staticmethod
    def _weight(event_type: EventType) -> float:
        if event_type.name in _TYPE_WEIGHTS:
            return _TYPE_WEIGHTS[event_type.name]
        return _SECTION_WEIGHTS.get(event_type.section, 1.0)

    def draw(
        self, rng: random.Random, count: int
    ) -> tuple[list[int], list[int], list[int]]:
        """Event type, actor and resource indices of ``count`` new events."""
        kinds = rng.choices(self.kind_ids, cum_weights=self.cum_weights, k=count)
        actors: list[int] = []
        resources: list[int] = []
        for kind in kinds:
            first, size = self.pools[self.types[kind].resource_type]
            resource = first + int(rng.random() * size)
            actors.append(self._actor(rng, kind, resource))
            resources.append(resource)
        return kinds, actors, resources

    def _actor(self, rng: random.Random, kind: int, resource: int) -> int:
        mode, roll = self.modes[kind], rng.random()
        user = resource - self.pools["user"][0]  # when the resource is a user
        if mode == _SELF:
            return user
        if mode == _FAILED_LOGIN:
            return self.anonymous if roll < 0.6 else user
        if mode == _ADMIN:
            if roll < 0.05:
                return self.support
            if roll < 0.15 and self.types[kind].name in _SCIM_TYPES:
                return self.external  # provisioning by the identity provider
            return int(rng.random() * _ADMINS)
        if roll < 0.05:
            return self.asana  # automation rules
        if roll < 0.06:
            return self.support
        return int(rng.random() * len(self.users))

    def context(self, rng: random.Random, kind: int, actor: int) -> dict[str, Any]:
        """Where the event came from, consistent with who acted."""
        if actor == self.asana:
            return {"context_type": "asana", "rule_name": rng.choice(_RULES)}
        if actor == self.support:
            admin = int(self.users[int(rng.random() * _ADMINS)]["gid"])
            return {"context_type": "asana_support", "on_behalf_of_user_id": admin}
        if actor == self.external:
            return self._api_context(rng, "oauth", rng.choice(_SCIM_APPS))
        logins = self.types[kind].section == _LOGIN_SECTION
        context_type = (_LOGIN_CONTEXTS if logins else _CONTEXTS).pick(rng)
        if context_type == "api":
            method = _API_METHODS.pick(rng)
            return self._api_context(rng, method, rng.choice(_OAUTH_APPS))
        home = actor < len(self.users) and rng.random() < 0.8
        agents = {"web": _BROWSERS, "desktop": _DESKTOP_AGENTS}.get(
            context_type, _MOBILE_AGENTS
        )
        return {
            "context_type": context_type,
            "client_ip_address": self.home_ip[actor] if home else _ip_address(rng),
            "user_agent": rng.choice(agents),
        }

    @staticmethod
    def _api_context(rng: random.Random, method: str, app: str) -> dict[str, Any]:
        context = {
            "context_type": "api",
            "api_authentication_method": method,
            "client_ip_address": _ip_address(rng),
            "user_agent": rng.choice(_API_AGENTS),
        }
        if method == "oauth":
            context["oauth_app_name"] = app
        return context

    def details(self, rng: random.Random, kind: int) -> dict[str, Any]:
        """Old and new values for changes; nothing for other events."""
        name = self.types[kind].name
        if not name.endswith("_changed"):
            return {}
        values = next(v for key, v in _CHANGE_VALUES if key in name)
        old, new = rng.sample(values, 2)
        details: dict[str, Any] = {"old_value": old, "new_value": new}
        if name == "user_division_admin_role_changed":
            division = rng.choice(self.divisions)
            details["group"] = {
                k: division[k] for k in ("resource_type", "gid", "name")
            }
        return details


# --------------------------------------------------------------------------
# Requests, offsets and answers


class _BadRequest(Exception):
    """A query parameter is invalid; the message is Asana-style ("name: why")."""


@dataclass(frozen=True, slots=True)
class _Query:
    limit: int = MAX_LIMIT
    event_type: str | None = None
    actor_type: str | None = None
    actor_gid: str | None = None
    resource_gid: str | None = None
    start_ms: int | None = None  # inclusive, in milliseconds since the epoch
    end_ms: int | None = None  # exclusive
    offset: str | None = None

    @property
    def keyed(self) -> bool:
        """Whether anything but time is filtered on."""
        return any(self.key_filters().values())

    def key_filters(self) -> dict[str, str | None]:
        return {
            "event_type": self.event_type,
            "actor_type": self.actor_type,
            "actor_gid": self.actor_gid,
            "resource_gid": self.resource_gid,
        }

    def fingerprint(self) -> str:
        document = orjson.dumps(self.key_filters(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(document).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Offset:
    position: int  # sequence number of the last event returned
    fingerprint: str
    start_ms: int | None
    end_ms: int | None
    issued: float  # time.monotonic() at issue
    generation: int


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


def _json_reply(document: Any, status: int = 200) -> _Reply:
    return _Reply(status=status, body=orjson.dumps(document))


# fmt: off
_PHRASE_WORDS = (
    ("sad", "happy", "sleepy", "brave", "quiet"),
    ("squid", "otters", "pandas", "herons", "lemurs"),
    ("snuggle", "wander", "giggle", "ponder", "shimmer"),
    ("softly", "loudly", "swiftly", "gently", "boldly"),
)
# fmt: on


def _phrase() -> str:
    # Asana's 500s carry a memorable phrase for support to find the incident.
    words = [secrets.choice(group) for group in _PHRASE_WORDS]
    return f"{secrets.randbelow(9) + 2} {' '.join(words)}"


def _error(status: int, message: str, *headers: tuple[str, str]) -> _Reply:
    error = {"message": message, "help": HELP}
    if status == 500:
        error["phrase"] = _phrase()
    return _Reply(
        status=status, body=orjson.dumps({"errors": [error]}), headers=headers
    )


def _default_message(status: int) -> str:
    if status == 401:
        return "Not Authorized"
    if status == 429:
        return TOO_MANY_REQUESTS
    if status == 500:
        return "Server Error"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _fault_reply(fault: Fault) -> _Reply:
    if fault.drop_connection:
        return _Reply(drop=True)
    headers = () if fault.retry_after is None else (("Retry-After", fault.retry_after),)
    if fault.body is not None:
        return _Reply(fault.status, fault.body, fault.content_type, headers)
    default = _error(fault.status, _default_message(fault.status))
    return _Reply(fault.status, default.body, fault.content_type, headers)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# The offset looks like Asana's: a JWT (header, claims, HS256 signature).
_JWT_HEADER = _b64encode(orjson.dumps({"typ": "JWT", "alg": "HS256"}))


def _format_ms(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_MICROSECOND = timedelta(microseconds=1)


def _to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up so that bounds stay exact."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # lenient: a bare time is UTC
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND
    return -(-micros // 1000)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _parse_time(name: str, text: str) -> int:
    try:
        return _to_ms(datetime.fromisoformat(text))
    except ValueError:
        raise _BadRequest(f"{name}: Not a valid date-time: {text!r}") from None


def _parse_limit(text: str | None) -> int:
    if text is None:
        return MAX_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(
            f"limit: Must be an integer between 1 and {MAX_LIMIT}, got {text!r}"
        )
    return limit


def _parse_query(raw: str) -> _Query:
    # Unknown parameters are ignored, as Asana does; blank values count as absent.
    params = {key: values[0] for key, values in parse_qs(raw).items()}
    actor_type = params.get("actor_type")
    if actor_type is not None and actor_type not in ACTOR_TYPES:
        raise _BadRequest(f"actor_type: Not a valid enum value: {actor_type!r}")
    if actor_type is not None and "actor_gid" in params:
        raise _BadRequest("actor_type: Must not be combined with actor_gid")
    start, end = params.get("start_at"), params.get("end_at")
    return _Query(
        limit=_parse_limit(params.get("limit")),
        event_type=params.get("event_type"),
        actor_type=actor_type,
        actor_gid=params.get("actor_gid"),
        resource_gid=params.get("resource_gid"),
        start_ms=None if start is None else _parse_time("start_at", start),
        end_ms=None if end is None else _parse_time("end_at", end),
        offset=params.get("offset"),
    )


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


_FAULT_KEYS = frozenset(
    ("status", "retry_after", "body", "delay", "drop_connection", "content_type")
)


def _fault_from_json(item: Any) -> Fault:
    if not isinstance(item, dict) or not set(item) <= _FAULT_KEYS:
        keys = ", ".join(sorted(_FAULT_KEYS))
        raise _BadRequest(f"faults: each fault is an object with keys {keys}")
    body, retry_after = item.get("body"), item.get("retry_after")
    try:
        return Fault(
            status=int(item.get("status", 500)),
            retry_after=None if retry_after is None else str(retry_after),
            body=None if body is None else str(body).encode("utf-8"),
            delay=float(item.get("delay", 0.0)),
            drop_connection=bool(item.get("drop_connection", False)),
            content_type=str(item.get("content_type", "application/json")),
        )
    except (TypeError, ValueError) as error:
        raise _BadRequest(f"faults: {error}") from None


@dataclass
class _Matcher:
    """A query's filters as sets of column values (None: no filter)."""

    kinds: frozenset[int] | None
    actors: frozenset[int] | None
    resources: frozenset[int] | None
    keyed: bool

    def matches(self, kind: int, actor: int, resource: int) -> bool:
        if kind == _RAW:
            return not self.keyed
        return (
            (self.kinds is None or kind in self.kinds)
            and (self.actors is None or actor in self.actors)
            and (self.resources is None or resource in self.resources)
        )


# --------------------------------------------------------------------------
# The simulator


@dataclass
class _Log:
    """The events in arrival order, as columns; an index is a sequence number."""

    created: array[int] = field(default_factory=lambda: array("q"))
    kinds: array[int] = field(default_factory=lambda: array("H"))
    actors: array[int] = field(default_factory=lambda: array("H"))
    resources: array[int] = field(default_factory=lambda: array("H"))
    raw: dict[int, bytes] = field(default_factory=dict)
    newest: int = 0  # greatest created_at so far, in ms
    in_order: bool = True  # arrival order is still created_at order

    def __len__(self) -> int:
        return len(self.created)

    def add(
        self,
        created: Iterable[int],
        kinds: Iterable[int],
        actors: Iterable[int],
        resources: Iterable[int],
    ) -> None:
        times = array("q", created)
        if times:
            self.in_order = (
                self.in_order
                and times[0] >= self.newest
                and all(a <= b for a, b in itertools.pairwise(times))
            )
            self.newest = max(self.newest, max(times))
        self.created.extend(times)
        self.kinds.extend(kinds)
        self.actors.extend(actors)
        self.resources.extend(resources)


class AuditLogSimulator:
    """The simulated audit log API; see the module docstring for its model."""

    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        self.settings = settings or SimulatorSettings()
        self._lock = threading.RLock()
        self._rng = random.Random(self.settings.seed)
        self._world = _World(self._rng, self.settings.workspace_gid)
        # Per-event details come from their own generator, so that serving
        # an event never changes which events are drawn next.
        self._detail_seed = self.settings.seed << 48
        self._log = _Log()
        self._key = secrets.token_bytes(32)
        self._generation = 0
        self._faults: deque[Fault] = deque()
        self._windows: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}
        self._in_flight_changed = threading.Condition(self._lock)
        self._requests = 0
        self._stopping = threading.Event()
        self._live_stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._base_url: str | None = None
        if not 0.0 <= self.settings.backlog_burst <= 1.0:
            raise ValueError(
                f"backlog_burst must be between 0 and 1, got "
                f"{self.settings.backlog_burst}"
            )
        if self.settings.backlog > 0:
            self._append_backlog(self.settings.backlog, self.settings.backlog_span)

    # ---------------------------------------------------------------- the log

    def _append_backlog(self, count: int, span: float) -> None:
        span_ms = int(span * 1000)
        first = _now_ms() - span_ms
        created = _backlog_times(first, span_ms, count, self.settings.backlog_burst)
        with self._lock:
            kinds, actors, resources = self._world.draw(self._rng, count)
            self._log.add(created, kinds, actors, resources)

    def append_events(
        self, count: int, *, created_at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Append ``count`` generated events created now (or at ``created_at``).

        An older ``created_at`` simulates events that arrive late.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        created = _now_ms() if created_at is None else _to_ms(created_at)
        with self._lock:
            first = len(self._log)
            kinds, actors, resources = self._world.draw(self._rng, count)
            self._log.add([created] * count, kinds, actors, resources)
            return [self._materialize(seq) for seq in range(first, first + count)]

    def append_raw(self, item: Any) -> None:
        """Append any JSON value as the newest event, e.g. a malformed one."""
        encoded = orjson.dumps(item)  # refuse what could never be served
        with self._lock:
            seq = len(self._log)
            # Sorted at the end of the log: newest so far, or now.
            created = max(self._log.newest, _now_ms())
            self._log.add([created], [_RAW], [0], [0])
            self._log.raw[seq] = encoded

    def events(self) -> list[Any]:
        """A copy of the whole log, sorted by created_at (ties in arrival order)."""
        with self._lock:
            order: Iterable[int] = range(len(self._log))
            if not self._log.in_order:
                order = sorted(order, key=self._log.created.__getitem__)
            return [self._materialize(seq) for seq in order]

    def _materialize(self, seq: int) -> Any:
        log = self._log
        kind = log.kinds[seq]
        if kind == _RAW:
            return orjson.loads(log.raw[seq])
        rng = random.Random(self._detail_seed + seq)
        world, actor = self._world, log.actors[seq]
        event_type = world.types[kind]
        return {
            "gid": str(EVENT_GID_BASE + seq),
            "created_at": _format_ms(log.created[seq]),
            "event_type": event_type.name,
            "event_category": event_type.category,
            "actor": dict(world.actors[actor]),
            "resource": dict(world.resources[log.resources[seq]]),
            "details": world.details(rng, kind),
            "context": world.context(rng, kind, actor),
        }

    # --------------------------------------------------------- fault injection

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each answers one of the next API requests, in order."""
        with self._lock:
            self._faults.extend(faults)

    def expire_offsets(self) -> None:
        """Make every offset issued so far invalid (the API answers 400)."""
        with self._lock:
            self._generation += 1

    @property
    def requests(self) -> int:
        """API requests received so far, including faulted and rejected ones."""
        with self._lock:
            return self._requests

    def wait_for_requests_in_flight(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` admitted requests are in flight, all tokens
        together; False if that did not happen within ``timeout`` seconds."""
        with self._in_flight_changed:
            return self._in_flight_changed.wait_for(
                lambda: sum(self._in_flight.values()) >= count, timeout
            )

    # ----------------------------------------------------------------- serving

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); returns the base URL."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the simulator is already running")
            self._stopping.clear()
            self._live_stopping.clear()
            server = _Server((host, port), self)
            self._server = server
            self._base_url = f"http://{_url_host(host)}:{server.port}{PREFIX}"
        self._threads = [
            threading.Thread(
                target=server.serve_forever,
                # How often the loop checks for shutdown(): stop() waits this.
                kwargs={"poll_interval": 0.02},
                name="simulator-server",
                daemon=True,
            )
        ]
        if self.settings.events_per_second > 0:
            self._threads.append(
                threading.Thread(
                    target=self._generate, name="simulator-generator", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()
        return self._base_url

    def stop(self) -> None:
        """Stop serving and generating; closes every connection, joins threads."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes sleeping handlers
        self._live_stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def stop_live(self) -> None:
        """Stop appending live events (the server goes on), so that a test
        knows the final log once this returns."""
        self._live_stopping.set()
        for thread in self._threads:
            if thread.name == "simulator-generator":
                thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/api/1.0``, once started."""
        if self._base_url is None:
            raise RuntimeError("the simulator has not been started")
        return self._base_url

    def _generate(self) -> None:
        """Append live events at events_per_second until stopped or full."""
        rate = self.settings.events_per_second
        started, made = time.monotonic(), 0
        while True:
            due = int((time.monotonic() - started) * rate) - made
            if due > 0:
                due = min(due, 10_000, self._room())
                if due <= 0:
                    return
                self.append_events(due)
                made += due
            wait = started + (made + 1) / rate - time.monotonic()
            # A floor on the wait keeps high rates from spinning: they batch.
            if self._live_stopping.wait(max(wait, 0.005)):
                return

    def _room(self) -> int:
        limit = self.settings.max_events
        with self._lock:
            return sys.maxsize if limit is None else limit - len(self._log)

    def _pause(self, seconds: float) -> None:
        # Interrupted by stop(), so a slow simulated answer never blocks it.
        if seconds > 0:
            self._stopping.wait(seconds)

    # ------------------------------------------------------------ the endpoint

    def _api(self, method: str, path: str, query: str, auth: str | None) -> _Reply:
        """Answer one API request (runs in its handler thread)."""
        with self._lock:
            self._requests += 1
            fault = self._faults.popleft() if self._faults else None
        token = _bearer(auth)
        # Whether the request fits under the concurrency limit is decided as
        # it arrives; a refused one holds no place while it waits.
        admitted = self._enter(token or "")
        try:
            self._pause(self.settings.latency)
            if fault is not None:
                self._pause(fault.delay)
                return _fault_reply(fault)
            return self._endpoint(method, path, query, token, admitted)
        finally:
            if admitted:
                self._leave(token or "")

    def _endpoint(
        self, method: str, path: str, query: str, token: str | None, admitted: bool
    ) -> _Reply:
        route = _API_PATH.fullmatch(path)
        if method != "GET" or route is None:
            return _error(404, "No matching route for request")
        if self.settings.token is not None and token != self.settings.token:
            return _error(401, "Not Authorized")
        retry_after = self._rate_limited(token or "")
        if retry_after is not None:
            return _error(429, TOO_MANY_REQUESTS, ("Retry-After", str(retry_after)))
        if not admitted:
            return _error(
                429, TOO_MANY_REQUESTS, ("Retry-After", CONCURRENCY_RETRY_AFTER)
            )
        workspace = route["workspace"]
        if workspace != self.settings.workspace_gid:
            return _error(404, f"workspace: Not a recognized ID: {workspace}")
        try:
            return _json_reply(self._page(_parse_query(query)))
        except _BadRequest as error:
            return _error(400, str(error))

    def _enter(self, token: str) -> bool:
        """Count a request in flight, unless the token already has as many
        as max_concurrent_requests (then False, and nothing is counted)."""
        limit = self.settings.max_concurrent_requests
        with self._lock:
            in_flight = self._in_flight.get(token, 0)
            if limit is not None and in_flight >= limit:
                return False
            self._in_flight[token] = in_flight + 1
            self._in_flight_changed.notify_all()
            return True

    def _leave(self, token: str) -> None:
        with self._lock:
            self._in_flight[token] -= 1
            self._in_flight_changed.notify_all()

    def _rate_limited(self, token: str) -> int | None:
        """Seconds to wait when over the limit, else None; every call counts."""
        limit = self.settings.requests_per_minute
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - RATE_WINDOW:
                window.popleft()
            window.append(now)
            if len(window) <= limit:
                return None
            if limit <= 0:
                return int(RATE_WINDOW)
            # Allowed again once all but limit - 1 of these have left the window.
            frees_at = window[len(window) - limit] + RATE_WINDOW
            return max(1, math.ceil(frees_at - now))

    def _page(self, query: _Query) -> dict[str, Any]:
        with self._lock:
            offset = None if query.offset is None else self._verify(query)
            if offset is not None:
                # The bounds travel in the offset, which the client may omit.
                query = replace(query, start_ms=offset.start_ms, end_ms=offset.end_ms)
            after = -1 if offset is None else offset.position
            seqs = self._select(query, after)
            data = [self._materialize(seq) for seq in seqs]
            if not seqs and offset is None:
                # A fresh request scanned the whole log: nothing matches at all.
                return {"data": [], "next_page": None}
            position = seqs[-1] if seqs else after
            return {"data": data, "next_page": self._next_page(query, position)}

    def _select(self, query: _Query, after: int) -> list[int]:
        """Sequence numbers of the next matching events after ``after``."""
        log = self._log
        low, high = after + 1, len(log)
        if log.in_order:
            # Sorted arrivals: the time bounds are a slice, found by bisection.
            if query.start_ms is not None:
                low = max(low, bisect.bisect_left(log.created, query.start_ms))
            if query.end_ms is not None:
                high = max(low, bisect.bisect_left(log.created, query.end_ms))
            if not query.keyed:
                return list(range(low, min(high, low + query.limit)))
        return self._scan(query, low, high)

    def _scan(self, query: _Query, low: int, high: int) -> list[int]:
        log, matcher = self._log, self._matcher(query)
        start = -sys.maxsize if query.start_ms is None else query.start_ms
        end = sys.maxsize if query.end_ms is None else query.end_ms
        found: list[int] = []
        for seq in range(low, high):
            if not start <= log.created[seq] < end:
                continue
            if matcher.matches(log.kinds[seq], log.actors[seq], log.resources[seq]):
                found.append(seq)
                if len(found) == query.limit:
                    break
        return found

    def _matcher(self, query: _Query) -> _Matcher:
        world = self._world

        def indices(values: Iterable[Any], wanted: Any) -> frozenset[int]:
            return frozenset(i for i, value in enumerate(values) if value == wanted)

        kinds = actors = resources = None
        if query.event_type is not None:
            kinds = indices((t.name for t in world.types), query.event_type)
        if query.actor_type is not None:
            actors = indices((a["actor_type"] for a in world.actors), query.actor_type)
        if query.actor_gid is not None:
            actors = indices((a.get("gid") for a in world.actors), query.actor_gid)
        if query.resource_gid is not None:
            gids = (r["gid"] for r in world.resources)
            resources = indices(gids, query.resource_gid)
        return _Matcher(kinds, actors, resources, query.keyed)

    # ----------------------------------------------------------------- offsets

    def _next_page(self, query: _Query, position: int) -> dict[str, str]:
        offset = self._issue(query, position)
        params = {k: v for k, v in query.key_filters().items() if v is not None}
        params.update(limit=str(query.limit), offset=offset)
        path = f"/workspaces/{self.settings.workspace_gid}/audit_log_events?"
        path += urlencode(params)
        return {"offset": offset, "path": path, "uri": self.base_url + path}

    def _issue(self, query: _Query, position: int) -> str:
        log = self._log
        claims = {
            "pos": position,
            # The last event, for people decoding the token; not relied on.
            "last_created_at": _format_ms(log.created[position]),
            "last_gid": str(EVENT_GID_BASE + position),
            "flt": query.fingerprint(),
            "start": query.start_ms,
            "end": query.end_ms,
            "iat": time.monotonic(),
            "gen": self._generation,
        }
        signing_input = f"{_JWT_HEADER}.{_b64encode(orjson.dumps(claims))}"
        return f"{signing_input}.{self._signature(signing_input)}"

    def _signature(self, signing_input: str) -> str:
        digest = hmac.new(self._key, signing_input.encode(), hashlib.sha256)
        return _b64encode(digest.digest())

    def _verify(self, query: _Query) -> _Offset:
        """The offset of ``query``; raises _BadRequest unless it is valid for it."""
        offset = self._decode(query.offset or "")
        stale = time.monotonic() - offset.issued >= self.settings.offset_ttl
        if (
            stale
            or offset.generation != self._generation
            or offset.fingerprint != query.fingerprint()
            or query.start_ms not in (None, offset.start_ms)
            or query.end_ms not in (None, offset.end_ms)
            or not 0 <= offset.position < len(self._log)
        ):
            raise _BadRequest(OFFSET_INVALID)
        return offset

    def _decode(self, token: str) -> _Offset:
        header, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        expected = self._signature(f"{header}.{payload}")
        genuine = hmac.compare_digest(signature.encode(), expected.encode())
        if header != _JWT_HEADER or not genuine:
            raise _BadRequest(OFFSET_INVALID)
        claims = orjson.loads(_b64decode(payload))  # signed by us: well formed
        return _Offset(
            position=claims["pos"],
            fingerprint=claims["flt"],
            start_ms=claims["start"],
            end_ms=claims["end"],
            issued=claims["iat"],
            generation=claims["gen"],
        )

    # ------------------------------------------------------------ admin routes

    def _admin(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        """The ``/_simulator/`` routes that let another process drive the log."""
        route = (method, path.removeprefix(ADMIN_PREFIX))
        try:
            if route == ("POST", "/events"):
                return _json_reply(self.append_events(_admin_count(query)))
            if route == ("GET", "/events"):
                return _json_reply({"events": self.events()})
            if route == ("POST", "/expire-offsets"):
                self.expire_offsets()
                return _json_reply({"expired": True})
            if route == ("POST", "/faults"):
                faults = _admin_faults(body)
                self.inject(*faults)
                return _json_reply({"queued": len(faults)})
            if route == ("GET", "/status"):
                return _json_reply(self._status())
        except _BadRequest as error:
            return _error(400, str(error))
        return _error(404, "No matching route for request")

    def _status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "events": len(self._log),
                "requests": self._requests,
                "pending_faults": len(self._faults),
                "workspace_gid": self.settings.workspace_gid,
            }


def _backlog_times(first: int, span_ms: int, count: int, burst: float) -> Iterator[int]:
    """Sorted creation times (ms) of a backlog of ``count`` events from
    ``first`` over ``span_ms``: ``burst`` of them within one day in the middle
    of the span (all of it when shorter), the rest spread evenly."""
    bursted = round(count * burst)
    even = count - bursted
    day = min(_DAY_MS, span_ms)
    day_start = first + (span_ms - day) // 2
    spread = (first + (i * span_ms) // even for i in range(even))
    crowded = (day_start + (i * day) // bursted for i in range(bursted))
    return heapq.merge(spread, crowded)


def _admin_count(query: str) -> int:
    text = parse_qs(query).get("count", ["1"])[0]
    if not text.isdigit() or not 1 <= int(text) <= MAX_ADMIN_COUNT:
        raise _BadRequest(f"count: Must be an integer between 1 and {MAX_ADMIN_COUNT}")
    return int(text)


def _admin_faults(body: bytes) -> list[Fault]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadRequest("faults: the body must be a JSON list of faults") from None
    if not isinstance(items, list):
        raise _BadRequest("faults: the body must be a JSON list of faults")
    return [_fault_from_json(item) for item in items]


def _url_host(host: str) -> str:
    # A wildcard address is not something to connect to: name loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------
# HTTP plumbing


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections.

    Handler threads are daemons and tracked with their sockets: ``stop()``
    shuts the sockets down so that threads waiting for another request on a
    kept-alive connection end at once, then joins them.
    """

    daemon_threads = True
    block_on_close = False
    # The forwarder opens up to max_concurrent_requests connections at once;
    # socketserver's default backlog of 5 makes the kernel drop the rest of
    # the SYNs, and each retries a second later.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: AuditLogSimulator) -> None:
        self.simulator = simulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._live: dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.port

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="simulator-connection",
            daemon=True,
        )
        if isinstance(request, socket.socket):
            with self._live_lock:
                self._live[thread] = request
        thread.start()

    def _serve_connection(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float = 5.0) -> None:
        with self._live_lock:
            live = dict(self._live)
        for connection in live.values():
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in live:
            thread.join(timeout)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # A client that hangs up (or stop() closing its socket) is not an error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections
    server_version = "AsanaAuditLogSimulator/1.0"
    timeout = 120  # idle keep-alive connections are closed, as servers do
    # Headers and body are written separately: without this, Nagle's algorithm
    # and delayed ACKs add 40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a test run or a demo should not print a line per request."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True  # the stream is out of step now
            self._send(_error(400, "The request body could not be read"))
            return
        try:
            reply = self._answer(body)
        except Exception:
            # A bug in the simulator: answer like Asana's 500, and show it.
            traceback.print_exc()
            reply = _error(500, "Server Error")
        self._send(reply)

    def _answer(self, body: bytes) -> _Reply:
        url = urlsplit(self.path)
        simulator = self.server.simulator
        if url.path.startswith(ADMIN_PREFIX + "/"):
            return simulator._admin(self.command, url.path, url.query, body)
        auth = self.headers.get("Authorization")
        return simulator._api(self.command, url.path, url.query, auth)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        length = self.headers.get("Content-Length", "0") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            return None
        return self.rfile.read(int(length))

    def _send(self, reply: _Reply) -> None:
        if reply.drop:
            self.close_connection = True  # hang up without a word
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("X-Request-Id", secrets.token_hex(16))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


def serve_forever(
    settings: SimulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> None:
    """Serve the simulator until KeyboardInterrupt or SIGTERM (the CLI's entry)."""
    simulator = AuditLogSimulator(settings)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Signal handlers can only be set from the main thread.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    url = simulator.start(host, port)
    print(f"simulated Asana audit log API at {url}", file=sys.stderr)
    try:
        # Woken by SIGTERM; the timeout keeps Ctrl-C responsive everywhere.
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        if main:
            signal.signal(signal.SIGTERM, previous)
