"""The kill switch needs only the flag: it is decided and recorded whatever else the spec holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airollout.model import Phase
from airollout.planner import RollBack, kill_request
from airollout.reasons import Reason
from airollout.reconciler import Connections, Rollout, act

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

BROKEN_SPEC: dict[str, Any] = {
    "flag": {
        "key": "summarizer",
        "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b",
        "candidate": "canary",
        "control": "stable",
    },
    "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
    "stages": [{"name": "canary", "percentage": 50}],
    "prometheus": {"url": "http://prometheus:9090"},
    # A template typo: the spec does not parse, so the rollout is Failed.
    "guardrails": [{"name": "errors", "query": "rate(x{variant={{varient}}}[1m])", "max": 0.1}],
}
PROGRESSING_AT_50 = {"phase": "Progressing", "stageIndex": 0, "stageName": "canary", "percentage": 50.0}


def rollout(spec: dict[str, Any], status: dict[str, Any], verb: str | None = None) -> Rollout:
    return Rollout(
        namespace="team", name="summarizer", generation=3, spec=spec, status=status, verb=verb, actor="oncall"
    )


def test_the_kill_switch_or_abort_is_read_from_a_spec_that_does_not_parse() -> None:
    assert kill_request({**BROKEN_SPEC, "killSwitch": True}, None, "x") is not None
    assert kill_request(BROKEN_SPEC, " abort ", "oncall") is not None
    assert kill_request(BROKEN_SPEC, "pause", "oncall") is None
    assert kill_request({"killSwitch": "true"}, None, "x") is None  # only a real boolean


async def test_a_kill_switch_on_a_broken_spec_is_recorded_once_the_lane_turned_the_flag_off() -> None:
    decision = await act(
        rollout({**BROKEN_SPEC, "killSwitch": True}, PROGRESSING_AT_50), Connections(flags=None), None, T0,
        flag_off_revision="rev-9",
    )  # fmt: skip
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.status.percentage == 0
    assert decision.status.flag_revision == "rev-9"
    assert [e.reason for e in decision.entries] == [Reason.KILL_SWITCH_ENGAGED, Reason.ROLLED_BACK]
    assert "spec.killSwitch" in decision.entries[0].message


async def test_abort_on_a_failed_rollout_rolls_it_back_and_consumes_the_verb() -> None:
    failed = {**PROGRESSING_AT_50, "phase": "Failed", "message": "invalid spec"}
    decision = await act(
        rollout(BROKEN_SPEC, failed, verb="abort"), Connections(flags=None), None, T0, flag_off_revision="r"
    )
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.consume_verb
    assert decision.entries[0].actor == "oncall"


async def test_until_the_lane_has_turned_the_flag_off_nothing_claims_a_rollback() -> None:
    decision = await act(
        rollout({**BROKEN_SPEC, "killSwitch": True}, PROGRESSING_AT_50), Connections(flags=None), None, T0
    )
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.percentage == 50
    assert not any(isinstance(a, RollBack) for a in decision.actions)


async def test_a_rolled_back_rollout_whose_spec_breaks_stays_rolled_back() -> None:
    rolled_back = {**PROGRESSING_AT_50, "phase": "RolledBack", "percentage": 0.0}
    decision = await act(rollout(BROKEN_SPEC, rolled_back), Connections(flags=None), None, T0)
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.entries[-1].reason == Reason.INVALID_SPEC


async def test_another_verb_on_a_broken_spec_is_rejected_and_consumed_not_left_hanging() -> None:
    failed = {**PROGRESSING_AT_50, "phase": "Failed", "message": "x"}
    decision = await act(rollout(BROKEN_SPEC, failed, verb="promote"), Connections(flags=None), None, T0)
    assert decision.consume_verb
    assert decision.entries[0].reason == Reason.ACTION_REJECTED
    assert "spec is invalid" in decision.entries[0].message
    assert decision.status.phase is Phase.FAILED
