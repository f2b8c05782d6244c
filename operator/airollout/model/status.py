"""The AIRollout status: where a rollout is and why, the only memory the operator keeps.

Everything the planner needs to resume after a restart lives here, so an operator killed at any point
continues exactly where it was.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 50


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Condition(_Model):
    type: str
    status: str  # "True" | "False" | "Unknown", as Kubernetes conditions have it
    reason: str
    message: str = ""
    last_transition_time: datetime


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
    """The last verb applied declaratively (from git), with its action id: a re-apply does not run it again."""

    def to_k8s(self) -> dict[str, object]:
        """The status as a merge patch: camelCase, RFC 3339 times; an unset top-level field is null (removed).

        Nested unset fields are left out rather than null: the apiserver drops nulls inside list items, and
        a patch that does not read back as written is a patch Kopf warns about.
        """
        data: dict[str, object] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name, field in type(self).model_fields.items():
            if getattr(self, name) is None:
                data[field.alias or name] = None
        return data
