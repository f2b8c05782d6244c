"""The operator against a FeatBit that refuses or half-fails: a token short of a permission, and a write
FeatBit saves but answers 500 for (its audit-log insert failed, so SDKs were never told).

As in test_operator.py: `airollout run` in a process, the real apiserver, the FeatBit double and FeatBit's
own SDK; each test looks at what a platform engineer would (status, Events, what users are served). The
operator retries refused calls after at most 2 s here (`--retry-backoff-cap=2`) instead of 30 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fbclient.client import FBClient

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users
from tests.support.operator import apply, create_token_secret, events, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "new-embedding-model"
NAME = "embedding-v2"
USERS = synthetic_users(4000)
TARGETING_PUT = "PUT /api/v1/envs/{env_id}/feature-flags/{key}/targeting"
TOGGLE_PUT = "PUT /api/v1/envs/{env_id}/feature-flags/{key}/toggle/{status}"


@pytest.fixture
def operator(testbed: Testbed, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(tmp_path, testbed.kubeconfig, "--retry-backoff-cap=2") as process:
        yield process


def prepare(double: FeatBitDouble, testbed: Testbed, namespace: str, token: str) -> None:
    """The flag (off, serving `stable` when off), the segment `internal-users`, and `token` in the Secret."""
    double.create_flag(key=FLAG, enabled_variation_id="canary", disabled_variation_id="stable")
    double.create_segment(key="internal-users", included=["qa-1"])
    create_token_secret(testbed, namespace, token)


def manifest(double: FeatBitDouble, namespace: str, **spec: Any) -> dict[str, Any]:
    return rollout_manifest(namespace, NAME, api_url=double.api_url, env_id=double.env_id, flag=FLAG, **spec)


def synced(status: dict[str, Any]) -> dict[str, Any]:
    condition: dict[str, Any] = next(c for c in status.get("conditions", []) if c["type"] == "FeatBitSynced")
    return condition


def requests_to(double: FeatBitDouble, route: str) -> int:
    """How many requests the double has answered on `route` ("METHOD /path/{template}") so far."""
    count: int = double.requests.snapshot()["byRoute"].get(route, 0)
    return count


def candidate_share(flag: dict[str, Any]) -> float:
    """The share of users FeatBit's stored flag serves the candidate by its default rule."""
    if not flag["isEnabled"]:
        return 0.0
    return sum(v["rollout"][1] - v["rollout"][0] for v in flag["fallthrough"]["variations"] if v["id"] == "canary")


def entered_stages(status: dict[str, Any]) -> list[str]:
    return [e["stage"] for e in status["history"] if e["reason"] in ("Started", "StageAdvanced", "Recovered")]


def test_a_token_without_the_rules_permission_is_reported_and_no_stage_is_entered(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess
) -> None:
    token = featbit_double.mint_token("no-rules", deny=["UpdateFlagTargetingRules"])
    prepare(featbit_double, testbed, namespace, token)
    before = featbit_double.get_flag(FLAG)
    writes = requests_to(featbit_double, TARGETING_PUT)
    # The first default stage grants the segment internal-users: a rule, which needs UpdateFlagTargetingRules.
    apply(testbed, manifest(featbit_double, namespace))
    status = wait_for(
        "a PermissionDenied condition",
        lambda: (s := status_of(testbed, namespace, NAME)) and synced(s)["reason"] == "PermissionDenied" and s,
        log=operator.log,
    )
    assert synced(status)["status"] == "False"
    assert "UpdateFlagTargetingRules" in synced(status)["message"]
    warning = next(e for e in events(testbed, namespace, NAME) if e["reason"] == "PermissionDenied")
    assert warning["type"] == "Warning"
    assert "UpdateFlagTargetingRules" in warning["message"]
    wait_for(
        "the operator to try the write again",
        lambda: requests_to(featbit_double, TARGETING_PUT) >= writes + 3,
        timeout=30,
        log=operator.log,
    )
    status = status_of(testbed, namespace, NAME)
    assert status.get("stageIndex") is None
    assert entered_stages(status) == []
    assert featbit_double.get_flag(FLAG) == before
    # Once someone grants the permission, the rollout starts without being touched.
    featbit_double.set_token_policy(token)
    wait_for(
        "the first stage",
        lambda: status_of(testbed, namespace, NAME).get("stageName") == "internal",
        timeout=30,
        log=operator.log,
    )


