"""The one catalog of Prometheus metrics. Built per process (``Metrics()``), never at import.

Label cardinality is bounded: tenant and adapter label values pass through :class:`LabelGuard`,
which keeps the first ``max_values`` distinct values and folds the rest into ``"other"``; adapter
labels carry the adapter name, never the version.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class LabelGuard:
    """Caps the number of distinct values one label may take."""

    def __init__(self, max_values: int = 200) -> None:
        self.max_values = max_values
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.max_values:
                self._seen.add(value)
                return value
        return "other"


class Metrics:
    """Every tuneloop metric, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, max_label_values: int = 200) -> None:
        self.registry = registry or CollectorRegistry()
        self.tenant_label = LabelGuard(max_label_values)
        self.adapter_label = LabelGuard(max_label_values)
        r = self.registry
        self.requests = Counter(
            "tuneloop_requests", "Gateway requests by tenant, adapter, route and HTTP status.",
            ["tenant", "adapter", "route", "status"], registry=r,
        )
        self.request_seconds = Histogram(
            "tuneloop_request_seconds", "End-to-end gateway request latency.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft_seconds = Histogram(
            "tuneloop_time_to_first_token_seconds", "Time to the first streamed token.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "tuneloop_tokens", "Prompt (in) and completion (out) tokens.",
            ["tenant", "direction"], registry=r,
        )
        self.adapter_loads = Counter(
            "tuneloop_adapter_loads", "Adapter loads per engine by outcome.", ["engine", "outcome"],
            registry=r,
        )
        self.adapter_unloads = Counter(
            "tuneloop_adapter_unloads", "Adapter unloads per engine by reason (evicted, swapped).",
            ["engine", "reason"], registry=r,
        )
        self.adapter_load_seconds = Histogram(
            "tuneloop_adapter_load_seconds",
            "Time to load an adapter on an engine (a cold load includes the engine's fetch from "
            "the artifact store).", ["engine"], buckets=LOAD_BUCKETS, registry=r,
        )
        self.adapters_loaded = Gauge(
            "tuneloop_adapters_loaded", "Adapters currently loaded per engine.", ["engine"], registry=r,
        )
        self.engine_up = Gauge(
            "tuneloop_engine_up", "1 when the engine answers its health check.", ["engine"], registry=r,
        )
        self.engine_restarts = Counter(
            "tuneloop_engine_restarts", "Restarts of locally spawned engines.", ["engine"], registry=r,
        )
        self.rate_limited = Counter(
            "tuneloop_rate_limited", "Requests refused with 429, by tenant and reason.",
            ["tenant", "reason"], registry=r,
        )
        self.request_log_written = Counter(
            "tuneloop_request_log_written", "Request-log records written to the store.", registry=r,
        )
        self.request_log_dropped = Counter(
            "tuneloop_request_log_dropped",
            "Request-log records dropped (buffer full or store failing), by reason.", ["reason"],
            registry=r,
        )
        self.request_log_sampled_out = Counter(
            "tuneloop_request_log_sampled_out",
            "Request-log records not stored because of the tenant's sampling rate.", registry=r,
        )
        self.request_log_expired = Counter(
            "tuneloop_request_log_expired",
            "Request-log rows deleted after their tenant's retention period.", registry=r,
        )
        self.request_log_pending = Gauge(
            "tuneloop_request_log_pending", "Request-log records waiting to be written.", registry=r,
        )
        self.feedback = Counter(
            "tuneloop_feedback", "Feedback events by kind (rating, label, correction).", ["kind"],
            registry=r,
        )
        self.drift_statistic = Gauge(
            "tuneloop_drift_statistic", "Latest drift test statistic per adapter and test.",
            ["tenant", "adapter", "test"], registry=r,
        )
        self.drift_p_value = Gauge(
            "tuneloop_drift_p_value", "Latest drift test p-value per adapter and test.",
            ["tenant", "adapter", "test"], registry=r,
        )
        self.drift_alarm = Gauge(
            "tuneloop_drift_alarm", "1 while an adapter's drift persists.", ["tenant", "adapter"],
            registry=r,
        )
        self.dataset_examples = Gauge(
            "tuneloop_dataset_examples", "Examples in the newest compiled dataset per adapter.",
            ["tenant", "adapter"], registry=r,
        )
        self.policy_decisions = Counter(
            "tuneloop_policy_decisions", "Retrain policy decisions by action.", ["action"], registry=r,
        )
        self.retrain_jobs = Counter(
            "tuneloop_retrain_jobs", "Training jobs finished, by outcome.", ["outcome"], registry=r,
        )
        self.promotions = Counter(
            "tuneloop_promotions", "Champion switches by action (promote, rollback).", ["action"],
            registry=r,
        )

        self.quality = Gauge(
            "tuneloop_quality", "Latest champion quality on feedback per adapter (accuracy, "
            "negative_rate).", ["tenant", "adapter", "metric"], registry=r,
        )
        self.gate_decisions = Counter(
            "tuneloop_gate_decisions", "Candidates gated against the champion, by outcome "
            "(passed, no_improvement, regression, ...).", ["outcome"], registry=r,
        )
        self.monitor_cycles = Counter(
            "tuneloop_monitor_cycles", "Monitor passes over one adapter, by outcome (ok, error).",
            ["outcome"], registry=r,
        )
        self.monitor_cycle_seconds = Histogram(
            "tuneloop_monitor_cycle_seconds", "Time of one monitor pass over all adapters.",
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def labels_for(self, tenant: str, adapter: str) -> tuple[str, str]:
        return self.tenant_label(tenant), self.adapter_label(adapter)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
