"""Sharing guardrail queries between rollouts: Prometheus hears each question once per short window.

Rollouts that guard the same service ask the same PromQL every interval. Each query is evaluated at an
explicit time, the start of the current window of ``share_seconds``, so every rollout asking within one
window asks exactly the same question; the first one asks Prometheus, the others await that answer while
it is in flight and reuse it once it has come. A failure is shared the same way, so a struggling Prometheus
is not asked again by every rollout within one window. The price is age: an answer describes the start of
its window, so a window is a second or so, short beside any stage and analysis interval; a longer one could
judge a stage on numbers from before it began.

A semaphore bounds the queries in flight per Prometheus; the rest wait their turn, counted as queue depth.
The deadline covers waiting and answering together: a rollout learns within one timeout that Prometheus
is not keeping up, rather than queueing behind it without end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from airollout.guardrails.judging import Sample
from airollout.guardrails.source import GuardrailQueryFailed

__all__ = ["Fetch", "QueryCounters", "SharedQueries"]

_KEPT_SECONDS = 120.0
"""How long the answers of a past window or tick stay shared: longer than any analysis takes to run."""

Fetch = Callable[[str, float], Awaitable[Sequence[Sample]]]
"""Ask the backend ``promql`` evaluated at a Unix time; raise `GuardrailQueryFailed` when it cannot answer."""


@dataclass
class QueryCounters:
    """What one source did, for the operator's metrics: two counters that only grow, and two gauges."""

    issued: int = 0
    """Queries sent to Prometheus."""
    shared: int = 0
    """Queries answered by an identical query of the same window, in flight or done, without asking Prometheus."""
    waiting: int = 0
    """Queries waiting for a free slot now: the queue depth."""
    in_flight: int = 0
    """Queries Prometheus is answering now."""


class SharedQueries:
    """Answers queries through ``fetch``: once per query text and window, at most ``concurrency`` at a time."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        name: str,
        deadline: float,
        concurrency: int,
        share_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``name`` says who answers, in messages (``Prometheus at http://...``); ``deadline`` (seconds) bounds
        the wait for a slot and the answer together; ``clock`` tells Unix time."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if share_seconds <= 0:
            raise ValueError(f"share_seconds must be positive, got {share_seconds:g}")
        self.counters = QueryCounters()
        self._fetch = fetch
        self._name = name
        self._deadline = deadline
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._share_seconds = share_seconds
        self._clock = clock
        self._answers: dict[float, dict[str, asyncio.Task[tuple[Sample, ...]]]] = {}
        self._running: set[asyncio.Task[tuple[Sample, ...]]] = set()

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """``promql``'s samples at Unix time ``at``, or at the start of the current window when None.

        An explicit ``at`` is an analysis tick every rollout with the same interval shares: its answer is
        shared by all who ask for that tick, however long they take to ask. `GuardrailQueryFailed` when
        unanswered.
        """
        now = self._clock()
        window = math.floor(now / self._share_seconds) * self._share_seconds if at is None else at
        answers = self._answers.get(window)
        if answers is None:
            # Older windows go; callers still awaiting one of their answers hold it themselves.
            self._answers = {w: a for w, a in self._answers.items() if w >= now - _KEPT_SECONDS}
            answers = self._answers[window] = {}
        answer = answers.get(promql)
        if answer is None:
            answer = answers[promql] = asyncio.create_task(self._ask(promql, window))
            self._running.add(answer)
            answer.add_done_callback(self._finished)
        else:
            self.counters.shared += 1
        # Shielded: a caller that gives up (its rollout was deleted) must not cancel the answer others await.
        return list(await asyncio.shield(answer))

    def close(self) -> None:
        """Abandon the queries in flight; their callers see them cancelled."""
        for task in self._running:
            task.cancel()

    async def _ask(self, promql: str, at: float) -> tuple[Sample, ...]:
        queued = True
        try:
            async with asyncio.timeout(self._deadline):
                self.counters.waiting += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.counters.waiting -= 1
                queued = False
                self.counters.issued += 1
                self.counters.in_flight += 1
                try:
                    return tuple(await self._fetch(promql, at))
                finally:
                    self.counters.in_flight -= 1
                    self._slots.release()
        except TimeoutError:
            message = f"{self._name} did not answer within {self._deadline:g}s"
            if queued:
                message += (
                    f": the query waited all that time for one of the {self._concurrency} queries "
                    "allowed in flight at once, all held by slower ones"
                )
            raise GuardrailQueryFailed(message, promql) from None

    def _finished(self, task: asyncio.Task[tuple[Sample, ...]]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure whose callers all gave up is not reported as lost
