"""The configuration file: one TOML document, validated before anything starts.

Every problem is reported with the key it concerns (``sinks[1].path``) and
what is wrong with it, all at once, so that an operator fixes a file in one
pass. Durations are written as "15s" or "5m"; secrets as "env:NAME" or
"file:PATH".
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from forwarder.config_types import (
    Duration,
    NonEmptyPath,
    SecretValue,
    Section,
    SinkBaseConfig,
)
from forwarder.durations import parse_duration
from forwarder.errors import ConfigError
from forwarder.sinks.http import HttpSinkConfig
from forwarder.sinks.splunk_hec import SplunkHecSinkConfig
from forwarder.sinks.sumo_logic import SumoLogicSinkConfig
from forwarder.sinks.syslog import SyslogSinkConfig
from forwarder.timestamps import parse_timestamp, utc_now

DEFAULT_BASE_URL = "https://app.asana.com/api/1.0"


class ApiFilters(Section):
    """Server-side filters: the API only returns matching events."""

    event_type: Annotated[str, Field(min_length=1)] | None = None
    actor_type: (
        Literal["user", "asana", "asana_support", "anonymous", "external_administrator"]
        | None
    ) = None
    actor_gid: str | None = None
    resource_gid: str | None = None

    @model_validator(mode="after")
    def _actor_type_alone(self) -> ApiFilters:
        if self.actor_type is not None and self.actor_gid is not None:
            raise ValueError("actor_type cannot be combined with actor_gid")
        return self

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _start_at(value: object) -> datetime | None:
    if value is None:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a date-time without a zone; add 'Z' for UTC")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a timestamp or a duration ago, such as '7d'")
    if value[:1].isdigit() and "T" in value:
        return parse_timestamp(value)
    try:
        return utc_now() - timedelta(seconds=parse_duration(value))
    except OverflowError:
        raise ValueError(f"{value!r} is too far back") from None


class SourceConfig(Section):
    workspace_gid: Annotated[str, Field(pattern=r"^\d+$")]
    token: SecretValue
    base_url: str = DEFAULT_BASE_URL
    allow_insecure_http: bool = False
    # A CA bundle to trust for the API, for TLS-inspecting proxies.
    ca_file: Path | None = None
    poll_interval: Duration = 15.0
    page_size: Annotated[int, Field(ge=1, le=100)] = 100
    start_at: Annotated[datetime | None, BeforeValidator(_start_at)] = None
    # Asana allows 1,500 a minute on paid tiers; more is for simulators.
    max_requests_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 600
    # Requests in flight at once, for all sinks; Asana allows about 50.
    max_concurrent_requests: Annotated[int, Field(ge=1, le=50)] = 20
    request_timeout: Annotated[Duration, Field(gt=0)] = 30.0
    offset_recovery_margin: Duration = 300.0
    # A sink further behind than backfill_threshold reads its backlog in
    # time slices, backfill_concurrency at once (1: one page after another,
    # in order). Slices end late_event_margin before now, for events Asana
    # shows late.
    backfill_concurrency: Annotated[int, Field(ge=1, le=50)] = 16
    backfill_threshold: Annotated[Duration, Field(gt=0)] = 3600.0
    late_event_margin: Duration = 1800.0
    filters: ApiFilters = ApiFilters()

    @field_validator("base_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
            raise ValueError("base_url must be an https:// URL with a host")
        return value

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _threshold_past_margin(self) -> SourceConfig:
        if self.backfill_threshold < self.late_event_margin:
            raise ValueError(
                "backfill_threshold must not be shorter than late_event_margin: "
                "slices end late_event_margin before now"
            )
        return self

    @model_validator(mode="after")
    def _https_only(self) -> SourceConfig:
        # Two keys together: reported on the section.
        if urlsplit(self.base_url).scheme == "http" and not self.allow_insecure_http:
            raise ValueError(
                "base_url is http://, which would send the token in clear; "
                "use https:// or set allow_insecure_http = true (tests only)"
            )
        return self


class StateConfig(Section):
    directory: Path = Path("state")


class ServerConfig(Section):
    listen: str = "127.0.0.1:9464"
    # How long a sink may fail to deliver before /readyz reports it stuck.
    sink_stuck_after: Duration = 300.0

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, such as '127.0.0.1:9464'")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DaemonConfig(Section):
    # How long a stopping daemon waits for batches in flight before it
    # abandons them (they are delivered again after the restart).
    shutdown_grace: Duration = 10.0
    # How often to ask again after the API refused the token, tier or workspace.
    access_retry_interval: Duration = 60.0


class StdoutSinkConfig(SinkBaseConfig):
    type: Literal["stdout"]


class FileSinkConfig(SinkBaseConfig):
    type: Literal["file"]
    path: NonEmptyPath
    max_bytes: Annotated[int, Field(ge=1024)] = 100 * 1024 * 1024
    keep_files: Annotated[int, Field(ge=0, le=1000)] = 5
    fsync: bool = True


SinkConfig = Annotated[
    StdoutSinkConfig
    | FileSinkConfig
    | SplunkHecSinkConfig
    | SumoLogicSinkConfig
    | HttpSinkConfig
    | SyslogSinkConfig,
    Field(discriminator="type"),
]
SINK_TYPES = ("stdout", "file", "splunk_hec", "sumo_logic", "http", "syslog")


class Config(Section):
    source: SourceConfig
    state: StateConfig = StateConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    daemon: DaemonConfig = DaemonConfig()
    sinks: Annotated[list[SinkConfig], Field(min_length=1)]

    @field_validator("sinks")
    @classmethod
    def _unique_names(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        names = [sink.name for sink in sinks]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sink name {name!r} is used twice")
        return sinks


def _key_of(location: tuple[int | str, ...]) -> str:
    key = ""
    previous: int | str | None = None
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        elif previous is not None and isinstance(previous, int) and part in SINK_TYPES:
            # pydantic names the union member it tried; the user never wrote it.
            pass
        else:
            key += f".{part}" if key else part
        previous = part
    return key or "(top level)"


def _problem_of(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown key (misspelt, or not valid in this section)"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] in ("model_type", "model_attributes_type"):
        return "expected a table (a [section] or { key = value })"
    if error["type"] == "path_type":
        return "expected a path (a string)"
    if error["type"] == "union_tag_invalid":
        return f"unknown sink type; expected one of {', '.join(SINK_TYPES)}"
    if error["type"] == "union_tag_not_found":
        return f"'type' is missing; expected one of {', '.join(SINK_TYPES)}"
    return message.removeprefix("Value error, ")


def parse_config(document: dict[str, Any]) -> Config:
    """Validate a decoded document; raise ConfigError listing every problem."""
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        problems = [
            (_key_of(tuple(item["loc"])), _problem_of(item)) for item in error.errors()
        ]
        raise ConfigError(problems) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([(str(path), f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            [(str(path), f"not UTF-8 text (byte {error.start})")]
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([(str(path), f"not valid TOML: {error}")]) from None
    return parse_config(document)
