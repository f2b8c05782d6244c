"""Guardrails against the real Prometheus of the test bed, scraping the synthetic AI service every second."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from airollout.guardrails import (
    GuardrailQueryFailed,
    GuardrailVerdict,
    Outcome,
    PrometheusSource,
    QueryVariables,
    measure,
)
from airollout.model.spec import Guardrail
from airollout_testbed.demo.ai_service import LOCALES, AIService, Behaviour, Knobs, LoadRegression
from airollout_testbed.sandbox.processes import free_port
from airollout_testbed.waiting import wait_for_async
from tests.support.ai_service import PercentageSplit, StartAIService
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

VARS = QueryVariables(flag="ai-summary", namespace="guardrails", stage="canary-50")
JOB = f"ai-guardrails-{uuid.uuid4().hex[:8]}"
# Prometheus shows a change within 90 s (1 s scrapes, windows of 10-30 s). A probe's failed assertion (an Error
# verdict while the series fill in) means "not yet", and is quoted if time runs out.
eventually = functools.partial(wait_for_async, timeout=90, interval=0.5, retrying=(AssertionError,))


def error_rate(window: str = "30s", **fields: float) -> Guardrail:
    """The issue's error-rate guardrail, narrowed to this module's exporter."""
    selector = f'job="{JOB}",variant="{{{{variant}}}}"'
    query = (
        f"sum by (locale) (rate(ai_errors_total{{{selector}}}[{window}])) "
        f"/ sum by (locale) (rate(ai_requests_total{{{selector}}}[{window}]))"
    )
    return Guardrail(name="error-rate", query=query, **fields)


@pytest.fixture(scope="module")
def ai_service(testbed: Testbed) -> Iterator[AIService]:
    """Half the users on the candidate; the candidate fails 30 % of requests in de only, nothing else fails."""
    knobs = Knobs(
        rps=200,
        default=Behaviour(error_rate=0.0, latency_seconds=0.2, quality=0.9),
        overrides={"canary": {"de": Behaviour(error_rate=0.3)}},
    )
    service = AIService(PercentageSplit(candidate="canary", control="stable", percent=50), "ai-summary", knobs=knobs)
    service.start()
    testbed.add_scrape_target(JOB, f"127.0.0.1:{service.port}")
    yield service
    service.stop()


@pytest.fixture
async def prometheus(testbed: Testbed) -> AsyncIterator[PrometheusSource]:
    source = PrometheusSource(testbed.prometheus_url, timeout=10)
    yield source
    await source.aclose()


async def test_a_query_returns_the_exporters_values_per_variant_and_locale(
    ai_service: AIService, prometheus: PrometheusSource
) -> None:
    async def all_series() -> dict[tuple[str, str], float] | None:
        samples = await prometheus.query(f'sum by (variant, locale) (ai_requests_total{{job="{JOB}"}})')
        found = {(s.labels["variant"], s.labels["locale"]): s.value for s in samples}
        return found if len(found) == 2 * len(LOCALES) else None

    found = await eventually("requests of both variants in every locale", all_series)
    assert set(found) == {(variant, locale) for variant in ("canary", "stable") for locale in LOCALES}
    assert all(count > 0 for count in found.values())


async def test_a_real_error_rate_query_names_the_regressed_locale(
    ai_service: AIService, prometheus: PrometheusSource
) -> None:
    guardrail = error_rate(max=0.1, max_increase_over_control=0.5)

    async def judged_everywhere() -> GuardrailVerdict | None:
        verdict = await measure(guardrail, VARS, prometheus, "canary", "stable")
        assert verdict.outcome is not Outcome.ERROR, verdict.error
        return verdict if len(verdict.segments) == len(LOCALES) and verdict.outcome is Outcome.BREACHED else None

    verdict = await eventually("a breach judged over all four locales", judged_everywhere)
    outcomes = {s.segment: s.outcome for s in verdict.segments}
    assert outcomes == {
        'locale="de"': Outcome.BREACHED,
        'locale="en"': Outcome.PASSED,
        'locale="fr"': Outcome.PASSED,
        'locale="ja"': Outcome.PASSED,
    }
    (de,) = [s for s in verdict.segments if s.outcome is Outcome.BREACHED]
    assert de.value is not None
    assert 0.15 < de.value < 0.45
    assert de.control_value == 0.0
    assert de.window == "30s"
    assert de.message.startswith('error-rate breached for locale="de": ')
    assert " > max 0.1 and > control 0 +50% = 0 (window 30s)" in de.message


async def test_an_unreachable_prometheus_is_an_error_not_a_breach() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = PrometheusSource(url, timeout=5)
    with pytest.raises(GuardrailQueryFailed, match=r"is unreachable: .*Connection refused"):
        await source.query("up")

    verdict = await measure(error_rate(max=0.1), VARS, source, "canary", "stable")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error is not None
    assert f"candidate query failed: Prometheus at {url} is unreachable" in verdict.error
    assert "Connection refused" in verdict.error
    await source.aclose()


async def test_a_promql_syntax_error_is_an_error_quoting_prometheus(prometheus: PrometheusSource) -> None:
    broken = Guardrail(name="broken", query='sum(rate(ai_errors_total{variant="{{variant}}"}[30s])', max=0.1)
    with pytest.raises(GuardrailQueryFailed) as caught:
        await prometheus.query('sum(rate(ai_errors_total{variant="canary"}[30s])')
    assert "answered HTTP 400 (bad_data)" in str(caught.value)
    assert "parse error" in str(caught.value)

    verdict = await measure(broken, VARS, prometheus, "canary", None)
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error is not None
    assert "parse error" in verdict.error
    assert 'query: sum(rate(ai_errors_total{variant="canary"}[30s])' in verdict.error


async def test_a_load_dependent_latency_regression_breaches_only_above_its_share(
    testbed: Testbed, prometheus: PrometheusSource, start_ai_service: StartAIService
) -> None:
    split = PercentageSplit(percent=10)
    regression = LoadRegression(variant="canary", share_above=0.25, extra_latency_seconds=1.0)
    service = start_ai_service(split, knobs=Knobs(load_regression=regression), seed=1)
    job = f"ai-latency-{uuid.uuid4().hex[:8]}"
    testbed.add_scrape_target(job, f"127.0.0.1:{service.port}")
    latency = Guardrail(
        name="latency-p95",
        query=(
            "histogram_quantile(0.95, sum by (le) "
            f'(rate(ai_request_duration_seconds_bucket{{job="{job}",variant="{{{{variant}}}}"}}[10s])))'
        ),
        max=0.5,
    )

    async def judged(outcome: Outcome) -> GuardrailVerdict | None:
        verdict = await measure(latency, VARS, prometheus, "canary", "stable")
        assert verdict.outcome is not Outcome.ERROR, verdict.error
        return verdict if verdict.outcome is outcome else None

    await eventually("the candidate's p95 passing at 10 %", lambda: judged(Outcome.PASSED))
    split.percent = 50
    verdict = await eventually("the candidate's p95 breaching at 50 %", lambda: judged(Outcome.BREACHED))
    (segment,) = verdict.segments
    assert segment.segment == ""
    assert segment.value is not None
    assert segment.value > 0.5
    assert segment.message.startswith("latency-p95 breached: ")
    assert segment.control_value is not None
    assert segment.control_value < 0.5  # the control never slowed down
    assert segment.message.endswith(f" > max 0.5 (control {segment.control_value:.4g}, window 10s)")


async def test_queries_are_evaluated_at_the_start_of_their_window(testbed: Testbed) -> None:
    source = PrometheusSource(testbed.prometheus_url, share_seconds=10)
    before = time.time()
    (evaluated,) = await source.query("time()")
    assert evaluated.value % 10 == 0
    assert before - 10 < evaluated.value <= time.time()
    await source.aclose()


async def test_identical_queries_from_many_rollouts_reach_prometheus_once_and_agree(
    ai_service: AIService, testbed: Testbed, prometheus: PrometheusSource
) -> None:
    query = f'sum by (locale) (rate(ai_requests_total{{job="{JOB}"}}[10s]))'
    await eventually("requests in every locale", lambda: _all_locales(prometheus, query))
    # A second into a window: the scrapes before its start are stored, and it does not end before all have asked.
    into = time.time() % 5
    await asyncio.sleep(max(0.0, 1 - into) if into < 3 else 6 - into)

    mine = PrometheusSource(testbed.prometheus_url, share_seconds=5)
    answers = await asyncio.gather(*(mine.query(query) for _ in range(50)))
    assert len(answers[0]) == len(LOCALES)
    assert all(answer == answers[0] for answer in answers)
    assert (mine.counters.issued, mine.counters.shared) == (1, 49)

    # Another source (other credentials, say) shares nothing, yet asks the same question in the same window:
    # the same time, so the same numbers, though the rate moves every second.
    theirs = PrometheusSource(testbed.prometheus_url, share_seconds=5)
    assert sorted(await theirs.query(query), key=str) == sorted(answers[0], key=str)
    assert theirs.counters.issued == 1
    await mine.aclose()
    await theirs.aclose()


async def _all_locales(source: PrometheusSource, query: str) -> bool:
    return len(await source.query(query)) == len(LOCALES)
