"""Prometheus metrics of the scaffolding models, served on Triton's /metrics.

Per method: requests by final status, and histograms of latency, sub-requests and
generated tokens per request; per model: errors by reason, and gauges of the requests
and sub-requests in flight."""

from __future__ import annotations

import gc
from typing import Any

import triton_python_backend_utils as pb_utils

from ..kernel.account import Account

LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1800.0]
COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
TOKEN_BUCKETS = [16, 64, 256, 1024, 4096, 16384, 65536]


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
        self._metric(self.requests, method=method, status=status).increment(1)
        self._metric(self.latency, LATENCY_BUCKETS, method=method).observe(seconds)
        if status != "ok":
            self._metric(self.errors, reason=status).increment(1)
        if account is not None:
            self._metric(self.sub_requests, method=method).increment(account.total_sub_requests)
            self._metric(self.output_tokens, method=method).increment(account.output_tokens)
            self._metric(self.fan_out, COUNT_BUCKETS, method=method).observe(
                account.total_sub_requests
            )
            self._metric(self.tokens, TOKEN_BUCKETS, method=method).observe(account.output_tokens)

    def set_in_flight(self, requests: int, sub_requests: int) -> None:
        self._metric(self.in_flight).set(requests)
        self._metric(self.sub_in_flight).set(sub_requests)
