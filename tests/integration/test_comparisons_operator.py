"""Comparison guardrails end to end: `airollout run` testing the synthetic AI service for harm against its control.

The service's traffic is split by FeatBit's own SDK against the FeatBit double, scraped every second by the
test bed's Prometheus; the operator counts each stage's requests and errors per variant there and decides
on an anytime-valid test. At 1,000 requests a second a 5% canary serves about 50 candidate requests a second,
so a stage collects the sample it needs (about 2,800 candidate requests at a 1% error rate) in about a minute.
"""

from __future__ import annotations

from typing import Any

import pytest

from airollout_testbed.demo.ai_service import Behaviour, Divert, Knobs
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.guardrails import ScrapedService, StartScrapedService
from tests.support.operator import apply, create_token_secret, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "ai-answer"
NAME = "answer-v2"
HEALTHY = Behaviour(error_rate=0.01, latency_seconds=0.2, quality=0.9)
STAGES = [
    {"name": "canary", "percentage": 5, "duration": "10s"},
    {"name": "ramp-25", "percentage": 25, "duration": "10s"},
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


def compared(
    testbed: Testbed, double: FeatBitDouble, namespace: str, workload: ScrapedService, **analysis: Any
) -> dict[str, Any]:
    return rollout_manifest(
        namespace,
        NAME,
        api_url=double.api_url,
        env_id=double.env_id,
        flag=FLAG,
        stages=STAGES,
        prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
        analysis={
            "interval": "2s",
            "warmup": "12s",
            "sampleRatio": {"query": workload.users()},
            **analysis,
        },
        guardrails=[{"name": "error-rate", "compare": workload.comparison()}],
    )


def entries(status: dict[str, Any], *reasons: str) -> list[dict[str, Any]]:
    return [e for e in status.get("history", []) if e["reason"] in reasons]


def test_a_healthy_candidate_is_promoted_once_each_stage_has_its_sample(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY))
    apply(testbed, compared(testbed, flag_env, namespace, workload))

    status = wait_for_phase(testbed, namespace, NAME, "Promoted", timeout=300, log=operator.log)

    assert not entries(status, "GuardrailBreached", "SampleRatioMismatch", "RolledBack")
    advanced = entries(status, "StageAdvanced")
    assert [e["stage"] for e in advanced] == ["ramp-25", "full"]
    # Each stage passed on evidence: its planned sample reached, no harm, the bound and the counts recorded.
    for entry in advanced:
        (verdict,) = [g for g in entry["guardrails"] if g["name"] == "error-rate"]
        assert verdict["outcome"] == "Passed", verdict
        evidence = verdict["evidence"]
        assert evidence["samplesNeeded"] == 0
        assert evidence["candidateSamples"] >= 1000
        assert evidence["lowerBound"] < 0
    (record,) = status["comparisons"]
    assert [s["stage"] for s in record["strata"]] == ["canary", "ramp-25"]
    assert record["baseline"] == pytest.approx(0.01, abs=0.005)
    assert status["sampleRatio"]["mismatch"] is False


def test_a_doubled_error_rate_is_rolled_back_on_evidence(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY, variants={"canary": Behaviour(error_rate=0.02)}))
    apply(testbed, compared(testbed, flag_env, namespace, workload))

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=300, log=operator.log)

    (breach,) = entries(status, "GuardrailBreached")
    # Planned for 80% power at the canary's sample: mostly caught there, else in the next stage, never promoted.
    assert breach["stage"] in ("canary", "ramp-25")
    assert "harm shown" in breach["message"]
    assert flag_env.get_flag(FLAG)["isEnabled"] is False


def test_a_broken_split_pauses_the_rollout_naming_the_shares(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    # A cache serves the control to 80% of the users FeatBit put on the candidate: 1% instead of 5%.
    divert = Divert(from_variant="canary", to_variant="stable", fraction=0.8)
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY, divert=divert))
    apply(testbed, compared(testbed, flag_env, namespace, workload))

    status = wait_for_phase(testbed, namespace, NAME, "Paused", timeout=120, log=operator.log)

    assert status["pauseReason"] == "SampleRatioMismatch"
    check = status["sampleRatio"]
    assert check["mismatch"] is True
    assert check["expected"] == 0.05
    assert check["observed"] == pytest.approx(0.01, abs=0.006)
    assert "5%" in status["message"]
    assert status_of(testbed, namespace, NAME)["stageName"] == "canary"


def test_twenty_healthy_canaries_with_noisy_errors_are_all_promoted(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    # One service evaluates twenty flags on every request, each the subject of its own rollout: twenty A/A
    # canaries at 5% of 600 requests a second, 1% errors on both sides.
    flags = [f"ai-aa-{i}" for i in range(20)]
    for flag in flags:
        featbit_double.create_flag(
            key=flag, variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary", disabled_variation_id="stable",
        )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    workload = scraped_ai_service(flags[0], Knobs(default=HEALTHY), extra_flags=tuple(flags), rps=600)
    for flag in flags:
        manifest = rollout_manifest(
            namespace,
            flag,
            api_url=featbit_double.api_url,
            env_id=featbit_double.env_id,
            flag=flag,
            stages=[{"name": "canary", "percentage": 5, "duration": "10s"}, {"name": "full", "percentage": 100}],
            prometheus={"url": testbed.prometheus_url, "timeout": "5s"},
            analysis={"interval": "2s", "warmup": "12s"},
            guardrails=[{"name": "error-rate", "compare": workload.flag_comparison(flag)}],
        )
        apply(testbed, manifest)

    def finished(flag: str) -> str | None:
        phase = status_of(testbed, namespace, flag).get("phase")
        return str(phase) if phase in ("Promoted", "RolledBack") else None

    outcomes = {
        flag: wait_for(f"{flag} to finish", lambda f=flag: finished(f), timeout=400, log=operator.log) for flag in flags
    }
    print(f"20 A/A canaries: {sorted(outcomes.values()).count('Promoted')} promoted")
    assert set(outcomes.values()) == {"Promoted"}, outcomes
