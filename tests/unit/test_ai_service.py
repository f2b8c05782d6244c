from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from pydantic import ValidationError

from airollout_testbed.demo.ai_service import LOCALES, AIService, Behaviour, Divert, Knobs, LoadRegression
from airollout_testbed.waiting import wait_for
from tests.support.ai_service import PercentageSplit, StartAIService


def value(service: AIService, name: str, variant: str, locale: str) -> float:
    sample = service.registry.get_sample_value(name, {"variant": variant, "locale": locale})
    return 0.0 if sample is None else sample


def total(service: AIService, name: str, variant: str) -> float:
    return sum(value(service, name, variant, locale) for locale in LOCALES)


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
            raw = response.read()
            status = int(response.status)
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


def test_behaviour_layers_default_then_variant_then_locale() -> None:
    knobs = Knobs(
        variants={"canary": Behaviour(latency_seconds=0.4)},
        overrides={"canary": {"de": Behaviour(error_rate=0.3)}},
    )
    assert knobs.behaviour("stable", "de") == (0.01, 0.2, 0.9)
    assert knobs.behaviour("canary", "en") == (0.01, 0.4, 0.9)
    assert knobs.behaviour("canary", "de") == (0.3, 0.4, 0.9)


def test_the_default_behaviour_must_be_complete() -> None:
    with pytest.raises(ValidationError, match="default must set"):
        Knobs(default=Behaviour(error_rate=0.1))


def test_requests_split_by_variant_and_every_pair_has_an_error_series() -> None:
    service = AIService(PercentageSplit(percent=30), "ai-summary")
    service.simulate(4000)
    candidate, control = total(service, "ai_requests_total", "canary"), total(service, "ai_requests_total", "stable")
    assert candidate + control == 4000
    assert candidate / 4000 == pytest.approx(0.30, abs=0.03)
    for variant in ("canary", "stable"):
        for locale in LOCALES:
            assert value(service, "ai_requests_total", variant, locale) > 0
            assert (
                service.registry.get_sample_value("ai_errors_total", {"variant": variant, "locale": locale}) is not None
            )


def test_a_locale_override_regresses_only_that_variant_and_locale() -> None:
    knobs = Knobs(overrides={"canary": {"de": Behaviour(error_rate=0.5)}})
    service = AIService(PercentageSplit(percent=50), "ai-summary", knobs=knobs)
    service.simulate(20_000)

    def error_rate(variant: str, locale: str) -> float:
        return value(service, "ai_errors_total", variant, locale) / value(service, "ai_requests_total", variant, locale)

    assert error_rate("canary", "de") == pytest.approx(0.5, abs=0.06)
    assert error_rate("stable", "de") < 0.05
    assert error_rate("canary", "en") < 0.05


def mean_latency(service: AIService, variant: str) -> float:
    return total(service, "ai_request_duration_seconds_sum", variant) / total(
        service, "ai_request_duration_seconds_count", variant
    )


@pytest.mark.parametrize(("percent", "slow"), [(10, False), (20, False), (50, True), (100, True)])
def test_the_load_regression_appears_only_above_its_share(percent: float, slow: bool) -> None:
    knobs = Knobs(load_regression=LoadRegression(variant="canary", share_above=0.25, extra_latency_seconds=1.0))
    service = AIService(PercentageSplit(percent=percent), "ai-summary", knobs=knobs)
    service.simulate(3000)  # let the moving share settle
    before = total(service, "ai_request_duration_seconds_sum", "canary")
    count_before = total(service, "ai_request_duration_seconds_count", "canary")
    service.simulate(3000)
    recent = (total(service, "ai_request_duration_seconds_sum", "canary") - before) / (
        total(service, "ai_request_duration_seconds_count", "canary") - count_before
    )
    assert recent == pytest.approx(1.2 if slow else 0.2, rel=0.1)
    assert service.stats()["share"]["canary"] == pytest.approx(percent / 100, abs=0.06)


def test_quality_is_recorded_for_successful_answers() -> None:
    service = AIService(
        PercentageSplit(percent=50), "ai-summary", knobs=Knobs(variants={"canary": Behaviour(quality=0.6)})
    )
    service.simulate(4000)

    def mean_quality(variant: str) -> float:
        return total(service, "ai_quality_score_sum", variant) / total(service, "ai_quality_score_count", variant)

    assert mean_quality("canary") == pytest.approx(0.6, abs=0.02)
    assert mean_quality("stable") == pytest.approx(0.9, abs=0.02)


def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        service = AIService(PercentageSplit(percent=40), "ai-summary", seed=7)
        service.simulate(2000)
        runs.append([value(service, "ai_request_duration_seconds_sum", "canary", locale) for locale in LOCALES])
    assert runs[0] == runs[1]


def test_until_the_sdk_is_ready_requests_get_the_default_without_asking_it() -> None:
    class NotReady:
        initialize = False

        def variation_detail(self, key: str, user: dict[str, Any], default: Any = None) -> Any:
            raise AssertionError("asked an SDK that is not ready")

    service = AIService(NotReady(), "ai-summary")
    service.simulate(100)
    assert total(service, "ai_requests_total", "default") == 100


def test_knobs_metrics_and_stats_over_http(start_ai_service: StartAIService) -> None:
    service = start_ai_service(PercentageSplit(percent=50), traffic=False)
    service.simulate(200)

    status, knobs = http(f"{service.url}/knobs")
    assert (status, knobs["rps"], knobs["load_regression"]) == (200, 200.0, None)

    status, knobs = http(f"{service.url}/knobs", {"rps": 50, "overrides": {"canary": {"ja": {"error_rate": 1}}}})
    assert status == 200
    assert knobs["rps"] == 50
    assert knobs["overrides"]["canary"]["ja"]["error_rate"] == 1
    assert knobs["default"]["error_rate"] == 0.01  # fields not named are kept
    assert service.knobs.behaviour("canary", "ja").error_rate == 1

    status, error = http(f"{service.url}/knobs", {"rps": -1})
    assert status == 400
    assert "rps" in error["error"]
    assert service.knobs.rps == 50

    status, metrics = http(f"{service.url}/metrics")
    assert status == 200
    assert 'ai_requests_total{locale="en",variant="canary"}' in metrics

    status, stats = http(f"{service.url}/stats")
    assert status == 200
    assert sum(stats["served"].values()) == 200


def test_it_generates_its_own_traffic(start_ai_service: StartAIService) -> None:
    service = start_ai_service(PercentageSplit(percent=50), knobs=Knobs(rps=100))
    wait_for("50 requests served", lambda: sum(service.stats()["served"].values()) >= 50, timeout=30, interval=0.05)


def test_users_are_counted_once_per_variant_and_a_diversion_moves_them() -> None:
    def users(knobs: Knobs) -> dict[str, float]:
        service = AIService(PercentageSplit(percent=50), "ai-summary", users=500, knobs=knobs)
        service.simulate(5000)
        return {
            v: service.registry.get_sample_value("ai_active_users", {"variant": v}) or 0.0 for v in ("canary", "stable")
        }

    split = users(Knobs())
    # Each of the 500 users was seen ten times, and counted once.
    assert sum(split.values()) == 500
    diverted = users(Knobs(divert=Divert(from_variant="canary", to_variant="stable", fraction=0.8)))
    assert sum(diverted.values()) == 500
    assert diverted["canary"] == pytest.approx(split["canary"] * 0.2, rel=0.35)
