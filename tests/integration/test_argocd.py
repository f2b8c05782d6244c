"""Argo CD's health check and actions for AIRollout, run on objects taken from real rollouts on the test bed.

The objects each phase leaves are read back with kubectl and handed to health.lua as Argo CD hands them;
an action's returned object is written back to the apiserver, and the operator must carry out its verb.
``AIROLLOUT_ARGOCD_TESTDATA=write`` stores the captured objects as the testdata Argo CD's own tests read.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.argocd import AIROLLOUT_CUSTOMIZATION, discover_actions, health_of, run_action
from tests.support.operator import apply, create_token_secret, get_rollout, status_of
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "new-embedding-model"
STAGES = [
    {"name": "canary", "percentage": 5, "duration": "1h"},
    {"name": "full", "percentage": 100, "duration": "1h"},
]
# The health each phase must show in Argo CD.
EXPECTED = {
    "progressing": ("Progressing", "Progressing"),
    "paused": ("Paused", "Suspended"),
    "promoted": ("Promoted", "Healthy"),
    "rolled-back": ("RolledBack", "Degraded"),
    "failed": ("Failed", "Degraded"),
}


def captured(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    """The object as Argo CD reads it, less managedFields (which Argo CD drops too) and a random namespace."""
    obj = get_rollout(testbed, namespace, name)
    obj["metadata"].pop("managedFields", None)
    return json.loads(json.dumps(obj).replace(namespace, "team-search"))  # type: ignore[no-any-return]


def test_health_and_actions_on_real_rollouts_in_every_phase(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess
) -> None:
    featbit_double.create_flag(key=FLAG, enabled_variation_id="canary", disabled_variation_id="stable")
    create_token_secret(testbed, namespace, featbit_double.token)
    for name in EXPECTED:
        body = rollout_manifest(
            namespace, name, api_url=featbit_double.api_url, env_id=featbit_double.env_id, flag=FLAG, stages=STAGES
        )
        if name == "failed":
            # The CRD takes it; the operator refuses it (no such placeholder), and the rollout is Failed.
            body["spec"]["prometheus"] = {"url": testbed.prometheus_url}
            body["spec"]["guardrails"] = [{"name": "errors", "query": "rate(errors{{nope}}[1m])", "max": 0.05}]
        apply(testbed, body)

    def write_back(name: str, action: str) -> None:
        # As Argo CD does: run the action on the live object, then merge-patch the difference into it.
        live = get_rollout(testbed, namespace, name)
        patch = merge_patch(live, run_action(action, live))
        assert list(patch) == ["metadata"], patch  # the verb's annotation, nothing of status
        testbed.kubectl("-n", namespace, "patch", "airollout", name, "--type=merge", "-p", json.dumps(patch))

    def reach(name: str, phase: str) -> None:
        wait_for(f"{name} {phase}", lambda: status_of(testbed, namespace, name).get("phase") == phase, log=operator.log)

    for name in EXPECTED:
        reach(name, "Failed" if name == "failed" else "Progressing")
    write_back("paused", "pause")
    write_back("promoted", "promote-full")
    write_back("rolled-back", "abort")
    for name, (phase, _health) in EXPECTED.items():
        reach(name, phase)

    found: dict[str, dict[str, Any]] = {}
    for name, (phase, health) in EXPECTED.items():
        obj = captured(testbed, namespace, name)
        assert obj["status"]["phase"] == phase
        verdict = health_of(obj)
        assert verdict == {"status": health, "message": obj["status"]["message"]}, name
        found[name] = obj
    assert not discover_actions(found["paused"])["resume"]["disabled"]
    assert not discover_actions(found["failed"])["retry"]["disabled"]
    assert discover_actions(found["rolled-back"])["abort"]["disabled"]

    write_back("paused", "resume")
    reach("paused", "Progressing")
    write_back("rolled-back", "retry")
    wait_for("the retry", lambda: status_of(testbed, namespace, "rolled-back").get("stageName") == "canary")
    history = status_of(testbed, namespace, "rolled-back")["history"]
    assert {e["actor"] for e in history if e["reason"] == "KillSwitchEngaged"} == {"kubectl-patch"}
    assert [e["reason"] for e in history if e["reason"] in ("KillSwitchEngaged", "Restarted")] == [
        "KillSwitchEngaged",
        "Restarted",
    ]

    if os.environ.get("AIROLLOUT_ARGOCD_TESTDATA") == "write":
        for name, obj in found.items():
            for folder in (AIROLLOUT_CUSTOMIZATION / "testdata", AIROLLOUT_CUSTOMIZATION / "actions" / "testdata"):
                (folder / f"{name}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
        # What each action must return for the progressing rollout: the object with the verb's annotation.
        for action in ("promote", "promote-full", "pause", "abort"):
            expected = json.loads(json.dumps(found["progressing"]))
            expected["metadata"].setdefault("annotations", {})["airollout.dev/action"] = action
            path = AIROLLOUT_CUSTOMIZATION / "actions" / "testdata" / f"progressing-{action}.yaml"
            path.write_text(yaml.safe_dump(expected, sort_keys=False))


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old or old[key] != value:
            patch[key] = merge_patch(old.get(key), value)
    return patch
