"""When a rollout next needs work: derived from status alone, so nothing about timing dies with a process."""

from __future__ import annotations

from datetime import timedelta

from airollout.deadlines import Deadline, flag_check_due, next_due
from airollout.guardrails.judging import Outcome
from airollout.model import AIRolloutStatus, Condition, Phase
from airollout.planner import Observation, analysis_tick, plan
from airollout.reasons import ConditionType, Reason
from tests.unit.test_planner import GUARDED, IN_SYNC, T0, at_stage, make_spec, verdict

DRIFT = timedelta(seconds=30)
CAP = timedelta(seconds=30)


def due(
    spec_overrides: dict[str, object], status: AIRolloutStatus, now_offset: float, checked: float | None = 0
) -> object:
    spec = make_spec(**spec_overrides)
    flag_checked_at = None if checked is None else T0 + timedelta(seconds=checked)
    deadline = next_due(
        spec, status, T0 + timedelta(seconds=now_offset), flag_checked_at=flag_checked_at, drift_interval=DRIFT,
        retry_cap=CAP,
    )  # fmt: skip
    return None if deadline is None else deadline.at


def test_a_stage_without_guardrails_is_next_due_at_its_bake_end() -> None:
    status = at_stage(make_spec(), 1)  # canary, 10s
    assert due({}, status, 2) == T0 + timedelta(seconds=10)


def test_a_guarded_stage_is_due_at_the_next_analysis_tick_before_its_bake_end() -> None:
    spec = make_spec(**GUARDED)
    status = at_stage(spec, 0).model_copy(update={"last_analysis_at": T0 + timedelta(seconds=1)})
    # internal bakes 30s, and analyses fall on the 30 s wall-clock grid: both at T0+30s
    assert due(GUARDED, status, 2) == T0 + timedelta(seconds=30)
    edited = {**GUARDED, "analysis": {"interval": "5s"}}
    assert due(edited, status, 2) == T0 + timedelta(seconds=5)


def test_rollouts_analysed_at_different_moments_share_the_next_tick() -> None:
    spec = make_spec(**GUARDED, analysis={"interval": "30s"})
    ticks = {
        due(
            {**GUARDED, "analysis": {"interval": "30s"}},
            at_stage(spec, 0, since=T0 - timedelta(minutes=5)).model_copy(
                update={"last_analysis_at": T0 + timedelta(seconds=offset)}
            ),
            offset,
        )
        for offset in (0.5, 7, 19.25, 29.9)
    }
    assert ticks == {T0 + timedelta(seconds=30)}


def test_an_analysis_due_now_is_due_now() -> None:
    spec = make_spec(**GUARDED)
    status = at_stage(spec, 1)  # never analysed at this stage
    assert due(GUARDED, status, 3) == T0 + timedelta(seconds=3)


def test_a_drift_check_is_due_on_the_grid_tick_after_the_last_read() -> None:
    status = at_stage(make_spec(), 0)  # internal bakes 30s, no guardrails
    # read at T0-20s: the next 30 s tick is T0 itself, shared with every analysis on that tick
    assert due({}, status, -5, checked=-20) == T0
    assert due({}, status, 5, checked=-20) == T0  # overdue: already due
    assert due({}, status, 5, checked=1) == T0 + timedelta(seconds=30)


def test_a_restarted_operator_checks_the_flag_once_at_once() -> None:
    status = at_stage(make_spec(), 0)
    assert due({}, status, 5, checked=None) == T0 + timedelta(seconds=5)
    assert flag_check_due(status, T0, None, DRIFT)


def test_finished_and_failed_rollouts_sleep_until_their_resource_changes() -> None:
    for phase in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED):
        status = at_stage(make_spec(), 1).model_copy(update={"phase": phase})
        assert due({}, status, 1) is None
        assert not flag_check_due(status, T0, None, DRIFT)


def test_a_paused_rollout_sleeps_unless_it_waits_for_prometheus() -> None:
    spec = make_spec(**GUARDED)
    paused = at_stage(spec, 1).model_copy(update={"phase": Phase.PAUSED, "pause_reason": Reason.PAUSED.value})
    assert due(GUARDED, paused, 1) is None
    waiting = paused.model_copy(
        update={"pause_reason": Reason.GUARDRAIL_QUERY_FAILED.value, "last_analysis_at": T0 + timedelta(seconds=1)}
    )
    assert due(GUARDED, waiting, 2) == T0 + timedelta(seconds=30)


