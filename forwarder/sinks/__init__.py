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
from forwarder.sinks.syslog import SyslogSink, SyslogSinkConfig

if TYPE_CHECKING:
    from forwarder.config import SinkConfig
    from forwarder.metrics import SinkMetrics

__all__ = ["Batch", "DeliveryReport", "Sink", "build_sink"]


def build_sink(config: SinkConfig, metrics: SinkMetrics | None = None) -> Sink:
    """The sink a configuration describes; ``metrics`` receives the counts
    only a sink can make (messages truncated to fit a syslog frame)."""
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
    if isinstance(config, SyslogSinkConfig):
        return SyslogSink(
            config.name,
            transport=config.transport,
            host=config.host,
            port=config.port,
            syntax=config.syntax,
            framing=config.stream_framing,
            facility=config.facility,
            app_name=config.app_name,
            hostname=config.hostname,
            max_message_bytes=config.message_limit,
            ca_file=config.ca_file,
            cert_file=config.cert_file,
            key_file=config.key_file,
            tls_verify=config.tls_verify,
            tls_server_name=config.tls_server_name,
            connect_timeout=config.connect_timeout,
            write_timeout=config.write_timeout,
            on_truncated=metrics.truncated.inc if metrics is not None else None,
        )
    raise AssertionError(f"no sink for {type(config).__name__}")
