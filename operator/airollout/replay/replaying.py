"""A rollout's policy run against past Prometheus data, decision by decision, without touching FeatBit.

A team tunes thresholds and comparisons on its own past releases before trusting them with the next one.
The replay is the operator's own work, moved in time: it wakes when the engine would have woken (`next_due`:
the start, each analysis on the interval's wall-clock grid, each bake end), measures with the operator's
analysis (`analyse`, whose instant queries Prometheus evaluates at any past time) and decides with the
operator's planner (`plan`). Every FeatBit write a plan asks for is taken as done, as the operator takes
it once FeatBit confirms, so what comes out is what the policy would have decided, tick by tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airollout.deadlines import next_due
from airollout.guardrails.analysis import Measured, analyse
from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits
from airollout.guardrails.source import MetricsSource
from airollout.model import TERMINAL_PHASES, AIRolloutSpec, AIRolloutStatus, GuardrailStatus, HistoryEntry, Phase
from airollout.model.status import SampleRatioStatus
from airollout.planner import FlagSync, FlagView, Observation, analysis_due, analysis_tick, plan

__all__ = ["Replay", "ReplayedDecision", "replay"]

_GENERATION = 1
"""The manifest is one generation: a replay never sees the spec edited."""
_REACTION = timedelta(milliseconds=1)
"""How long after a deadline the operator decides: never on it, so a stage it starts begins just after a tick,
and the whole seconds its comparisons count from the stage's start come out as the operator's did."""
_NO_DRIFT_CHECK = timedelta(days=365 * 1000)
"""FeatBit is never read in a replay, so the engine's drift check is put beyond any range replayed."""


@dataclass(frozen=True)
class ReplayedDecision:
    """What the policy decided at one moment, with the measurements it decided on."""

    time: datetime
    """When the operator would have decided: a stage's start, its bake end, or a tick of the analysis grid."""
    phase: Phase
    stage: str | None
    percentage: float | None
    entries: tuple[HistoryEntry, ...]
    """The history entries (Events) this decision added: empty when the rollout held as it was."""
    measured_at: datetime | None = None
    """When Prometheus was asked (the tick a routine analysis evaluates at); None when nothing was measured."""
    guardrails: tuple[GuardrailStatus, ...] = ()
    """This analysis's outcome per guardrail and segment, with its numbers; empty when nothing was measured."""
    summary: str | None = None
    """The worst outcome and who has it (``1/1 Passed``, ``Inconclusive: error-rate``)."""
    sample_ratio: SampleRatioStatus | None = None
    """The split's check at this analysis, when it made one."""

    @property
    def reasons(self) -> tuple[str, ...]:
        """What was decided, as Event reasons (``StageAdvanced``, ``GuardrailBreached``, ...)."""
        return tuple(entry.reason for entry in self.entries)


@dataclass(frozen=True)
class Replay:
    decisions: tuple[ReplayedDecision, ...]
    status: AIRolloutStatus
    """The status the rollout would have had at the end."""
    stopped: str
    """Why the replay ended, in words: the rollout finished, waits for a person, or the range ended."""


async def replay(
    spec: AIRolloutSpec,
    source: MetricsSource | None,
    start: datetime,
    end: datetime,
    namespace: str,
    limits: GuardrailLimits = DEFAULT_LIMITS,
) -> Replay:
    """Run the rollout from an empty status at ``start`` until it finishes or ``end`` comes.

    ``source`` answers the guardrail queries as of each analysis; it may be None only for a spec without
    guardrails, which never measures. ``namespace`` fills the queries' ``{{namespace}}``.
    """
    if source is None and spec.guardrails:
        raise ValueError("a spec with guardrails needs a metrics source to replay against")
    status = AIRolloutStatus()
    now = start
    writes = 0
    decisions: list[ReplayedDecision] = []
    while True:
        measured: Measured | None = None
        measured_at: datetime | None = None
        if source is not None and analysis_due(spec, status, now):
            tick = analysis_tick(spec, status, now)
            measured_at = tick if tick is not None else now
            measured = await analyse(spec, status, namespace, source, measured_at, limits)
        # What FeatBit serves is what the last write asked for: every write is taken as confirmed.
        flag = FlagView(sync=FlagSync.IN_SYNC, revision=str(writes)) if writes else None
        observation = Observation(
            flag=flag,
            verdicts=measured.verdicts if measured is not None else None,
            sample_ratio=measured.sample_ratio if measured is not None else None,
        )
        decision = plan(spec, status, observation, now, _GENERATION)
        status = decision.status
        if decision.actions:
            writes += 1
            status = status.model_copy(update={"flag_revision": str(writes)})
        decisions.append(
            ReplayedDecision(
                time=now,
                phase=status.phase,
                stage=status.stage_name,
                percentage=status.percentage,
                entries=decision.entries,
                measured_at=measured_at,
                guardrails=status.guardrails if measured is not None else (),
                summary=status.guardrail_summary if measured is not None else None,
                sample_ratio=measured.sample_ratio if measured is not None else None,
            )
        )
        if status.phase in TERMINAL_PHASES:
            return Replay(tuple(decisions), status, f"the rollout is {status.phase}")
        due = next_due(
            spec, status, now, flag_checked_at=now, drift_interval=_NO_DRIFT_CHECK, retry_cap=timedelta(0)
        )  # fmt: skip
        if due is None:
            waits = f"the rollout is {status.phase}" + (f" ({status.pause_reason})" if status.pause_reason else "")
            return Replay(tuple(decisions), status, f"{waits}: only a person moves it on from here")
        if due.at > end:
            at = f" at stage {status.stage_name}" if status.stage_name else ""
            return Replay(tuple(decisions), status, f"the range ended with the rollout {status.phase}{at}")
        now = max(now, due.at) + _REACTION