def test_a_featbit_problem_backs_off_as_long_again_as_it_lasted_up_to_the_cap() -> None:
    problem = Condition(
        type=ConditionType.FEATBIT_SYNCED.value, status="False", reason="FeatBitUnavailable", last_transition_time=T0
    )
    status = at_stage(make_spec(), 1).model_copy(update={"conditions": (problem,)})
    assert due({}, status, 0) == T0 + timedelta(seconds=1)
    assert due({}, status, 4) == T0 + timedelta(seconds=8)
    assert due({}, status, 100) == T0 + timedelta(seconds=130)
    assert flag_check_due(status, T0 + timedelta(seconds=1), T0, DRIFT)  # checked again on the retry


def test_an_out_of_band_edit_is_not_retried_it_waits_for_a_person() -> None:
    edited = Condition(
        type=ConditionType.FEATBIT_SYNCED.value,
        status="False",
        reason=Reason.FLAG_EDITED_OUT_OF_BAND.value,
        last_transition_time=T0,
    )
    status = at_stage(make_spec(), 1).model_copy(
        update={"conditions": (edited,), "phase": Phase.PAUSED, "pause_reason": Reason.FLAG_EDITED_OUT_OF_BAND.value}
    )
    assert due({}, status, 5) is None


def test_a_pending_rollout_is_due_now() -> None:
    assert due({}, AIRolloutStatus(), 7) == T0 + timedelta(seconds=7)


def test_a_late_analysis_is_said_in_status_and_cleared_when_analyses_are_on_time_again() -> None:
    spec = make_spec(**GUARDED)
    status = at_stage(spec, 1)
    late = Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),), late="started 12.0s after it was due")
    decision = plan(spec, status, late, T0 + timedelta(seconds=3), 1)
    (condition,) = [c for c in decision.status.conditions if c.type == ConditionType.ANALYSIS_ON_TIME]
    assert (condition.status, condition.reason) == ("False", Reason.ANALYSIS_LATE)
    assert "12.0s" in condition.message
    on_time = Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED),))
    again = plan(spec, decision.status, on_time, T0 + timedelta(seconds=4), 1)
    (condition,) = [c for c in again.status.conditions if c.type == ConditionType.ANALYSIS_ON_TIME]
    assert (condition.status, condition.reason) == ("True", Reason.ANALYSIS_ON_TIME)
    never_late = plan(spec, status, on_time, T0 + timedelta(seconds=4), 1)
    assert not [c for c in never_late.status.conditions if c.type == ConditionType.ANALYSIS_ON_TIME]


def test_a_routine_analysis_evaluates_at_its_tick_and_a_deciding_one_at_now() -> None:
    spec = make_spec(**GUARDED)
    baking = at_stage(spec, 0).model_copy(update={"last_analysis_at": T0 + timedelta(seconds=1)})
    # internal bakes 30 s from T0; the 30 s grid ticks at T0+30 s, T0+60 s
    later = at_stage(spec, 0, since=T0 - timedelta(minutes=5)).model_copy(
        update={"last_analysis_at": T0 + timedelta(seconds=1)}
    )
    assert analysis_tick(spec, later, T0 + timedelta(seconds=37)) == T0 + timedelta(seconds=30)
    assert analysis_tick(spec, baking, T0 + timedelta(seconds=31)) is None  # the bake-end analysis
    assert analysis_tick(spec, at_stage(spec, 1), T0 + timedelta(seconds=2)) is None  # the stage's first


def test_analysis_ticks_and_drift_checks_are_routine_a_bake_end_is_not() -> None:
    spec = make_spec(**GUARDED)
    ticking = at_stage(spec, 0, since=T0 - timedelta(minutes=5)).model_copy(
        update={"last_analysis_at": T0 + timedelta(seconds=1)}
    )
    routine = next_due(
        spec, ticking, T0 + timedelta(seconds=2), flag_checked_at=T0, drift_interval=DRIFT, retry_cap=CAP
    )
    assert routine is not None
    assert routine.routine
    baking = at_stage(spec, 0).model_copy(update={"last_analysis_at": T0 + timedelta(seconds=29)})
    deciding = next_due(
        spec, baking, T0 + timedelta(seconds=29.5), flag_checked_at=T0, drift_interval=DRIFT, retry_cap=CAP
    )
    assert deciding == Deadline(T0 + timedelta(seconds=30), routine=False)


def test_a_routine_deadline_carries_the_bake_end_after_it() -> None:
    fast = {**GUARDED, "analysis": {"interval": "10s"}}
    spec = make_spec(**fast)
    status = at_stage(spec, 0).model_copy(update={"last_analysis_at": T0 + timedelta(seconds=1)})
    deadline = next_due(
        spec, status, T0 + timedelta(seconds=2), flag_checked_at=T0, drift_interval=DRIFT, retry_cap=CAP
    )
    assert deadline == Deadline(T0 + timedelta(seconds=10), routine=True, then=T0 + timedelta(seconds=30))
