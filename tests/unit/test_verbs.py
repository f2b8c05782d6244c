"""Verbs from kubectl run every time they are given; verbs kept in git run once per action id."""

from __future__ import annotations

import json
from typing import Any

from airollout.kube.verbs import REASON_LIMIT, verb_request
from airollout.model import AIRolloutStatus, Phase
from airollout.planner import Observation, kill_request, plan
from airollout.reasons import Reason
from tests.unit.test_planner import IN_SYNC, T0, at_stage, make_spec


def annotated_by_kubectl(verb: str, at: str = "2026-11-25T12:00:00Z") -> dict[str, Any]:
    return {
        "annotations": {"airollout.dev/action": verb},
        "managedFields": [
            {
                "manager": "kubectl-annotate",
                "operation": "Update",
                "time": at,
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:airollout.dev/action": {}}}},
            }
        ],
    }


def applied_from_git(verb: str, action_id: str | None = None, server_side: bool = False) -> dict[str, Any]:
    annotations = {"airollout.dev/action": verb}
    if action_id:
        annotations["airollout.dev/action-id"] = action_id
    manifest = {"metadata": {"name": "r", "annotations": dict(annotations)}}
    fields = {"f:metadata": {"f:annotations": {"f:airollout.dev/action": {}}}}
    if server_side:
        managed = [{"manager": "argocd-controller", "operation": "Apply", "fieldsV1": fields}]
    else:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(manifest)
        managed = [{"manager": "argocd-controller", "operation": "Update", "fieldsV1": fields}]
    return {"annotations": annotations, "managedFields": managed}


def test_a_kubectl_verb_is_imperative_and_names_who_set_it() -> None:
    request = verb_request(annotated_by_kubectl("promote"), handled=None)
    assert request is not None
    assert (request.verb, request.actor, request.declarative) == ("promote", "kubectl-annotate", False)
    assert request.key == "promote@kubectl-annotate@2026-11-25T12:00:00Z"
    assert not request.handled


def test_a_kubectl_verb_whose_annotation_outlived_its_handling_is_seen_as_handled() -> None:
    request = verb_request(annotated_by_kubectl("promote"), handled="promote@kubectl-annotate@2026-11-25T12:00:00Z")
    assert request is not None
    assert request.handled
    again = verb_request(annotated_by_kubectl("promote", at="2026-11-25T12:00:07Z"), handled=request.key)
    assert again is not None
    assert not again.handled  # the same verb set again, later: a new request


def test_a_verb_applied_from_git_is_declarative_with_its_action_id_as_key() -> None:
    for server_side in (False, True):
        request = verb_request(applied_from_git("promote", "change-42", server_side), handled=None)
        assert request is not None
        assert request.key == "promote@change-42"
        assert request.actor == "argocd-controller"


def test_a_handled_git_verb_is_not_seen_again_but_a_new_action_id_is() -> None:
    assert verb_request(applied_from_git("promote", "change-42"), handled="promote@change-42") is None
    assert verb_request(applied_from_git("promote", "change-43"), handled="promote@change-42") is not None
    assert verb_request(applied_from_git("retry"), handled="retry") is None


def test_the_planner_records_a_git_verb_instead_of_removing_it() -> None:
    spec = make_spec()
    status = at_stage(spec, 1)
    observation = Observation(
        flag=IN_SYNC, verb="promote", actor="argocd-controller", verb_key="promote@c1", verb_declarative=True
    )
    decision = plan(spec, status, observation, T0, 1)
    assert not decision.consume_verb  # left in place: GitOps sees no drift
    assert decision.status.handled_action == "promote@c1"
    assert decision.status.stage_index == 2
    assert decision.entries[0].reason == Reason.STAGE_ADVANCED


def test_a_rejected_git_verb_is_recorded_too_so_it_is_not_rejected_on_every_reapply() -> None:
    spec = make_spec()
    status = at_stage(spec, 1).model_copy(update={"phase": Phase.PROMOTED})
    observation = Observation(
        flag=IN_SYNC, verb="pause", actor="argocd-controller", verb_key="pause", verb_declarative=True
    )
    decision = plan(spec, status, observation, T0, 1)
    assert decision.entries[0].reason == Reason.ACTION_REJECTED
    assert decision.status.handled_action == "pause"
    assert not decision.consume_verb


def test_the_planner_records_a_kubectl_verb_and_still_removes_it() -> None:
    spec = make_spec()
    key = "promote@kubectl-annotate@2026-11-25T12:00:00Z"
    observation = Observation(flag=IN_SYNC, verb="promote", actor="kubectl-annotate", verb_key=key)
    decision = plan(spec, at_stage(spec, 1), observation, T0, 1)
    assert decision.consume_verb
    assert decision.status.handled_action == key


def test_the_reason_beside_a_verb_is_read_as_one_bounded_line() -> None:
    meta = annotated_by_kubectl("pause")
    meta["annotations"]["airollout.dev/action-reason"] = "freeze for\n  the launch " + "x" * 400
    request = verb_request(meta, handled=None)
    assert request is not None
    assert request.reason is not None
    assert request.reason.startswith("freeze for the launch x")
    assert len(request.reason) == REASON_LIMIT
    assert verb_request(annotated_by_kubectl("pause"), handled=None).reason is None  # type: ignore[union-attr]


def test_every_entry_a_verb_produces_carries_its_reason_and_no_other_entry_does() -> None:
    spec = make_spec()
    asked = Observation(flag=IN_SYNC, verb="promote-full", actor="kubectl-annotate", verb_reason="load test passed")
    full = plan(spec, at_stage(spec, 1), asked, T0, 1)
    assert [e.reason for e in full.entries] == [Reason.STAGE_ADVANCED, Reason.PROMOTED]
    assert all(e.message.endswith("(reason: load test passed)") for e in full.entries)
    aborted = plan(
        spec,
        at_stage(spec, 2),
        Observation(
            flag=IN_SYNC,
            verb="abort",
            actor="kubectl-annotate",
            verb_reason="pager fired",
            kill=kill_request({}, "abort", "kubectl-annotate"),
        ),
        T0,
        1,
    )
    assert {e.reason for e in aborted.entries} == {Reason.KILL_SWITCH_ENGAGED, Reason.ROLLED_BACK}
    assert all("(reason: pager fired)" in e.message for e in aborted.entries)
    started_now = plan(spec, AIRolloutStatus(), Observation(flag=IN_SYNC, verb_reason="stale"), T0, 1)
    assert all("reason:" not in e.message for e in started_now.entries)
