"""The Sink protocol: what the pipeline needs from every destination."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Batch:
    """Events to deliver together, each already rendered in the sink's format.

    ``events[i]`` is the API's event behind ``payloads[i]``; sinks use it for
    metadata (time, type) and to set aside an event a receiver refuses.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.payloads)


@dataclass(slots=True)
class DeliveryReport:
    """The outcome of a delivery that succeeded as a whole.

    ``rejected`` lists (index in the batch, reason) for events the receiver
    refused for good; the pipeline sets them aside in the dead-letter file.
    Every other event of the batch was delivered (and, where the protocol
    has acknowledgements, acknowledged).
    """

    rejected: list[tuple[int, str]] = field(default_factory=list)


class Sink(Protocol):
    """A destination for events.

    ``deliver`` returns only when the batch is safely with the receiver:
    the pipeline moves the sink's checkpoint past the batch as soon as it
    returns. It raises ``SinkError`` when the batch may be retried as a whole
    (connection lost, receiver busy); the pipeline retries with backoff.
    """

    name: str

    async def open(self) -> None:
        """Connect or prepare; may raise SinkError, which is retried."""

    async def deliver(self, batch: Batch) -> DeliveryReport:
        """Deliver every event of the batch, or raise SinkError."""

    async def aclose(self) -> None:
        """Release connections and files."""
