"""Every tunable of the operator process in one place, each with the reason it exists.

`airollout run` exposes each field as a flag (``--routine-workers 32``) and the Helm chart as
``settings.routineWorkers``; nothing else in the package keeps a loose constant that an operator of the
operator might need to change.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """How hard the operator works and how long it waits; the defaults suit one process and 1,000 rollouts."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    routine_workers: int = Field(default=16, ge=1, le=1024)
    """Rollouts reconciled at once (advances, analysis, drift checks). More only helps when FeatBit and
    Prometheus answer slowly; a kill switch or rollback never waits for one of these."""

    featbit_connections: int = Field(default=16, ge=1, le=1024)
    """Connections kept per FeatBit server for routine reads and stage writes."""

    featbit_timeout: float = Field(default=5.0, gt=0, le=300)
    """Seconds one routine FeatBit request may take before it is retried (stage writes, drift checks)."""

    kill_switch_connections: int = Field(default=8, ge=1, le=256)
    """Connections per FeatBit server reserved for turning candidates off: routine work cannot use them."""

    kill_switch_timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds one kill-switch request may take. Longer than routine calls on purpose: a FeatBit that
    answers in 6 s must still acknowledge on the first attempt, not time out and retry forever."""

    kill_switch_hedge_after: float = Field(default=2.0, gt=0, le=600)
    """Seconds a kill-switch attempt FeatBit has not answered waits before another is sent beside it, so
    a FeatBit that recovers acknowledges at once instead of after the hung attempt's whole timeout."""

    kill_switch_backoff_cap: float = Field(default=1.0, gt=0, le=60)
    """The longest pause between two kill-switch attempts; they go on until FeatBit acknowledges."""

    drift_check_interval: float = Field(default=30.0, ge=1, le=86400)
    """Seconds between two reads of a progressing rollout's flag to notice edits made in FeatBit by
    someone else. Reads that precede a write happen regardless."""

    status_refresh_interval: float = Field(default=30.0, ge=1, le=86400)
    """Seconds after which fresh guardrail values and lastAnalysisAt are written to status even though
    nothing else changed. Any change of phase, stage, outcome, condition or history is written at once.
    At the default, every analysis of the default 30 s interval shows; a fleet of thousands of rollouts
    can raise it to spare the apiserver (one status write per rollout per this many seconds)."""

    retry_backoff_cap: float = Field(default=30.0, ge=1, le=3600)
    """The longest wait before retrying a rollout whose FeatBit, Secret or flag could not be used."""

    late_after: float = Field(default=5.0, gt=0, le=3600)
    """Seconds after its deadline at which a rollout's analysis counts as late: its status then says so
    (condition AnalysisOnTime) with the queue that held it up."""

    prometheus_concurrency: int = Field(default=8, ge=1, le=256)
    """Guardrail queries in flight at once per Prometheus server; more wait their turn (and are counted
    as queue depth) instead of piling onto a struggling Prometheus."""

    apiserver_connections: int = Field(default=4, ge=1, le=64)
    """Connections to the apiserver for routine status and Event writes; kill switches and rollbacks have
    their own."""

    secret_ttl: float = Field(default=30.0, ge=0, le=3600)
    """Seconds a Secret's value is reused before it is read again (a rejected token is re-read at once)."""

    template_ttl: float = Field(default=30.0, ge=0, le=3600)
    """Seconds a GuardrailTemplate or ClusterGuardrailTemplate is reused before it is read again: an edited
    template reaches the rollouts using it within this long. A missing one is looked for at each retry."""

    notifications_secret: str = Field(default="", max_length=317, pattern=r"^([a-z0-9.-]+/[a-z0-9.-]+)?$")
    """NAMESPACE/NAME of a Secret whose keys are cluster-wide notification targets, posted for every
    rollout: a key named slack-* holds a Slack incoming-webhook URL, any other key a JSON webhook URL.
    Empty: only the targets each rollout lists in spec.notifications."""

    notification_queue: int = Field(default=1000, ge=1, le=100000)
    """Notifications waiting for delivery at most; past this the oldest are dropped (and reported), so a
    receiver that is down never grows the operator's memory."""

    notification_workers: int = Field(default=4, ge=1, le=64)
    """Notifications delivered at once; a receiver that hangs holds one of these, never a rollout."""

    notification_timeout: float = Field(default=5.0, gt=0, le=120)
    """Seconds one delivery attempt may take."""

    notification_attempts: int = Field(default=4, ge=1, le=20)
    """Attempts per notification before it is given up and reported (condition NotificationsDelivered)."""

    notification_backoff_cap: float = Field(default=10.0, gt=0, le=600)
    """The longest pause between two attempts of a notification (the pauses double from a quarter second)."""

    alertmanager_port: int = Field(default=0, ge=0, le=65535)
    """Serve Alertmanager's webhook at POST /alertmanager on this port; 0: off. An alert firing with the
    labels of an AIRollout pauses or aborts it, as its spec.alerts.onFiring says."""

    alertmanager_token_secret: str = Field(default="", max_length=317, pattern=r"^([a-z0-9.-]+/[a-z0-9.-]+)?$")
    """NAMESPACE/NAME of a Secret whose key `token` Alertmanager must send as a bearer token
    (http_config.authorization.credentials); empty: the receiver takes any caller that reaches the port."""

    shards: int = Field(default=0, ge=0, le=1024)
    """0: this process serves every AIRollout (one replica). N > 0: AIRollouts are split into N shards by
    UID, each served by exactly one replica holding its coordination.k8s.io Lease; run several replicas
    with the same N and they share the shards, and take over those of a replica that dies."""

    lease_duration: float = Field(default=15.0, ge=3, le=600)
    """Seconds a shard's Lease holds without renewal. A dead replica's shards are taken over after at
    most this long; a replica stops acting on a shard a third of it before it could be taken over."""

    lease_namespace: str = Field(default="", max_length=63)
    """Where the shard Leases live; empty: the namespace the pod runs in ($POD_NAMESPACE), else default."""

    identity: str = Field(default="", max_length=128)
    """This replica's name in the Leases; empty: the host (pod) name."""


__all__ = ["Settings"]
