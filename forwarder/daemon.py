"""The daemon: wires the source, the sink runners, the probe server and the
signals together, and runs them until stopped.

SIGTERM or SIGINT stops fetching at once; batches in flight get
``shutdown_grace`` to finish and have their checkpoints saved, then whatever
is left is abandoned (and delivered again after a restart). A second signal
exits immediately.
"""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import time
from collections.abc import Callable
from datetime import timedelta

import anyio
import anyio.abc
import httpx
import orjson
import structlog
from prometheus_client import CollectorRegistry, disable_created_metrics

from forwarder import __version__
from forwarder.backfill import BackfillSettings
from forwarder.checkpoint import Checkpoint, CheckpointStore, FileCheckpointStore
from forwarder.config import Config, SinkConfig
from forwarder.deadletter import DeadLetterFile
from forwarder.filters import EventTypeFilter
from forwarder.formats import RENDERERS
from forwarder.health import Health
from forwarder.metrics import Metrics, SinkMetrics
from forwarder.pipeline import RunnerOptions, SinkRunner, StreamSettings
from forwarder.ratelimit import RequestBudget
from forwarder.retry import Backoff
from forwarder.server import ProbeServer
from forwarder.sinks import Sink, build_sink
from forwarder.source import AuditLogClient, PageReader
from forwarder.timestamps import format_timestamp

log = structlog.get_logger("forwarder.daemon")

SUMMARY_SECONDS = 60.0
HEARTBEAT_SECONDS = 5.0


def filters_fingerprint(config: Config) -> str:
    """Identifies the server-side filters the saved offsets were issued for."""
    query = config.source.filters.as_query()
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[
        :16
    ]


