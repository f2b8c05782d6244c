"""The Alertmanager receiver end to end: Alertmanager's own webhook payload, POSTed to `airollout run`.

An alert a team already has (a quality score drifting down, an error budget burning) stops a release: firing,
with the labels of an AIRollout, it pauses or aborts it as the rollout's spec says; resolved, it does nothing.
The verb goes through the same annotation `kubectl annotate` sets, so history names the alert as the actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import wait_for
from tests.support.operator import apply, create_token_secret, get_rollout, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

STAGES = [{"name": "canary", "percentage": 10, "duration": "1h"}, {"name": "full", "percentage": 100}]
TOKEN = "am-receiver-token"


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    for key in ("ai-summary", "ai-search"):
        featbit_double.create_flag(
            key=key, variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary", disabled_variation_id="stable",
        )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    testbed.kubectl("-n", namespace, "create", "secret", "generic", "alertmanager", f"--from-literal=token={TOKEN}")
    return featbit_double


def payload(status: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    """What Alertmanager posts to a webhook receiver (version 4), one group of alerts."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="QualityDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "airollout",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-11-30T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "c0ffee",
            }
            for labels, annotations in ((a["labels"], a.get("annotations", {})) for a in alerts)
        ],
    }


def annotations(testbed: Testbed, namespace: str, name: str) -> dict[str, str]:
    found: dict[str, str] = get_rollout(testbed, namespace, name)["metadata"].get("annotations") or {}
    return found


def history_entry(testbed: Testbed, namespace: str, name: str, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in status_of(testbed, namespace, name)["history"] if e["reason"] == reason)
    return found


def test_a_firing_alert_pauses_or_aborts_the_rollout_it_names_and_a_resolved_one_does_nothing(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, tmp_path: Path, airollout_crd: Path
) -> None:
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}/alertmanager"
    with OperatorProcess(
        tmp_path, testbed.kubeconfig,
        "--alertmanager-port", str(port), "--alertmanager-token-secret", f"{namespace}/alertmanager",
    ) as operator:  # fmt: skip
        common = {"api_url": flag_env.api_url, "env_id": flag_env.env_id, "stages": STAGES}
        apply(testbed, rollout_manifest(namespace, "summary-v2", flag="ai-summary", **common))
        apply(
            testbed, rollout_manifest(namespace, "search-v3", flag="ai-search", alerts={"onFiring": "abort"}, **common)
        )
        for name in ("summary-v2", "search-v3"):
            wait_for_phase(testbed, namespace, name, "Progressing", log=operator.log)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        drift = {
            "labels": {"alertname": "QualityDrift", "airollout_namespace": namespace, "airollout_name": "summary-v2"},
            "annotations": {"summary": "answer quality down 4% over 30m"},
        }

        refused = httpx.post(url, json=payload("firing", drift), headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        resolved = httpx.post(url, json=payload("resolved", drift), headers=auth)
        assert resolved.status_code == 200
        assert resolved.json() == {"rollouts": []}

        fired = httpx.post(url, json=payload("firing", drift), headers=auth)
        assert fired.json() == {
            "rollouts": [{"rollout": f"{namespace}/summary-v2", "action": "pause", "result": "requested"}]
        }
        status = wait_for_phase(testbed, namespace, "summary-v2", "Paused", log=operator.log)
        paused = history_entry(testbed, namespace, "summary-v2", "Paused")
        assert paused["actor"] == "alertmanager:QualityDrift"
        assert "answer quality down 4% over 30m" in paused["message"]
        assert status["percentage"] == 10  # paused where it was, not rolled back
        assert flag_env.get_flag("ai-summary")["isEnabled"] is True
        # Alertmanager repeats a firing alert; a paused rollout is left alone rather than collecting rejections.
        again = httpx.post(url, json=payload("firing", drift), headers=auth)
        assert again.json()["rollouts"][0]["result"] == "skipped: the rollout is Paused"

        burn = {"labels": {"alertname": "ErrorBudgetBurn", "flag_key": "ai-search", "namespace": namespace}}
        aborted = httpx.post(url, json=payload("firing", burn), headers=auth)
        assert aborted.json()["rollouts"] == [
            {"rollout": f"{namespace}/search-v3", "action": "abort", "result": "requested"}
        ]
        wait_for_phase(testbed, namespace, "search-v3", "RolledBack", log=operator.log)
        assert flag_env.get_flag("ai-search")["isEnabled"] is False
        engaged = history_entry(testbed, namespace, "search-v3", "KillSwitchEngaged")
        assert engaged["actor"] == "alertmanager:ErrorBudgetBurn"
        wait_for(
            "the verb and its reason removed once handled",
            lambda: (
                not [k for k in annotations(testbed, namespace, "search-v3") if k.startswith("airollout.dev/action")]
            ),
            timeout=15,
        )
        assert status_of(testbed, namespace, "summary-v2")["phase"] == "Paused"
