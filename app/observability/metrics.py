"""Prometheus metrics: one `Metrics` object (with its own registry) per app instance.

Features report through its small methods, reachable as `request.app.state.genserve.metrics`
(or handed to them in the lifespan); nothing here is global, so tests can build many apps.

    requests and latency    genserve_http_requests_total / _request_duration_seconds
                            {method, route, status}; genserve_http_requests_in_flight
    upstream                genserve_upstream_duration_seconds / _errors_total {provider, model}
    time to first token     genserve_time_to_first_token_seconds {provider, model}
    tokens                  genserve_prompt_tokens_total / genserve_completion_tokens_total {model}
    generations             genserve_generations_total {endpoint, provider, model, outcome}
    rate limits             genserve_rate_limited_total {limit}          ← `rate_limited(limit)`
                            (refusals by the job hooks are counted by the observability hook)
    embedded model          genserve_local_queue_depth                   ← `watch_local_queue(...)`
    safeguards, read from their own counters at each scrape   ← `watch_safeguards(...)`:
      cache                 genserve_cache_lookups_total {result: hit, miss, error}
      circuit breakers      genserve_circuit_state {upstream} (0 closed, 1 half-open, 2 open),
                            genserve_circuit_opened_total {upstream}
      retries, fallbacks    genserve_upstream_retries_total, genserve_fallbacks_total
      concurrency caps      genserve_upstream_rejected_total {provider}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

#: Seconds; fine at the low end, where a gateway's own cost lives, and up to a long generation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every series the service exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "genserve_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "genserve_http_request_duration_seconds",
            "Time from request to the last byte of the response (whole stream included).",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "genserve_http_requests_in_flight", "Requests (and streams) being answered now.", registry=r
        )
        self.upstream_duration = Histogram(
            "genserve_upstream_duration_seconds",
            "Time a provider took for a generation (until the last token of a stream).",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "genserve_upstream_errors",
            "Generations that failed, by provider, model and error code.",
            ["provider", "model", "code"],
            registry=r,
        )
        self.ttft = Histogram(
            "genserve_time_to_first_token_seconds",
            "Time until the first text of a generation was available.",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "genserve_prompt_tokens", "Prompt tokens sent to models.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "genserve_completion_tokens", "Completion tokens produced by models.", ["model"], registry=r
        )
        self.generations = Counter(
            "genserve_generations",
            "Generations by endpoint, provider, model and outcome (ok, aborted, error, refused).",
            ["endpoint", "provider", "model", "outcome"],
            registry=r,
        )
        self.tool_calls = Counter(
            "genserve_tool_calls", "Tool calls the models made, by model.", ["model"], registry=r
        )
        self.rate_limited_total = Counter(
            "genserve_rate_limited", "Requests refused by a rate limit or quota.", ["limit"], registry=r
        )
        self.local_queue_depth = Gauge(
            "genserve_local_queue_depth",
            "Requests running on or waiting for the embedded model.",
            registry=r,
        )
        # `labels()` takes a lock and builds a key each time; the hot path reuses children.
        self._children: dict[tuple[Any, ...], Any] = {}

    # -- the small API other features call ----------------------------------------------------

    def rate_limited(self, limit: str) -> None:
        """A request was refused by `limit` (e.g. `requests_per_minute`, `tokens_per_day`)."""
        self.rate_limited_total.labels(limit).inc()

    def watch_local_queue(self, depth: Callable[[], float]) -> None:
        """Read the embedded model's queue depth whenever the metrics are scraped."""
        self.local_queue_depth.set_function(depth)

    def watch_records(self, writer: Any) -> None:
        """Export the generation-record writer's queue (`app.services.apps.records.RecordWriter`)."""
        self.registry.register(_RecordsCollector(writer))

    def watch_spool(self, spool: Any) -> None:
        """Export what waits in the spool for the database (`app.storage.spool.Spool`)."""
        self.registry.register(_SpoolCollector(spool))

    def watch_safeguards(self, safeguards: Any) -> None:
        """Export the counters the cache, circuit breakers, retries and concurrency caps keep
        (`app.services.gateway.safeguards.Safeguards`), read at each scrape."""
        self.registry.register(_SafeguardsCollector(safeguards))

    # -- used by the request middleware and the job hook --------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = ("req", method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (self.requests.labels(*labels), self.request_duration.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_generation(
        self,
        endpoint: str,
        provider: str,
        model: str,
        *,
        seconds: float,
        ttft_seconds: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        aborted: bool,
    ) -> None:
        key = ("gen", endpoint, provider, model, aborted)
        children = self._children.get(key)
        if children is None:
            children = (
                self.upstream_duration.labels(provider, model),
                self.ttft.labels(provider, model),
                self.prompt_tokens.labels(model),
                self.completion_tokens.labels(model),
                self.generations.labels(endpoint, provider, model, "aborted" if aborted else "ok"),
            )
            self._children[key] = children
        children[0].observe(seconds)
        if ttft_seconds is not None:
            children[1].observe(ttft_seconds)
        children[2].inc(prompt_tokens)
        children[3].inc(completion_tokens)
        children[4].inc()

    def observe_failure(self, endpoint: str, provider: str, model: str, code: str) -> None:
        self.upstream_errors.labels(provider, model, code).inc()
        self.generations.labels(endpoint, provider, model, "error").inc()

    def render(self) -> bytes:
        """The exposition text of every series."""
        return generate_latest(self.registry)


