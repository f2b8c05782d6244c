"""The operator's own Prometheus metrics: what it decided, where each rollout is, how fast it acts.

Served on `airollout run --metrics-port`, so the rollouts themselves can be alerted on and graphed
(a rollout stuck Paused, a burst of RolledBack, a guardrail's candidate beside its control) next to the
services they release. The chart's dashboard and alert rules read exactly these series; the README lists
them. Every series labelled with a rollout goes when the rollout does (or moves to another replica), so a
deleted rollout never lingers on a dashboard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from airollout import __version__
from airollout.model import AIRolloutStatus, GuardrailStatus, Phase
from airollout.reasons import Reason

__all__ = [
    "DECISIONS",
    "FEATBIT_SECONDS",
    "KILL_SWITCH_SECONDS",
    "PROMETHEUS_SECONDS",
    "RECONCILE_SECONDS",
    "SCHEDULER_DEPTH",
    "SCHEDULER_LATENESS",
    "TRACKED",
    "TimedTransport",
    "forget",
    "forget_shard",
    "kill_switch_waiting",
    "record",
    "serve",
]

_ROLLOUT = ["namespace", "rollout"]
_GUARDRAIL = [*_ROLLOUT, "guardrail", "segment"]

BUILD_INFO = Gauge("airollout_build_info", "Always 1; `version` says which AIRollout this process runs.", ["version"])
BUILD_INFO.labels(__version__).set(1)

DECISIONS = Counter(
    "airollout_decisions_total",
    "Decisions recorded in history (and posted as Events), by reason.",
    [*_ROLLOUT, "reason"],
)
PERCENTAGE = Gauge(
    "airollout_rollout_percentage", "The percentage the rollout's current stage serves the candidate.", _ROLLOUT
)
PHASE = Gauge("airollout_rollout_phase", "1 for the rollout's current phase, 0 for the others.", [*_ROLLOUT, "phase"])
GUARDRAIL_VALUE = Gauge(
    "airollout_guardrail_value",
    "A guardrail's last measured value per segment: variant=candidate, and variant=control when the guardrail "
    "compares against the control (maxIncreaseOverControl). Absent while the query returns no data.",
    [*_GUARDRAIL, "variant"],
)
GUARDRAIL_OUTCOME = Gauge(
    "airollout_guardrail_outcome",
    "1, labelled with a guardrail's last outcome per segment (Passed, Warning, Breached, NoData, Error, ...): one "
    "series per guardrail and segment.",
    [*_GUARDRAIL, "outcome"],
)
RECONCILE_SECONDS = Histogram("airollout_reconcile_seconds", "Time one reconciliation took (observe, plan, act).")
KILL_SWITCH_SECONDS = Histogram(
    "airollout_kill_switch_seconds", "From seeing the kill switch or abort to FeatBit acknowledging the toggle.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)  # fmt: skip
KILL_SWITCH_UNACKNOWLEDGED = Gauge(
    "airollout_kill_switch_unacknowledged_seconds",
    "How long a kill switch (or abort) has been waiting for FeatBit to acknowledge turning the candidate off; "
    "present only while it waits.",
    _ROLLOUT,
)
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FEATBIT_SECONDS = Histogram(
    "airollout_featbit_request_seconds",
    "One HTTP request to FeatBit's management API, to its answer's headers, by outcome: ok, client_error (4xx), "
    "server_error (5xx), timeout, network_error, cancelled. The _count of the other outcomes counts the errors.",
    ["outcome"],
    buckets=_CALL_BUCKETS,
)
PROMETHEUS_SECONDS = Histogram(
    "airollout_prometheus_request_seconds",
    "One guardrail query sent to Prometheus, to its answer's headers, by outcome (as for FeatBit).",
    ["outcome"],
    buckets=_CALL_BUCKETS,
)

SCHEDULER_LATENESS = Histogram(
    "airollout_scheduler_lateness_seconds", "From a rollout's deadline to a worker starting on it.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)  # fmt: skip
SCHEDULER_DEPTH = Gauge("airollout_scheduler_queue_depth", "Rollouts due and waiting for a routine worker.")
TRACKED = Gauge("airollout_rollouts_tracked", "AIRollouts this operator process is responsible for.")

_COUNTED_FROM_ZERO = (Reason.ROLLED_BACK, Reason.KILL_SWITCH_ENGAGED, Reason.GUARDRAIL_BREACHED, Reason.PROMOTED)
_VARIANTS = ("candidate", "control")


@dataclass
class _Recorded:
    """The labels one rollout has series under, so that they are removed exactly (a scan of every series per
    rollout would cost seconds when a replica hands a thousand rollouts over)."""

    reasons: set[str] = field(default_factory=lambda: set(_COUNTED_FROM_ZERO))
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    """The outcome last recorded per (guardrail, segment)."""


_recorded: dict[tuple[str, str], _Recorded] = {}


def serve(port: int) -> None:
    start_http_server(port)


def record(namespace: str, name: str, status: AIRolloutStatus, reasons: list[str]) -> None:
    """The decided status as series: phase, exposure, guardrail values and outcomes; one count per decision."""
    recorded = _recorded.get((namespace, name))
    if recorded is None:
        recorded = _recorded[(namespace, name)] = _Recorded()
        # From 0, so that `increase()` sees the first one: a counter first scraped at 1 shows no increase.
        for counted in recorded.reasons:
            DECISIONS.labels(namespace, name, counted)
    for reason in reasons:
        DECISIONS.labels(namespace, name, reason).inc()
        recorded.reasons.add(reason)
    PERCENTAGE.labels(namespace, name).set(status.percentage or 0.0)
    for phase in Phase:
        PHASE.labels(namespace, name, phase.value).set(1.0 if status.phase is phase else 0.0)
    _record_guardrails(namespace, name, status.guardrails, recorded)


def _record_guardrails(namespace: str, name: str, guardrails: tuple[GuardrailStatus, ...], recorded: _Recorded) -> None:
    outcomes = {}
    for guardrail in guardrails:
        labels = (namespace, name, guardrail.name, guardrail.segment)
        outcomes[(guardrail.name, guardrail.segment)] = guardrail.outcome
        for variant, value in zip(_VARIANTS, (guardrail.value, guardrail.control_value), strict=True):
            if value is None:
                GUARDRAIL_VALUE.remove(*labels, variant)
            else:
                GUARDRAIL_VALUE.labels(*labels, variant).set(value)
        GUARDRAIL_OUTCOME.labels(*labels, guardrail.outcome).set(1.0)
    # Only now, so a scrape in between never finds the guardrail without an outcome. A guardrail or segment
    # gone from status (spec changed, a segment stopped reporting) goes from the metrics.
    for (guardrail_name, segment), outcome in recorded.outcomes.items():
        labels = (namespace, name, guardrail_name, segment)
        if outcomes.get((guardrail_name, segment)) != outcome:
            GUARDRAIL_OUTCOME.remove(*labels, outcome)
        if (guardrail_name, segment) not in outcomes:
            for variant in _VARIANTS:
                GUARDRAIL_VALUE.remove(*labels, variant)
    recorded.outcomes = outcomes


@contextmanager
def kill_switch_waiting(namespace: str, name: str, seen_at: float) -> Iterator[None]:
    """While inside, the rollout's kill switch counts as not yet acknowledged, since ``seen_at`` (monotonic)."""
    KILL_SWITCH_UNACKNOWLEDGED.labels(namespace, name).set_function(lambda: time.monotonic() - seen_at)
    try:
        yield
    finally:
        KILL_SWITCH_UNACKNOWLEDGED.remove(namespace, name)


