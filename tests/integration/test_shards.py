"""Several replicas share the rollouts through Leases; a replica that dies has its shards taken over.

Three `airollout run --shards 6` processes against the real apiserver and the FeatBit double: each
rollout is served by one replica at a time, which the FeatBit audit trail shows (every write names its
replica), and SIGKILLing one mid-rollout neither stops its rollouts nor skips or repeats a stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.operator import apply, create_token_secret, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARDS = 6
LEASE_SECONDS = 6
ROLLOUTS = 12
STAGES = [
    {"name": "canary", "percentage": 5, "duration": "3s"},
    {"name": "ramp-25", "percentage": 25, "duration": "3s"},
    {"name": "ramp-50", "percentage": 50, "duration": "3s"},
    {"name": "full", "percentage": 100, "duration": "3s"},
]


@pytest.fixture
def replicas(testbed: Testbed, airollout_crd: Path, tmp_path: Path, namespace: str) -> Iterator[list[OperatorProcess]]:
    args = ("--shards", str(SHARDS), "--lease-duration", str(LEASE_SECONDS), "--lease-namespace", namespace)
    processes = [
        OperatorProcess(tmp_path / f"replica-{i}", testbed.kubeconfig, *args, "--identity", f"replica-{i}")
        for i in range(3)
    ]
    for process in processes:
        process.start()
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def holders(testbed: Testbed, namespace: str) -> dict[str, str]:
    leases = json.loads(
        testbed.kubectl("-n", namespace, "get", "leases", "-l", "airollout.dev/shard", "-o", "json").stdout
    )["items"]
    return {lease["metadata"]["name"]: lease["spec"].get("holderIdentity") or "" for lease in leases}


def writers(double: FeatBitDouble, flag: str) -> list[tuple[str, str]]:
    """(replica, comment) of every write the operator made to ``flag``, oldest first."""
    audit = httpx.get(
        f"{double.api_url}/api/v1/envs/{double.env_id}/audit-logs",
        params={"refType": "FeatureFlag", "refId": double.get_flag(flag)["id"], "pageSize": 100},
        headers={"Authorization": double.token},
    ).json()["data"]["items"]
    written = []
    for item in reversed(audit):
        comment = item.get("comment") or ""
        if comment.startswith("AIRollout ") and comment.endswith("]"):
            written.append((comment[comment.rindex("[") + 1 : -1], comment))
    return written


def test_three_replicas_share_the_rollouts_and_a_killed_ones_rollouts_carry_on(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, replicas: list[OperatorProcess]
) -> None:
    create_token_secret(testbed, namespace, featbit_double.token)
    flags = [f"shared-{i}" for i in range(ROLLOUTS)]
    for flag in flags:
        featbit_double.create_flag(key=flag, enabled_variation_id="canary", disabled_variation_id="stable")
    wait_for(
        "every shard held, by three replicas",
        lambda: (
            len(h := holders(testbed, namespace)) == SHARDS and set(h.values()) == {f"replica-{i}" for i in range(3)}
        ),
        timeout=60,
    )
    for flag in flags:
        apply(
            testbed,
            rollout_manifest(
                namespace, flag, api_url=featbit_double.api_url, env_id=featbit_double.env_id, flag=flag, stages=STAGES
            ),
        )
    wait_for(
        "every rollout started",
        lambda: all(status_of(testbed, namespace, flag).get("phase") == "Progressing" for flag in flags),
        timeout=60,
    )

    victim = replicas[1]
    victim.kill()
    wait_for(
        "the killed replica's shards taken over",
        lambda: "replica-1" not in holders(testbed, namespace).values(),
        timeout=LEASE_SECONDS * 4,
    )

    for flag in flags:
        status = wait_for_phase(testbed, namespace, flag, "Promoted", timeout=120)
        entered = [e["stage"] for e in status["history"] if e["reason"] in ("Started", "StageAdvanced", "Recovered")]
        assert entered == [s["name"] for s in STAGES], (flag, status["history"])
        written = writers(featbit_double, flag)
        assert written, flag
        # One writer at a time: once another replica wrote, the first never wrote again.
        sequence = [replica for i, (replica, _) in enumerate(written) if i == 0 or written[i - 1][0] != replica]
        assert len(sequence) == len(set(sequence)), (flag, written)


def test_a_kill_switch_on_a_dead_replicas_rollout_lands_once_its_shard_is_taken_over(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, replicas: list[OperatorProcess]
) -> None:
    create_token_secret(testbed, namespace, featbit_double.token)
    flags = [f"held-{i}" for i in range(6)]
    slow = [{"name": "canary", "percentage": 50, "duration": "10m"}, {"name": "full", "percentage": 100}]
    for flag in flags:
        featbit_double.create_flag(key=flag, enabled_variation_id="canary", disabled_variation_id="stable")
        apply(
            testbed,
            rollout_manifest(
                namespace, flag, api_url=featbit_double.api_url, env_id=featbit_double.env_id, flag=flag, stages=slow
            ),
        )
    wait_for(
        "every rollout at 50%",
        lambda: all(status_of(testbed, namespace, flag).get("percentage") == 50 for flag in flags),
        timeout=60,
    )
    served_by = {flag: writers(featbit_double, flag)[-1][0] for flag in flags}
    victim_name = next(iter(served_by.values()))
    victim = replicas[int(victim_name.rsplit("-", 1)[1])]
    orphan = next(flag for flag, replica in served_by.items() if replica == victim_name)
    victim.kill()
    testbed.kubectl("-n", namespace, "patch", "airollout", orphan, "--type=merge", "-p", '{"spec":{"killSwitch":true}}')
    # Taken over within the lease duration (and a renewal round) of the death: how long is a benchmark figure.
    wait_for(
        "the orphan's flag switched off",
        lambda: featbit_double.get_flag(orphan)["isEnabled"] is False,
        timeout=LEASE_SECONDS * 4,
    )
    status: dict[str, Any] = wait_for_phase(testbed, namespace, orphan, "RolledBack", timeout=30)
    assert status["percentage"] == 0
    assert [e["reason"] for e in status["history"]][-2:] == ["KillSwitchEngaged", "RolledBack"]
