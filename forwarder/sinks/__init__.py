"""Sinks: where events are delivered. ``base`` holds the protocol; one module
per sink type; ``build_sink`` turns a sink's configuration into a sink."""

from __future__ import annotations

from forwarder.config import FileSinkConfig, SinkConfig, StdoutSinkConfig
from forwarder.sinks.base import Batch, DeliveryReport, Sink
from forwarder.sinks.file import FileSink
from forwarder.sinks.stdout import StdoutSink

__all__ = ["Batch", "DeliveryReport", "Sink", "build_sink"]


def build_sink(config: SinkConfig) -> Sink:
    if isinstance(config, StdoutSinkConfig):
        return StdoutSink(config.name)
    if isinstance(config, FileSinkConfig):
        return FileSink(
            config.name,
            config.path,
            max_bytes=config.max_bytes,
            keep_files=config.keep_files,
            fsync=config.fsync,
        )
    raise AssertionError(f"no sink for {type(config).__name__}")
