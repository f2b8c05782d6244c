"""One way to wait for something that happens elsewhere: a process getting ready, the operator acting, a scrape.

The sandbox waits for its parts, tests wait for the operator, benchmarks wait between trials. All of them poll
the same way and give up the same way, with what was awaited, the last answer and, where a process should have
answered, the end of its log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["TimedOut", "wait_for", "wait_for_async"]

T = TypeVar("T")
_LOG_LINES = 40


class TimedOut(RuntimeError):
    """What was awaited did not come in time, or the process that should have answered exited; the message says
    which."""


def wait_for(
    what: str,
    probe: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.2,
    *,
    running: Callable[[], bool] | None = None,
    log: Path | str | None = None,
    retrying: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; `TimedOut` at the deadline.

    ``running`` is asked between polls: once the process that should answer has exited, waiting stops at once.
    ``log`` is that process's log, whose end the error quotes. Exceptions of the ``retrying`` types from
    ``probe`` mean "not yet" (the last one is quoted if time runs out).
    """
    attempts = _Attempts(what, timeout, running, log)
    while True:
        try:
            answer = probe()
        except retrying as error:
            attempts.failed(error)
        else:
            if answer:
                return answer
            attempts.failed(answer)
        time.sleep(interval)


async def wait_for_async(
    what: str,
    probe: Callable[[], Awaitable[T]],
    # Not asyncio.timeout: giving up here names what was awaited and the last answer, as `wait_for` does.
    timeout: float = 60.0,  # noqa: ASYNC109
    interval: float = 0.2,
    *,
    retrying: tuple[type[Exception], ...] = (),
) -> T:
    """`wait_for` for a coroutine probe, sleeping without blocking the event loop."""
    attempts = _Attempts(what, timeout, None, None)
    while True:
        try:
            answer = await probe()
        except retrying as error:
            attempts.failed(error)
        else:
            if answer:
                return answer
            attempts.failed(answer)
        await asyncio.sleep(interval)


class _Attempts:
    """The deadline and the reasons to give up that both ways of waiting share."""

    def __init__(self, what: str, timeout: float, running: Callable[[], bool] | None, log: Path | str | None) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.running = running
        self.log = log

    def failed(self, last: object) -> None:
        """Record an answer that was not yet the one awaited; raise `TimedOut` when it is time to give up."""
        if self.running is not None and not self.running():
            raise TimedOut(self._quoting_log(f"gave up waiting for {self.what}: its process exited"))
        if time.monotonic() > self.deadline:
            late = f"timed out after {self.timeout:g}s waiting for {self.what} (last: {last!r})"
            raise TimedOut(self._quoting_log(late))

    def _quoting_log(self, message: str) -> str:
        if self.log is None:
            return message
        try:
            lines = Path(self.log).read_text(errors="replace").splitlines()[-_LOG_LINES:]
        except OSError:
            return f"{message}; it wrote no log"
        return message + "; its log ends:\n" + "\n".join(lines)
