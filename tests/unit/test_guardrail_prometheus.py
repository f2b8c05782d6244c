"""`measure` against a stand-in source, and `PrometheusSource`'s error mapping against a loopback HTTP stub.

The real Prometheus is exercised in tests/integration/test_guardrails_prometheus.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import airollout.guardrails
from airollout.guardrails import (
    GuardrailQueryFailed,
    Outcome,
    PrometheusSource,
    QueryVariables,
    Sample,
    measure,
)
from airollout.model.spec import Guardrail

VARS = QueryVariables(flag="ai-summary", namespace="shop", stage="canary-5")
ERROR_RATE = Guardrail(
    name="error-rate",
    query='sum by (locale, variant) (rate(ai_errors_total{variant="{{variant}}"}[30s]))',
    max=0.05,
    max_increase_over_control=0.5,
)


class FakeSource:
    """Answers from a table keyed by the rendered query; records what it was asked."""

    def __init__(self, answers: dict[str, list[Sample] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def query(self, promql: str) -> list[Sample]:
        self.asked.append(promql)
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer


def rendered(variant: str) -> str:
    return f'sum by (locale, variant) (rate(ai_errors_total{{variant="{variant}"}}[30s]))'


def test_the_public_surface_is_pinned() -> None:
    assert sorted(airollout.guardrails.__all__) == [
        "GuardrailQueryFailed",
        "GuardrailVerdict",
        "MetricsSource",
        "Outcome",
        "PrometheusSource",
        "QueryTemplateInvalid",
        "QueryVariables",
        "Sample",
        "SegmentJudgement",
        "judge",
        "judge_error",
        "measure",
        "overall",
        "render_query",
        "validate_query",
    ]


async def test_measure_pairs_candidate_and_control_segments_despite_their_variant_labels() -> None:
    source = FakeSource(
        {
            rendered("canary"): [
                Sample({"locale": "en", "variant": "canary"}, 0.01),
                Sample({"locale": "de", "variant": "canary"}, 0.04),
            ],
            rendered("stable"): [
                Sample({"locale": "en", "variant": "stable"}, 0.01),
                Sample({"locale": "de", "variant": "stable"}, 0.01),
            ],
        }
    )
    verdict = await measure(ERROR_RATE, VARS, source, "canary", "stable")
    assert sorted(source.asked) == sorted([rendered("canary"), rendered("stable")])
    assert verdict.outcome is Outcome.BREACHED
    en, de = verdict.segments
    assert (en.segment, en.outcome, en.control_value) == ('locale="en"', Outcome.PASSED, 0.01)
    assert (de.segment, de.outcome, de.control_value) == ('locale="de"', Outcome.BREACHED, 0.01)
    assert de.message == 'error-rate breached for locale="de": 0.04 > control 0.01 +50% = 0.015 (window 30s)'


async def test_only_labels_holding_the_variant_on_every_series_are_dropped() -> None:
    source = FakeSource(
        {
            rendered("canary"): [
                Sample({"locale": "en", "variant": "canary", "model": "canary"}, 0.01),
                Sample({"locale": "de", "variant": "canary", "model": "big"}, 0.01),
            ],
            rendered("stable"): [],
        }
    )
    verdict = await measure(ERROR_RATE, VARS, source, "canary", "stable")
    assert [s.segment for s in verdict.segments] == ['locale="en",model="canary"', 'locale="de",model="big"']


async def test_without_a_control_only_the_candidate_is_queried() -> None:
    source = FakeSource({rendered("canary"): [Sample({"locale": "en"}, 0.01)]})
    verdict = await measure(ERROR_RATE, VARS, source, "canary", None)
    assert source.asked == [rendered("canary")]
    assert verdict.outcome is Outcome.PASSED


async def test_both_queries_are_in_flight_at_once() -> None:
    both_asked = asyncio.Event()
    asked = 0

    class Barrier:
        async def query(self, promql: str) -> list[Sample]:
            nonlocal asked
            asked += 1
            if asked == 2:
                both_asked.set()
            await asyncio.wait_for(both_asked.wait(), timeout=10)
            return [Sample({}, 0.0)]

    verdict = await measure(ERROR_RATE, VARS, Barrier(), "canary", "stable")
    assert verdict.outcome is Outcome.PASSED


async def test_a_failed_query_is_an_error_quoting_the_cause_and_the_query() -> None:
    failure = GuardrailQueryFailed(
        "Prometheus at http://p answered HTTP 400 (bad_data): parse error", rendered("stable")
    )
    source = FakeSource({rendered("canary"): [Sample({}, 9.0)], rendered("stable"): failure})
    verdict = await measure(ERROR_RATE, VARS, source, "canary", "stable")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error == (
        "control query failed: Prometheus at http://p answered HTTP 400 (bad_data): parse error "
        f"(query: {rendered('stable')})"
    )


async def test_an_invalid_template_is_an_error_and_asks_nothing() -> None:
    source = FakeSource({})
    bad = ERROR_RATE.model_copy(update={"query": 'x{v="{{variants}}"}'})
    verdict = await measure(bad, VARS, source, "canary", "stable")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error is not None
    assert verdict.error.startswith("the query template is invalid: unknown placeholder {{variants}}")
    assert source.asked == []


async def test_a_bug_in_a_source_is_not_disguised_as_a_measurement() -> None:
    source = FakeSource({rendered("canary"): RuntimeError("bug"), rendered("stable"): []})
    with pytest.raises(RuntimeError, match="bug"):
        await measure(ERROR_RATE, VARS, source, "canary", "stable")


# PrometheusSource against a stub ------------------------------------------------------------------------------


class Stub:
    """A loopback HTTP server answering every request with the next canned (status, body)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes] = (200, b"")
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.hang = False
        self.released = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, dict(self.headers)))
                if stub.hang:
                    stub.released.wait(timeout=30)
                status, body = stub.answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer_json(self, status: int, payload: object) -> None:
        self.answer = (status, json.dumps(payload).encode())


