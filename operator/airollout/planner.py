"""Where a rollout advances, freezes, pauses or rolls back: a pure function of what is known now.

``plan(spec, status, observation, now)`` returns the whole next status and the FeatBit actions it needs.
It holds no clock, does no I/O and imports no framework, so every transition is unit-tested, and a
restarted operator, handed the same status, decides the same thing.

The caller acts first and commits after: the actions go to FeatBit, and only when FeatBit confirms them is
the new status written (with one Event per new history entry). When an action fails, ``plan_failure``
gives the status to write instead: same stage, and a condition that says what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from airollout.guardrails.judging import GuardrailVerdict, Outcome, overall
from airollout.model import (
    HISTORY_LIMIT,
    POST_RELEASE_STAGE,
    TERMINAL_PHASES,
    AIRolloutSpec,
    AIRolloutStatus,
    Condition,
    GuardrailStatus,
    HistoryEntry,
    OnBreach,
    OnPostReleaseBreach,
    Phase,
    PostRelease,
    parse_duration,
)
from airollout.model.comparison import InsufficientSample, OnMismatch
from airollout.model.status import ComparisonRecord, SampleRatioStatus
from airollout.reasons import ConditionType, Reason

ACTION_ANNOTATION = "airollout.dev/action"
ACTION_ID_ANNOTATION = "airollout.dev/action-id"
"""Beside a verb kept in git: any new value runs the verb once more; the same value never twice."""
ACTION_REASON_ANNOTATION = "airollout.dev/action-reason"
"""Beside a verb: why it was asked for, recorded in the history entries (and Events) the verb produces."""


class Verb(StrEnum):
    """What `kubectl annotate airollout NAME airollout.dev/action=VERB` asks for."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    RETRY = "retry"


class FlagSync(StrEnum):
    IN_SYNC = "InSync"
    """FeatBit serves what status says (another revision with the same targeting counts)."""
    AHEAD = "Ahead"
    """FeatBit already serves a later stage: a write landed but its status patch did not (a restart)."""
    ROLLED_BACK = "RolledBack"
    """FeatBit already serves control with the flag off: a rollback landed but its status patch did not."""
    EDITED = "Edited"
    """Someone else changed the targeting or the on/off state."""


@dataclass(frozen=True)
class FlagView:
    sync: FlagSync
    revision: str
    stage_index: int | None = None
    """For AHEAD: the stage FeatBit serves."""


@dataclass(frozen=True)
class Problem:
    """Why FeatBit (or a Secret it needs) cannot be used now, in words a person can act on."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class KillRequest:
    """The candidate must go off now: ``spec.killSwitch`` or the abort verb, read even from a broken spec."""

    why: str
    actor: str
    by_verb: bool = False


@dataclass(frozen=True)
class Observation:
    flag: FlagView | None = None
    """None when the flag was not read this time."""
    problem: Problem | None = None
    verdicts: tuple[GuardrailVerdict, ...] | None = None
    """None when the guardrails were not measured this time."""
    sample_ratio: SampleRatioStatus | None = None
    """The split's check, when it was made this time."""
    verb: str | None = None
    actor: str = "operator"
    verb_key: str | None = None
    """What identifies this verb request: recorded in status once handled, so it never runs twice."""
    verb_declarative: bool = False
    """Applied from a manifest: left in place once handled, so GitOps re-applying it sees no drift."""
    verb_reason: str | None = None
    """Why the verb was asked for (`airollout.dev/action-reason`), added to what it records."""
    invalid_spec: str | None = None
    unresolved: Problem | None = None
    """Set when a guardrail template the spec references cannot be used: nothing starts or advances."""
    kill: KillRequest | None = None
    late: str | None = None
    """Set when this work started well after it was due: how late, and why (the engine's queue)."""
    flag_off_revision: str | None = None
    """Set when the kill-switch lane already turned the flag off: the revision FeatBit acknowledged."""


def kill_request(spec: Mapping[str, Any], verb: str | None, actor: str) -> KillRequest | None:
    """Whether the raw spec or the verb asks for the kill switch; nothing else in the spec needs to parse."""
    if verb is not None and verb.strip() == Verb.ABORT:
        return KillRequest(why=f"abort requested by {actor}", actor=actor, by_verb=True)
    if spec.get("killSwitch") is True:
        return KillRequest(why="spec.killSwitch is true", actor="spec.killSwitch")
    return None


@dataclass(frozen=True)
class ApplyStage:
    """Make FeatBit serve stage ``index`` (and turn the flag on if it is off)."""

    index: int
    comment: str


@dataclass(frozen=True)
class RollBack:
    """Turn the flag off (serving control at once), then reset its targeting to control."""

    comment: str


Action = ApplyStage | RollBack


@dataclass(frozen=True)
class Decision:
    status: AIRolloutStatus
    actions: tuple[Action, ...] = ()
    entries: tuple[HistoryEntry, ...] = ()
    """New history entries; each becomes one Kubernetes Event."""
    consume_verb: bool = False


def flag_identity(spec: AIRolloutSpec) -> str:
    flag = spec.flag
    return f"{flag.env_id}/{flag.key}:{flag.candidate}/{flag.control}"


