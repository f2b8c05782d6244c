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

import httpx
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from airollout import __version__
from airollout.guardrails.judging import Outcome
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
    "1 for a guardrail's last outcome per segment (Passed, Warning, Breached, NoData, Error), 0 for the others.",
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

_PER_ROLLOUT = (DECISIONS, PERCENTAGE, PHASE, GUARDRAIL_VALUE, GUARDRAIL_OUTCOME, KILL_SWITCH_UNACKNOWLEDGED)
_OUTCOMES = tuple(outcome.value for outcome in Outcome)
_COUNTED_FROM_ZERO = (Reason.ROLLED_BACK, Reason.KILL_SWITCH_ENGAGED, Reason.GUARDRAIL_BREACHED, Reason.PROMOTED)
_recorded_guardrails: dict[tuple[str, str], set[tuple[str, str]]] = {}
"""(guardrail, segment) pairs with series, per rollout: those missing from the next status are removed."""


def serve(port: int) -> None:
    start_http_server(port)


def record(namespace: str, name: str, status: AIRolloutStatus, reasons: list[str]) -> None:
    """The decided status as series: phase, exposure, guardrail values and outcomes; one count per decision."""
    if (namespace, name) not in _recorded_guardrails:
        # From 0, so that `increase()` sees the first one: a counter first scraped at 1 shows no increase.
        for counted in _COUNTED_FROM_ZERO:
            DECISIONS.labels(namespace, name, counted)
    for reason in reasons:
        DECISIONS.labels(namespace, name, reason).inc()
    PERCENTAGE.labels(namespace, name).set(status.percentage or 0.0)
    for phase in Phase:
        PHASE.labels(namespace, name, phase.value).set(1.0 if status.phase is phase else 0.0)
    _record_guardrails(namespace, name, status.guardrails)


def _record_guardrails(namespace: str, name: str, guardrails: tuple[GuardrailStatus, ...]) -> None:
    current = set()
    for guardrail in guardrails:
        labels = (namespace, name, guardrail.name, guardrail.segment)
        current.add((guardrail.name, guardrail.segment))
        for variant, value in (("candidate", guardrail.value), ("control", guardrail.control_value)):
            if value is None:
                # remove_by_labels, unlike remove, is a no-op for a series never set (and in every version we allow).
                GUARDRAIL_VALUE.remove_by_labels(_labels(*labels, variant=variant))
            else:
                GUARDRAIL_VALUE.labels(*labels, variant).set(value)
        for outcome in dict.fromkeys((*_OUTCOMES, guardrail.outcome)):
            GUARDRAIL_OUTCOME.labels(*labels, outcome).set(1.0 if guardrail.outcome == outcome else 0.0)
    # A guardrail or segment gone from status (spec changed, a segment stopped reporting) goes from the metrics.
    for guardrail_name, segment in _recorded_guardrails.get((namespace, name), set()) - current:
        gone = _labels(namespace, name, guardrail_name, segment)
        GUARDRAIL_VALUE.remove_by_labels(gone)
        GUARDRAIL_OUTCOME.remove_by_labels(gone)
    _recorded_guardrails[(namespace, name)] = current


def _labels(namespace: str, name: str, guardrail: str, segment: str, **more: str) -> dict[str, str]:
    return {"namespace": namespace, "rollout": name, "guardrail": guardrail, "segment": segment, **more}


@contextmanager
def kill_switch_waiting(namespace: str, name: str, seen_at: float) -> Iterator[None]:
    """While inside, the rollout's kill switch counts as not yet acknowledged, since ``seen_at`` (monotonic)."""
    KILL_SWITCH_UNACKNOWLEDGED.labels(namespace, name).set_function(lambda: time.monotonic() - seen_at)
    try:
        yield
    finally:
        KILL_SWITCH_UNACKNOWLEDGED.remove_by_labels({"namespace": namespace, "rollout": name})


def forget_shard(rollouts: list[tuple[object, object]]) -> None:
    """Drop the series of rollouts another replica serves now: it reports them."""
    for namespace, name in rollouts:
        forget(str(namespace), str(name))


def forget(namespace: str, name: str) -> None:
    """Drop every series of a deleted rollout."""
    for metric in _PER_ROLLOUT:
        metric.remove_by_labels({"namespace": namespace, "rollout": name})
    _recorded_guardrails.pop((namespace, name), None)


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
