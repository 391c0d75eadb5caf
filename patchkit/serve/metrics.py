"""Prometheus metrics of one server (a registry per app, so two apps in one process never mix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("patchkit_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.finished = Counter("patchkit_generations", "Generations ended, by finish reason (stop, length, cancelled, error).",
                                ["reason"], registry=r)
        self.prompt_tokens = Counter("patchkit_prompt_tokens", "Prompt tokens processed (without virtual tokens).", registry=r)
        self.completion_tokens = Counter("patchkit_completion_tokens", "Tokens generated.", registry=r)
        self.patch_requests = Counter("patchkit_patch_requests", "Generations served with each patch.", ["patch", "digest"],
                                      registry=r)
        self.refusals = Counter("patchkit_patch_refusals", "Patch sets refused (not served), by error code.", ["code"], registry=r)
        self.prefix_cache = Counter("patchkit_prefix_cache", "Prefix KV cache lookups, by result.", ["result"], registry=r)
        self.prefix_cache_entries = Gauge("patchkit_prefix_cache_entries", "Patch sets whose prefix KV is in memory.", registry=r)
        self.patch_sets = Gauge("patchkit_patch_sets_verified", "Patch sets verified and ready to serve.", registry=r)
        self.latency = Histogram("patchkit_request_latency_seconds", "Time from request to last token, by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("patchkit_time_to_first_token_seconds", "Time from request to the first generated text.",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("patchkit_batch_rows", "Rows in each decoding step (continuous batching).",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("patchkit_queue_depth", "Requests waiting for a batch slot.", registry=r)
        self.running = Gauge("patchkit_running_requests", "Requests generating now.", registry=r)
        self.in_flight = Gauge("patchkit_in_flight_requests", "Requests accepted and not yet answered.", registry=r)
        self.draining = Gauge("patchkit_draining", "1 after SIGTERM, while in-flight requests finish.", registry=r)

    def bind(self, *, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        """Queue depth and running rows are read from the engine at scrape time."""
        self.queue_depth.set_function(waiting)
        self.running.set_function(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