def granted_segments(spec: AIRolloutSpec, index: int) -> tuple[str, ...]:
    """Segments served the candidate at stage ``index``: those of this stage and every earlier one."""
    seen: dict[str, None] = {}
    for stage in spec.stages[: index + 1]:
        seen.update(dict.fromkeys(stage.segments))
    return tuple(seen)


def analysis_due(spec: AIRolloutSpec, status: AIRolloutStatus, now: datetime) -> bool:
    """Whether guardrails should be measured now: every interval, and right when a stage's bake time ends."""
    if not spec.guardrails or status.stage_index is None:
        return False
    if status.phase is not Phase.PROGRESSING and status.pause_reason != Reason.GUARDRAIL_QUERY_FAILED:
        return False
    last = status.last_analysis_at
    if last is None or (status.stage_started_at and last < status.stage_started_at):
        return True
    if now >= next_analysis_at(last, parse_duration(spec.analysis.interval)):
        return True
    end = bake_end(spec, status)
    return end is not None and now >= end > last


def analysis_tick(spec: AIRolloutSpec, status: AIRolloutStatus, now: datetime) -> datetime | None:
    """The grid tick a due analysis evaluates at, or None when it must see now.

    A routine analysis evaluates at its tick, as every rollout with the same interval does, so they ask
    Prometheus the same question and share one answer however long the queue takes to reach them. The
    first analysis of a stage and the one at its bake end evaluate now: they decide the stage.
    """
    last = status.last_analysis_at
    if last is None or (status.stage_started_at and last < status.stage_started_at):
        return None
    end = bake_end(spec, status)
    if end is not None and now >= end > last:
        return None
    step = parse_duration(spec.analysis.interval).total_seconds()
    if step <= 0:
        return None
    tick = datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, tz=now.tzinfo or UTC)
    return tick if tick > last else None


def next_analysis_at(last: datetime, interval: timedelta) -> datetime:
    """The first tick of the interval's wall-clock grid after ``last``.

    Every rollout with the same interval is measured on the same ticks, so identical guardrail queries of
    many rollouts reach Prometheus together and are asked once (see `airollout.guardrails.sharing`).
    """
    step = interval.total_seconds()
    if step <= 0:
        return last
    tick = (math.floor(last.timestamp() / step) + 1) * step
    return datetime.fromtimestamp(tick, tz=last.tzinfo or UTC)


def plan(
    spec: AIRolloutSpec, status: AIRolloutStatus, observation: Observation, now: datetime, generation: int
) -> Decision:
    """The next status and the FeatBit actions that must succeed before it is written."""
    return _Planner(spec, status, observation, now, generation).decide()


def plan_failure(status: AIRolloutStatus, problem: Problem, now: datetime, generation: int) -> Decision:
    """The status after FeatBit refused or could not be reached: nothing advances, the condition says why.

    A history entry (and Event) is added only when the problem changes, so a long outage is one line,
    while the condition keeps saying what is wrong on every tick.
    """
    synced = _find(status.conditions, ConditionType.FEATBIT_SYNCED)
    repeated = synced is not None and synced.reason == problem.reason and synced.message == problem.message
    entries = () if repeated else (_entry(now, problem.reason, status, problem.message),)
    new = status.model_copy(
        update={
            "conditions": _set_condition(status.conditions, ConditionType.FEATBIT_SYNCED, False, problem, now),
            "message": problem.message,
            "history": _append(status.history, entries),
            "observed_generation": generation,
        }
    )
    return Decision(status=new, entries=entries)


def plan_delivery(status: AIRolloutStatus, failure: str | None, now: datetime) -> Decision:
    """The status after a notification was delivered (``failure`` None) or given up on.

    The condition NotificationsDelivered appears with the first failure, and one history entry (an Event)
    marks each new failure; a delivery after a failure sets it True again. The rollout itself never waits.
    """
    previous = _find(status.conditions, ConditionType.NOTIFICATIONS_DELIVERED)
    if failure is None:
        if previous is None or previous.status == "True":
            return Decision(status=status)
        delivered = Problem(Reason.NOTIFICATIONS_DELIVERED, "notifications are delivered again")
        conditions = _set_condition(status.conditions, ConditionType.NOTIFICATIONS_DELIVERED, True, delivered, now)
        return Decision(status=status.model_copy(update={"conditions": conditions}))
    problem = Problem(Reason.NOTIFICATION_FAILED, failure)
    repeated = previous is not None and previous.status == "False" and previous.message == failure
    entries = () if repeated else (_entry(now, problem.reason, status, failure),)
    conditions = _set_condition(status.conditions, ConditionType.NOTIFICATIONS_DELIVERED, False, problem, now)
    return Decision(
        status=status.model_copy(update={"conditions": conditions, "history": _append(status.history, entries)}),
        entries=entries,
    )


