"""Argo CD's own test YAML for the AIRollout health check and actions, run through the real Lua (Lua 5.1).

The testdata are objects captured from real rollouts on the test bed (tests/integration/test_argocd.py);
argocd-cm.yaml must install exactly the Lua these tests run.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.argocd import AIROLLOUT_CUSTOMIZATION, discover_actions, health_of, load_yaml, run_action

ROOT = AIROLLOUT_CUSTOMIZATION
ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")


def _cases(path: str, key: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load_yaml(ROOT / path)[key]
    return cases


@pytest.mark.parametrize("case", _cases("health_test.yaml", "tests"), ids=lambda c: c["inputPath"])
def test_health_of_each_captured_rollout_is_what_argo_cd_should_show(case: dict[str, Any]) -> None:
    assert health_of(load_yaml(ROOT / case["inputPath"])) == case["healthStatus"]


@pytest.mark.parametrize("case", _cases("actions/action_test.yaml", "discoveryTests"), ids=lambda c: c["inputPath"])
def test_actions_are_offered_only_where_the_operator_would_carry_them_out(case: dict[str, Any]) -> None:
    offered = discover_actions(load_yaml(ROOT / "actions" / case["inputPath"]))
    assert sorted(offered) == sorted(ACTIONS)
    for expected in case["result"]:
        got = offered[expected["name"]]
        assert got["disabled"] == expected["disabled"], expected["name"]
        assert got.get("displayName") == expected.get("displayName"), expected["name"]


@pytest.mark.parametrize("case", _cases("actions/action_test.yaml", "actionTests"), ids=lambda c: c["action"])
def test_each_action_sets_the_verb_annotation_and_nothing_else(case: dict[str, Any]) -> None:
    returned = run_action(case["action"], load_yaml(ROOT / "actions" / case["inputPath"]))
    expected = load_yaml(ROOT / "actions" / case["expectedOutputPath"])
    assert returned == expected


def test_every_action_works_on_an_object_without_annotations_and_names_its_own_verb() -> None:
    for action in ACTIONS:
        returned = run_action(action, {"metadata": {"name": "r"}, "spec": {}, "status": {"phase": "Progressing"}})
        assert returned["metadata"]["annotations"] == {"airollout.dev/action": action}


def test_health_without_status_or_with_an_unread_generation_is_progressing() -> None:
    assert health_of({"metadata": {"generation": 1}})["status"] == "Progressing"
    stale = {"metadata": {"generation": 3}, "status": {"phase": "Promoted", "observedGeneration": 2}}
    assert health_of(stale)["status"] == "Progressing"


def test_argocd_cm_installs_the_same_lua_as_the_customization_folders() -> None:
    data = load_yaml(ROOT.parents[2] / "argocd-cm.yaml")["data"]
    assert data["resource.customizations.health.airollout.dev_AIRollout"] == (ROOT / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.airollout.dev_AIRollout"])
    assert actions["discovery.lua"] == (ROOT / "actions" / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        name: (ROOT / "actions" / name / "action.lua").read_text() for name in ACTIONS
    }
