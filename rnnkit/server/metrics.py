"""The server's Prometheus metrics (``GET /metrics``), one registry per app.

* ``rnnkit_requests_total{endpoint, status}`` and ``rnnkit_request_seconds{endpoint}``: every
  HTTP request, timed from arrival to the last byte of its answer;
* ``rnnkit_queue_seconds``: a generation's wait from its request to its first decoding step;
* ``rnnkit_tokens_generated_total{model}`` and ``rnnkit_token_seconds``: tokens sampled, and the
  time between two tokens of one stream (per-token latency);
* ``rnnkit_batch_size``: the streams advanced together by one decoding step;
* ``rnnkit_live_sessions``, ``rnnkit_inflight_requests``, ``rnnkit_rejected_total`` (429s).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServerMetrics:
    """The metric objects of one app, in their own registry (tests build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "rnnkit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "rnnkit_request_seconds", "request latency", ["endpoint"], registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "rnnkit_queue_seconds", "wait before a generation's first step", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.tokens = Counter("rnnkit_tokens_generated", "tokens sampled", ["model"], registry=r)
        self.token_seconds = Histogram(
            "rnnkit_token_seconds", "time between two tokens of a stream", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.batch_size = Histogram(
            "rnnkit_batch_size", "streams advanced by one decoding step", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )  # fmt: skip
        self.live_sessions = Gauge("rnnkit_live_sessions", "keyboard sessions held", registry=r)
        self.inflight = Gauge("rnnkit_inflight_requests", "requests being worked on", registry=r)
        self.rejected = Counter(
            "rnnkit_rejected", "requests refused with 429 (server at capacity)", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
