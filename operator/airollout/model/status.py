"""The AIRollout status: where a rollout is and why, the only memory the operator keeps.

Everything the planner needs to resume after a restart lives here, so an operator killed at any point
continues exactly where it was.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 50


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    COMPLETED = "Completed"
    """Promoted, and the post-release watch is over: the holdback is released too."""
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.COMPLETED, Phase.ROLLED_BACK, Phase.FAILED})


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Condition(_Model):
    type: str
    status: str  # "True" | "False" | "Unknown", as Kubernetes conditions have it
    reason: str
    message: str = ""
    last_transition_time: datetime


class Evidence(_Model):
    """A comparison's numbers for one segment at one analysis: what it estimates, how sure it is, how far along."""

    estimate: float
    """Candidate minus control in the harm direction, beyond the margin (above 0: worse than allowed)."""
    lower_bound: float | None = None
    """Harm is shown when this is above 0."""
    upper_bound: float | None = None
    candidate_samples: float
    control_samples: float
    samples_needed: float = 0
    """Candidate samples the stage still needs before it can pass."""
    time_needed: str | None = None
    """How long those take at the current traffic (``4m``), when traffic flows."""
    p_value: float | None = None


class GuardrailStatus(_Model):
    """The latest judgement of one guardrail for one segment (one series of the query's result)."""

    name: str
    segment: str = ""
    outcome: str
    value: float | None = None
    threshold: float | None = None
    control_value: float | None = None
    window: str | None = None
    message: str = ""
    evidence: Evidence | None = None


class ArmTotals(_Model):
    """One variant's sufficient statistics over one stage: samples, their sum (events for a rate), variance."""

    n: float
    total: float
    variance: float


class Stratum(_Model):
    """One stage's counts of a comparison: strata are never pooled, because the split differs between stages."""

    stage: str
    control: ArmTotals
    candidate: ArmTotals


class ComparisonRecord(_Model):
    """What a comparison fixed when its analysis started, and each finished stage's counts: enough to resume
    after a restart and to audit every decision."""

    guardrail: str
    baseline: float
    """The control's rate or mean when the test was planned."""
    baseline_variance: float
    information_star: float
    """The information planned at the end of the first stage compared: tunes the confidence sequence."""
    strata: tuple[Stratum, ...] = ()
    """Finished stages, oldest first."""
    current: Stratum | None = None
    """The stage under way, as last counted."""


class SampleRatioStatus(_Model):
    """The last sample-ratio check of the stage under way."""

    stage: str
    expected: float
    """The candidate's share the stage asks for."""
    observed: float
    units: float
    p_value: float
    mismatch: bool
    message: str = ""


class HistoryEntry(_Model):
    """One decision, newest last: what happened, at which stage, who or what asked."""

    time: datetime
    reason: str
    stage: str | None = None
    percentage: float | None = None
    actor: str = "operator"
    message: str = ""
    guardrails: tuple[GuardrailStatus, ...] = ()


class AIRolloutStatus(_Model):
    phase: Phase = Phase.PENDING
    stage_index: int | None = None
    stage_name: str | None = None
    percentage: float | None = None
    stage_started_at: datetime | None = None
    message: str = ""
    conditions: tuple[Condition, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    observed_generation: int | None = None
    flag_revision: str | None = None
    """The flag revision the operator last wrote or accepted; another revision means someone else wrote."""
    flag_identity: str | None = None
    """envId/key/candidate/control this rollout acted on; a different one in spec restarts the rollout."""
    pause_reason: str | None = None
    guardrails: tuple[GuardrailStatus, ...] = ()
    guardrail_summary: str | None = None
    consecutive_errors: int = Field(default=0, ge=0)
    last_analysis_at: datetime | None = None
    handled_action: str | None = None
    """The last verb handled and what identifies it: the same request seen again never runs twice."""
    comparisons: tuple[ComparisonRecord, ...] = ()
    """Each comparison guardrail's plan and counts per stage (`spec.guardrails[].compare`)."""
    sample_ratio: SampleRatioStatus | None = None

    def to_k8s(self) -> dict[str, object]:
        """The status as a merge patch: camelCase, RFC 3339 times; an unset top-level field is null (removed).

        Nested unset fields are left out rather than null: the apiserver drops nulls inside list items, and
        a patch that does not read back as written is a patch Kopf warns about.
        """
        data: dict[str, object] = _bounded(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        for name, field in type(self).model_fields.items():
            if getattr(self, name) is None:
                data[field.alias or name] = None
        return data


TEXT_LIMIT = 1024
"""Characters kept of any text in status (messages, actors): whatever a verb, Prometheus or FeatBit said."""
GUARDRAIL_TEXT_LIMIT = 256
"""Characters kept of a guardrail entry's segment and message, of which there may be many."""
GUARDRAILS_LIMIT = 40
"""Guardrail entries kept in status.guardrails; the rest are counted in one summary entry."""
HISTORY_GUARDRAILS_LIMIT = 10
"""Guardrail entries kept in each history entry."""


def _bounded(data: dict[str, Any]) -> dict[str, Any]:
    """The status cut to a size etcd always takes, whatever the guardrails returned or a verb carried.

    The worst case is about 50 history entries of 1 KiB plus 10 guardrail entries of 0.5 KiB each, a few
    hundred KiB, well below etcd's request limit.
    """
    bounded = {key: _cut(value, TEXT_LIMIT) for key, value in data.items() if key not in ("guardrails", "history")}
    if "guardrails" in data:
        bounded["guardrails"] = _guardrails(data["guardrails"], GUARDRAILS_LIMIT)
    if "history" in data:
        bounded["history"] = [
            {
                **{key: _cut(value, TEXT_LIMIT) for key, value in entry.items() if key != "guardrails"},
                **(
                    {"guardrails": _guardrails(entry["guardrails"], HISTORY_GUARDRAILS_LIMIT)}
                    if entry.get("guardrails")
                    else {}
                ),
            }
            for entry in data["history"]
        ]
    return bounded


def _guardrails(entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    ranked = list(entries)
    if len(ranked) > limit:
        # The worst outcomes first, so what is cut is what passed.
        order = {"Breached": 0, "Error": 1, "Warning": 2, "Inconclusive": 3, "NoData": 4}
        ranked.sort(key=lambda e: order.get(str(e.get("outcome")), 5))
        rest = ranked[limit - 1 :]
        outcomes = ", ".join(sorted({str(e.get("outcome")) for e in rest}))
        summary = {
            "name": str(rest[0].get("name")),
            "segment": f"({len(rest)} more)",
            "outcome": str(rest[0].get("outcome")),
            "message": f"{len(rest)} more segments not shown ({outcomes}); aggregate the query with sum by (...)",
        }
        ranked = [*ranked[: limit - 1], summary]
    return [_cut(entry, GUARDRAIL_TEXT_LIMIT) for entry in ranked]


def _cut(value: Any, limit: int) -> Any:
    """Strings cut to ``limit``; numbers JSON cannot carry (an infinite value, NaN) left out."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    if isinstance(value, list):
        return [_cut(item, limit) for item in value]
    if isinstance(value, dict):
        return {key: _cut(item, limit) for key, item in value.items() if not _non_finite(item)}
    return value


def _non_finite(value: Any) -> bool:
    # The message keeps the value in words ("+Inf > max 0.05"); the apiserver refuses Infinity in JSON.
    return isinstance(value, float) and not math.isfinite(value)
