"""The post-release watch end to end: `airollout run` keeps a holdback on the control after Promoted.

The synthetic AI service's traffic is split by FeatBit's own SDK against the FeatBit double and scraped by
the test bed's Prometheus; the operator compares the candidate with the holdback exactly as in a stage. A
drift is injected into the running service only once the rollout is promoted, as a model's quality that
degrades after its release would be.
"""

from __future__ import annotations

from typing import Any

import pytest

from airollout_testbed.demo.ai_service import Behaviour, Knobs
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.guardrails import ScrapedService, StartScrapedService
from tests.support.operator import apply, create_token_secret, event_reasons, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "ai-answer"
NAME = "answer-v2"
HEALTHY = Behaviour(error_rate=0.01, latency_seconds=0.2, quality=0.9)
STAGES = [
    {"name": "canary", "percentage": 5, "duration": "10s"},
    {"name": "full", "percentage": 100},
]


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


def watched(
    testbed: Testbed, double: FeatBitDouble, namespace: str, workload: ScrapedService, **post_release: Any
) -> dict[str, Any]:
    return rollout_manifest(
        namespace,
        NAME,
        api_url=double.api_url,
        env_id=double.env_id,
        flag=FLAG,
        stages=STAGES,
        prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
        analysis={"interval": "2s", "warmup": "12s"},
        guardrails=[{"name": "error-rate", "compare": workload.comparison()}],
        postRelease=post_release,
    )


def entries(status: dict[str, Any], *reasons: str) -> list[dict[str, Any]]:
    return [e for e in status.get("history", []) if e["reason"] in reasons]


def candidate_share(double: FeatBitDouble) -> list[float]:
    """The fallthrough's candidate range in FeatBit, as the SDKs read it."""
    (served,) = [v for v in double.get_flag(FLAG)["fallthrough"]["variations"] if v["id"] == "canary"]
    return [float(bound) for bound in served["rollout"]]


def watching(testbed: Testbed, namespace: str, operator: OperatorProcess) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        "the post-release watch to start",
        lambda: (s := status_of(testbed, namespace, NAME)).get("stageName") == "post-release" and s,
        timeout=300,
        log=operator.log,
    )
    return status


def test_a_healthy_release_completes_after_its_watch_and_releases_the_holdback(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY))
    apply(testbed, watched(testbed, flag_env, namespace, workload, holdback=10, duration="40s"))

    during = watching(testbed, namespace, operator)
    assert during["phase"] == "Progressing"
    assert during["percentage"] == 90
    assert candidate_share(flag_env) == [0.0, 0.9]

    status = wait_for_phase(testbed, namespace, NAME, "Completed", timeout=180, log=operator.log)

    assert [e["reason"] for e in entries(status, "Promoted", "PostReleaseWatchStarted", "Completed")] == [
        "Promoted",
        "PostReleaseWatchStarted",
        "Completed",
    ]
    assert not entries(status, "GuardrailBreached", "RolledBack")
    assert (status["stageName"], status["percentage"]) == ("full", 100)
    assert candidate_share(flag_env) == [0.0, 1.0]
    # The watch compared the candidate with the holdback: its own stratum, counted on both sides.
    (record,) = status["comparisons"]
    assert record["current"]["stage"] == "post-release"
    assert record["current"]["control"]["n"] > 0
    assert record["current"]["candidate"]["n"] > record["current"]["control"]["n"]
    assert {"PostReleaseWatchStarted", "Completed"} <= set(event_reasons(testbed, namespace, NAME))


def test_a_drift_that_starts_after_promoted_is_caught_against_the_holdback_and_rolled_back(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY))
    apply(testbed, watched(testbed, flag_env, namespace, workload, holdback=10, duration="30m"))

    promoted = watching(testbed, namespace, operator)
    assert entries(promoted, "Promoted")
    assert not entries(promoted, "GuardrailBreached")
    # The candidate drifts only now, after its release: four times the control's errors.
    workload.set_knobs(variants={"canary": {"error_rate": 0.04}})

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=240, log=operator.log)

    (breach,) = entries(status, "GuardrailBreached")
    (started,) = entries(status, "PostReleaseWatchStarted")
    print(f"drift caught {breach['time']} (watch from {started['time']}): {breach['message']}")
    assert breach["stage"] == "post-release"
    assert breach["percentage"] == 90
    assert "harm shown" in breach["message"]
    assert not entries(status, "Completed")
    assert flag_env.get_flag(FLAG)["isEnabled"] is False