class _Planner:
    def __init__(
        self, spec: AIRolloutSpec, status: AIRolloutStatus, observation: Observation, now: datetime, generation: int
    ) -> None:
        self.spec, self.old, self.obs, self.now, self.generation = spec, status, observation, now, generation
        self.status = status
        self.actions: list[Action] = []
        self.entries: list[HistoryEntry] = []
        self.consume_verb = False

    # -- the decision, in order of precedence ------------------------------------------------------------

    def decide(self) -> Decision:
        self._update(observed_generation=self.generation)
        kill = self.obs.kill
        if kill is None and self.spec.kill_switch and self.obs.invalid_spec is None:
            kill = KillRequest(why="spec.killSwitch is true", actor="spec.killSwitch")
        if kill is not None and self.status.phase is not Phase.ROLLED_BACK:
            # First of all, and whatever else the spec holds: the kill switch needs only the flag.
            self.consume_verb = kill.by_verb
            self._roll_back(Reason.KILL_SWITCH_ENGAGED, kill.why, actor=kill.actor)
        elif self.obs.invalid_spec is not None:
            self._invalid_spec(self.obs.invalid_spec)
        elif self.old.flag_identity is not None and self.old.flag_identity != flag_identity(self.spec):
            self._restart_for_new_flag()
        elif self.obs.verb is not None:
            self._verb(self.obs.verb)
        elif self.status.phase is Phase.FAILED and self.old.observed_generation != self.generation:
            self._recover_from_invalid_spec()
        elif self.status.phase is Phase.PENDING:
            if self.obs.unresolved is not None:
                self._unresolved(self.obs.unresolved)
            else:
                self._start()
        elif self.status.phase in (Phase.PROGRESSING, Phase.PAUSED):
            self._observe_flag()
            if self.status.phase is Phase.PROGRESSING and self.old.observed_generation not in (None, self.generation):
                self._follow_spec_edit()
            self._judge()
            if self.obs.unresolved is not None:
                self._unresolved(self.obs.unresolved)
            elif self.status.phase is Phase.PROGRESSING and not self.actions and self.obs.problem is None:
                self._maybe_advance()
        if self.obs.unresolved is None:
            self._resolved()
        if self.consume_verb and self.obs.verb_key is not None:
            self._update(handled_action=self.obs.verb_key)
            self.consume_verb = not self.obs.verb_declarative
        return Decision(
            status=self.status,
            actions=tuple(self.actions),
            entries=tuple(self.entries),
            consume_verb=self.consume_verb,
        )

    def _invalid_spec(self, message: str) -> None:
        if self.obs.verb is not None:
            self.consume_verb = True
            self._record(
                Reason.ACTION_REJECTED,
                f"{self.obs.verb.strip()[:40]!r} from {self.obs.actor} ignored: the spec is invalid; fix it first "
                "(abort still works)",
                self.obs.actor,
            )
        # A rolled-back rollout stays rolled back: the spec edit must not hide that the candidate is off.
        phase = Phase.ROLLED_BACK if self.status.phase is Phase.ROLLED_BACK else Phase.FAILED
        if self.status.phase is phase and self.status.message == message:
            return
        self._record(Reason.INVALID_SPEC, message)
        self._update(phase=phase, message=message)
        self._condition(ConditionType.PROGRESSING, False, Reason.INVALID_SPEC, message)

    def _unresolved(self, problem: Problem) -> None:
        """Hold where the rollout is (a template is missing or unusable): said once, kept in the condition."""
        previous = _find(self.status.conditions, ConditionType.GUARDRAIL_TEMPLATES_RESOLVED)
        if previous is not None and previous.status == "False" and previous.message == problem.message:
            return
        self._record(problem.reason, problem.message)
        self._update(message=problem.message)
        self._condition(ConditionType.GUARDRAIL_TEMPLATES_RESOLVED, False, problem.reason, problem.message)

    def _resolved(self) -> None:
        previous = _find(self.status.conditions, ConditionType.GUARDRAIL_TEMPLATES_RESOLVED)
        if previous is not None and previous.status == "False":
            why = "every guardrail template resolves"
            self._condition(ConditionType.GUARDRAIL_TEMPLATES_RESOLVED, True, Reason.GUARDRAIL_TEMPLATES_RESOLVED, why)

    def _recover_from_invalid_spec(self) -> None:
        phase = Phase.PENDING if self.status.stage_index is None else Phase.PROGRESSING
        self._record(Reason.SPEC_CHANGED, "the spec is valid again; continuing")
        self._update(phase=phase, message="the spec is valid again")
        if phase is Phase.PROGRESSING and self.status.stage_index is not None:
            self._apply(self.status.stage_index, "re-applied after a spec fix")

    def _restart_for_new_flag(self) -> None:
        message = (
            f"spec.flag changed from {self.old.flag_identity} to {flag_identity(self.spec)}: restarting from the "
            "first stage; the previous flag is left as it is"
        )
        self._record(Reason.FLAG_CHANGED, message)
        self.status = AIRolloutStatus(
            phase=Phase.PENDING,
            message=message,
            history=self.status.history,
            observed_generation=self.generation,
            handled_action=self.status.handled_action,
        )
        self._start()

    # -- verbs -------------------------------------------------------------------------------------------------

    def _verb(self, raw: str) -> None:
        self.consume_verb = True
        actor = self.obs.actor
        try:
            verb = Verb(raw.strip())
        except ValueError:
            known = ", ".join(v.value for v in Verb)
            self._record(Reason.ACTION_REJECTED, f"unknown action {raw!r} from {actor}; use one of: {known}", actor)
            return
        phase = self.status.phase
        if verb is Verb.ABORT:
            if phase is Phase.ROLLED_BACK:
                self._reject(verb, "the rollout is already rolled back")
            else:
                self._roll_back(Reason.KILL_SWITCH_ENGAGED, f"abort requested by {actor}", actor=actor)
        elif verb is Verb.RETRY:
            if phase not in (Phase.ROLLED_BACK, Phase.FAILED):
                self._reject(verb, f"retry restarts a RolledBack or Failed rollout; this one is {phase}")
            elif self.spec.kill_switch:
                self._reject(verb, "spec.killSwitch is true: set it to false first, then retry")
            else:
                self._record(Reason.RESTARTED, f"retry requested by {actor}: restarting from the first stage", actor)
                # A restart is a new analysis: the candidate is served to other users, with a fresh budget.
                self._update(
                    phase=Phase.PENDING,
                    stage_index=None,
                    pause_reason=None,
                    consecutive_errors=0,
                    comparisons=(),
                    sample_ratio=None,
                )
                self._start(actor=actor)
        elif phase in TERMINAL_PHASES or phase is Phase.PENDING:
            self._reject(verb, f"the rollout is {phase}")
        elif verb is Verb.PAUSE:
            if phase is Phase.PAUSED:
                self._reject(verb, "the rollout is already paused")
            else:
                self._pause(Reason.PAUSED, f"paused by {actor}", actor=actor)
        elif verb is Verb.RESUME:
            if phase is not Phase.PAUSED:
                self._reject(verb, "the rollout is not paused")
            else:
                self._resume(f"resumed by {actor}", actor)
        elif verb is Verb.PROMOTE:
            self._advance(f"promote requested by {actor}: skipped the rest of the stage", actor)
        else:  # promote-full
            last = len(self.spec.stages) - 1
            self._go_to(last, Reason.STAGE_ADVANCED, f"promote-full requested by {actor}", actor)
            self._promote(f"promoted to 100% of the last stage by {actor}", actor)

    def _reject(self, verb: Verb, why: str) -> None:
        self._record(Reason.ACTION_REJECTED, f"{verb.value} from {self.obs.actor} ignored: {why}", self.obs.actor)

    # -- the path ----------------------------------------------------------------------------------------------

    def _start(self, actor: str = "operator") -> None:
        if self.obs.problem is not None:
            self._problem(self.obs.problem)
            return
        self._update(flag_identity=flag_identity(self.spec))
        self._go_to(0, Reason.STARTED, f"rollout of {self.spec.flag.key} started", actor)

    def _observe_flag(self) -> None:
        if self.obs.problem is not None:
            self._problem(self.obs.problem)
            return
        view = self.obs.flag
        if view is None or self.status.phase is not Phase.PROGRESSING:
            return
        if view.sync is FlagSync.EDITED:
            message = (
                f"flag {self.spec.flag.key} was changed in FeatBit by someone else (revision {view.revision}); "
                "the operator will not overwrite it. Inspect the change, then resume with "
                "`kubectl annotate airollout NAME airollout.dev/action=resume` (re-applies the current stage) "
                "or abort"
            )
            self._pause(Reason.FLAG_EDITED_OUT_OF_BAND, message)
            self._condition(ConditionType.FEATBIT_SYNCED, False, Reason.FLAG_EDITED_OUT_OF_BAND, message)
        elif view.sync is FlagSync.ROLLED_BACK:
            self._record(Reason.RECOVERED, "FeatBit already serves control with the flag off: recorded the rollback")
            self._update(phase=Phase.ROLLED_BACK, percentage=0.0, flag_revision=view.revision)
        elif view.sync is FlagSync.AHEAD and view.stage_index is not None:
            stage = self.spec.path[view.stage_index]
            self._record(
                Reason.RECOVERED,
                f"FeatBit already serves stage {stage.name} ({stage.percentage:g}%): recorded without writing again",
                stage=stage.name,
                percentage=stage.percentage,
            )
            self._enter_stage(view.stage_index)
            self._update(flag_revision=view.revision)
        else:
            self._update(flag_revision=view.revision)
            self._condition(ConditionType.FEATBIT_SYNCED, True, Reason.FEATBIT_SYNCED, "FeatBit serves the stage")

    def _follow_spec_edit(self) -> None:
        """Stages edited mid-rollout: the current stage is found again by name, and its targeting re-applied."""
        index = self.status.stage_index
        if index is None:
            return
        names = [s.name for s in self.spec.path]
        if self.status.stage_name == POST_RELEASE_STAGE and self.spec.post_release is None:
            self._complete(f"spec.postRelease removed (generation {self.generation})")
            return
        if self.status.stage_name in names:
            new_index = names.index(self.status.stage_name)
            message = f"spec changed (generation {self.generation}); stage {self.status.stage_name} re-applied"
        else:
            current = self.status.percentage or 0.0
            new_index = next(
                (i for i, s in enumerate(self.spec.stages) if s.percentage >= current), len(self.spec.stages) - 1
            )
            message = (
                f"spec changed (generation {self.generation}): stage {self.status.stage_name} no longer exists; "
                f"continuing at stage {self.spec.stages[new_index].name}, the first that keeps at least {current:g}%"
            )
        stage = self.spec.path[new_index]
        self._record(Reason.SPEC_CHANGED, message)
        self._update(stage_index=new_index, stage_name=stage.name, percentage=stage.percentage)
        self._apply(new_index, message)

    def _judge(self) -> None:
        verdicts = self.obs.verdicts
        if verdicts is None:
            return
        self._note_lateness()
        outcome = overall(verdicts)
        self._update(
            guardrails=tuple(_guardrail_statuses(verdicts)),
            guardrail_summary=_summary(verdicts),
            last_analysis_at=self.now,
            comparisons=_comparisons(self.spec, self.status.comparisons, verdicts),
        )
        if self._check_split():
            return
        previous = _find(self.old.conditions, ConditionType.GUARDRAILS_PASSING)
        changed = previous is None or previous.reason != _OUTCOME_REASON[outcome]
        self._condition(
            ConditionType.GUARDRAILS_PASSING, outcome is Outcome.PASSED, _OUTCOME_REASON[outcome], _explain(verdicts)
        )
        if outcome is Outcome.ERROR:
            errors = self.status.consecutive_errors + 1
            self._update(consecutive_errors=errors)
            limit = self.spec.analysis.consecutive_error_limit
            if errors >= limit and self.status.phase is Phase.PROGRESSING:
                self._pause(
                    Reason.GUARDRAIL_QUERY_FAILED,
                    f"{errors} consecutive guardrail errors (limit {limit}): {_explain(verdicts)}",
                )
            elif changed:
                self._record(Reason.GUARDRAIL_QUERY_FAILED, _explain(verdicts))
            return
        self._update(consecutive_errors=0)
        if self.status.phase is Phase.PAUSED and self.status.pause_reason == Reason.GUARDRAIL_QUERY_FAILED:
            self._resume("guardrail queries answer again", "operator", reapply=False)
        if outcome is Outcome.BREACHED:
            self._breach(verdicts, changed)
        elif changed and outcome in (Outcome.WARNING, Outcome.NO_DATA):
            reason = Reason.GUARDRAIL_WARNING if outcome is Outcome.WARNING else Reason.GUARDRAIL_NO_DATA
            self._record(reason, f"holding at stage {self.status.stage_name}: {_explain(verdicts)}")
        elif outcome is Outcome.INCONCLUSIVE and self._held_past_bake(changed):
            self._record(
                Reason.GUARDRAIL_INCONCLUSIVE,
                f"holding at stage {self.status.stage_name} past its duration: {_explain(verdicts)}",
            )
        elif changed and outcome is Outcome.PASSED and previous is not None:
            self._record(Reason.GUARDRAILS_PASSED, f"guardrails pass again: {_explain(verdicts)}")

    def _held_past_bake(self, changed: bool) -> bool:
        """Whether an inconclusive comparison has just started to hold the stage beyond its duration."""
        end = bake_end(self.spec, self.status)
        if end is None or self.now < end or self._watch() is not None:
            return False
        previous = self.old.last_analysis_at
        return changed or previous is None or previous < end

    def _check_split(self) -> bool:
        """Act on a sample ratio mismatch the first time the stage shows one; True when the rollout stopped."""
        check = self.obs.sample_ratio
        if check is None:
            return False
        before = self.old.sample_ratio
        self._update(sample_ratio=check)
        spec_check = self.spec.analysis.sample_ratio
        new = check.mismatch and not (before is not None and before.stage == check.stage and before.mismatch)
        if not new or spec_check is None or self.status.phase is not Phase.PROGRESSING:
            return False
        why = (
            f"{check.message} at stage {check.stage}: every comparison after it would be biased; check the flag's "
            "bucketing, caches and bots before resuming"
        )
        if spec_check.on_mismatch is OnMismatch.ROLLBACK:
            self._record(Reason.SAMPLE_RATIO_MISMATCH, why)
            self._roll_back(Reason.ROLLED_BACK, f"sample ratio mismatch at stage {check.stage}", breach=True)
            return True
        if spec_check.on_mismatch is OnMismatch.PAUSE:
            self._pause(Reason.SAMPLE_RATIO_MISMATCH, f"{why}; paused (onMismatch: pause)")
            return True
        self._record(Reason.SAMPLE_RATIO_MISMATCH, f"{why} (onMismatch: warn)")
        return False

    def _note_lateness(self) -> None:
        """Say in status when an analysis ran late (never advancing on it is the judge's part: it is fresh)."""
        previous = _find(self.status.conditions, ConditionType.ANALYSIS_ON_TIME)
        if self.obs.late is not None:
            self._condition(ConditionType.ANALYSIS_ON_TIME, False, Reason.ANALYSIS_LATE, self.obs.late)
        elif previous is not None and previous.status == "False":
            self._condition(ConditionType.ANALYSIS_ON_TIME, True, Reason.ANALYSIS_ON_TIME, "analyses run on time again")

    def _breach(self, verdicts: Sequence[GuardrailVerdict], changed: bool) -> None:
        breached = [s for v in verdicts for s in v.segments if s.outcome is Outcome.BREACHED]
        detail = "; ".join(s.message for s in breached) or _explain(verdicts)
        at = f"at stage {self.status.stage_name} ({self.status.percentage or 0:g}%)"
        watch = self._watch()
        if watch is not None and watch.on_breach is OnPostReleaseBreach.ALERT:
            if changed:
                why = (
                    f"guardrail breached {at}: {detail}; the watch goes on (postRelease.onBreach: alert) and the "
                    "holdback stays on the control while harm is shown: promote releases it, abort rolls back"
                )
                self._record(Reason.GUARDRAIL_BREACHED, why)
                self._update(message=why)
        elif watch is None and self.spec.on_breach is OnBreach.PAUSE:
            self._pause(Reason.GUARDRAIL_BREACHED, f"guardrail breached {at}: {detail}; paused (onBreach: pause)")
        else:
            self._record(Reason.GUARDRAIL_BREACHED, f"guardrail breached {at}: {detail}")
            self._roll_back(Reason.ROLLED_BACK, f"guardrail breached {at}: {detail}", breach=True)

    def _maybe_advance(self) -> None:
        end = bake_end(self.spec, self.status)
        if end is None or self.now < end:
            return
        if self.spec.guardrails:
            last = self.status.last_analysis_at
            passing = _find(self.status.conditions, ConditionType.GUARDRAILS_PASSING)
            if last is None or last < end or passing is None:
                return
            # The watch looks for harm only: a comparison short of its sample shows none, so it cannot hold it.
            harmless = self._watch() is not None and passing.reason == Reason.GUARDRAIL_INCONCLUSIVE
            if passing.status != "True" and not harmless:
                if passing.reason == Reason.GUARDRAIL_INCONCLUSIVE and last >= self.now:
                    self._short_of_sample(end)
                return
        self._advance(self._stage_summary())

    def _short_of_sample(self, end: datetime) -> None:
        """A stage still short of the sample its comparisons need, its extensions used up: what the spec says."""
        analysis = self.spec.analysis
        action = analysis.on_insufficient_sample
        stage = self.spec.path[self.status.stage_index or 0]
        if action is InsufficientSample.HOLD or self.now < end + stage.bake_time * analysis.max_extensions:
            return
        why = (
            f"stage {stage.name} did not reach the sample its comparisons need within its duration and "
            f"{analysis.max_extensions} extensions"
        )
        if action is InsufficientSample.REVERT:
            self._roll_back(Reason.ROLLED_BACK, f"{why} (onInsufficientSample: revert)", breach=True)
        else:
            self._advance(f"{why}; no harm shown, advancing (onInsufficientSample: proceed)")

    def _advance(self, why: str, actor: str = "operator") -> None:
        index = self.status.stage_index or 0
        if self._watch() is not None:
            self._complete(why, actor)
        elif index + 1 >= len(self.spec.stages):
            self._promote(why, actor)
        else:
            self._go_to(index + 1, Reason.STAGE_ADVANCED, why, actor)

    def _promote(self, why: str, actor: str = "operator") -> None:
        self._record(
            Reason.PROMOTED, f"{self.spec.flag.candidate} serves {self.status.percentage or 0:g}%: {why}", actor
        )
        if self.spec.post_release is not None:
            self._start_watch(self.spec.post_release, actor)
            return
        self._update(phase=Phase.PROMOTED, pause_reason=None, message=f"promoted: {why}")
        self._condition(ConditionType.PROGRESSING, False, Reason.PROMOTED, "rollout complete")

    def _start_watch(self, watch: PostRelease, actor: str) -> None:
        """After the last stage: a holdback stays on the control, measured against, for the watch's duration."""
        index = len(self.spec.stages)
        stage = self.spec.path[index]
        then = "rolls back" if watch.on_breach is OnPostReleaseBreach.ROLLBACK else "is alerted"
        message = (
            f"post-release watch for {watch.duration}: {_exposure_text(self.spec, index)}, {watch.holdback:g}% held "
            f"back on {self.spec.flag.control}; a guardrail breach {then}"
        )
        self._record(Reason.POST_RELEASE_WATCH_STARTED, message, actor, stage=stage.name, percentage=stage.percentage)
        self._enter_stage(index)
        self._update(phase=Phase.PROGRESSING, pause_reason=None, message=message)
        self._condition(ConditionType.PROGRESSING, True, Reason.POST_RELEASE_WATCH_STARTED, message)
        # promote-full has just asked for the last stage: the watch's targeting replaces it, in one write.
        self.actions = [a for a in self.actions if not isinstance(a, ApplyStage)]
        self._apply(index, f"post-release watch ({stage.percentage:g}%, holdback {watch.holdback:g}%)")

    def _complete(self, why: str, actor: str = "operator") -> None:
        """The watch is over: the holdback is released, the last stage served to all it targets."""
        last = len(self.spec.stages) - 1
        stage = self.spec.stages[last]
        message = f"holdback released, {self.spec.flag.candidate} serves {stage.percentage:g}%: {why}"
        self._record(Reason.COMPLETED, message, actor, percentage=stage.percentage)
        self._update(
            phase=Phase.COMPLETED,
            stage_index=last,
            stage_name=stage.name,
            percentage=stage.percentage,
            pause_reason=None,
            message=f"completed: {why}",
        )
        self._condition(ConditionType.PROGRESSING, False, Reason.COMPLETED, "rollout complete, post-release watch over")
        self._apply(last, f"post-release watch over, holdback released: {why}")

    def _watch(self) -> PostRelease | None:
        """The post-release watch's settings while the rollout is in it, None otherwise."""
        if self.status.stage_index is None or self.status.stage_index < len(self.spec.stages):
            return None
        return self.spec.post_release

    def _go_to(self, index: int, reason: Reason, why: str, actor: str = "operator") -> None:
        stage = self.spec.stages[index]
        position = f"stage {index + 1}/{len(self.spec.stages)} {stage.name}"
        message = f"{position}: {_exposure_text(self.spec, index)}; {why}"
        self._record(reason, message, actor, stage=stage.name, percentage=stage.percentage)
        self._enter_stage(index)
        self._update(phase=Phase.PROGRESSING, pause_reason=None, message=message)
        self._apply(index, f"{position} ({stage.percentage:g}%): {why}")

    def _enter_stage(self, index: int) -> None:
        stage = self.spec.path[index]
        self._update(
            comparisons=tuple(_closed(record) for record in self.status.comparisons),
            stage_index=index,
            stage_name=stage.name,
            percentage=stage.percentage,
            stage_started_at=self.now,
            consecutive_errors=0,
        )
        self._condition(ConditionType.PROGRESSING, True, Reason.STAGE_ADVANCED, f"at stage {stage.name}")

    def _apply(self, index: int, why: str) -> None:
        self.actions.append(ApplyStage(index=index, comment=self._comment(why)))

    def _roll_back(self, reason: Reason, why: str, actor: str = "operator", breach: bool = False) -> None:
        at = f"stage {self.status.stage_name}" if self.status.stage_name else "the start"
        if not breach:
            self._record(reason, f"candidate turned off at {at}: {why}", actor)
        served = "the flag's off-variation" if self.obs.invalid_spec is not None else self.spec.flag.control
        self._record(Reason.ROLLED_BACK, f"everyone is served {served}: {why}", actor, percentage=0.0)
        self._update(phase=Phase.ROLLED_BACK, percentage=0.0, pause_reason=None, message=f"rolled back: {why}")
        self._condition(ConditionType.PROGRESSING, False, Reason.ROLLED_BACK, why)
        self.actions = [RollBack(comment=self._comment(f"rollback: {why}"))]

    def _pause(self, reason: Reason, why: str, actor: str = "operator") -> None:
        self._record(reason, why, actor)
        self._update(phase=Phase.PAUSED, pause_reason=reason.value, message=why)
        self._condition(ConditionType.PROGRESSING, False, reason, why)

    def _resume(self, why: str, actor: str, reapply: bool = True) -> None:
        self._record(Reason.RESUMED, why, actor)
        self._update(phase=Phase.PROGRESSING, pause_reason=None, message=why)
        self._condition(ConditionType.PROGRESSING, True, Reason.RESUMED, why)
        if self.status.stage_name == POST_RELEASE_STAGE and self.spec.post_release is None:
            self._complete("spec.postRelease was removed while the watch was paused")
        elif reapply and self.status.stage_index is not None:
            self._apply(self.status.stage_index, why)

    def _problem(self, problem: Problem) -> None:
        failure = plan_failure(self.status, problem, self.now, self.generation)
        self.status = failure.status
        self.entries.extend(failure.entries)

    # -- small helpers -----------------------------------------------------------------------------------

    def _stage_summary(self) -> str:
        stage = self.spec.path[self.status.stage_index or 0]
        waited = f"after {stage.duration}" if stage.duration else "stage complete"
        if not self.spec.guardrails:
            return waited
        verdict = "no harm shown" if self._watch() is not None else "guardrails passed"
        return f"{waited}; {verdict} ({self.status.guardrail_summary})"

    def _comment(self, why: str) -> str:
        return f"generation {self.generation}, {why}"

    def _record(
        self,
        reason: Reason,
        message: str,
        actor: str = "operator",
        *,
        stage: str | None = None,
        percentage: float | None = None,
    ) -> None:
        if self.obs.verb is not None and self.obs.verb_reason and actor == self.obs.actor:
            # Every entry the verb produces says why it was asked for, its Event too.
            message = f"{message} (reason: {self.obs.verb_reason})"
        entry = HistoryEntry(
            time=self.now,
            reason=reason.value,
            stage=stage if stage is not None else self.status.stage_name,
            percentage=percentage if percentage is not None else self.status.percentage,
            actor=actor,
            message=message,
            # Values at the end of each stage, so a regression that only shows at 50% reads as such.
            guardrails=self.status.guardrails if reason in _WITH_GUARDRAIL_VALUES else (),
        )
        self.entries.append(entry)
        self._update(history=_append(self.status.history, (entry,)))

    def _condition(self, kind: ConditionType, ok: bool, reason: Reason, message: str) -> None:
        problem = Problem(reason=reason, message=message)
        self._update(conditions=_set_condition(self.status.conditions, kind, ok, problem, self.now))

    def _update(self, **fields: object) -> None:
        self.status = self.status.model_copy(update=fields)


