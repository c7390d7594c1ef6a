"""Prometheus metrics of the scaffolding models, served on Triton's /metrics.

Per method: requests by final status, and histograms of latency, sub-requests and
generated tokens per request; per model: errors by reason, and gauges of the requests
and sub-requests in flight."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils

from ..kernel.account import Account

LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1800.0]
COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
TOKEN_BUCKETS = [16, 64, 256, 1024, 4096, 16384, 65536]
# metrics are written at most this often (see Throttled)
WRITE_INTERVAL_S = 0.25


class Throttled:
    """Runs ``write`` on the event loop at most once per ``interval_s``, that long after it
    was asked for. On Triton 2.51 every metric update is a blocking round trip to the
    server that holds the GIL while it waits for the stub's message lock: done for every
    request or sub-request, such updates cost the BLS path a round trip each, and once
    per streamed sub-request they took part in a deadlock of the whole server."""

    def __init__(self, write: Callable[[], None], interval_s: float = WRITE_INTERVAL_S):
        self.write = write
        self.interval_s = interval_s
        self._due: asyncio.TimerHandle | None = None

    def __call__(self, *_: Any) -> None:
        if self._due is None:
            self._due = asyncio.get_running_loop().call_later(self.interval_s, self._run)

    def _run(self) -> None:
        self._due = None
        self.write()

    def cancel(self) -> None:
        """For ``finalize``: no write after the metrics are released."""
        if self._due is not None:
            self._due.cancel()
            self._due = None


def release(metrics: dict, families: dict) -> None:
    """Drop metrics and then their families while the stub still runs, from ``finalize``.
    Left to the interpreter's exit, a family's destructor writes to shared memory the stub
    has already released: every stub with metrics crashed at shutdown (segfault at 0x60 in
    ``MetricFamily::SaveToSharedMemory``, from its destructor during garbage collection)."""
    metrics.clear()
    families.clear()
    gc.collect()


class ScaffoldingMetrics:
    def __init__(self, model_name: str):
        self.model_name = model_name
        family = lambda name, description, kind: pb_utils.MetricFamily(
            name=name, description=description, kind=kind
        )
        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        histogram = pb_utils.MetricFamily.HISTOGRAM
        # the families must outlive their metrics: both are kept here
        self.requests = family(
            "scaffolding_requests_total", "Scaffolding requests by method and status", counter
        )
        self.sub_requests = family(
            "scaffolding_sub_requests_total",
            "Sub-requests issued by scaffolding controllers",
            counter,
        )
        self.output_tokens = family(
            "scaffolding_output_tokens_total",
            "Tokens generated on behalf of scaffolding requests",
            counter,
        )
        self.errors = family(
            "scaffolding_errors_total", "Failed scaffolding requests by reason", counter
        )
        self.latency = family(
            "scaffolding_request_duration_seconds", "Wall time of scaffolding requests", histogram
        )
        self.fan_out = family(
            "scaffolding_request_sub_requests",
            "Sub-requests one scaffolding request issued",
            histogram,
        )
        self.tokens = family(
            "scaffolding_request_output_tokens",
            "Tokens generated for one scaffolding request",
            histogram,
        )
        self.in_flight = family(
            "scaffolding_requests_in_flight", "Scaffolding requests being served", gauge
        )
        self.sub_in_flight = family(
            "scaffolding_sub_requests_in_flight", "Sub-requests waiting on a model or server", gauge
        )
        self._metrics: dict = {}
        self._counts: Counter = Counter()  # (family, labels) -> amount not yet written
        self._observed: list[tuple[Any, list, str, float]] = []  # histogram values not yet written

    def close(self) -> None:
        families = {
            name: value
            for name, value in vars(self).items()
            if isinstance(value, pb_utils.MetricFamily)
        }
        for name in families:
            delattr(self, name)
        release(self._metrics, families)

    def _metric(self, family: Any, buckets: list | None = None, **labels: str) -> Any:
        labels = {"model": self.model_name, **labels}
        key = (id(family), tuple(sorted(labels.items())))
        if key not in self._metrics:
            extra = {"buckets": buckets} if buckets is not None else {}
            self._metrics[key] = family.Metric(labels=labels, **extra)
        return self._metrics[key]

    def request_done(
        self, method: str, status: str, account: Account | None, seconds: float
    ) -> None:
        """Count a finished request; written with the next ``flush``."""
        self._counts[(self.requests, (("method", method), ("status", status)))] += 1
        self._observed.append((self.latency, LATENCY_BUCKETS, method, seconds))
        if status != "ok":
            self._counts[(self.errors, (("reason", status),))] += 1
        if account is not None:
            labels = (("method", method),)
            self._counts[(self.sub_requests, labels)] += account.total_sub_requests
            self._counts[(self.output_tokens, labels)] += account.output_tokens
            self._observed.append((self.fan_out, COUNT_BUCKETS, method, account.total_sub_requests))
            self._observed.append((self.tokens, TOKEN_BUCKETS, method, account.output_tokens))

    def flush(self) -> None:
        """Write what was counted since the last flush: one update per counter, one per
        histogram observation."""
        counts, self._counts = self._counts, Counter()
        observed, self._observed = self._observed, []
        for (family, labels), amount in counts.items():
            self._metric(family, **dict(labels)).increment(amount)
        for family, buckets, method, value in observed:
            self._metric(family, buckets, method=method).observe(value)

    def set_in_flight(self, requests: int, sub_requests: int) -> None:
        self._metric(self.in_flight).set(requests)
        self._metric(self.sub_in_flight).set(sub_requests)
