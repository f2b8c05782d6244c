"""One deadline queue for the whole process: a rollout costs nothing until something about it is due.

A timer per object would wake every rollout every tick whether or not it has anything to do, and its cost
grows with rollouts times ticks. Here each rollout has at most one pending deadline (its bake end, its next
analysis, a retry, a drift check) in one heap; a single task sleeps until the earliest one and hands due
rollouts to a fixed number of workers. A change seen on the watch wakes its rollout at once.

A rollout is never worked on twice at the same time: woken while running, it runs again right after.
Among rollouts due at once, those whose work decides something (a bake end, a change seen on the watch)
go before routine ones (an analysis tick, a drift check), so a thousand routine analyses falling due on
the same tick do not delay a stage that is ready to advance.
What the work returns is the rollout's next deadline, so the queue holds no state of its own that a
restarted operator would need: every deadline is derived again from status.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

_log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Due:
    """When a rollout is next due (monotonic seconds), and whether that work is routine."""

    at: float
    routine: bool = False


class Scheduler(Generic[Key]):
    """Runs ``work(key, lateness)`` when ``key`` is due; ``work`` returns its next `Due` or None.

    ``lateness`` is how many seconds after its deadline a worker took the key: the rollout can say so.
    """

    def __init__(
        self,
        work: Callable[[Key, float], Awaitable[Due | None]],
        *,
        workers: int,
        on_start: Callable[[float], None] = lambda lateness: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_start`` receives each run's lateness: seconds between its deadline and a worker taking it."""
        self._work = work
        self._workers = workers
        self._on_start = on_start
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []
        self._deadline: dict[Key, Due] = {}
        self._ready: asyncio.PriorityQueue[tuple[bool, float, int, Key]] = asyncio.PriorityQueue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._again: dict[Key, Due] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()

    @property
    def depth(self) -> int:
        """Rollouts due and waiting for a worker."""
        return self._ready.qsize()

    def wake(self, key: Key, at: float | None = None, *, routine: bool = False) -> None:
        """Make ``key`` due at ``at`` (now when None), unless it is already due earlier.

        ``routine`` work waits behind deciding work that is due at the same time.
        """
        due = Due(self._clock() if at is None else at, routine)
        if key in self._running:
            self._again[key] = min(self._again.get(key, due), due)
            return
        current = self._deadline.get(key)
        if key in self._queued or (current is not None and current <= due):
            return
        self._deadline[key] = due
        heapq.heappush(self._heap, (due.at, next(self._order), key))
        self._changed.set()

    def forget(self, key: Key) -> None:
        """Drop any deadline of ``key`` (a deleted rollout); a run already under way finishes."""
        self._deadline.pop(key, None)
        self._again.pop(key, None)

    async def run(self) -> None:
        """Dispatch until cancelled."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self._workers)]
        try:
            await self._dispatch()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _dispatch(self) -> None:
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                when, order, key = heapq.heappop(self._heap)
                due = self._deadline.get(key)
                if due is None or due.at != when:
                    continue  # superseded by an earlier wake, or forgotten
                del self._deadline[key]
                self._queued.add(key)
                self._ready.put_nowait((due.routine, when, order, key))
            self._changed.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            _routine, when, _order, key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            lateness = max(0.0, self._clock() - when)
            self._on_start(lateness)
            following: Due | None = None
            try:
                following = await self._work(key, lateness)
            except Exception:
                # A bug in one rollout's work must not stop the queue; the rollout is tried again shortly.
                _log.exception("reconciling %s failed unexpectedly", key)
                following = Due(self._clock() + 5.0, routine=False)
            finally:
                self._running.discard(key)
            again = self._again.pop(key, None)
            if again is not None:
                following = again if following is None else min(following, again)
            if following is not None:
                self.wake(key, following.at, routine=following.routine)


__all__ = ["Due", "Scheduler"]