_WITH_GUARDRAIL_VALUES = frozenset(
    {Reason.STAGE_ADVANCED, Reason.PROMOTED, Reason.COMPLETED, Reason.GUARDRAIL_BREACHED, Reason.GUARDRAIL_WARNING}
)

_OUTCOME_REASON = {
    Outcome.INCONCLUSIVE: Reason.GUARDRAIL_INCONCLUSIVE,
    Outcome.PASSED: Reason.GUARDRAILS_PASSED,
    Outcome.WARNING: Reason.GUARDRAIL_WARNING,
    Outcome.BREACHED: Reason.GUARDRAIL_BREACHED,
    Outcome.NO_DATA: Reason.GUARDRAIL_NO_DATA,
    Outcome.ERROR: Reason.GUARDRAIL_QUERY_FAILED,
}


def bake_end(spec: AIRolloutSpec, status: AIRolloutStatus) -> datetime | None:
    """When the current stage's minimum bake time is over (None outside a stage); the watch's is its duration."""
    path = spec.path
    if status.stage_index is None or status.stage_started_at is None or status.stage_index >= len(path):
        return None
    return status.stage_started_at + path[status.stage_index].bake_time


def _exposure_text(spec: AIRolloutSpec, index: int) -> str:
    stage = spec.path[index]
    who = f"{stage.percentage:g}% of " + (f"segments {', '.join(stage.audience)}" if stage.audience else "traffic")
    granted = granted_segments(spec, index)
    if granted:
        who += f" + segments {', '.join(granted)} at 100%"
    return f"{spec.flag.candidate} serves {who}"


