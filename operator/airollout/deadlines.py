"""When a rollout next needs attention, derived from its status: the engine sleeps until then.

Pure, like the planner: a restarted operator computes the same deadlines from the same status, so nothing
about timing is lost with the process. The one input that is not in status, when the flag was last read,
only makes the next drift check due at once after a restart (one read per rollout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airollout.model import AIRolloutSpec, AIRolloutStatus, Phase, parse_duration
from airollout.planner import analysis_due, analysis_tick, bake_end, next_analysis_at
from airollout.reasons import ConditionType, Reason

_ACTIVE = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED})
_MIN_RETRY = timedelta(seconds=1)


def problem_since(status: AIRolloutStatus) -> datetime | None:
    """Since when FeatBit (or a Secret it needs, or a guardrail template) could not be used, if it cannot be now."""
    for condition in status.conditions:
        if condition.status == "False" and (
            (condition.type == ConditionType.FEATBIT_SYNCED and condition.reason != Reason.FLAG_EDITED_OUT_OF_BAND)
            or condition.type == ConditionType.GUARDRAIL_TEMPLATES_RESOLVED
        ):
            return condition.last_transition_time
    return None


def flag_check_due(
    status: AIRolloutStatus, now: datetime, flag_checked_at: datetime | None, interval: timedelta
) -> bool:
    """Whether to read the flag now to notice edits made in FeatBit by someone else."""
    if status.phase is not Phase.PROGRESSING:
        return False
    if flag_checked_at is None or problem_since(status) is not None:
        return True
    return now >= next_analysis_at(flag_checked_at, interval)


@dataclass(frozen=True, order=True)
class Deadline:
    """The next moment a rollout has something to do, and whether that is routine.

    Routine work (an analysis tick, a drift check) may wait behind work that decides something (a bake
    end, a start, a retry) when both fall due together.
    """

    at: datetime
    routine: bool = False
    then: datetime | None = None
    """For routine work: the deciding deadline after it (a bake end), should the routine run be late."""


def next_due(
    spec: AIRolloutSpec,
    status: AIRolloutStatus,
    now: datetime,
    *,
    flag_checked_at: datetime | None,
    drift_interval: timedelta,
    retry_cap: timedelta,
) -> Deadline | None:
    """The next moment this rollout has something to do, or None until its resource changes.

    A problem with FeatBit backs off, waiting as long again as it has lasted (capped), since nothing can
    move until FeatBit answers. Otherwise the earliest of: the stage's bake end, the next analysis, the
    next drift check.
    """
    if status.phase not in _ACTIVE:
        return None
    since = problem_since(status)
    if since is not None:
        waited = max(now - since, _MIN_RETRY)
        return Deadline(now + min(waited, retry_cap))
    if status.phase is Phase.PENDING:
        return Deadline(now)
    due: list[Deadline] = []
    if spec.guardrails and status.stage_index is not None:
        if analysis_due(spec, status, now):
            due.append(Deadline(now, routine=analysis_tick(spec, status, now) is not None))
        elif status.phase is Phase.PROGRESSING or status.pause_reason == Reason.GUARDRAIL_QUERY_FAILED:
            last = status.last_analysis_at or now
            due.append(Deadline(next_analysis_at(last, parse_duration(spec.analysis.interval)), routine=True))
    if status.phase is Phase.PROGRESSING:
        end = bake_end(spec, status)
        if end is not None and end > now:
            due.append(Deadline(end))
        elif end is not None and not spec.guardrails:
            due.append(Deadline(now))
        # On the same wall-clock grid as analyses: with equal intervals one reconcile does both.
        drift = now if flag_checked_at is None else next_analysis_at(flag_checked_at, drift_interval)
        due.append(Deadline(drift, routine=True))
    if not due:
        return None
    first = min(due)
    deciding = [d.at for d in due if not d.routine]
    return Deadline(first.at, first.routine, min(deciding) if first.routine and deciding else None)


__all__ = ["Deadline", "flag_check_due", "next_due", "problem_since"]