class _RecordsCollector:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "genserve_records_dropped",
            "Generation records dropped because the queue to the database was full.",
            value=self.writer.dropped_total,
        )
        yield GaugeMetricFamily(
            "genserve_records_pending",
            "Generation records waiting to be written to the database.",
            value=self.writer.pending,
        )


class _SpoolCollector:
    def __init__(self, spool: Any) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "genserve_spool_rows",
            "Records and usage batches on this replica's disk, waiting for the database.",
            value=self.spool.rows,
        )
        yield GaugeMetricFamily(
            "genserve_spool_bytes",
            "Bytes the spool holds (refusing generations at spool_max_bytes).",
            value=self.spool.bytes,
        )


class _SafeguardsCollector:
    """Reads `Safeguards` (cache, resilience) when scraped; nothing on the request path."""

    def __init__(self, safeguards: Any) -> None:
        self.safeguards = safeguards

    def collect(self) -> Iterator[Metric]:
        cache, resilience = self.safeguards.cache, self.safeguards.resilience
        lookups = CounterMetricFamily(
            "genserve_cache_lookups",
            "Response cache lookups by result (hit, miss, error).",
            labels=["result"],
        )
        lookups.add_metric(["hit"], cache.hits)
        lookups.add_metric(["miss"], cache.misses)
        lookups.add_metric(["error"], cache.errors)
        yield lookups
        state = GaugeMetricFamily(
            "genserve_circuit_state",
            "Circuit breaker per upstream model: 0 closed, 1 half-open, 2 open.",
            labels=["upstream"],
        )
        opened = CounterMetricFamily(
            "genserve_circuit_opened", "Times a circuit breaker opened.", labels=["upstream"]
        )
        for upstream, circuit in list(resilience.circuits.items()):
            state.add_metric([upstream], _CIRCUIT_VALUES.get(circuit.state, 0.0))
            opened.add_metric([upstream], circuit.opened_total)
        yield state
        yield opened
        yield CounterMetricFamily(
            "genserve_upstream_retries", "Upstream calls retried.", value=resilience.retries_total
        )
        yield CounterMetricFamily(
            "genserve_fallbacks", "Requests served by a fallback model.", value=resilience.fallbacks_total
        )
        rejected = CounterMetricFamily(
            "genserve_upstream_rejected",
            "Requests turned away by a provider's concurrency cap.",
            labels=["provider"],
        )
        for provider, cap in resilience.caps.items():
            rejected.add_metric([provider], cap.rejected_total)
        yield rejected
