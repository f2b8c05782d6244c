"""Queries shared between rollouts: asked once per window, bounded per Prometheus, counted for metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from airollout.guardrails import GuardrailQueryFailed, PrometheusSource, QueryCounters, Sample
from airollout.guardrails.sharing import SharedQueries

URL = "http://prometheus.test:9090"


def vector(value: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]}}


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v for k, (v,) in parse_qs(request.content.decode()).items()}


class Held:
    """A Prometheus that answers every query with its own text as the value, once released."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.released = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        query = form(request)["query"]
        self.asked.append(query)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.released.wait()
        finally:
            self.in_flight -= 1
        return httpx.Response(200, json=vector(query))

    def source(self, **options: Any) -> PrometheusSource:
        # An hour-long window: the callers of one test never straddle two windows.
        return PrometheusSource(URL, transport=httpx.MockTransport(self), **{"share_seconds": 3600, **options})


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_identical_queries_asked_at_once_reach_prometheus_once() -> None:
    prometheus = Held()
    source = prometheus.source()
    callers = [asyncio.create_task(source.query("7")) for _ in range(50)]
    await settle()
    prometheus.released.set()
    answers = await asyncio.gather(*callers)
    assert prometheus.asked == ["7"]
    assert answers == [[Sample({}, 7.0)]] * 50
    assert source.counters == QueryCounters(issued=1, shared=49, waiting=0, in_flight=0)


async def test_an_identical_query_later_in_the_window_reuses_the_answer() -> None:
    prometheus = Held()
    prometheus.released.set()
    source = prometheus.source()
    first = await source.query("1")
    first.append(Sample({}, 2.0))  # a caller changing its copy changes nobody else's
    assert await source.query("1") == [Sample({}, 1.0)]
    assert prometheus.asked == ["1"]
    assert source.counters.shared == 1


async def test_queries_in_flight_per_prometheus_are_bounded_and_the_rest_counted_as_waiting() -> None:
    prometheus = Held()
    source = prometheus.source(concurrency=3)
    callers = [asyncio.create_task(source.query(str(i))) for i in range(10)]
    await settle()
    assert prometheus.in_flight == 3
    assert (source.counters.in_flight, source.counters.waiting) == (3, 7)
    prometheus.released.set()
    assert [s[0].value for s in await asyncio.gather(*callers)] == [float(i) for i in range(10)]
    assert prometheus.most_in_flight == 3
    assert source.counters == QueryCounters(issued=10, shared=0, waiting=0, in_flight=0)


async def test_a_query_that_never_gets_a_slot_fails_within_the_deadline_saying_so() -> None:
    prometheus = Held()
    source = prometheus.source(concurrency=1, timeout=0.2)
    first, second = await asyncio.gather(source.query("1"), source.query("2"), return_exceptions=True)
    assert str(first) == f"Prometheus at {URL} did not answer within 1.2s"
    assert str(second) == (
        f"Prometheus at {URL} did not answer within 1.2s: the query waited all that time for one of the 1 "
        "queries allowed in flight at once, all held by slower ones"
    )
    assert isinstance(second, GuardrailQueryFailed)
    assert second.query == "2"
    assert prometheus.asked == ["1"]
    assert source.counters == QueryCounters(issued=1, shared=0, waiting=0, in_flight=0)


async def test_a_failure_is_shared_like_an_answer() -> None:
    asked = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.01)
        return httpx.Response(503, json={"status": "error", "errorType": "unavailable", "error": "overloaded"})

    source = PrometheusSource(URL, transport=httpx.MockTransport(handler), share_seconds=3600)
    failures = await asyncio.gather(*(source.query("up") for _ in range(5)), return_exceptions=True)
    assert asked == 1
    assert {str(f) for f in failures} == {f"Prometheus at {URL} answered HTTP 503 (unavailable): overloaded"}


async def test_a_caller_giving_up_does_not_cancel_the_answer_others_await() -> None:
    prometheus = Held()
    source = prometheus.source()
    quitter, stayer = asyncio.create_task(source.query("5")), asyncio.create_task(source.query("5"))
    await settle()
    quitter.cancel()
    await settle()
    prometheus.released.set()
    assert await stayer == [Sample({}, 5.0)]
    assert quitter.cancelled()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    async def __call__(self, promql: str, at: float) -> Sequence[Sample]:
        self.asked.append((promql, at))
        return [Sample({}, at)]


def shared(fetch: Recorder, clock: Clock) -> SharedQueries:
    return SharedQueries(fetch, name="P", deadline=5, concurrency=2, share_seconds=5, clock=clock)


async def test_queries_are_evaluated_at_the_start_of_their_window_and_asked_anew_in_the_next() -> None:
    fetch, clock = Recorder(), Clock(1_700_000_003.7)
    queries = shared(fetch, clock)
    assert await queries.query("up") == [Sample({}, 1_700_000_000.0)]
    clock.now = 1_700_000_004.99
    assert await queries.query("up") == [Sample({}, 1_700_000_000.0)]
    clock.now = 1_700_000_005.0
    assert await queries.query("up") == [Sample({}, 1_700_000_005.0)]
    assert fetch.asked == [("up", 1_700_000_000.0), ("up", 1_700_000_005.0)]
    assert queries.counters == QueryCounters(issued=2, shared=1)


async def test_close_abandons_the_queries_in_flight() -> None:
    never = asyncio.Event()

    async def fetch(promql: str, at: float) -> Sequence[Sample]:
        await never.wait()
        return []

    queries = SharedQueries(fetch, name="P", deadline=60, concurrency=1, share_seconds=5)
    caller = asyncio.create_task(queries.query("up"))
    await settle()
    queries.close()
    with pytest.raises(asyncio.CancelledError):
        await caller


@pytest.mark.parametrize(
    ("options", "message"),
    [({"concurrency": 0}, "concurrency must be at least 1, got 0"), ({"share_seconds": 0}, "must be positive")],
)
def test_settings_that_would_stall_every_query_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrometheusSource(URL, **options)


async def test_an_analysis_tick_is_asked_once_however_late_its_rollouts_ask() -> None:
    asked: list[tuple[str, float]] = []

    async def fetch(promql: str, at: float) -> list[Sample]:
        asked.append((promql, at))
        return [Sample({}, 0.01)]

    clock = [1_000.0]
    shared = SharedQueries(fetch, name="Prometheus", deadline=5, concurrency=2, share_seconds=1, clock=lambda: clock[0])
    for late in (0.0, 1.5, 4.0, 9.9):  # a queue of a thousand rollouts takes seconds to reach the last
        clock[0] = 1_000.0 + late
        assert await shared.query("errors", at=990.0) == [Sample({}, 0.01)]
    assert asked == [("errors", 990.0)]
    assert shared.counters.shared == 3
    await shared.query("errors")  # a stage's deciding analysis asks for now, not the tick
    assert asked[-1] == ("errors", 1_009.0)
