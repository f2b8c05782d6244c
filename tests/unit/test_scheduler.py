"""The deadline queue: a rollout runs when due, once at a time, and costs nothing in between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from airollout.kube.scheduler import Due, Scheduler


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


class Recorder:
    def __init__(self) -> None:
        self.runs: list[str] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.next: dict[str, Due | None] = {}
        self.hold: dict[str, asyncio.Event] = {}

    async def work(self, key: str, lateness: float) -> Due | None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        try:
            if key in self.hold:
                await self.hold[key].wait()
            self.runs.append(key)
            return self.next.pop(key, None)
        finally:
            self.running.discard(key)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]]]:
    tasks: list[asyncio.Task[None]] = []

    async def start(workers: int = 4) -> tuple[Scheduler[str], Recorder]:
        recorder = Recorder()
        scheduler: Scheduler[str] = Scheduler(recorder.work, workers=workers)
        tasks.append(asyncio.create_task(scheduler.run()))
        return scheduler, recorder

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_keys_run_in_the_order_of_their_deadlines(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=1)
    now = time.monotonic()
    scheduler.wake("late", now + 0.15)
    scheduler.wake("early", now + 0.05)
    scheduler.wake("middle", now + 0.1)
    await _until(lambda: len(recorder.runs) == 3)
    assert recorder.runs == ["early", "middle", "late"]


async def test_a_key_nobody_wakes_never_runs(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started()
    scheduler.wake("due")
    scheduler.wake("far", time.monotonic() + 3600)
    await _until(lambda: recorder.runs == ["due"])
    await asyncio.sleep(0.1)
    assert recorder.runs == ["due"]


async def test_the_deadline_work_returns_is_the_next_run(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started()
    recorder.next["r"] = Due(time.monotonic() + 0.05)
    scheduler.wake("r")
    await _until(lambda: recorder.runs == ["r", "r"])
    await asyncio.sleep(0.1)
    assert recorder.runs == ["r", "r"]  # the second run returned None: asleep until woken


async def test_an_earlier_wake_wins_and_a_later_one_does_not_delay(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started()
    scheduler.wake("r", time.monotonic() + 3600)
    scheduler.wake("r")  # e.g. a spec change seen on the watch
    await _until(lambda: recorder.runs == ["r"])
    scheduler.wake("s", time.monotonic() + 0.02)
    scheduler.wake("s", time.monotonic() + 3600)
    await _until(lambda: recorder.runs == ["r", "s"])


async def test_a_key_woken_while_running_runs_again_after_never_alongside(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=4)
    gate = recorder.hold["r"] = asyncio.Event()
    scheduler.wake("r")
    await _until(lambda: "r" in recorder.running)
    scheduler.wake("r")
    scheduler.wake("r")
    await asyncio.sleep(0.05)
    assert recorder.overlaps == 0
    del recorder.hold["r"]
    gate.set()
    await _until(lambda: recorder.runs == ["r", "r"])
    await asyncio.sleep(0.05)
    assert recorder.runs == ["r", "r"]
    assert recorder.overlaps == 0


async def test_a_forgotten_key_does_not_run(started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]]) -> None:
    scheduler, recorder = await started()
    scheduler.wake("gone", time.monotonic() + 0.05)
    scheduler.wake("kept", time.monotonic() + 0.05)
    scheduler.forget("gone")
    await _until(lambda: recorder.runs == ["kept"])
    await asyncio.sleep(0.1)
    assert recorder.runs == ["kept"]


async def test_a_slow_key_does_not_hold_up_the_others(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=2)
    gate = recorder.hold["slow"] = asyncio.Event()
    scheduler.wake("slow")
    await _until(lambda: "slow" in recorder.running)
    for key in ("a", "b", "c"):
        scheduler.wake(key)
    await _until(lambda: recorder.runs == ["a", "b", "c"])
    gate.set()
    await _until(lambda: recorder.runs[-1] == "slow")


async def test_work_that_raises_is_tried_again_and_the_queue_goes_on() -> None:
    calls: list[str] = []

    async def work(key: str, lateness: float) -> Due | None:
        calls.append(key)
        if key == "bug" and calls.count("bug") == 1:
            raise RuntimeError("a bug in one rollout")
        return None

    clock = [0.0]
    scheduler: Scheduler[str] = Scheduler(work, workers=1, clock=lambda: clock[0])
    task = asyncio.create_task(scheduler.run())
    try:
        scheduler.wake("bug")
        scheduler.wake("fine")
        await _until(lambda: calls == ["bug", "fine"])
        clock[0] += 10  # the retry is due a few seconds later
        scheduler.wake("other")
        await _until(lambda: sorted(calls[2:]) == ["bug", "other"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_depth_counts_due_keys_waiting_for_a_worker(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=1)
    gate = recorder.hold["busy"] = asyncio.Event()
    scheduler.wake("busy")
    await _until(lambda: "busy" in recorder.running)
    for key in ("a", "b", "c"):
        scheduler.wake(key)
    await _until(lambda: scheduler.depth == 3)
    gate.set()
    await _until(lambda: scheduler.depth == 0 and len(recorder.runs) == 4)


async def test_deciding_work_goes_before_routine_work_due_at_the_same_time(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=1)
    gate = recorder.hold["busy"] = asyncio.Event()
    scheduler.wake("busy")
    await _until(lambda: "busy" in recorder.running)
    now = time.monotonic()
    for i in range(5):
        scheduler.wake(f"tick-{i}", now, routine=True)  # a thousand analyses on one tick, in small
    scheduler.wake("bake-end", now + 0.001)
    await asyncio.sleep(0.05)
    gate.set()
    await _until(lambda: len(recorder.runs) == 7)
    assert recorder.runs[1] == "bake-end"


async def test_routine_work_still_waiting_when_its_bake_end_passes_moves_ahead_of_the_queue(
    started: Callable[..., Awaitable[tuple[Scheduler[str], Recorder]]],
) -> None:
    scheduler, recorder = await started(workers=1)
    gate = recorder.hold["busy"] = asyncio.Event()
    scheduler.wake("busy")
    await _until(lambda: "busy" in recorder.running)
    now = time.monotonic()
    scheduler.wake("baking", now, routine=True, then=now + 0.02)  # its analysis tick, then its bake end
    for i in range(5):
        scheduler.wake(f"tick-{i}", now + 0.001, routine=True)
    await asyncio.sleep(0.1)  # the bake end passes while everything waits behind "busy"
    gate.set()
    await _until(lambda: len(recorder.runs) == 7)
    assert recorder.runs[1] == "baking"
    assert recorder.runs.count("baking") == 1  # one run, though it was queued twice
