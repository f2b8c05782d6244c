"""`measure` against a stand-in source, and `PrometheusSource` against answers through httpx's MockTransport.

The real Prometheus is exercised in tests/integration/test_guardrails_prometheus.py, a hostile one over real
HTTP in tests/reliability/.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest

import airollout.guardrails
from airollout.guardrails import (
    GuardrailLimits,
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

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        self.asked.append(promql)
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer


def rendered(variant: str) -> str:
    return f'sum by (locale, variant) (rate(ai_errors_total{{variant="{variant}"}}[30s]))'


def test_the_public_surface_is_pinned() -> None:
    assert sorted(airollout.guardrails.__all__) == [
        "GuardrailLimits",
        "GuardrailQueryFailed",
        "GuardrailVerdict",
        "MetricsSource",
        "Outcome",
        "PrometheusSource",
        "QueryCounters",
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
        async def query(self, promql: str, at: float | None = None) -> list[Sample]:
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


# PrometheusSource through MockTransport -------------------------------------------------------------------------

URL = "http://prometheus.test:9090"
TOKEN = "tok/en+42=="
TENANT = "team-a-7f3c"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def source(handler: Handler, **options: Any) -> PrometheusSource:
    return PrometheusSource(URL, transport=httpx.MockTransport(handler), **options)


def answering(status: int, payload: object = None, **response: Any) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        if payload is not None:
            response["json"] = payload
        return httpx.Response(status, **response)

    return handler


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [1700000000.0, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


async def failure(handler: Handler, **options: Any) -> str:
    with pytest.raises(GuardrailQueryFailed) as caught:
        await source(handler, **options).query("up")
    assert caught.value.query == "up"
    return str(caught.value)


async def test_a_vector_becomes_samples_with_nan_and_infinities_kept() -> None:
    answer = vector(({"locale": "de"}, "0.25"), ({"locale": "ja"}, "NaN"), ({}, "+Inf"), ({}, "-Inf"))
    samples = await source(answering(200, answer)).query("q")
    assert [(s.labels, s.value) for s in samples[:1]] == [({"locale": "de"}, 0.25)]
    assert samples[1].value != samples[1].value
    assert [s.value for s in samples[2:]] == [float("inf"), float("-inf")]


async def test_a_scalar_becomes_one_label_less_sample() -> None:
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert await source(answering(200, answer)).query("scalar(x)") == [Sample({}, 3.0)]


async def test_the_query_goes_by_post_with_credentials_an_aligned_time_and_prometheus_timeout() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector())

    prometheus = source(handler, headers={"X-Scope-OrgID": TENANT}, bearer_token=TOKEN, timeout=7, share_seconds=5)
    await prometheus.query('sum(rate(x{a="b"}[5m]))')
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", f"{URL}/api/v1/query")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["X-Scope-OrgID"] == TENANT
    form = {k: v for k, (v,) in parse_qs(request.content.decode()).items()}
    assert form["query"] == 'sum(rate(x{a="b"}[5m]))'
    assert form["timeout"] == "7"
    assert float(form["time"]) % 5 == 0


async def test_a_token_written_with_echo_is_sent_without_its_newline() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector())

    await source(handler, bearer_token=f"{TOKEN}\n", headers={"X-Scope-OrgID": f" {TENANT}\r\n"}).query("up")
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["X-Scope-OrgID"] == TENANT


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"bearer_token": "abc\x07def"},
            "the Prometheus bearer token contains a control character (U+0007) at position 4",
        ),
        ({"bearer_token": "abc def"}, "the Prometheus bearer token contains a space at position 4"),
        ({"bearer_token": "\n"}, "the Prometheus bearer token is empty"),
        ({"headers": {"X-Scope-OrgID": "team\x00a"}}, "the value of header X-Scope-OrgID contains a control character"),
        ({"headers": {"X-Scope-OrgID": "équipe"}}, "the value of header X-Scope-OrgID contains a non-ASCII character"),
        ({"headers": {"X Scope": "a"}}, "'X Scope' is not a valid HTTP header name"),
    ],
)
def test_a_credential_that_cannot_be_sent_is_refused_naming_the_field_and_not_the_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        PrometheusSource(URL, **options)
    assert "abc" not in str(caught.value)
    assert "team" not in str(caught.value)


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="must be an http\\(s\\) URL with a host, got 'prometheus:9090'"):
        PrometheusSource("prometheus:9090")


@pytest.mark.parametrize("status", [400, 422, 503])
async def test_prometheus_error_text_is_quoted(status: int) -> None:
    answer = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected <EOF>"}
    assert await failure(answering(status, answer)) == (
        f"Prometheus at {URL} answered HTTP {status} (bad_data): 1:5: parse error: unexpected <EOF>"
    )


async def test_status_error_with_healthy_looking_data_is_an_error_not_data() -> None:
    answer = {**vector(({}, "0.001")), "status": "error", "errorType": "execution", "error": "partial result"}
    assert await failure(answering(200, answer)) == (
        f"Prometheus at {URL} answered HTTP 200 with status error (execution): partial result"
    )


async def test_an_answer_without_status_success_is_an_error() -> None:
    answer = {"data": vector(({}, "0.001"))["data"]}
    assert (
        await failure(answering(200, answer))
        == f"Prometheus at {URL} answered HTTP 200 without status success (status null)"
    )


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            {"status_code": 401, "text": "Unauthorized: token expired\n"},
            "answered HTTP 401: Unauthorized: token expired",
        ),
        ({"status_code": 502, "content": b""}, "answered HTTP 502: (empty body)"),
        (
            {"status_code": 200, "text": "<html>\n<body>login</body></html>", "headers": {"content-type": "text/html"}},
            "answered HTTP 200 with text/html, not Prometheus's JSON: <html> <body>login</body></html>",
        ),
        ({"status_code": 200, "text": '{"status": "success", "data": '}, "not Prometheus's JSON"),
        ({"status_code": 200, "text": "[" * 100_000}, "not Prometheus's JSON"),
        ({"status_code": 200, "json": ["success"]}, "not Prometheus's JSON"),
        ({"status_code": 200, "json": {"status": "success"}}, "answered status success without a data object"),
        (
            {"status_code": 200, "json": {"status": "success", "data": {"resultType": "matrix", "result": []}}},
            "returned a range vector; a guardrail needs an instant vector or a scalar (wrap the range selector "
            "in a function such as rate())",
        ),
        (
            {"status_code": 200, "json": {"status": "success", "data": {"resultType": "string", "result": [1, "a"]}}},
            "returned a string; a guardrail needs a number",
        ),
        (
            {"status_code": 200, "json": {"status": "success", "data": {"resultType": "histogram", "result": []}}},
            'answered with a result of type "histogram", not a vector or a scalar',
        ),
        (
            {"status_code": 200, "json": vector(({}, "fast"))},
            'answered a value for series 1 that is not [time, "number"]',
        ),
        (
            {"status_code": 200, "json": {"status": "success", "data": {"resultType": "vector", "result": [7]}}},
            "answered a vector whose series 1 is not an object",
        ),
        (
            {"status_code": 200, "json": {"status": "success", "data": {"resultType": "scalar", "result": 3}}},
            'answered a value for the scalar that is not [time, "number"]',
        ),
    ],
)
async def test_anything_but_a_vector_or_scalar_of_numbers_is_an_error_saying_what_came(
    response: dict[str, Any], message: str
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(**response)

    text = await failure(handler)
    assert text.startswith(f"Prometheus at {URL} ")
    assert message in text
    assert len(text) < 2 * 300 + 100  # at most two quotes from the answer


async def test_too_many_series_is_an_error_asking_to_aggregate() -> None:
    answer = vector(*(({"pod": f"p{i}"}, "1") for i in range(20_000)))
    assert await failure(answering(200, answer)) == (
        f"Prometheus at {URL} returned 20000 series; a guardrail judges at most 500: aggregate them with "
        "sum by (...) over the labels that name a segment, such as locale"
    )
    assert len(await source(answering(200, answer), limits=GuardrailLimits(max_series=20_000)).query("up")) == 20_000


async def test_an_answer_larger_than_the_limit_is_refused_as_it_streams() -> None:
    sent = 0

    async def endless() -> Any:
        nonlocal sent
        while True:
            sent += 65536
            yield b" " * 65536

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    limits = GuardrailLimits(max_answer_bytes=1_000_000)
    assert await failure(handler, limits=limits) == (
        f"Prometheus at {URL} answered more than 1000000 bytes; a guardrail query returns a few series: "
        "aggregate with sum by (...)"
    )
    assert sent < 1_200_000


async def test_an_answer_declaring_a_length_over_the_limit_is_not_read() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(50 * 2**20)}, content=b"")

    assert "answered more than 5 MiB" in await failure(handler)


async def test_a_compressed_answer_is_refused_since_none_was_asked_for() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"\x1f\x8b")

    assert await failure(handler) == f"Prometheus at {URL} answered with Content-Encoding gzip, though asked for none"
    assert seen[0].headers["Accept-Encoding"] == "identity"


async def test_a_redirect_is_not_followed_and_says_where_it_points() -> None:
    asked: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(302, headers={"location": "https://login.example/sso?next=/api/v1/query"})

    assert await failure(handler, bearer_token=TOKEN) == (
        f"Prometheus at {URL} answered HTTP 302, a redirect to https://login.example/sso?next=/api/v1/query; "
        "redirects are not followed (the credentials would go along): set spec.prometheus.url to where it points"
    )
    assert asked == [f"{URL}/api/v1/query"]


async def test_a_silent_prometheus_is_an_error_after_the_timeout_and_a_grace_second() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    started = asyncio.get_running_loop().time()
    assert await failure(handler, timeout=0.2) == f"Prometheus at {URL} did not answer within 1.2s"
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_transport_failure_is_an_error_in_its_own_words() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    assert await failure(handler) == (
        f"Prometheus at {URL} failed to answer: Server disconnected without sending a response."
    )


@pytest.mark.parametrize(
    "echo",
    [
        lambda r: httpx.Response(400, text=f"bad request; headers were: {dict(r.headers)}"),
        lambda r: httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": str(dict(r.headers))}),
        lambda r: httpx.Response(200, json={"status": "error", "errorType": r.headers["authorization"], "error": "x"}),
        lambda r: httpx.Response(200, text=json.dumps({"headers": dict(r.headers)})),
        lambda r: httpx.Response(200, text=f"<p>{quote(TOKEN, safe='')} {TENANT}</p>"),
        lambda r: httpx.Response(302, headers={"location": f"http://elsewhere/?t={TOKEN}&org={TENANT}"}),
    ],
)
async def test_credentials_echoed_back_never_leave_the_source(echo: Callable[[httpx.Request], httpx.Response]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return echo(request)

    text = await failure(handler, bearer_token=TOKEN, headers={"X-Scope-OrgID": TENANT})
    assert TOKEN not in text
    assert TENANT not in text
    assert "tok" not in text


async def test_a_password_in_the_url_is_sent_as_basic_authentication_and_never_shown() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"denied: {request.headers['authorization']} (reader:pa/ss)")

    prometheus = PrometheusSource("http://reader:pa%2Fss@prometheus.test:9090", transport=httpx.MockTransport(handler))
    with pytest.raises(GuardrailQueryFailed) as caught:
        await prometheus.query("up")
    assert (
        str(caught.value)
        == "Prometheus at http://reader:***@prometheus.test:9090 answered HTTP 401: denied: Basic *** (reader:***)"
    )


async def test_credentials_in_a_library_error_never_leave_the_source() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused {request.headers['authorization']}", request=request)

    text = await failure(handler, bearer_token=TOKEN)
    assert text == f"Prometheus at {URL} is unreachable: proxy refused Bearer ***"


async def test_quoted_text_is_bounded_and_on_one_line() -> None:
    text = await failure(answering(500, text="Traceback (most recent call last):\n" + "  frame\n" * 100_000))
    assert text.startswith(f"Prometheus at {URL} answered HTTP 500: Traceback (most recent call last): frame frame")
    assert text.endswith("…")
    assert len(text) < len(f"Prometheus at {URL} answered HTTP 500: ") + 300 + 1
    assert "\n" not in text


async def test_it_answers_again_once_prometheus_does() -> None:
    answers = [httpx.Response(200, text="<html>maintenance</html>"), httpx.Response(200, json=vector(({}, "0.5")))]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    prometheus = source(handler, share_seconds=0.001)
    with pytest.raises(GuardrailQueryFailed, match="maintenance"):
        await prometheus.query("up")
    await asyncio.sleep(0.002)
    assert await prometheus.query("up") == [Sample({}, 0.5)]


async def test_measure_quotes_a_long_query_cut_and_keeps_the_error_bounded() -> None:
    long = Guardrail(name="long", query='sum(rate(x{variant="{{variant}}",path=~"' + "a|" * 2000 + 'b"}[5m]))', max=1)
    verdict = await measure(long, VARS, source(answering(400, text="bad_data " * 1000)), "canary", "stable")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error is not None
    assert len(verdict.error) <= 1000
    assert verdict.error.startswith(f"candidate query failed: Prometheus at {URL} answered HTTP 400: bad_data")
    assert '(query: sum(rate(x{variant="canary",path=~"a|a|' in verdict.error


# The host name is resolved off the default executor --------------------------------------------------------------


class Loopback:
    """A one-answer HTTP server on 127.0.0.1, for what only a real socket shows."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback(json.dumps(vector(({}, "1"))).encode())
    thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class Occupied(concurrent.futures.ThreadPoolExecutor):
    """A default executor whose threads are all taken, as by hung DNS look-ups or Secret reads."""

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()


async def test_a_query_by_host_name_needs_no_thread_of_the_default_executor(loopback: Loopback) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(Occupied())
    prometheus = PrometheusSource(f"http://localhost:{loopback.port}", timeout=5)
    assert await prometheus.query("up") == [Sample({}, 1.0)]
    await prometheus.aclose()


async def test_close_from_synchronous_code_closes_in_the_background(loopback: Loopback) -> None:
    prometheus = PrometheusSource(f"http://127.0.0.1:{loopback.port}")
    await prometheus.query("up")
    prometheus.close()
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError, match="client has been closed"):
        await prometheus.query("other")


async def test_a_refused_connection_says_so_in_the_operating_systems_words() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    prometheus = PrometheusSource(f"http://127.0.0.1:{port}")
    with pytest.raises(GuardrailQueryFailed) as caught:
        await prometheus.query("up")
    assert str(caught.value).startswith(f"Prometheus at http://127.0.0.1:{port} is unreachable: ")
    assert str(caught.value).endswith(": Connection refused")
    await prometheus.aclose()