_STRATA_LIMIT = 20
"""Finished stages a comparison keeps (a stage re-entered after a spec edit counts again)."""


def _comparisons(
    spec: AIRolloutSpec, records: Sequence[ComparisonRecord], verdicts: Sequence[GuardrailVerdict]
) -> tuple[ComparisonRecord, ...]:
    """The records of the spec's comparisons: this analysis's where it made one, the last one otherwise."""
    by_name = {r.guardrail: r for r in records}
    by_name.update({v.guardrail: v.record for v in verdicts if v.record is not None})
    names = [g.name for g in spec.inline_guardrails if g.compare is not None]
    return tuple(by_name[name] for name in names if name in by_name)


def _closed(record: ComparisonRecord) -> ComparisonRecord:
    """The record as a stage ends: the stage's last counts join the finished strata."""
    if record.current is None:
        return record
    strata = (*record.strata, record.current)[-_STRATA_LIMIT:]
    return record.model_copy(update={"strata": strata, "current": None})


def _guardrail_statuses(verdicts: Sequence[GuardrailVerdict]) -> list[GuardrailStatus]:
    statuses = []
    for verdict in verdicts:
        if not verdict.segments:
            statuses.append(
                GuardrailStatus(name=verdict.guardrail, outcome=verdict.outcome.value, message=verdict.error or "")
            )
        # In a stable order: Prometheus returns series in any order, and a reordering is no news to write.
        for s in sorted(verdict.segments, key=lambda judgement: judgement.segment):
            statuses.append(
                GuardrailStatus(
                    name=s.guardrail,
                    segment=s.segment,
                    outcome=s.outcome.value,
                    value=s.value,
                    threshold=s.threshold,
                    control_value=s.control_value,
                    window=s.window,
                    message=s.message,
                    evidence=s.evidence,
                )
            )
    return statuses


