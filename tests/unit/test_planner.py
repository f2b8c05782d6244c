"""The rollout state machine, transition by transition: what a user sees happen to a rollout, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from airollout.guardrails.judging import GuardrailVerdict, Outcome, SegmentJudgement
from airollout.model import HISTORY_LIMIT, AIRolloutSpec, AIRolloutStatus, Phase
from airollout.planner import (
    ApplyStage,
    Decision,
    FlagSync,
    FlagView,
    Observation,
    Problem,
    RollBack,
    analysis_due,
    granted_segments,
    plan,
    plan_failure,
)
from airollout.reasons import Reason

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
IN_SYNC = FlagView(sync=FlagSync.IN_SYNC, revision="r1")


def make_spec(**overrides: Any) -> AIRolloutSpec:
    raw: dict[str, Any] = {
        "flag": {
            "key": "new-embedding-model",
            "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b",
            "candidate": "canary",
            "control": "stable",
        },
        "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
        "stages": [
            {"name": "internal", "segments": ["internal-users"], "duration": "30s"},
            {"name": "canary", "percentage": 5, "duration": "10s"},
            {"name": "ramp-25", "percentage": 25, "duration": "10s"},
            {"name": "full", "percentage": 100},
        ],
    }
    raw.update(overrides)
    return AIRolloutSpec.model_validate(raw)


GUARDED = {
    "prometheus": {"url": "http://prometheus:9090"},
    "guardrails": [{"name": "error-rate", "query": 'rate(x{variant="{{variant}}"}[1m])', "max": 0.02, "warnAt": 0.01}],
}


def verdict(outcome: Outcome, segment: str = 'locale="de"', value: float = 0.5) -> GuardrailVerdict:
    judgement = SegmentJudgement(
        guardrail="error-rate",
        segment=segment,
        outcome=outcome,
        value=value,
        threshold=0.02,
        control_value=0.01,
        window="1m",
        message=f"error-rate {outcome.value} for {segment}: {value} vs max 0.02 (control 0.01, window 1m)",
    )
    error = "Prometheus is unreachable: connection refused" if outcome is Outcome.ERROR else None
    segments = () if outcome is Outcome.ERROR else (judgement,)
    return GuardrailVerdict(guardrail="error-rate", outcome=outcome, segments=segments, error=error)


def started(spec: AIRolloutSpec) -> AIRolloutStatus:
    decision = plan(spec, AIRolloutStatus(), Observation(flag=IN_SYNC), T0, 1)
    return decision.status.model_copy(update={"flag_revision": "r1"})


def at_stage(spec: AIRolloutSpec, index: int, since: datetime = T0) -> AIRolloutStatus:
    stage = spec.stages[index]
    return started(spec).model_copy(
        update={
            "stage_index": index,
            "stage_name": stage.name,
            "percentage": stage.percentage,
            "stage_started_at": since,
        }
    )


def reasons(decision: Decision) -> list[str]:
    return [entry.reason for entry in decision.entries]


def test_a_new_rollout_applies_its_first_stage_and_says_so() -> None:
    spec = make_spec()
    decision = plan(spec, AIRolloutStatus(), Observation(flag=IN_SYNC), T0, 1)
    assert decision.actions == (ApplyStage(index=0, comment=decision.actions[0].comment),)
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.stage_name == "internal"
    assert reasons(decision) == [Reason.STARTED]
    assert "internal-users" in decision.entries[0].message


def test_a_stage_waits_for_its_duration_then_advances_one_step() -> None:
    spec = make_spec()
    status = at_stage(spec, 0)
    early = plan(spec, status, Observation(flag=IN_SYNC), T0 + timedelta(seconds=29), 1)
    assert early.actions == ()
    assert early.status.stage_index == 0
    due = plan(spec, status, Observation(flag=IN_SYNC), T0 + timedelta(seconds=30), 1)
    assert [type(a) for a in due.actions] == [ApplyStage]
    assert due.actions[0].index == 1  # type: ignore[union-attr]
    assert due.status.stage_name == "canary"
    assert due.status.percentage == 5
    assert reasons(due) == [Reason.STAGE_ADVANCED]
    assert "5% of traffic" in due.entries[0].message
    assert "internal-users at 100%" in due.entries[0].message


def test_segments_granted_in_a_stage_stay_granted_later() -> None:
    spec = make_spec()
    assert granted_segments(spec, 0) == ("internal-users",)
    assert granted_segments(spec, 3) == ("internal-users",)


def test_the_last_stage_promotes_without_another_write() -> None:
    spec = make_spec()
    decision = plan(spec, at_stage(spec, 3), Observation(flag=IN_SYNC), T0, 1)
    assert decision.actions == ()
    assert decision.status.phase is Phase.PROMOTED
    assert reasons(decision) == [Reason.PROMOTED]


def test_a_guarded_stage_advances_only_on_a_pass_measured_after_its_duration() -> None:
    spec = make_spec(**GUARDED)
    status = at_stage(spec, 1)
    during = plan(
        spec, status, Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),)), T0 + timedelta(seconds=5), 1
    )
    assert during.actions == ()
    after_bake = T0 + timedelta(seconds=10)
    assert analysis_due(spec, during.status, after_bake)
    passed = plan(spec, during.status, Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),)), after_bake, 1)
    assert passed.status.stage_name == "ramp-25"
    history = passed.status.history[-1]
    assert history.reason == Reason.STAGE_ADVANCED
    assert history.guardrails[0].value == 0.5  # values at the end of the stage are kept


def test_no_guardrail_result_after_the_duration_means_no_advance() -> None:
    spec = make_spec(**GUARDED)
    status = at_stage(spec, 1)
    decision = plan(spec, status, Observation(flag=IN_SYNC), T0 + timedelta(minutes=5), 1)
    assert decision.actions == ()
    assert decision.status.stage_index == 1


def test_a_warning_freezes_and_a_clear_continues() -> None:
    spec = make_spec(**GUARDED)
    later = T0 + timedelta(seconds=20)
    frozen = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.WARNING),)), later, 1)
    assert frozen.actions == ()
    assert frozen.status.phase is Phase.PROGRESSING
    assert reasons(frozen) == [Reason.GUARDRAIL_WARNING]
    assert frozen.status.guardrail_summary == 'Warning: error-rate{locale="de"}'
    cleared = plan(spec, frozen.status, Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),)), later, 1)
    assert cleared.status.stage_name == "ramp-25"
    assert reasons(cleared) == [Reason.GUARDRAILS_PASSED, Reason.STAGE_ADVANCED]


def test_no_data_holds_the_stage() -> None:
    spec = make_spec(**GUARDED)
    decision = plan(
        spec,
        at_stage(spec, 1),
        Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.NO_DATA),)),
        T0 + timedelta(hours=1),
        1,
    )
    assert decision.actions == ()
    assert decision.status.stage_index == 1
    assert reasons(decision) == [Reason.GUARDRAIL_NO_DATA]


def test_a_breach_rolls_back_at_once_and_names_the_segment() -> None:
    spec = make_spec(**GUARDED)
    decision = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.BREACHED),)), T0, 1)
    assert [type(a) for a in decision.actions] == [RollBack]
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.status.percentage == 0
    assert reasons(decision) == [Reason.GUARDRAIL_BREACHED, Reason.ROLLED_BACK]
    assert 'locale="de"' in decision.entries[0].message
    assert "canary (5%)" in decision.entries[0].message


def test_a_breach_at_the_last_stage_still_rolls_back_while_its_duration_runs() -> None:
    spec = make_spec(
        **GUARDED,
        stages=[
            {"name": "canary", "percentage": 5, "duration": "1s"},
            {"name": "full", "percentage": 100, "duration": "1h"},
        ],
    )
    decision = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.BREACHED),)), T0, 1)
    assert decision.status.phase is Phase.ROLLED_BACK


def test_on_breach_pause_pauses_instead() -> None:
    spec = make_spec(**GUARDED, onBreach="pause")
    decision = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.BREACHED),)), T0, 1)
    assert decision.actions == ()
    assert decision.status.phase is Phase.PAUSED
    assert decision.status.pause_reason == Reason.GUARDRAIL_BREACHED


def test_query_errors_pause_after_the_limit_and_resume_when_prometheus_answers() -> None:
    spec = make_spec(**GUARDED, analysis={"interval": "5s", "consecutiveErrorLimit": 2})
    error = Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.ERROR),))
    first = plan(spec, at_stage(spec, 1), error, T0 + timedelta(seconds=20), 1)
    assert first.status.phase is Phase.PROGRESSING
    assert first.actions == ()
    assert reasons(first) == [Reason.GUARDRAIL_QUERY_FAILED]
    second = plan(spec, first.status, error, T0 + timedelta(seconds=25), 1)
    assert second.status.phase is Phase.PAUSED
    assert "connection refused" in second.status.message
    assert analysis_due(spec, second.status, T0 + timedelta(seconds=30))
    back = plan(
        spec,
        second.status,
        Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),)),
        T0 + timedelta(seconds=30),
        1,
    )
    assert back.status.phase is Phase.PROGRESSING
    assert Reason.RESUMED in reasons(back)


def test_the_kill_switch_rolls_back_once() -> None:
    spec = make_spec(killSwitch=True)
    decision = plan(spec, at_stage(make_spec(), 2), Observation(flag=IN_SYNC), T0, 1)
    assert [type(a) for a in decision.actions] == [RollBack]
    assert reasons(decision) == [Reason.KILL_SWITCH_ENGAGED, Reason.ROLLED_BACK]
    assert decision.entries[0].actor == "spec.killSwitch"
    again = plan(spec, decision.status, Observation(), T0 + timedelta(seconds=1), 1)
    assert again.actions == ()
    assert again.entries == ()


def test_abort_and_retry_verbs() -> None:
    spec = make_spec()
    aborted = plan(spec, at_stage(spec, 2), Observation(flag=IN_SYNC, verb="abort", actor="kubectl-annotate"), T0, 1)
    assert aborted.consume_verb
    assert aborted.status.phase is Phase.ROLLED_BACK
    assert aborted.entries[0].actor == "kubectl-annotate"
    retried = plan(spec, aborted.status, Observation(verb="retry", actor="kubectl-annotate"), T0, 1)
    assert retried.status.phase is Phase.PROGRESSING
    assert retried.status.stage_name == "internal"
    assert retried.actions[0] == ApplyStage(index=0, comment=retried.actions[0].comment)


def test_retry_is_refused_while_the_kill_switch_is_on() -> None:
    killed = plan(make_spec(killSwitch=True), at_stage(make_spec(), 1), Observation(flag=IN_SYNC), T0, 1)
    retried = plan(make_spec(killSwitch=True), killed.status, Observation(verb="retry", actor="me"), T0, 1)
    assert retried.status.phase is Phase.ROLLED_BACK
    assert retried.actions == ()
    assert "set it to false first" in retried.entries[0].message


def test_pause_resume_promote_and_promote_full() -> None:
    spec = make_spec()
    paused = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="pause", actor="me"), T0, 1)
    assert paused.status.phase is Phase.PAUSED
    idle = plan(spec, paused.status, Observation(flag=IN_SYNC), T0 + timedelta(hours=1), 1)
    assert idle.actions == ()
    resumed = plan(spec, paused.status, Observation(flag=IN_SYNC, verb="resume", actor="me"), T0, 1)
    assert resumed.status.phase is Phase.PROGRESSING
    assert resumed.actions == (ApplyStage(index=1, comment=resumed.actions[0].comment),)
    promoted = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="promote", actor="me"), T0, 1)
    assert promoted.status.stage_name == "ramp-25"
    full = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="promote-full", actor="me"), T0, 1)
    assert full.status.phase is Phase.PROMOTED
    assert full.status.percentage == 100
    assert full.actions == (ApplyStage(index=3, comment=full.actions[0].comment),)


def test_unknown_or_misplaced_verbs_are_rejected_and_consumed() -> None:
    spec = make_spec()
    unknown = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="yolo"), T0, 1)
    assert unknown.consume_verb
    assert reasons(unknown) == [Reason.ACTION_REJECTED]
    assert "promote-full" in unknown.entries[0].message
    misplaced = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="retry"), T0, 1)
    assert reasons(misplaced) == [Reason.ACTION_REJECTED]
    assert misplaced.status.stage_index == 1


def test_an_edit_in_featbit_pauses_without_overwriting_it() -> None:
    spec = make_spec()
    edited = FlagView(sync=FlagSync.EDITED, revision="r-human")
    decision = plan(spec, at_stage(spec, 1), Observation(flag=edited), T0 + timedelta(hours=1), 1)
    assert decision.actions == ()
    assert decision.status.phase is Phase.PAUSED
    assert reasons(decision) == [Reason.FLAG_EDITED_OUT_OF_BAND]


def test_a_write_that_landed_before_a_restart_is_recorded_not_repeated() -> None:
    spec = make_spec()
    ahead = FlagView(sync=FlagSync.AHEAD, revision="r2", stage_index=2)
    decision = plan(spec, at_stage(spec, 1), Observation(flag=ahead), T0 + timedelta(seconds=3), 1)
    assert decision.actions == ()
    assert decision.status.stage_index == 2
    assert decision.status.flag_revision == "r2"
    assert reasons(decision) == [Reason.RECOVERED]


def test_featbit_failures_are_recorded_once_and_kept_in_the_condition() -> None:
    spec = make_spec()
    status = at_stage(spec, 1)
    problem = Problem(Reason.FEATBIT_UNAVAILABLE, "FeatBit did not answer: connection refused")
    first = plan_failure(status, problem, T0, 1)
    second = plan_failure(first.status, problem, T0 + timedelta(seconds=1), 1)
    assert reasons(first) == [Reason.FEATBIT_UNAVAILABLE]
    assert second.entries == ()
    condition = next(c for c in second.status.conditions if c.type == "FeatBitSynced")
    assert condition.status == "False"
    assert condition.reason == Reason.FEATBIT_UNAVAILABLE
    assert second.status.stage_index == 1


def test_a_problem_before_the_start_keeps_the_rollout_pending() -> None:
    spec = make_spec()
    problem = Problem(Reason.SECRET_NOT_FOUND, "Secret search/featbit does not exist")
    decision = plan(spec, AIRolloutStatus(), Observation(problem=problem), T0, 1)
    assert decision.actions == ()
    assert decision.status.phase is Phase.PENDING
    assert reasons(decision) == [Reason.SECRET_NOT_FOUND]


def test_changing_the_flag_restarts_from_the_first_stage() -> None:
    spec = make_spec()
    other = make_spec(
        flag={
            "key": "other-flag",
            "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b",
            "candidate": "canary",
            "control": "stable",
        }
    )
    decision = plan(other, at_stage(spec, 2), Observation(flag=IN_SYNC), T0, 2)
    assert reasons(decision) == [Reason.FLAG_CHANGED, Reason.STARTED]
    assert decision.status.stage_name == "internal"


def test_editing_stages_keeps_the_current_stage_by_name() -> None:
    spec = make_spec()
    status = at_stage(spec, 2).model_copy(update={"observed_generation": 1})
    edited = make_spec(
        stages=[
            {"name": "canary", "percentage": 5, "duration": "10s"},
            {"name": "ramp-25", "percentage": 30, "duration": "10s"},
            {"name": "full", "percentage": 100},
        ]
    )
    decision = plan(edited, status, Observation(flag=IN_SYNC), T0 + timedelta(seconds=1), 2)
    assert decision.status.stage_index == 1
    assert decision.status.percentage == 30
    assert [type(a) for a in decision.actions] == [ApplyStage]
    assert Reason.SPEC_CHANGED in reasons(decision)


def test_an_invalid_spec_fails_with_the_field_and_recovers_when_fixed() -> None:
    spec = make_spec()
    failed = plan(
        spec, at_stage(spec, 1), Observation(invalid_spec="spec.guardrails[0].query: unknown {{varient}}"), T0, 2
    )
    assert failed.status.phase is Phase.FAILED
    assert "spec.guardrails[0].query" in failed.status.message
    fixed = plan(spec, failed.status, Observation(flag=IN_SYNC), T0, 3)
    assert fixed.status.phase is Phase.PROGRESSING


def test_history_is_bounded_and_newest_last() -> None:
    spec = make_spec()
    status = at_stage(spec, 1)
    for i in range(HISTORY_LIMIT + 10):
        status = plan(spec, status, Observation(flag=IN_SYNC, verb=f"bogus-{i}"), T0, 1).status
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[-1].message.startswith("unknown action 'bogus-59'")


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=40))
def test_stages_are_visited_in_order_and_exposure_never_shrinks(steps: list[int]) -> None:
    spec = make_spec()
    status, now = AIRolloutStatus(), T0
    visited: list[int] = []
    for seconds in steps:
        now += timedelta(seconds=seconds)
        decision = plan(spec, status, Observation(flag=IN_SYNC), now, 1)
        visited += [a.index for a in decision.actions if isinstance(a, ApplyStage)]
        status = decision.status
    assert visited == list(range(len(visited)))
    percentages = [spec.stages[i].percentage for i in visited]
    assert percentages == sorted(percentages)
