"""The kill switch never waits behind routine work: it lands while 500 other rollouts progress.

500 rollouts advance stage after stage (FeatBit reads and writes, status writes, Events) while one more is
switched off with `kubectl patch`. The kill-switch lane has its own FeatBit and apiserver connections, so
the flag goes off within a second of the patch returning, however busy the routine workers are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.operator import create_token_secret, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUSY = 500
STAGES = [{"name": f"step-{p}", "percentage": p, "duration": "3s"} for p in (1, 5, 10, 25, 50)]
STAGES.append({"name": "full", "percentage": 100})


def test_a_kill_switch_lands_within_a_second_while_500_other_rollouts_progress(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess, tmp_path: Path
) -> None:
    create_token_secret(testbed, namespace, featbit_double.token)
    for i in range(BUSY + 1):
        featbit_double.create_flag(key=f"busy-{i}", enabled_variation_id="canary", disabled_variation_id="stable")

    def manifest(i: int) -> dict[str, object]:
        return rollout_manifest(
            namespace, f"busy-{i}", api_url=featbit_double.api_url, env_id=featbit_double.env_id,
            flag=f"busy-{i}", stages=STAGES,
        )  # fmt: skip

    victim = f"busy-{BUSY}"
    slow_victim = manifest(BUSY)
    slow_victim["spec"]["stages"] = [{"name": "canary", "percentage": 50, "duration": "10m"}]  # type: ignore[index]
    listed = {"apiVersion": "v1", "kind": "List", "items": [manifest(i) for i in range(BUSY)] + [slow_victim]}
    (tmp_path / "rollouts.json").write_text(json.dumps(listed))
    testbed.kubectl("apply", "-f", str(tmp_path / "rollouts.json"), timeout=300)
    wait_for(
        "the victim serving 50%", lambda: featbit_double.get_flag(victim)["isEnabled"], timeout=120, log=operator.log
    )
    progressing = sum(
        1 for i in range(0, BUSY, 25) if status_of(testbed, namespace, f"busy-{i}").get("phase") == "Progressing"
    )
    assert progressing >= BUSY // 25 // 2  # most of the sample is still mid-rollout: the workers are busy

    testbed.kubectl("-n", namespace, "patch", "airollout", victim, "--type=merge", "-p", '{"spec":{"killSwitch":true}}')
    wait_for(
        "the victim's flag off",
        lambda: featbit_double.get_flag(victim)["isEnabled"] is False,
        timeout=1.0,
        interval=0.01,
    )
    status = wait_for_phase(testbed, namespace, victim, "RolledBack", timeout=30, log=operator.log)
    assert [e["reason"] for e in status["history"]][-2:] == ["KillSwitchEngaged", "RolledBack"]