def test_a_kill_switch_without_the_toggle_permission_is_reported_unacknowledged_and_lands_once_granted(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess
) -> None:
    token = featbit_double.mint_token("ops")
    prepare(featbit_double, testbed, namespace, token)
    apply(testbed, manifest(featbit_double, namespace, stages=[{"name": "half", "percentage": 50, "duration": "1h"}]))
    wait_for("the stage", lambda: status_of(testbed, namespace, NAME).get("stageName") == "half", log=operator.log)
    # Someone narrows the token in FeatBit while the rollout runs.
    featbit_double.set_token_policy(token, deny=["ToggleFlag"])
    toggles = requests_to(featbit_double, TOGGLE_PUT)
    testbed.kubectl("-n", namespace, "patch", "airollout", NAME, "--type=merge", "-p", '{"spec": {"killSwitch": true}}')
    status = wait_for(
        "the kill switch to be reported unacknowledged",
        lambda: (
            (s := status_of(testbed, namespace, NAME))
            and synced(s)["status"] == "False"
            and synced(s)["reason"] in ("FeatBitUnavailable", "PermissionDenied")
            and s
        ),
        log=operator.log,
    )
    assert "not acknowledged" in synced(status)["message"]
    assert "ToggleFlag" in synced(status)["message"]
    wait_for(
        "the kill switch to be retried",
        lambda: requests_to(featbit_double, TOGGLE_PUT) >= toggles + 3,
        timeout=30,
        log=operator.log,
    )
    assert status_of(testbed, namespace, NAME)["phase"] == "Progressing"
    assert featbit_double.get_flag(FLAG)["isEnabled"] is True
    featbit_double.set_token_policy(token)
    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=30, log=operator.log)
    assert featbit_double.get_flag(FLAG)["isEnabled"] is False
    assert "KillSwitchEngaged" in [e["reason"] for e in status["history"]]


def test_a_stage_write_featbit_saved_but_answered_500_for_is_entered_once_and_in_order(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess
) -> None:
    prepare(featbit_double, testbed, namespace, featbit_double.token)
    stages = [
        {"name": "canary", "percentage": 5, "duration": "2s"},
        {"name": "ramp-50", "percentage": 50, "duration": "2s"},
        {"name": "full", "percentage": 100},
    ]
    apply(testbed, manifest(featbit_double, namespace, stages=stages))
    wait_for("the first stage", lambda: status_of(testbed, namespace, NAME).get("stageName") == "canary")
    # The next saved write is ramp-50's targeting: FeatBit keeps it, answers 500 and records nothing.
    featbit_double.faults.audit_failures = 1
    claims: list[tuple[float, float]] = []

    def promoted() -> dict[str, Any] | None:
        status = status_of(testbed, namespace, NAME)
        flag = featbit_double.get_flag(FLAG)  # read after status: FeatBit can only be ahead of it
        if status.get("percentage") is not None:
            claims.append((status["percentage"] / 100, candidate_share(flag)))
        return status if status.get("phase") == "Promoted" else None

    status = wait_for("the rollout to be promoted", promoted, timeout=90, interval=0.1, log=operator.log)
    assert featbit_double.faults.audit_failures == 0, "the fault never met a write"
    assert [claim for claim in claims if claim[1] < claim[0] - 1e-9] == [], "status claimed more than FeatBit held"
    assert entered_stages(status) == ["canary", "ramp-50", "full"], status["history"]


@pytest.mark.parametrize(
    ("lost", "stages", "claimed", "share"),
    [
        pytest.param(
            1,
            [{"name": "canary", "percentage": 5, "duration": "2s"}, {"name": "ramp-50", "percentage": 50}],
            "ramp-50",
            0.5,
            id="a-later-stage-targeting-write",
        ),
        pytest.param(
            2, [{"name": "canary", "percentage": 5}], "canary", 0.05, id="the-first-stage-targeting-and-switch-on"
        ),
    ],
)
def test_users_are_served_the_stage_status_claims_after_writes_featbit_saved_but_answered_500_for(
    lost: int, stages: list[dict[str, Any]], claimed: str, share: float, testbed: Testbed, namespace: str,
    featbit_double: FeatBitDouble, operator: OperatorProcess, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    prepare(featbit_double, testbed, namespace, featbit_double.token)
    sdk = featbit_client()
    if len(stages) > 1:
        apply(testbed, manifest(featbit_double, namespace, stages=stages))
        wait_for("the first stage", lambda: status_of(testbed, namespace, NAME).get("stageName") == "canary")
    # The next `lost` saved writes are kept by FeatBit, answered 500 and never published to SDKs.
    featbit_double.faults.audit_failures = lost
    if len(stages) == 1:
        apply(testbed, manifest(featbit_double, namespace, stages=stages))
    wait_for(
        f"status to claim {claimed}",
        lambda: status_of(testbed, namespace, NAME).get("stageName") == claimed,
        log=operator.log,
    )
    assert featbit_double.faults.audit_failures == 0, "the fault never met a write"
    assert candidate_share(featbit_double.get_flag(FLAG)) == pytest.approx(share)
    # Longer than a drift check (30 s): a re-read of the flag would not help either.
    wait_for(
        f"the SDK to serve the {share:.0%} status claims",
        lambda: abs(count_variations(sdk, FLAG, USERS)["canary"] / len(USERS) - share) <= 0.02,
        timeout=45,
        log=operator.log,
    )
    flag = featbit_double.get_flag(FLAG)
    audit_log = httpx.get(
        f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/audit-logs",
        params={"refType": "FeatureFlag", "refId": flag["id"], "pageSize": 100},
        headers={"Authorization": featbit_double.token},
    ).json()["data"]["items"]
    # FeatBit's record of why the flag changed names the stage, as it does for every stage that went through.
    assert any(f"{claimed} (" in (entry["comment"] or "") for entry in audit_log), audit_log
