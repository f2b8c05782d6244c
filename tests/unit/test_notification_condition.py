"""How notification delivery shows in status: a condition and one Event per new failure, never a phase change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airollout.model import AIRolloutStatus, Phase
from airollout.planner import plan_delivery
from airollout.reasons import ConditionType

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PROGRESSING = AIRolloutStatus(phase=Phase.PROGRESSING, stage_name="canary", percentage=5)


def delivered(status: AIRolloutStatus) -> tuple[str, str, str] | None:
    found = [c for c in status.conditions if c.type == ConditionType.NOTIFICATIONS_DELIVERED]
    return (found[0].status, found[0].reason, found[0].message) if found else None


def test_deliveries_that_always_succeed_leave_status_alone() -> None:
    assert plan_delivery(PROGRESSING, None, T0).status == PROGRESSING


def test_a_failure_is_a_condition_and_one_event_and_the_rollout_goes_on() -> None:
    failure = "webhook notification of Started to the URL in Secret team-a/hooks key url failed after 4 attempts"
    first = plan_delivery(PROGRESSING, failure, T0)
    assert delivered(first.status) == ("False", "NotificationFailed", failure)
    assert [(e.reason, e.message, e.stage) for e in first.entries] == [("NotificationFailed", failure, "canary")]
    assert first.status.phase is Phase.PROGRESSING
    assert first.actions == ()
    again = plan_delivery(first.status, failure, T0 + timedelta(seconds=30))
    assert again.entries == ()

    recovered = plan_delivery(again.status, None, T0 + timedelta(seconds=60))
    assert delivered(recovered.status) == ("True", "NotificationsDelivered", "notifications are delivered again")
    assert recovered.entries == ()