@pytest.fixture
def stub() -> Iterator[Stub]:
    stub = Stub()
    thread = threading.Thread(target=stub.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield stub
    stub.released.set()
    stub.server.shutdown()
    stub.server.server_close()


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [1700000000.0, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


async def test_a_vector_becomes_samples_with_nan_kept_as_nan(stub: Stub) -> None:
    stub.answer_json(200, vector(({"locale": "de"}, "0.25"), ({"locale": "ja"}, "NaN"), ({}, "+Inf")))
    samples = await PrometheusSource(stub.url).query("q")
    assert [(s.labels, s.value) for s in samples[:1]] == [({"locale": "de"}, 0.25)]
    assert samples[1].value != samples[1].value
    assert samples[2].value == float("inf")


async def test_a_scalar_becomes_one_label_less_sample(stub: Stub) -> None:
    stub.answer_json(200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}})
    assert await PrometheusSource(stub.url).query("scalar(x)") == [Sample({}, 3.0)]


async def test_headers_bearer_token_and_timeout_are_sent(stub: Stub) -> None:
    stub.answer_json(200, vector())
    source = PrometheusSource(stub.url, headers={"X-Scope-OrgID": "team-a"}, bearer_token="s3cret", timeout=7)
    await source.query("up")
    path, headers = stub.requests[0]
    assert headers["X-Scope-OrgID"] == "team-a"
    assert headers["Authorization"] == "Bearer s3cret"
    assert "timeout=7&" in path or path.endswith("timeout=7")


async def test_prometheus_error_text_is_quoted(stub: Stub) -> None:
    stub.answer_json(503, {"status": "error", "errorType": "timeout", "error": "query timed out in query execution"})
    with pytest.raises(GuardrailQueryFailed) as caught:
        await PrometheusSource(stub.url).query("up")
    assert str(caught.value) == (
        f"Prometheus at {stub.url} answered HTTP 503 (timeout): query timed out in query execution"
    )
    assert caught.value.query == "up"


async def test_a_silent_prometheus_times_out_as_an_error(stub: Stub) -> None:
    stub.hang = True
    with pytest.raises(GuardrailQueryFailed, match=r"^Prometheus at .* did not answer within 1\.2s$"):
        await PrometheusSource(stub.url, timeout=0.2).query("up")


async def test_a_proxy_error_page_is_quoted_as_text(stub: Stub) -> None:
    stub.answer = (401, b"Unauthorized: token expired\n")
    with pytest.raises(GuardrailQueryFailed, match=r"answered HTTP 401: Unauthorized: token expired$"):
        await PrometheusSource(stub.url).query("up")


async def test_an_answer_that_is_not_prometheus_json_fails_clearly(stub: Stub) -> None:
    stub.answer = (200, b"<html>login</html>")
    with pytest.raises(GuardrailQueryFailed, match="gave an unusable answer"):
        await PrometheusSource(stub.url).query("up")


async def test_a_range_vector_is_refused_with_a_hint(stub: Stub) -> None:
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": []}]}}
    stub.answer_json(200, matrix)
    with pytest.raises(GuardrailQueryFailed, match=r"range vector.*rate\(\)"):
        await PrometheusSource(stub.url).query("up[5m]")
