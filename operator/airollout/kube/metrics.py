"""The operator's own Prometheus metrics: what it decided, where each rollout is, how fast it acts.

Served on `airollout run --metrics-port`, so the rollouts themselves can be alerted on and graphed
(a rollout stuck Paused, a burst of RolledBack) next to the services they release.
"""

from __future__ import annotations

from contextlib import suppress

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from airollout.model import AIRolloutStatus, Phase

DECISIONS = Counter(
    "airollout_decisions_total", "Decisions recorded in history (and posted as Events), by reason.",
    ["namespace", "rollout", "reason"],
)  # fmt: skip
PERCENTAGE = Gauge(
    "airollout_rollout_percentage", "The percentage the rollout's current stage serves the candidate.",
    ["namespace", "rollout"],
)  # fmt: skip
PHASE = Gauge(
    "airollout_rollout_phase", "1 for the rollout's current phase, 0 for the others.", ["namespace", "rollout", "phase"]
)
RECONCILE_SECONDS = Histogram("airollout_reconcile_seconds", "Time one reconciliation took (observe, plan, act).")
KILL_SWITCH_SECONDS = Histogram(
    "airollout_kill_switch_seconds", "From seeing the kill switch or abort to FeatBit acknowledging the toggle.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)  # fmt: skip

SCHEDULER_LATENESS = Histogram(
    "airollout_scheduler_lateness_seconds", "From a rollout's deadline to a worker starting on it.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)  # fmt: skip
SCHEDULER_DEPTH = Gauge("airollout_scheduler_queue_depth", "Rollouts due and waiting for a routine worker.")
TRACKED = Gauge("airollout_rollouts_tracked", "AIRollouts this operator process is responsible for.")


def serve(port: int) -> None:
    start_http_server(port)


def record(namespace: str, name: str, status: AIRolloutStatus, reasons: list[str]) -> None:
    for reason in reasons:
        DECISIONS.labels(namespace, name, reason).inc()
    PERCENTAGE.labels(namespace, name).set(status.percentage or 0.0)
    for phase in Phase:
        PHASE.labels(namespace, name, phase.value).set(1.0 if status.phase is phase else 0.0)


def forget_shard(rollouts: list[tuple[object, object]]) -> None:
    """Drop the series of rollouts another replica serves now: it reports them."""
    for namespace, name in rollouts:
        forget(str(namespace), str(name))


def forget(namespace: str, name: str) -> None:
    """Drop a deleted rollout's series."""
    with suppress(KeyError):  # never recorded by this process
        PERCENTAGE.remove(namespace, name)
        for phase in Phase:
            PHASE.remove(namespace, name, phase.value)
