"""The post-release watch: after Promoted, a holdback on the control, measured against until the watch ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from airollout.console.following import Limits, follow
from airollout.console.following import Outcome as FollowOutcome
from airollout.console.reading import RolloutView, read_rollout
from airollout.guardrails.judging import Outcome
from airollout.model import POST_RELEASE_STAGE, AIRolloutSpec, AIRolloutStatus, Phase
from airollout.planner import ApplyStage, Decision, Observation, RollBack, bake_end, plan
from airollout.reasons import ConditionType, Reason
from tests.unit.test_planner import GUARDED, IN_SYNC, T0, at_stage, make_spec, reasons, verdict

WATCH = timedelta(hours=168)
WATCHED: dict[str, Any] = {**GUARDED, "postRelease": {"holdback": 2, "duration": "168h"}}


def watched(**post_release: Any) -> AIRolloutSpec:
    return make_spec(**{**WATCHED, "postRelease": {**WATCHED["postRelease"], **post_release}})


def promoted(spec: AIRolloutSpec) -> Decision:
    """The last stage's duration over and a passing analysis: the rollout is promoted, and the watch starts."""
    observation = Observation(flag=IN_SYNC, verdicts=(verdict(Outcome.PASSED, value=0.001),))
    return plan(spec, at_stage(spec, 3), observation, T0, 1)


def watching(spec: AIRolloutSpec) -> AIRolloutStatus:
    return promoted(spec).status.model_copy(update={"flag_revision": "r2"})


def analysed(spec: AIRolloutSpec, status: AIRolloutStatus, outcome: Outcome, after: timedelta) -> Decision:
    return plan(spec, status, Observation(flag=IN_SYNC, verdicts=(verdict(outcome, value=0.001),)), T0 + after, 1)


def condition(status: AIRolloutStatus, kind: ConditionType) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == kind.value)
    return found.status, found.reason


def test_promotion_records_promoted_then_watches_the_holdback_at_98_percent() -> None:
    spec = watched()
    decision = promoted(spec)
    assert reasons(decision) == [Reason.PROMOTED, Reason.POST_RELEASE_WATCH_STARTED]
    status = decision.status
    assert status.phase is Phase.PROGRESSING
    assert (status.stage_name, status.percentage, status.stage_index) == (POST_RELEASE_STAGE, 98, 4)
    assert status.stage_started_at == T0
    assert bake_end(spec, status) == T0 + WATCH
    assert decision.actions == (ApplyStage(index=4, comment=decision.actions[0].comment),)
    watch_entry = decision.entries[1]
    assert (watch_entry.stage, watch_entry.percentage) == (POST_RELEASE_STAGE, 98)
    assert "2% held back on stable" in watch_entry.message
    assert "168h" in watch_entry.message
    assert condition(status, ConditionType.PROGRESSING) == ("True", Reason.POST_RELEASE_WATCH_STARTED)


def test_without_post_release_promotion_ends_the_rollout_as_before() -> None:
    decision = promoted(make_spec(**GUARDED))
    assert reasons(decision) == [Reason.PROMOTED]
    assert decision.status.phase is Phase.PROMOTED
    assert decision.actions == ()


def test_the_watch_completes_at_its_end_and_releases_the_holdback() -> None:
    spec = watched()
    status = watching(spec)
    during = analysed(spec, status, Outcome.PASSED, WATCH - timedelta(minutes=1))
    assert during.actions == ()
    assert during.status.stage_name == POST_RELEASE_STAGE
    end = analysed(spec, during.status, Outcome.PASSED, WATCH)
    assert reasons(end) == [Reason.COMPLETED]
    assert end.status.phase is Phase.COMPLETED
    assert (end.status.stage_name, end.status.percentage) == ("full", 100)
    assert end.actions == (ApplyStage(index=3, comment=end.actions[0].comment),)
    assert "holdback released" in end.entries[0].message
    assert condition(end.status, ConditionType.PROGRESSING) == ("False", Reason.COMPLETED)
    # Completed is the end: nothing is measured or written after it.
    after = analysed(spec, end.status, Outcome.BREACHED, WATCH + timedelta(hours=1))
    assert after.actions == ()
    assert after.status.phase is Phase.COMPLETED


def test_an_inconclusive_comparison_does_not_hold_the_end_of_the_watch() -> None:
    spec = watched()
    end = analysed(spec, watching(spec), Outcome.INCONCLUSIVE, WATCH)
    assert end.status.phase is Phase.COMPLETED
    assert Reason.GUARDRAIL_INCONCLUSIVE not in reasons(end)
    assert "no harm shown" in end.entries[-1].message


