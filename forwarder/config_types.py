"""Building blocks of the configuration, shared by ``forwarder.config`` and
the sink modules that define their own section: durations, secrets, the
strict base section and what every sink has in common."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from forwarder.durations import parse_duration
from forwarder.secrets import Secret, resolve_secret


def _secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string: a literal, 'env:NAME' or 'file:PATH'")
    return resolve_secret(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("expected a path, not an empty string")
    return value


NonEmptyPath = Annotated[Path, BeforeValidator(_path)]
SecretValue = Annotated[Secret, BeforeValidator(_secret)]


class Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class DeliveryConfig(Section):
    """How the pipeline batches and retries for one sink."""

    batch_max_events: Annotated[int, Field(ge=1, le=100_000)] = 500
    batch_max_wait: Duration = 1.0
    retry_initial_delay: Duration = 1.0
    retry_max_delay: Duration = 60.0


class SinkBaseConfig(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    format: Literal["raw", "normalized", "ocsf"] = "raw"
    include_event_types: list[str] = ["*"]
    exclude_event_types: list[str] = []
    delivery: DeliveryConfig = DeliveryConfig()

    @property
    def render_format(self) -> str:
        """The format the pipeline renders this sink's events in. A sink whose
        wire format decides the payload (syslog with CEF) overrides this."""
        return self.format