def forget_shard(rollouts: list[tuple[object, object]]) -> None:
    """Drop the series of rollouts another replica serves now: it reports them."""
    for namespace, name in rollouts:
        forget(str(namespace), str(name))


def forget(namespace: str, name: str) -> None:
    """Drop every series of a deleted rollout."""
    PERCENTAGE.remove(namespace, name)
    KILL_SWITCH_UNACKNOWLEDGED.remove(namespace, name)
    for phase in Phase:
        PHASE.remove(namespace, name, phase.value)
    recorded = _recorded.pop((namespace, name), None)
    if recorded is None:
        return
    for reason in recorded.reasons:
        DECISIONS.remove(namespace, name, reason)
    for (guardrail_name, segment), outcome in recorded.outcomes.items():
        GUARDRAIL_OUTCOME.remove(namespace, name, guardrail_name, segment, outcome)
        for variant in _VARIANTS:
            GUARDRAIL_VALUE.remove(namespace, name, guardrail_name, segment, variant)


class TimedTransport(httpx.AsyncBaseTransport):
    """Sends through ``inner`` and observes each request's time to its answer's headers in ``histogram``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        outcome = "network_error"
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TimeoutException:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"  # e.g. a guardrail query's deadline passed
            raise
        else:
            outcome = _outcome(response.status_code)
            return response
        finally:
            self._histogram.labels(outcome).observe(time.monotonic() - started)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _outcome(status_code: int) -> str:
    if status_code >= 500:
        return "server_error"
    if status_code >= 400:
        return "client_error"
    return "ok"