@pytest.mark.parametrize("outcome", [Outcome.NO_DATA, Outcome.WARNING])
def test_the_watch_ends_only_on_a_measurement_that_shows_no_harm(outcome: Outcome) -> None:
    spec = watched()
    held = analysed(spec, watching(spec), outcome, WATCH)
    assert held.status.phase is Phase.PROGRESSING
    assert held.actions == ()
    assert held.status.stage_name == POST_RELEASE_STAGE


def test_a_breach_during_the_watch_rolls_back_everyone_to_control() -> None:
    spec = watched()
    decision = analysed(spec, watching(spec), Outcome.BREACHED, timedelta(hours=30))
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.status.percentage == 0
    assert [type(a) for a in decision.actions] == [RollBack]
    assert reasons(decision) == [Reason.GUARDRAIL_BREACHED, Reason.ROLLED_BACK]
    assert f"at stage {POST_RELEASE_STAGE} (98%)" in decision.entries[0].message


def test_the_watch_rolls_back_even_when_stages_pause_on_a_breach() -> None:
    spec = make_spec(**WATCHED, onBreach="pause")
    decision = analysed(spec, watching(spec), Outcome.BREACHED, timedelta(hours=30))
    assert decision.status.phase is Phase.ROLLED_BACK


def test_on_breach_alert_records_the_breach_once_and_the_watch_goes_on() -> None:
    spec = watched(onBreach="alert")
    first = analysed(spec, watching(spec), Outcome.BREACHED, timedelta(hours=30))
    assert reasons(first) == [Reason.GUARDRAIL_BREACHED]
    assert first.actions == ()
    assert first.status.phase is Phase.PROGRESSING
    assert first.status.stage_name == POST_RELEASE_STAGE
    assert condition(first.status, ConditionType.GUARDRAILS_PASSING) == ("False", Reason.GUARDRAIL_BREACHED)
    assert "onBreach: alert" in first.entries[0].message
    again = analysed(spec, first.status, Outcome.BREACHED, timedelta(hours=31))
    assert reasons(again) == []
    # Harm still shown at the end keeps the holdback; once it clears the watch completes.
    held = analysed(spec, again.status, Outcome.BREACHED, WATCH)
    assert held.status.phase is Phase.PROGRESSING
    cleared = analysed(spec, held.status, Outcome.PASSED, WATCH + timedelta(minutes=1))
    assert cleared.status.phase is Phase.COMPLETED


def test_the_kill_switch_during_the_watch_rolls_back_as_in_any_stage() -> None:
    spec = watched()
    killed = make_spec(**WATCHED, killSwitch=True)
    decision = plan(killed, watching(spec), Observation(flag=IN_SYNC), T0 + timedelta(hours=1), 2)
    assert decision.status.phase is Phase.ROLLED_BACK
    assert reasons(decision) == [Reason.KILL_SWITCH_ENGAGED, Reason.ROLLED_BACK]
    assert [type(a) for a in decision.actions] == [RollBack]


def test_retry_is_refused_during_the_watch_and_restarts_after_a_rollback_there() -> None:
    spec = watched()
    refused = plan(spec, watching(spec), Observation(flag=IN_SYNC, verb="retry"), T0 + timedelta(hours=1), 1)
    assert reasons(refused) == [Reason.ACTION_REJECTED]
    assert refused.status.stage_name == POST_RELEASE_STAGE
    rolled_back = analysed(spec, watching(spec), Outcome.BREACHED, timedelta(hours=1)).status
    retried = plan(spec, rolled_back, Observation(flag=IN_SYNC, verb="retry"), T0 + timedelta(hours=2), 1)
    assert reasons(retried) == [Reason.RESTARTED, Reason.STARTED]
    assert retried.status.stage_index == 0
    assert retried.status.phase is Phase.PROGRESSING


def test_pause_and_resume_during_the_watch_reapply_the_holdback() -> None:
    spec = watched()
    paused = plan(spec, watching(spec), Observation(flag=IN_SYNC, verb="pause"), T0 + timedelta(hours=1), 1)
    assert paused.status.phase is Phase.PAUSED
    resumed = plan(spec, paused.status, Observation(flag=IN_SYNC, verb="resume"), T0 + timedelta(hours=2), 1)
    assert resumed.status.phase is Phase.PROGRESSING
    assert [a.index for a in resumed.actions if isinstance(a, ApplyStage)] == [4]


