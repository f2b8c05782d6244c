"""The operator end to end: a real apiserver, the FeatBit double, FeatBit's own SDK, `airollout run`.

Each test does what a platform engineer would: apply a manifest or a verb with kubectl, then look at what
users are served (through the real SDK), at status, and at the Events `kubectl describe` shows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fbclient.client import FBClient
from prometheus_client.parser import text_string_to_metric_families

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users
from tests.support.operator import (
    apply,
    create_token_secret,
    event_reasons,
    events,
    status_of,
    wait_for_phase,
)
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "new-embedding-model"
USERS = synthetic_users(4000)
INTERNAL = [{"key": f"qa-{i}", "name": f"qa-{i}"} for i in range(20)]


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    """A flag (canary/stable, off, serving stable when off), an internal segment, and the token Secret."""
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    featbit_double.create_segment(key="internal-users", included=[u["key"] for u in INTERNAL])
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


def manifest(double: FeatBitDouble, namespace: str, name: str = "embedding-v2", **spec: Any) -> dict[str, Any]:
    return rollout_manifest(namespace, name, api_url=double.api_url, env_id=double.env_id, flag=FLAG, **spec)


def candidate_share(sdk: FBClient, users: list[dict[str, str]] = USERS) -> float:
    return count_variations(sdk, FLAG, users)["canary"] / len(users)


def annotate(testbed: Testbed, namespace: str, verb: str, name: str = "embedding-v2") -> None:
    testbed.kubectl("-n", namespace, "annotate", "--overwrite", "airollout", name, f"airollout.dev/action={verb}")


def test_a_rollout_walks_every_stage_and_ends_promoted(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    sdk = featbit_client()
    stages = [
        {"name": "internal", "segments": ["internal-users"], "duration": "4s"},
        {"name": "canary", "percentage": 5, "duration": "4s"},
        {"name": "ramp-25", "percentage": 25, "duration": "4s"},
        {"name": "full", "percentage": 100},
    ]
    apply(testbed, manifest(flag_env, namespace, stages=stages))

    for stage in stages:
        expected = float(stage.get("percentage", 0)) / 100

        def serving(name: str = str(stage["name"]), share: float = expected) -> bool:
            if status_of(testbed, namespace, "embedding-v2").get("stageName") != name:
                return False
            # Granted segments stay granted in every later stage.
            internal = count_variations(sdk, FLAG, INTERNAL)["canary"] == len(INTERNAL)
            return internal and abs(candidate_share(sdk) - share) <= 0.02

        wait_for(f"the SDK to serve stage {stage['name']}", serving, timeout=30, log=operator.log)

    status = wait_for_phase(testbed, namespace, "embedding-v2", "Promoted", log=operator.log)
    assert status["percentage"] == 100
    reasons = [entry["reason"] for entry in status["history"]]
    assert reasons == ["Started", "StageAdvanced", "StageAdvanced", "StageAdvanced", "Promoted"]
    assert [e["stage"] for e in status["history"]][:4] == ["internal", "canary", "ramp-25", "full"]
    wait_for(
        "an Event per step",
        lambda: (
            event_reasons(testbed, namespace, "embedding-v2")
            == ["Started", "StageAdvanced", "StageAdvanced", "StageAdvanced", "Promoted"]
        ),
        timeout=15,
    )
    described = testbed.kubectl("-n", namespace, "describe", "airollout", "embedding-v2").stdout
    assert "stage 3/4 ramp-25: canary serves 25% of traffic + segments internal-users at 100%" in described
    table = testbed.kubectl("-n", namespace, "get", "airollouts").stdout
    assert table.split()[:6] == ["NAME", "PHASE", "STAGE", "PERCENTAGE", "GUARDRAILS", "AGE"]


def test_every_targeting_write_carries_a_comment_naming_the_rollout_and_stage(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    apply(testbed, manifest(flag_env, namespace, stages=[{"name": "canary", "percentage": 5}]))
    wait_for_phase(testbed, namespace, "embedding-v2", "Promoted", log=operator.log)
    flag = flag_env.get_flag(FLAG)
    response = httpx.get(
        f"{flag_env.api_url}/api/v1/envs/{flag_env.env_id}/audit-logs",
        params={"refType": "FeatureFlag", "refId": flag["id"]},
        headers={"Authorization": flag_env.token},
    )
    comments = [item["comment"] for item in response.json()["data"]["items"] if item.get("comment")]
    assert any(f"AIRollout {namespace}/embedding-v2" in c and "stage 1/1 canary (5%)" in c for c in comments), comments


@pytest.mark.parametrize("how", ["spec", "abort-verb"])
def test_the_kill_switch_serves_control_to_everyone(
    how: str, testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    sdk = featbit_client()
    stages = [{"name": "half", "percentage": 50, "segments": ["internal-users"], "duration": "1h"}]
    apply(testbed, manifest(flag_env, namespace, stages=stages))
    wait_for(
        "half the users on the candidate", lambda: abs(candidate_share(sdk) - 0.5) <= 0.03, timeout=30, log=operator.log
    )

    if how == "spec":
        testbed.kubectl(
            "-n",
            namespace,
            "patch",
            "airollout",
            "embedding-v2",
            "--type=merge",
            "-p",
            '{"spec": {"killSwitch": true}}',
        )
    else:
        annotate(testbed, namespace, "abort")

    wait_for(
        "every user on control",
        lambda: count_variations(sdk, FLAG, USERS + INTERNAL)["stable"] == len(USERS) + len(INTERNAL),
        timeout=10,
    )
    status = wait_for_phase(testbed, namespace, "embedding-v2", "RolledBack", log=operator.log)
    assert status["percentage"] == 0
    flag = flag_env.get_flag(FLAG)
    assert flag["isEnabled"] is False
    assert [v["id"] for v in flag["fallthrough"]["variations"] if v["rollout"][1] > v["rollout"][0]] == ["stable"]
    wait_for(
        "the audit trail",
        lambda: {"KillSwitchEngaged", "RolledBack"} <= set(event_reasons(testbed, namespace, "embedding-v2")),
    )
    if how == "abort-verb":
        annotations = json.loads(
            testbed.kubectl("-n", namespace, "get", "airollout", "embedding-v2", "-o", "json").stdout
        )
        assert "airollout.dev/action" not in (annotations["metadata"].get("annotations") or {})
        entry = next(e for e in status["history"] if e["reason"] == "KillSwitchEngaged")
        assert entry["actor"] == "kubectl-annotate"


def test_verbs_pause_resume_promote_promote_full_and_retry(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    stages = [
        {"name": "canary", "percentage": 5, "duration": "1h"},
        {"name": "ramp-25", "percentage": 25, "duration": "1h"},
        {"name": "ramp-50", "percentage": 50, "duration": "1h"},
        {"name": "full", "percentage": 100, "duration": "1h"},
    ]
    apply(testbed, manifest(flag_env, namespace, stages=stages))
    wait_for(
        "the first stage",
        lambda: status_of(testbed, namespace, "embedding-v2").get("stageName") == "canary",
        log=operator.log,
    )

    def step(verb: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        annotate(testbed, namespace, verb)
        return wait_for(
            f"{verb} to take effect",
            lambda: (s := status_of(testbed, namespace, "embedding-v2")) and check(s) and s,
            log=operator.log,
        )  # type: ignore[no-any-return]

    step("pause", lambda s: s["phase"] == "Paused")
    step("resume", lambda s: s["phase"] == "Progressing")
    step("promote", lambda s: s.get("stageName") == "ramp-25")
    assert flag_env.get_flag(FLAG)["fallthrough"]["variations"][0]["rollout"] == [0, 0.25]
    step("promote-full", lambda s: s["phase"] == "Promoted" and s["percentage"] == 100)
    step("retry", lambda s: True)  # a Promoted rollout cannot be retried
    status = wait_for(
        "the rejection",
        lambda: (s := status_of(testbed, namespace, "embedding-v2"))["history"][-1]["reason"] == "ActionRejected" and s,
    )
    assert status["phase"] == "Promoted"
    step("abort", lambda s: s["phase"] == "RolledBack")
    step("retry", lambda s: s["phase"] == "Progressing" and s.get("stageName") == "canary")
    actors = {e["actor"] for e in status_of(testbed, namespace, "embedding-v2")["history"] if e["reason"] != "Started"}
    assert "kubectl-annotate" in actors
    recorded = event_reasons(testbed, namespace, "embedding-v2")
    for reason in (
        "Paused",
        "Resumed",
        "StageAdvanced",
        "Promoted",
        "ActionRejected",
        "KillSwitchEngaged",
        "RolledBack",
        "Restarted",
    ):
        assert reason in recorded


def test_an_edit_made_in_featbit_pauses_the_rollout_and_is_not_overwritten(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    apply(
        testbed,
        manifest(
            flag_env,
            namespace,
            stages=[{"name": "canary", "percentage": 5, "duration": "1h"}, {"name": "full", "percentage": 100}],
        ),
    )
    wait_for(
        "the first stage",
        lambda: status_of(testbed, namespace, "embedding-v2").get("stageName") == "canary",
        log=operator.log,
    )
    flag = flag_env.get_flag(FLAG)
    split = [
        {"id": "canary", "rollout": [0, 0.4], "exptRollout": 1},
        {"id": "stable", "rollout": [0.4, 1], "exptRollout": 1},
    ]
    human = {
        "targetUsers": flag["targetUsers"],
        "rules": flag["rules"],
        "fallthrough": {"dispatchKey": "keyId", "includedInExpt": True, "variations": split},
        "exptIncludeAllTargets": True,
    }
    edited = httpx.put(
        f"{flag_env.api_url}/api/v1/envs/{flag_env.env_id}/feature-flags/{FLAG}/targeting",
        json={"revision": flag["revision"], "targeting": human, "comment": "hotfix by a human"},
        headers={"Authorization": flag_env.token},
    )
    assert edited.status_code == 200, edited.text
    status = wait_for_phase(testbed, namespace, "embedding-v2", "Paused", log=operator.log)
    synced = next(c for c in status["conditions"] if c["type"] == "FeatBitSynced")
    assert synced["status"] == "False"
    assert synced["reason"] == "FlagEditedOutOfBand"
    assert "FlagEditedOutOfBand" in event_reasons(testbed, namespace, "embedding-v2")
    assert flag_env.get_flag(FLAG)["fallthrough"]["variations"][0]["rollout"] == [0, 0.4]


@pytest.mark.parametrize(
    ("case", "reason", "hint"),
    [
        ("missing-secret", "SecretNotFound", "create secret generic featbit"),
        ("bad-token", "InvalidToken", "token"),
        ("unknown-flag", "FlagNotFound", "no-such-flag"),
        ("unknown-variation", "VariationNotFound", "blue"),
        ("unreachable", "FeatBitUnavailable", "127.0.0.1"),
    ],
)
def test_bad_inputs_are_reported_and_the_rollout_never_advances(
    case: str, reason: str, hint: str, testbed: Testbed, namespace: str, featbit_double: FeatBitDouble,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    featbit_double.create_flag(key=FLAG, enabled_variation_id="canary", disabled_variation_id="stable")
    featbit_double.create_segment(key="internal-users")
    if case != "missing-secret":
        create_token_secret(testbed, namespace, "api-not-a-real-token" if case == "bad-token" else featbit_double.token)
    body = manifest(featbit_double, namespace)
    if case == "unknown-flag":
        body["spec"]["flag"]["key"] = "no-such-flag"
    if case == "unknown-variation":
        body["spec"]["flag"]["candidate"] = "blue"
    if case == "unreachable":
        body["spec"]["featbit"]["url"] = f"http://127.0.0.1:{processes.free_port()}"
    apply(testbed, body)
    status = wait_for(
        f"a {reason} condition",
        lambda: (
            (s := status_of(testbed, namespace, "embedding-v2"))
            and any(c["reason"] == reason for c in s.get("conditions", []))
            and s
        ),
        timeout=60,
        log=operator.log,
    )
    condition = next(c for c in status["conditions"] if c["reason"] == reason)
    assert hint in condition["message"]
    assert status.get("stageIndex") is None
    assert reason in event_reasons(testbed, namespace, "embedding-v2")
    warning = next(e for e in events(testbed, namespace, "embedding-v2") if e["reason"] == reason)
    assert warning["type"] == "Warning"
    assert featbit_double.get_flag(FLAG)["isEnabled"] is False


@pytest.mark.slow
def test_sigkill_at_random_points_never_skips_or_repeats_a_stage(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    stages = [{"name": f"step-{p}", "percentage": p, "duration": "2s"} for p in (1, 5, 10, 25, 50, 75)]
    stages.append({"name": "full", "percentage": 100, "duration": "2s"})
    apply(testbed, manifest(flag_env, namespace, stages=stages))
    rng = random.Random(7)
    for _ in range(20):
        wait_for(
            "the operator to act", lambda: status_of(testbed, namespace, "embedding-v2").get("phase"), log=operator.log
        )
        if status_of(testbed, namespace, "embedding-v2").get("phase") == "Promoted":
            break
        wait_for("a moment", lambda: True, timeout=rng.uniform(0.1, 2.5), interval=rng.uniform(0.05, 2.0))
        operator.kill()
        operator.start()
    status = wait_for_phase(testbed, namespace, "embedding-v2", "Promoted", timeout=120, log=operator.log)

    entered = [e["stage"] for e in status["history"] if e["reason"] in ("Started", "StageAdvanced", "Recovered")]
    assert entered == [s["name"] for s in stages], status["history"]
    flag = flag_env.get_flag(FLAG)
    assert flag["isEnabled"] is True
    assert flag["fallthrough"]["variations"][0] == {"id": "canary", "rollout": [0, 1], "exptRollout": 1}
    audit = httpx.get(
        f"{flag_env.api_url}/api/v1/envs/{flag_env.env_id}/audit-logs",
        params={"refType": "FeatureFlag", "refId": flag["id"], "pageSize": 100},
        headers={"Authorization": flag_env.token},
    ).json()["data"]["items"]
    # Each stage was written once, in order (a restart re-applying a stage FeatBit already serves writes nothing).
    comments = [i["comment"] for i in reversed(audit) if "AIRollout" in (i.get("comment") or "")]
    written = [next(s["name"] for s in stages if f" {s['name']} (" in c) for c in comments]
    deduplicated = [name for i, name in enumerate(written) if i == 0 or written[i - 1] != name]
    assert deduplicated == [s["name"] for s in stages], comments


def test_a_kill_switch_featbit_refuses_is_retried_until_acknowledged(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    apply(testbed, manifest(flag_env, namespace, stages=[{"name": "half", "percentage": 50, "duration": "1h"}]))
    wait_for(
        "the stage", lambda: status_of(testbed, namespace, "embedding-v2").get("stageName") == "half", log=operator.log
    )
    flag_env.faults.update(errors=100_000)  # every management request fails with 503 until cleared
    testbed.kubectl(
        "-n", namespace, "patch", "airollout", "embedding-v2", "--type=merge", "-p", '{"spec": {"killSwitch": true}}'
    )
    status = wait_for(
        "a FeatBitUnavailable condition",
        lambda: (
            (s := status_of(testbed, namespace, "embedding-v2"))
            and any(c["reason"] == "FeatBitUnavailable" for c in s.get("conditions", []))
            and s
        ),
        log=operator.log,
    )
    assert status["phase"] == "Progressing"  # not RolledBack until FeatBit confirms it
    assert flag_env.get_flag(FLAG)["isEnabled"] is True
    flag_env.faults.clear()
    wait_for_phase(testbed, namespace, "embedding-v2", "RolledBack", log=operator.log)
    assert flag_env.get_flag(FLAG)["isEnabled"] is False


def test_deleting_a_rollout_leaves_the_flag_as_it_is(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    apply(testbed, manifest(flag_env, namespace, stages=[{"name": "half", "percentage": 50, "duration": "1h"}]))
    wait_for(
        "the stage", lambda: status_of(testbed, namespace, "embedding-v2").get("stageName") == "half", log=operator.log
    )
    before = flag_env.get_flag(FLAG)
    testbed.kubectl("-n", namespace, "delete", "airollout", "embedding-v2", "--timeout=30s")
    after = flag_env.get_flag(FLAG)
    assert after["revision"] == before["revision"]
    assert after["isEnabled"] is True
    gone = testbed.kubectl("-n", namespace, "get", "airollout", "embedding-v2", check=False)
    assert "NotFound" in gone.stderr


def test_the_operator_exports_its_decisions_as_prometheus_metrics(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, airollout_crd: Path, tmp_path: Path
) -> None:
    port = processes.free_port()
    operator = OperatorProcess(tmp_path, testbed.kubeconfig, f"--metrics-port={port}", f"--namespace={namespace}")
    operator.start()
    try:
        apply(testbed, manifest(flag_env, namespace, stages=[{"name": "canary", "percentage": 5}]))
        wait_for_phase(testbed, namespace, "embedding-v2", "Promoted", log=operator.log)
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        operator.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    mine = (("namespace", namespace), ("rollout", "embedding-v2"))

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted((*mine, *labels.items())))))

    assert value("airollout_decisions_total", reason="Started") == 1
    assert value("airollout_decisions_total", reason="Promoted") == 1
    assert value("airollout_rollout_phase", phase="Promoted") == 1
    assert value("airollout_rollout_phase", phase="Progressing") == 0
    assert value("airollout_rollout_percentage") == 5
