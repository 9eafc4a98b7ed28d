"""Sinks: where events are delivered. ``base`` holds the protocol; one module
per sink type; ``build_sink`` turns a sink's configuration into a sink."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.sinks.base import Batch, DeliveryReport, Sink
from forwarder.sinks.file import FileSink
from forwarder.sinks.http import HttpSink, HttpSinkConfig
from forwarder.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkConfig
from forwarder.sinks.stdout import StdoutSink
from forwarder.sinks.sumo_logic import SumoLogicSink, SumoLogicSinkConfig

if TYPE_CHECKING:
    from forwarder.config import SinkConfig

__all__ = ["Batch", "DeliveryReport", "Sink", "build_sink"]


def build_sink(config: SinkConfig) -> Sink:
    # Imported here: forwarder.config imports the sink modules' sections.
    from forwarder.config import FileSinkConfig, StdoutSinkConfig

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
    if isinstance(config, SplunkHecSinkConfig):
        return SplunkHecSink.from_config(config)
    if isinstance(config, SumoLogicSinkConfig):
        return SumoLogicSink.from_config(config)
    if isinstance(config, HttpSinkConfig):
        return HttpSink.from_config(config)
    raise AssertionError(f"no sink for {type(config).__name__}")
