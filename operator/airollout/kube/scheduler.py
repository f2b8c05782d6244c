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
    then: float | None = None
    """For routine work: when deciding work falls due after it (a bake end). If the routine work is still
    waiting for a worker then, it moves ahead as deciding work."""


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
        self._upgrade: dict[Key, float] = {}
        self._ready: asyncio.PriorityQueue[tuple[bool, float, int, Key]] = asyncio.PriorityQueue()
        self._queued: dict[Key, int] = {}
        """Keys waiting for a worker, with the ticket of their entry (a key may have two: routine, deciding)."""
        self._running: set[Key] = set()
        self._again: dict[Key, Due] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()

    @property
    def depth(self) -> int:
        """Rollouts due and waiting for a worker."""
        return self._ready.qsize()

    def wake(self, key: Key, at: float | None = None, *, routine: bool = False, then: float | None = None) -> None:
        """Make ``key`` due at ``at`` (now when None), unless it is already due earlier.

        ``routine`` work waits behind deciding work that is due at the same time; ``then`` is when it
        becomes deciding work if it is still waiting (see `Due.then`).
        """
        due = Due(self._clock() if at is None else at, routine, then if routine else None)
        if key in self._running:
            self._again[key] = min(self._again.get(key, due), due)
            return
        if key in self._queued:
            if not routine:
                self._push(key, due.at, upgrade=True)  # waiting as routine work: now it decides
            return
        current = self._deadline.get(key)
        if current is not None and current.at <= due.at:
            if current.routine and not due.routine:
                self._push(key, due.at, upgrade=True)  # the earlier routine run turns deciding then
            return
        if current is not None and due.routine and not current.routine:
            due = Due(due.at, True, min(current.at, due.then if due.then is not None else current.at))
        self._deadline[key] = due
        self._push(key, due.at)
        if due.then is not None:
            self._push(key, due.then, upgrade=True)

    def _push(self, key: Key, at: float, *, upgrade: bool = False) -> None:
        if upgrade:
            self._upgrade[key] = min(self._upgrade.get(key, at), at)
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._changed.set()

    def forget(self, key: Key) -> None:
        """Drop any deadline of ``key`` (a deleted rollout); a run already under way finishes."""
        self._deadline.pop(key, None)
        self._upgrade.pop(key, None)
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
                if due is not None and due.at == when:
                    del self._deadline[key]
                    self._queued[key] = order
                    self._ready.put_nowait((due.routine, when, order, key))
                elif self._upgrade.get(key) == when:
                    del self._upgrade[key]
                    if key in self._queued:  # still waiting behind routine work: a second, deciding entry
                        self._ready.put_nowait((False, when, self._queued[key], key))
                # else: superseded by an earlier wake, or forgotten
            self._changed.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            _routine, when, ticket, key = await self._ready.get()
            if self._queued.get(key) != ticket:
                continue  # the other entry of this key was taken first
            del self._queued[key]
            self._upgrade.pop(key, None)
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
                self.wake(key, following.at, routine=following.routine, then=following.then)


__all__ = ["Due", "Scheduler"]
