"""Guardrails end to end: `airollout run` judging the synthetic AI service through the test bed's Prometheus.

The service splits its traffic with FeatBit's own SDK against the FeatBit double, so the operator's targeting
writes are what move requests onto the candidate; its metrics carry ``variant`` and ``locale`` labels, and a
regression is injected through its knobs, in one variant, one locale, or only above a share of traffic.
Windows are short and stages last seconds, so each test reads like a real rollout, sped up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fbclient.client import FBClient

from airollout_testbed.demo.ai_service import Behaviour, Knobs, LoadRegression
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users
from tests.support.guardrails import ScrapedService, StartScrapedService
from tests.support.operator import (
    apply,
    create_token_secret,
    events,
    status_of,
    wait_for_phase,
)
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "ai-summary"
NAME = "summary-v2"
USERS = synthetic_users(2000)
HEALTHY = Behaviour(error_rate=0.01, latency_seconds=0.2, quality=0.9)
PATH_REASONS = ("Started", "StageAdvanced", "Promoted")
NUMBER = r"[-+0-9.e]+"


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    """The flag (canary/stable, off, serving stable when off) and the token Secret."""
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


def start_service(start: StartScrapedService, **knobs: Any) -> ScrapedService:
    return start(FLAG, Knobs(default=HEALTHY).merged(knobs))


def guarded(
    testbed: Testbed,
    double: FeatBitDouble,
    namespace: str,
    stages: list[dict[str, Any]],
    guardrails: list[dict[str, Any]],
) -> dict[str, Any]:
    """A rollout judged every second on ``guardrails``, in Prometheus of the test bed."""
    return rollout_manifest(
        namespace,
        NAME,
        api_url=double.api_url,
        env_id=double.env_id,
        flag=FLAG,
        stages=stages,
        prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
        analysis={"interval": "1s", "consecutiveErrorLimit": 3},
        guardrails=guardrails,
    )


def history(status: dict[str, Any], *reasons: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = status.get("history", [])
    return [e for e in entries if not reasons or e["reason"] in reasons]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status.get("conditions", []) if c["type"] == kind)
    return found


def event(testbed: Testbed, namespace: str, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        f"a {reason} Event",
        lambda: next((e for e in events(testbed, namespace, NAME) if e["reason"] == reason), None),
        timeout=15,
    )
    return found


def assert_everyone_back_on_control(sdk: FBClient, double: FeatBitDouble, workload: ScrapedService) -> None:
    wait_for("every user on control", lambda: count_variations(sdk, FLAG, USERS)["stable"] == len(USERS), timeout=15)
    assert double.get_flag(FLAG)["isEnabled"] is False
    wait_for("the service's traffic back on control", lambda: workload.share("canary") < 0.01, timeout=30)


def test_a_healthy_candidate_passes_every_stage_and_is_promoted(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    workload = start_service(scraped_ai_service)
    stages = [
        {"name": "canary", "percentage": 5, "duration": "3s"},
        {"name": "ramp-25", "percentage": 25, "duration": "3s"},
        {"name": "ramp-50", "percentage": 50, "duration": "3s"},
        {"name": "full", "percentage": 100},
    ]
    # Limits well clear of the healthy values: a 5 % canary's first analyses see only ~50 requests.
    guardrails = [
        {"name": "error-rate", "query": workload.error_rate("15s"), "max": 0.1},
        {"name": "latency-p95", "query": workload.latency_p95("10s"), "max": 0.75, "maxIncreaseOverControl": 1.0},
        {"name": "quality", "query": workload.quality("15s"), "min": 0.8, "maxIncreaseOverControl": 0.1},
    ]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    status = wait_for_phase(testbed, namespace, NAME, "Promoted", timeout=120, log=operator.log)

    path = history(status, *PATH_REASONS)
    assert [e["reason"] for e in path] == ["Started", "StageAdvanced", "StageAdvanced", "StageAdvanced", "Promoted"]
    assert [e["stage"] for e in path] == ["canary", "ramp-25", "ramp-50", "full", "full"]
    assert not history(status, "GuardrailBreached", "GuardrailWarning", "GuardrailQueryFailed")
    # Each step past the first keeps the verdicts it was taken on: the values at the end of the stage it left.
    for entry in path[1:]:
        assert {g["name"] for g in entry["guardrails"]} == {"error-rate", "latency-p95", "quality"}, entry
        for verdict in entry["guardrails"]:
            assert verdict["outcome"] == "Passed", entry
            assert verdict["value"] is not None, verdict
            assert verdict["threshold"] is not None, verdict
            assert verdict["window"] in ("10s", "15s")
        assert "guardrails passed (3/3 Passed)" in entry["message"]
    canary_end = {g["name"]: g for g in path[1]["guardrails"]}
    assert canary_end["error-rate"]["value"] <= 0.1
    assert canary_end["quality"]["value"] >= 0.8
    # While the control still served traffic, the candidate was compared with it.
    assert canary_end["quality"]["controlValue"] == pytest.approx(0.9, abs=0.02)
    assert canary_end["latency-p95"]["controlValue"] < 0.5

    assert status["guardrailSummary"] == "3/3 Passed"
    assert {g["name"] for g in status["guardrails"]} == {"error-rate", "latency-p95", "quality"}
    assert all(g["outcome"] == "Passed" for g in status["guardrails"])
    assert condition(status, "GuardrailsPassing")["status"] == "True"
    assert "3/3 Passed" in testbed.kubectl("-n", namespace, "get", "airollouts").stdout
    sdk = featbit_client()
    assert count_variations(sdk, FLAG, USERS)["canary"] == len(USERS)


def test_a_doubled_error_rate_is_rolled_back_at_the_canary_and_the_numbers_are_given(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    workload = start_service(
        scraped_ai_service,
        default={"error_rate": 0.02, "latency_seconds": 0.2, "quality": 0.9},
        variants={"canary": {"error_rate": 0.04}},
    )
    stages = [{"name": "canary", "percentage": 5, "duration": "5m"}, {"name": "full", "percentage": 100}]
    guardrails = [
        {"name": "error-rate", "query": workload.error_rate("15s"), "max": 0.2, "maxIncreaseOverControl": 0.5}
    ]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=90, log=operator.log)

    (verdict,) = status["guardrails"]
    assert verdict["outcome"] == "Breached"
    assert verdict["window"] == "15s"
    assert verdict["controlValue"] == pytest.approx(0.02, abs=0.008)
    assert verdict["threshold"] == pytest.approx(verdict["controlValue"] * 1.5)
    assert verdict["value"] > verdict["threshold"]
    assert verdict["value"] < 0.2  # far below the absolute limit: the comparison with the control caught it
    assert status["guardrailSummary"] == "Breached: error-rate"
    assert status["percentage"] == 0
    breach = history(status, "GuardrailBreached")[0]
    assert (breach["stage"], breach["percentage"]) == ("canary", 5)
    assert breach["guardrails"][0]["value"] == verdict["value"]
    assert status["message"].startswith("rolled back: guardrail breached at stage canary (5%): error-rate breached: ")

    said = re.compile(
        rf"error-rate breached: (?P<value>{NUMBER}) > control (?P<control>{NUMBER}) \+50% = "
        rf"(?P<threshold>{NUMBER}) \(window 15s\)"
    )
    for reason in ("GuardrailBreached", "RolledBack"):
        warning = event(testbed, namespace, reason)
        assert warning["type"] == "Warning"
        assert "at stage canary (5%)" in warning["message"]
        numbers = said.search(warning["message"])
        assert numbers is not None, warning["message"]
        assert float(numbers["value"]) == pytest.approx(verdict["value"], rel=1e-3)
        assert float(numbers["control"]) == pytest.approx(verdict["controlValue"], rel=1e-3)
        assert float(numbers["threshold"]) == pytest.approx(verdict["threshold"], rel=1e-3)

    assert_everyone_back_on_control(featbit_client(), flag_env, workload)


def test_a_regression_in_one_locale_is_rolled_back_and_the_locale_is_named(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    # Nothing else fails, so a small locale's first handful of requests cannot breach by chance.
    workload = start_service(
        scraped_ai_service,
        default={"error_rate": 0.0, "latency_seconds": 0.2, "quality": 0.9},
        overrides={"canary": {"de": {"error_rate": 0.3}}},
    )
    stages = [{"name": "canary", "percentage": 5, "duration": "5m"}, {"name": "full", "percentage": 100}]
    guardrails = [{"name": "error-rate", "query": workload.error_rate("15s", by="locale"), "max": 0.05}]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=90, log=operator.log)

    outcomes = {g["segment"]: g for g in status["guardrails"]}
    assert [s for s, g in outcomes.items() if g["outcome"] == "Breached"] == ['locale="de"']
    assert outcomes['locale="de"']["value"] > 0.05
    assert outcomes['locale="de"']["controlValue"] == 0
    assert set(outcomes) <= {'locale="de"', 'locale="en"', 'locale="fr"', 'locale="ja"'}
    # The other locales are healthy (or, for one too small to have been seen yet, without data).
    for segment, verdict in outcomes.items():
        if segment != 'locale="de"':
            assert (verdict["outcome"], verdict.get("value", 0)) in (("Passed", 0), ("NoData", 0)), verdict
    assert status["guardrailSummary"] == 'Breached: error-rate{locale="de"}'

    for reason in ("GuardrailBreached", "RolledBack"):
        message = event(testbed, namespace, reason)["message"]
        assert 'error-rate breached for locale="de": ' in message
        assert re.search(rf'locale="de": {NUMBER} > max 0.05 \(control 0, window 15s\)', message), message
        for healthy in ("en", "fr", "ja"):
            assert f'locale="{healthy}"' not in message

    assert_everyone_back_on_control(featbit_client(), flag_env, workload)


def test_a_latency_regression_above_a_quarter_of_traffic_is_caught_at_the_stage_above_it(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    regression = LoadRegression(variant="canary", share_above=0.25, extra_latency_seconds=1.0)
    workload = start_service(scraped_ai_service, load_regression=regression.model_dump())
    # 20 % rather than 25 %: at exactly the threshold the service's measured share hovers on both sides of it.
    stages = [
        {"name": "canary", "percentage": 5, "duration": "3s"},
        {"name": "ramp-20", "percentage": 20, "duration": "3s"},
        {"name": "ramp-50", "percentage": 50, "duration": "5m"},
        {"name": "full", "percentage": 100},
    ]
    guardrails = [{"name": "latency-p95", "query": workload.latency_p95("10s"), "max": 0.5}]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=120, log=operator.log)

    path = history(status, "Started", "StageAdvanced", "GuardrailBreached", "RolledBack")
    assert [(e["reason"], e["stage"]) for e in path] == [
        ("Started", "canary"),
        ("StageAdvanced", "ramp-20"),
        ("StageAdvanced", "ramp-50"),
        ("GuardrailBreached", "ramp-50"),
        ("RolledBack", "ramp-50"),
    ]
    # The steps out of 5 % and 20 % were taken on passing latencies, measured at the end of those stages.
    for advanced in path[1:3]:
        (verdict,) = advanced["guardrails"]
        assert verdict["outcome"] == "Passed", advanced
        assert verdict["value"] <= 0.5
    (breached,) = path[3]["guardrails"]
    assert breached["outcome"] == "Breached"
    assert breached["value"] > 0.5
    assert breached["controlValue"] < 0.5  # the control never slowed down
    assert path[3]["percentage"] == 50
    assert "guardrail breached at stage ramp-50 (50%): latency-p95 breached: " in path[3]["message"]
    assert not history(status, "GuardrailWarning")

    assert_everyone_back_on_control(featbit_client(), flag_env, workload)


def test_a_warning_freezes_the_stage_until_it_clears_then_the_rollout_continues(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = start_service(scraped_ai_service, variants={"canary": {"quality": 0.7}})
    stages = [
        {"name": "canary", "percentage": 5, "duration": "2s"},
        {"name": "ramp-50", "percentage": 50, "duration": "2s"},
        {"name": "full", "percentage": 100},
    ]
    guardrails = [{"name": "quality", "query": workload.quality("15s"), "min": 0.5, "warnAt": 0.8}]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    def frozen_past_its_duration() -> dict[str, Any] | None:
        status = status_of(testbed, namespace, NAME)
        if not status.get("lastAnalysisAt") or not status.get("stageStartedAt"):
            return None
        bake_end = datetime.fromisoformat(status["stageStartedAt"]) + timedelta(seconds=2)
        # Several analyses after the stage's duration ended, all of them warnings, and still no advance.
        past = datetime.fromisoformat(status["lastAnalysisAt"]) >= bake_end + timedelta(seconds=4)
        return status if past and status.get("guardrailSummary") == "Warning: quality" else None

    status = wait_for("a warned stage past its duration", frozen_past_its_duration, timeout=60, log=operator.log)
    assert (status["phase"], status["stageName"]) == ("Progressing", "canary")
    assert not history(status, "StageAdvanced")
    passing = condition(status, "GuardrailsPassing")
    assert (passing["status"], passing["reason"]) == ("False", "GuardrailWarning")
    assert re.search(rf"quality warning: {NUMBER} < warnAt 0.8, within min 0.5", passing["message"]), passing
    (verdict,) = status["guardrails"]
    assert verdict["outcome"] == "Warning"
    assert verdict["value"] == pytest.approx(0.7, abs=0.05)
    assert verdict["threshold"] == 0.8
    (warned,) = history(status, "GuardrailWarning")
    assert warned["stage"] == "canary"
    assert warned["guardrails"][0]["outcome"] == "Warning"
    assert "holding at stage canary: quality warning: " in event(testbed, namespace, "GuardrailWarning")["message"]

    workload.set_knobs(variants={})
    status = wait_for_phase(testbed, namespace, NAME, "Promoted", timeout=90, log=operator.log)

    order = [e["reason"] for e in history(status, "GuardrailWarning", "GuardrailsPassed", *PATH_REASONS)]
    assert order == ["Started", "GuardrailWarning", "GuardrailsPassed", "StageAdvanced", "StageAdvanced", "Promoted"]
    cleared = history(status, "GuardrailsPassed")[0]
    assert cleared["stage"] == "canary"
    assert cleared["message"].startswith("guardrails pass again: quality passed: ")
    assert status["guardrailSummary"] == "1/1 Passed"


def test_a_prometheus_outage_holds_then_pauses_and_the_rollout_resumes_when_it_returns(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService,
) -> None:  # fmt: skip
    workload = start_service(scraped_ai_service)
    # Long enough that the outage below starts while a stage is still baking, not after the promotion.
    stages = [
        {"name": "canary", "percentage": 5, "duration": "20s"},
        {"name": "ramp-50", "percentage": 50, "duration": "2s"},
        {"name": "full", "percentage": 100},
    ]
    guardrails = [{"name": "error-rate", "query": workload.error_rate("15s"), "max": 0.1}]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))
    wait_for(
        "a passing analysis",
        lambda: status_of(testbed, namespace, NAME).get("guardrailSummary") == "1/1 Passed",
        timeout=60,
        log=operator.log,
    )

    testbed.stop_prometheus()
    try:
        unreachable = f"Prometheus at {testbed.prometheus_url} is unreachable: "

        def paused_quoting_the_outage() -> dict[str, Any] | None:
            status = status_of(testbed, namespace, NAME)
            if status.get("phase") != "Paused":
                return None
            latest = condition(status, "GuardrailsPassing")["message"]
            return status if unreachable in latest and "Connection refused" in latest else None

        status = wait_for("a pause quoting the outage", paused_quoting_the_outage, timeout=60, log=operator.log)
        assert status["pauseReason"] == "GuardrailQueryFailed"
        assert status["consecutiveErrors"] >= 3
        paused = condition(status, "Progressing")
        assert (paused["status"], paused["reason"]) == ("False", "GuardrailQueryFailed")
        assert paused["message"].startswith(
            f"3 consecutive guardrail errors (limit 3): error-rate: candidate query failed: Prometheus at "
            f"{testbed.prometheus_url} "
        )
        failing = condition(status, "GuardrailsPassing")
        assert (failing["status"], failing["reason"]) == ("False", "GuardrailQueryFailed")
        assert status["guardrailSummary"] == "Error: error-rate"
        # No stage was entered once the queries started failing.
        entries = history(status)
        first_error = next(i for i, e in enumerate(entries) if e["reason"] == "GuardrailQueryFailed")
        assert [e["reason"] for e in entries[first_error:]] == ["GuardrailQueryFailed", "GuardrailQueryFailed"]
        assert {e["stage"] for e in entries[first_error:]} == {status["stageName"]}
        held_at = [s["name"] for s in stages].index(status["stageName"])
        warning = event(testbed, namespace, "GuardrailQueryFailed")
        assert warning["type"] == "Warning"
        assert f"Prometheus at {testbed.prometheus_url} " in warning["message"]
    finally:
        testbed.start_prometheus()

    status = wait_for_phase(testbed, namespace, NAME, "Promoted", timeout=120, log=operator.log)
    entries = history(status)
    resumed = next(i for i, e in enumerate(entries) if e["reason"] == "Resumed")
    assert entries[resumed]["message"] == "guardrail queries answer again"
    assert entries[resumed]["actor"] == "operator"
    # It went on from the stage it was held at, by itself.
    advanced = [e["stage"] for e in entries[resumed:] if e["reason"] == "StageAdvanced"]
    assert advanced == [s["name"] for s in stages[held_at + 1 :]]
    assert status["consecutiveErrors"] == 0
    assert condition(status, "GuardrailsPassing")["status"] == "True"
    wait_for("the service's traffic on the candidate", lambda: workload.share("canary") > 0.9, timeout=30)


def test_a_candidate_within_the_absolute_limit_but_worse_than_control_is_rolled_back(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    workload = start_service(scraped_ai_service, variants={"canary": {"latency_seconds": 0.4}})
    stages = [{"name": "canary", "percentage": 5, "duration": "5m"}, {"name": "full", "percentage": 100}]
    guardrails = [
        {"name": "latency-p95", "query": workload.latency_p95("10s"), "max": 1.0, "maxIncreaseOverControl": 0.25}
    ]
    apply(testbed, guarded(testbed, flag_env, namespace, stages, guardrails))

    status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=90, log=operator.log)

    (verdict,) = status["guardrails"]
    assert verdict["outcome"] == "Breached"
    assert verdict["controlValue"] < verdict["threshold"] < verdict["value"] < 1.0
    assert verdict["threshold"] == pytest.approx(verdict["controlValue"] * 1.25)
    assert re.fullmatch(
        rf"latency-p95 breached: {NUMBER} > control {NUMBER} \+25% = {NUMBER} \(window 10s\)", verdict["message"]
    ), verdict["message"]
    message = event(testbed, namespace, "GuardrailBreached")["message"]
    assert verdict["message"] in message
    assert "> max" not in message

    assert_everyone_back_on_control(featbit_client(), flag_env, workload)
