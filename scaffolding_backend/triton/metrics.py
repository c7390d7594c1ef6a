"""Prometheus metrics of the scaffolding model, served on Triton's /metrics."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from ..kernel.account import Account


class ScaffoldingMetrics:
    def __init__(self, model_name: str):
        self.model_name = model_name
        counter = lambda name, description: pb_utils.MetricFamily(
            name=name, description=description, kind=pb_utils.MetricFamily.COUNTER
        )
        self.requests = counter(
            "scaffolding_requests_total", "Scaffolding requests by method and status"
        )
        self.sub_requests = counter(
            "scaffolding_sub_requests_total", "BLS sub-requests issued by scaffolding controllers"
        )
        self.output_tokens = counter(
            "scaffolding_output_tokens_total", "Tokens generated on behalf of scaffolding requests"
        )
        self.latency = counter(
            "scaffolding_request_seconds_total", "Cumulative wall time of scaffolding requests"
        )
        self._metrics: dict = {}

    def _metric(self, family, method: str, status: str | None = None):
        labels = {"model": self.model_name, "method": method}
        if status is not None:
            labels["status"] = status
        key = (id(family), tuple(sorted(labels.items())))
        if key not in self._metrics:
            self._metrics[key] = family.Metric(labels=labels)
        return self._metrics[key]

    def request_done(
        self, method: str, status: str, account: Account | None, seconds: float
    ) -> None:
        self._metric(self.requests, method, status).increment(1)
        self._metric(self.latency, method).increment(seconds)
        if account is not None:
            self._metric(self.sub_requests, method).increment(account.total_sub_requests)
            self._metric(self.output_tokens, method).increment(account.output_tokens)