def load_checkpoints(
    config: Config, store: CheckpointStore
) -> dict[str, Checkpoint | None]:
    """Every sink's checkpoint, read before anything starts: a corrupt one
    stops start-up (StateError) instead of being replaced silently."""
    return {sink.name: store.load(sink.name) for sink in config.sinks}


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        once: bool = False,
        registry: CollectorRegistry | None = None,
        sink_factory: Callable[[SinkConfig, SinkMetrics], Sink] = build_sink,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.config = config
        self.once = once
        self.metrics = Metrics(registry)
        self.health = Health(
            poll_interval=config.source.poll_interval,
            sink_stuck_after=config.server.sink_stuck_after,
        )
        self.store = FileCheckpointStore(config.state.directory)
        self._sink_factory = sink_factory
        self._transport = transport
        self._runners: list[SinkRunner] = []
        self._runner_scope: anyio.CancelScope | None = None
        self.probe_server: ProbeServer | None = None
        self.stopped_by_signal = False
        # Set when the grace period ran out with batches still in flight.
        self.abandoned = False

    async def run(self, *, serve_probes: bool = True) -> None:
        self.store.lock()
        try:
            checkpoints = load_checkpoints(self.config, self.store)
            if serve_probes:
                server = self.config.server
                self.probe_server = ProbeServer(
                    server.host, server.port, self.metrics, self.health
                ).start()
            log.info(
                "forwarder_started",
                version=__version__,
                workspace_gid=self.config.source.workspace_gid,
                sinks=[sink.name for sink in self.config.sinks],
                listen=self.probe_server.address if self.probe_server else None,
                once=self.once,
            )
            await self._run_pipeline(checkpoints)
        finally:
            if self.probe_server is not None:
                self.probe_server.stop()
            self.store.unlock()
        log.info("forwarder_stopped")

    async def _run_pipeline(self, checkpoints: dict[str, Checkpoint | None]) -> None:
        source = self.config.source
        timeout = httpx.Timeout(source.request_timeout, connect=10.0)
        verify: ssl.SSLContext | bool = True
        if source.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(source.ca_file))
        if source.base_url.startswith("http://"):
            log.warning(
                "api_tls_disabled",
                base_url=source.base_url,
                consequence="the token travels in clear",
            )
        async with httpx.AsyncClient(
            timeout=timeout, transport=self._transport, verify=verify
        ) as http:
            client = AuditLogClient(
                http,
                base_url=source.base_url,
                workspace_gid=source.workspace_gid,
                token=source.token,
                page_size=source.page_size,
                filters=source.filters,
            )
            reader = PageReader(
                client,
                RequestBudget(source.max_requests_per_minute),
                self.metrics,
                self.health,
                access_retry_interval=self.config.daemon.access_retry_interval,
                max_concurrent=source.max_concurrent_requests,
            )
            self._runners = [
                self._runner_for(sink, reader, checkpoints[sink.name])
                for sink in self.config.sinks
            ]
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(self._watch_signals, helpers)
                helpers.start_soon(self._beat)
                helpers.start_soon(self._summarize)
                async with anyio.create_task_group() as runners:
                    self._runner_scope = runners.cancel_scope
                    for runner in self._runners:
                        runners.start_soon(runner.run)
                helpers.cancel_scope.cancel()

    def _runner_for(
        self, sink_config: SinkConfig, reader: PageReader, saved: Checkpoint | None
    ) -> SinkRunner:
        source = self.config.source
        delivery = sink_config.delivery
        settings = StreamSettings(
            workspace_gid=source.workspace_gid,
            poll_interval=source.poll_interval,
            start_at=format_timestamp(source.start_at) if source.start_at else None,
            filters=filters_fingerprint(self.config),
            recovery_margin=source.offset_recovery_margin,
            once=self.once,
            backfill=BackfillSettings(
                concurrency=source.backfill_concurrency,
                threshold=timedelta(seconds=source.backfill_threshold),
                late_event_margin=timedelta(seconds=source.late_event_margin),
            ),
        )
        options = RunnerOptions(
            format_name=sink_config.render_format,
            renderer=RENDERERS[sink_config.render_format],
            event_filter=EventTypeFilter(
                sink_config.include_event_types, sink_config.exclude_event_types
            ),
            batch_max_events=delivery.batch_max_events,
            batch_max_wait=delivery.batch_max_wait,
            backoff=Backoff(delivery.retry_initial_delay, delivery.retry_max_delay),
        )
        return SinkRunner(
            self._sink_factory(sink_config, self.metrics.for_sink(sink_config.name)),
            options,
            settings=settings,
            reader=reader,
            store=self.store,
            checkpoint=saved,
            metrics=self.metrics,
            health=self.health,
            dead_letters=DeadLetterFile(self.config.state.directory, sink_config.name),
        )

    def stop(self) -> None:
        """Stop fetching; give batches in flight the grace period."""
        for runner in self._runners:
            runner.stop()

    async def _watch_signals(self, helpers: anyio.abc.TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self.stopped_by_signal:
                    log.warning("second_signal_exiting_now", signal=signum.name)
                    os._exit(128 + signum)
                self.stopped_by_signal = True
                grace = self.config.daemon.shutdown_grace
                log.info("stopping", signal=signum.name, grace_seconds=grace)
                self.stop()
                helpers.start_soon(self._abandon_after, grace)

    async def _abandon_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        # Past the grace period the batches in flight are cancelled. Their
        # checkpoints were not saved, so they are delivered again after the
        # restart: late, but not lost.
        log.warning("shutdown_grace_expired", action="abandoning batches")
        self.abandoned = True
        if self._runner_scope is not None:
            self._runner_scope.cancel()

    async def _beat(self) -> None:
        while True:
            self.health.beat()
            await anyio.sleep(HEARTBEAT_SECONDS)

    async def _summarize(self) -> None:
        started = time.monotonic()
        while True:
            await anyio.sleep(SUMMARY_SECONDS)
            sample = self.metrics.registry.get_sample_value
            log.info(
                "forwarder_summary",
                uptime_seconds=round(time.monotonic() - started),
                events_fetched=sample("asana_forwarder_events_fetched_total"),
                delivered={r.name: r.delivered_total for r in self._runners},
                ready=self.health.ready()[1],
            )