def _summary(verdicts: Sequence[GuardrailVerdict]) -> str:
    """The printer column: ``3/3 Passed``, or the worst outcome and who has it."""
    outcome = overall(verdicts)
    if outcome is Outcome.PASSED:
        return f"{len(verdicts)}/{len(verdicts)} Passed"
    worst = [v for v in verdicts if v.outcome is outcome]
    names = []
    for verdict in worst:
        segments = [s.segment for s in verdict.segments if s.outcome is outcome and s.segment]
        names.append(f"{verdict.guardrail}{{{';'.join(segments)}}}" if segments else verdict.guardrail)
    return f"{outcome.value}: {', '.join(names)}"


def _explain(verdicts: Sequence[GuardrailVerdict]) -> str:
    outcome = overall(verdicts)
    worst = [v for v in verdicts if v.outcome is outcome]
    parts = []
    for verdict in worst:
        if verdict.error:
            parts.append(f"{verdict.guardrail}: {verdict.error}")
        parts.extend(s.message for s in verdict.segments if s.outcome is outcome)
    return "; ".join(parts) if parts else f"{len(verdicts)} guardrails {outcome.value}"


def _find(conditions: Sequence[Condition], kind: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == kind.value), None)


def _set_condition(
    conditions: Sequence[Condition], kind: ConditionType, ok: bool, problem: Problem, now: datetime
) -> tuple[Condition, ...]:
    status = "True" if ok else "False"
    previous = _find(conditions, kind)
    # lastTransitionTime moves only when the status flips, as Kubernetes conditions have it.
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    new = Condition(
        type=kind.value, status=status, reason=problem.reason.value, message=problem.message, last_transition_time=since
    )
    if previous is None:
        return (*conditions, new)
    return tuple(new if c.type == kind.value else c for c in conditions)


def _append(history: Sequence[HistoryEntry], entries: Sequence[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    return (*history, *entries)[-HISTORY_LIMIT:]


def _entry(now: datetime, reason: Reason, status: AIRolloutStatus, message: str) -> HistoryEntry:
    return HistoryEntry(
        time=now, reason=reason.value, stage=status.stage_name, percentage=status.percentage, message=message
    )


__all__ = [
    "ACTION_ANNOTATION",
    "ACTION_ID_ANNOTATION",
    "ACTION_REASON_ANNOTATION",
    "Action",
    "ApplyStage",
    "Decision",
    "FlagSync",
    "FlagView",
    "KillRequest",
    "Observation",
    "Problem",
    "RollBack",
    "Verb",
    "analysis_due",
    "analysis_tick",
    "bake_end",
    "flag_identity",
    "granted_segments",
    "kill_request",
    "next_analysis_at",
    "plan",
    "plan_delivery",
    "plan_failure",
]
