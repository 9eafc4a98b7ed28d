"""Every Prometheus metric the forwarder exports, defined once.

Metrics live in a registry passed in, so each test can use a fresh one.
Per-sink label sets are created when the sink starts, so every series exists
(at zero) from the first scrape, and the hot path holds the children instead
of looking labels up for each event.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from forwarder import __version__

NAMESPACE = "asana_forwarder"
API_STATUSES = ("200", "400", "401", "402", "403", "404", "429", "5xx", "error")


@dataclass(slots=True)
class SinkMetrics:
    """The children of the per-sink metrics for one sink."""

    delivered: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter
    truncated: Counter
    filtered: Counter
    duplicates_skipped: Counter
    batches: Counter
    pending: Gauge
    lag: Gauge
    checkpoint_age: Gauge
    delivery_seconds: Histogram
    backfill_slices: Gauge
    backfill_remaining: Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Info(
            "build", "Forwarder version.", namespace=NAMESPACE, registry=r
        )
        self.build_info.info({"version": __version__})
        self.events_fetched = Counter(
            "events_fetched",
            "Events received from the audit-log API.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.pages_fetched = Counter(
            "pages_fetched",
            "Pages received from the audit-log API.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_requests = Counter(
            "api_requests",
            "Requests to the audit-log API, by status.",
            ["status"],
            namespace=NAMESPACE,
            registry=r,
        )
        for status in API_STATUSES:
            self.api_requests.labels(status)
        self.api_seconds = Histogram(
            "api_request_duration_seconds",
            "Latency of audit-log API requests.",
            namespace=NAMESPACE,
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rate_limit_waits = Counter(
            "rate_limit_waits",
            "Requests held back by the request budget or a Retry-After.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "rate_limit_wait_seconds",
            "Time requests were held back.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_retries = Counter(
            "api_retries",
            "API requests retried after a transient failure.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.malformed_pages = Counter(
            "api_malformed_pages",
            "API replies that were not a valid page.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.malformed_events = Counter(
            "malformed_events",
            "Entries of a page that were not JSON objects.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.offset_recoveries = Counter(
            "offset_recoveries",
            "Offsets the API rejected, recovered by time.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_poll = Gauge(
            "last_successful_poll_timestamp_seconds",
            "When the API last answered a page.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.up = Gauge(
            "api_access_ok",
            "1 unless the API refuses the token, tier or workspace.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.up.set(1)
        self._sink_delivered = Counter(
            "sink_events_delivered",
            "Events a sink delivered.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_failed = Counter(
            "sink_delivery_failures",
            "Batch deliveries that failed.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_retried = Counter(
            "sink_delivery_retries",
            "Batch deliveries retried.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_dead = Counter(
            "sink_events_dead_lettered",
            "Events set aside in the dead-letter file.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_truncated = Counter(
            "sink_events_truncated",
            "Events a sink delivered cut to its message size limit.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_filtered = Counter(
            "sink_events_filtered",
            "Events a sink's filters left out.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_duplicates = Counter(
            "sink_duplicates_skipped",
            "Events skipped as already delivered after an offset recovery.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_batches = Counter(
            "sink_batches_delivered",
            "Batches a sink delivered.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_pending = Gauge(
            "sink_events_pending",
            "Events fetched for a sink, not yet delivered.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_lag = Gauge(
            "sink_lag_seconds",
            "Now minus created_at of the newest event the sink delivered.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_checkpoint_age = Gauge(
            "sink_checkpoint_age_seconds",
            "Seconds since the sink's checkpoint was last saved.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_backfill_slices = Gauge(
            "sink_backfill_slices",
            "Backfill time slices a sink is reading (0 once caught up).",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_backfill_remaining = Gauge(
            "sink_backfill_remaining_seconds",
            "Seconds of history a sink's backfill slices have yet to read.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sink_delivery_seconds = Histogram(
            "sink_delivery_duration_seconds",
            "Time to deliver one batch.",
            ["sink"],
            namespace=NAMESPACE,
            registry=r,
            buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30),
        )

    def for_sink(self, sink: str) -> SinkMetrics:
        return SinkMetrics(
            delivered=self._sink_delivered.labels(sink),
            failed=self._sink_failed.labels(sink),
            retried=self._sink_retried.labels(sink),
            dead_lettered=self._sink_dead.labels(sink),
            truncated=self._sink_truncated.labels(sink),
            filtered=self._sink_filtered.labels(sink),
            duplicates_skipped=self._sink_duplicates.labels(sink),
            batches=self._sink_batches.labels(sink),
            pending=self._sink_pending.labels(sink),
            lag=self._sink_lag.labels(sink),
            checkpoint_age=self._sink_checkpoint_age.labels(sink),
            delivery_seconds=self._sink_delivery_seconds.labels(sink),
            backfill_slices=self._sink_backfill_slices.labels(sink),
            backfill_remaining=self._sink_backfill_remaining.labels(sink),
        )
