"""Guardrails against a hostile Prometheus over real HTTP: what is not an answer is an Error, never a verdict.

Whatever the server sends, a guardrail must neither breach (which rolls back a healthy release) nor pass
(which advances one nobody measured) on something that is not an answer; its words stay bounded and one line
and never carry the credentials it sent; the event loop and the default executor, which the kill switch
needs, stay free; and it measures again as soon as Prometheus behaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from airollout.guardrails import GuardrailVerdict, Outcome, PrometheusSource, QueryVariables, measure
from airollout.model.spec import Guardrail
from tests.reliability.hostile_prometheus import GARBAGE, Behaviour, HostilePrometheus

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcGVyYXRvciJ9.s3cr3t/T0k+en=="
TENANT = "tenant-7f3c9a"
VARS = QueryVariables(flag="ai-summary", namespace="shop", stage="canary-5")
QUERY = 'sum by (locale) (rate(ai_errors_total{variant="{{variant}}"}[5m]))'
SLOW = {Behaviour.DELAY, Behaviour.SLOW_BODY}
TIMEOUT = 0.5  # seconds Prometheus may take; a query gets one more


def guardrails(policy: str) -> list[Guardrail]:
    """One guardrail of each direction: above a max, below a min, worse than the control."""
    return [
        Guardrail(name="error-rate", query=QUERY, max=0.05, no_data=policy),
        Guardrail(name="quality", query=QUERY, min=0.001, no_data=policy),
        Guardrail(name="vs-control", query=QUERY, max_increase_over_control=0.5, no_data=policy),
    ]


async def measure_all(source: PrometheusSource, policy: str) -> list[GuardrailVerdict]:
    return list(await asyncio.gather(*(measure(g, VARS, source, "canary", "stable") for g in guardrails(policy))))


@pytest.fixture
async def source(hostile: HostilePrometheus) -> AsyncIterator[PrometheusSource]:
    # A window of 1 ms: a query asked after a test changed the server's behaviour is never answered from before.
    prometheus = PrometheusSource(
        hostile.url,
        bearer_token=f"{TOKEN}\n",
        headers={"X-Scope-OrgID": TENANT},
        timeout=TIMEOUT,
        concurrency=32,
        share_seconds=0.001,
    )
    yield prometheus
    await prometheus.aclose()


def assert_fit_to_show(verdict: GuardrailVerdict) -> None:
    """Every text bounded, on one line, free of the credentials sent."""
    texts = [verdict.error or "", *(s.message for s in verdict.segments), *(s.segment for s in verdict.segments)]
    for text in texts:
        assert len(text) <= 1000
        assert text.isprintable()
        for secret in (TOKEN, TENANT, "s3cr3t", "eyJhbGci", "7f3c9a"):
            assert secret not in text


async def max_loop_lag(done: asyncio.Event) -> float:
    """The longest the event loop was away until ``done``: how long a kill switch would have waited."""
    worst, last = 0.0, time.monotonic()
    while not done.is_set():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        worst, last = max(worst, now - last - 0.01), now
    return worst


async def settle_window() -> None:
    await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "behaviour",
    [pytest.param(b, marks=pytest.mark.slow) if b in SLOW else b for b in sorted(GARBAGE)],
)
async def test_garbage_is_an_error_under_every_policy_and_healthy_answers_are_judged_again(
    hostile: HostilePrometheus, source: PrometheusSource, behaviour: Behaviour
) -> None:
    hostile.behave(behaviour)
    done = asyncio.Event()
    lag = asyncio.create_task(max_loop_lag(done))
    started = time.monotonic()
    verdicts = [v for policy in ("hold", "pass", "fail") for v in await measure_all(source, policy)]
    done.set()
    assert [v.outcome for v in verdicts] == [Outcome.ERROR] * 9, [v.error for v in verdicts]
    for verdict in verdicts:
        assert_fit_to_show(verdict)
    assert time.monotonic() - started < 3 * (TIMEOUT + 1) + 2
    assert await lag < 0.5

    hostile.behave(Behaviour.HEALTHY)
    await settle_window()
    assert [v.outcome for v in await measure_all(source, "hold")] == [Outcome.PASSED] * 3


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        (Behaviour.STATUS_ERROR_WITH_DATA, "answered HTTP 200 with status error (execution): query processing failed"),
        (Behaviour.HTML, "answered HTTP 200 with text/html; charset=utf-8, not Prometheus's JSON: <!DOCTYPE html>"),
        (Behaviour.MALFORMED_JSON, "not Prometheus's JSON"),
        (Behaviour.MATRIX, "returned a range vector"),
        (Behaviour.MANY_SERIES, "returned 20000 series; a guardrail judges at most 500: aggregate them with sum by"),
        (Behaviour.HUGE_BODY, "answered more than 5 MiB"),
        (Behaviour.REDIRECT_LOOP, "answered HTTP 302, a redirect to /api/v1/query; redirects are not followed"),
        (Behaviour.DISCONNECT, "failed to answer: Server disconnected without sending a response."),
        pytest.param(Behaviour.DELAY, f"did not answer within {TIMEOUT + 1:g}s", marks=pytest.mark.slow),
        pytest.param(Behaviour.SLOW_BODY, f"did not answer within {TIMEOUT + 1:g}s", marks=pytest.mark.slow),
    ],
)
async def test_the_error_says_what_came_back(
    hostile: HostilePrometheus, source: PrometheusSource, behaviour: Behaviour, message: str
) -> None:
    hostile.behave(behaviour)
    verdict = await measure(guardrails("hold")[0], VARS, source, "canary", None)
    assert verdict.error is not None
    assert verdict.error.startswith(f"candidate query failed: Prometheus at {hostile.url} ")
    assert message in verdict.error


async def test_credentials_a_proxy_echoes_back_never_reach_status(
    hostile: HostilePrometheus, source: PrometheusSource
) -> None:
    hostile.behave(Behaviour.ECHO_HEADERS)
    verdict = await measure(guardrails("hold")[0], VARS, source, "canary", None)
    assert hostile.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert hostile.requests[-1].headers["X-Scope-OrgID"] == TENANT
    assert verdict.error is not None
    assert "answered HTTP 400: 400 Bad Request Your request carried: " in verdict.error
    assert "Authorization: Bearer *** " in verdict.error
    assert "X-Scope-OrgID: *** " in verdict.error
    assert_fit_to_show(verdict)


@pytest.mark.parametrize("behaviour", [Behaviour.EMPTY, Behaviour.NAN])
@pytest.mark.parametrize(
    ("policy", "outcome"), [("hold", Outcome.NO_DATA), ("pass", Outcome.PASSED), ("fail", Outcome.BREACHED)]
)
async def test_empty_and_nan_are_no_data_and_follow_the_policy(
    hostile: HostilePrometheus, source: PrometheusSource, behaviour: Behaviour, policy: str, outcome: Outcome
) -> None:
    hostile.behave(behaviour)
    assert [v.outcome for v in await measure_all(source, policy)] == [outcome] * 3


@pytest.mark.parametrize("policy", ["hold", "pass", "fail"])
@pytest.mark.parametrize(
    ("behaviour", "outcomes"),
    [
        (Behaviour.PLUS_INF, {"error-rate": Outcome.BREACHED, "quality": Outcome.PASSED}),
        (Behaviour.MINUS_INF, {"error-rate": Outcome.PASSED, "quality": Outcome.BREACHED}),
    ],
)
async def test_infinities_are_judged_as_values_whatever_the_no_data_policy(
    hostile: HostilePrometheus,
    source: PrometheusSource,
    behaviour: Behaviour,
    outcomes: dict[str, Outcome],
    policy: str,
) -> None:
    hostile.behave(behaviour)
    verdicts = await measure_all(source, policy)
    assert {v.guardrail: v.outcome for v in verdicts[:2]} == outcomes


async def test_hung_queries_leave_the_default_executor_and_the_event_loop_to_the_kill_switch(
    hostile: HostilePrometheus,
) -> None:
    hostile.behave(Behaviour.DELAY, delay=30)
    # By host name: resolving it must not take a thread of the default executor either.
    prometheus = PrometheusSource(f"http://localhost:{hostile.port}", timeout=2, concurrency=8)
    hung = [asyncio.create_task(prometheus.query(f"up{{i='{i}'}}")) for i in range(20)]
    await asyncio.sleep(0.5)
    assert prometheus.counters.in_flight == 8
    assert prometheus.counters.waiting == 12

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.01) for _ in range(32))), 1)
    assert time.monotonic() - started < 0.5

    failures: list[Any] = await asyncio.gather(*hung, return_exceptions=True)
    assert {type(f).__name__ for f in failures} == {"GuardrailQueryFailed"}
    await prometheus.aclose()