def test_promote_ends_the_watch_early_and_promote_full_writes_the_watch_once() -> None:
    spec = watched()
    ended = plan(spec, watching(spec), Observation(flag=IN_SYNC, verb="promote"), T0 + timedelta(hours=1), 1)
    assert ended.status.phase is Phase.COMPLETED
    full = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="promote-full"), T0, 1)
    assert reasons(full) == [Reason.STAGE_ADVANCED, Reason.PROMOTED, Reason.POST_RELEASE_WATCH_STARTED]
    assert [a.index for a in full.actions if isinstance(a, ApplyStage)] == [4]


def test_a_spec_edit_during_the_watch_keeps_it_and_removing_post_release_completes() -> None:
    spec = watched()
    status = watching(spec)
    longer_holdback = watched(holdback=10)
    kept = plan(longer_holdback, status, Observation(flag=IN_SYNC), T0 + timedelta(hours=1), 2)
    assert (kept.status.stage_name, kept.status.percentage) == (POST_RELEASE_STAGE, 90)
    assert [a.index for a in kept.actions if isinstance(a, ApplyStage)] == [4]
    removed = plan(make_spec(**GUARDED), status, Observation(flag=IN_SYNC), T0 + timedelta(hours=1), 2)
    assert removed.status.phase is Phase.COMPLETED
    assert [a.index for a in removed.actions if isinstance(a, ApplyStage)] == [3]


def test_removing_post_release_while_the_watch_is_paused_completes_on_resume() -> None:
    spec = watched()
    paused = plan(spec, watching(spec), Observation(flag=IN_SYNC, verb="pause"), T0 + timedelta(hours=1), 1)
    unwatched = make_spec(**GUARDED)
    edited = plan(unwatched, paused.status, Observation(flag=IN_SYNC), T0 + timedelta(hours=2), 2)
    assert edited.status.phase is Phase.PAUSED
    resumed = plan(unwatched, edited.status, Observation(flag=IN_SYNC, verb="resume"), T0 + timedelta(hours=3), 2)
    assert reasons(resumed) == [Reason.RESUMED, Reason.COMPLETED]
    assert resumed.status.phase is Phase.COMPLETED
    assert [a.index for a in resumed.actions if isinstance(a, ApplyStage)] == [3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"postRelease": {"duration": "168h", "holdback": 0}}, "greater than 0"),
        ({"postRelease": {"duration": "168h", "holdback": 25}}, "less than or equal to 20"),
        ({"postRelease": {"duration": "7d"}}, "duration"),
        ({"postRelease": {"duration": "1h", "onBreach": "pause"}}, "'rollback' or 'alert'"),
        (
            {"postRelease": {"duration": "1h"}, "stages": [{"name": "half", "percentage": 50}]},
            "end the stages at percentage 100",
        ),
        (
            {"postRelease": {"duration": "1h"}, "stages": [{"name": POST_RELEASE_STAGE, "percentage": 100}]},
            "rename that stage",
        ),
    ],
)
def test_a_bad_post_release_is_refused_naming_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_spec(**change)


def test_the_console_shows_the_watch_as_a_stage_and_waits_through_it() -> None:
    spec = {
        "stages": [{"name": "canary", "percentage": 5}, {"name": "full", "percentage": 100}],
        "postRelease": {"holdback": 2, "duration": "168h"},
    }

    def view(phase: str, index: int) -> RolloutView:
        status = {"phase": phase, "stageIndex": index, "stageStartedAt": "2026-11-25T12:00:00Z"}
        return read_rollout({"metadata": {"namespace": "ns", "name": "r"}, "spec": spec, "status": status})

    during = view("Progressing", 2)
    assert during.stage is not None
    assert (during.stage.name, during.stage.percentage, during.stage.state) == (POST_RELEASE_STAGE, 98, "current")
    assert during.bake_ends_at == T0 + WATCH
    assert not during.terminal
    completed = view("Completed", 1)
    assert completed.terminal
    assert [line.state for line in completed.stages] == ["done", "done", "done"]

    clock = [0.0]
    phases = iter(["Progressing", "Completed"])

    def tick(seconds: float) -> None:
        clock[0] += seconds

    outcome, said = follow(
        lambda: view(next(phases), 2),
        lambda seen, error: None,
        Limits(timeout=60),
        interval=1.0,
        clock=lambda: clock[0],
        sleep=tick,
    )
    assert outcome is FollowOutcome.PROMOTED
    assert said == "ns/r is Completed"
