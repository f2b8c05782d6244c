"""Following one rollout: a live view for a person, and for a CI pipeline an exit status to branch on.

Both poll the rollout through kubectl. `status --timeout` ends when the rollout does, with a status a
script can test: 0 Promoted (or Completed, after a post-release watch), 1 RolledBack or Failed, 2 out of
time, 3 paused for longer than allowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum

from airollout.console.cluster import ClusterError
from airollout.console.reading import RolloutView, format_duration
from airollout.model import Phase

__all__ = ["Limits", "Outcome", "follow"]


class Outcome(IntEnum):
    """The exit status of `status --timeout`."""

    PROMOTED = 0
    ROLLED_BACK = 1
    TIMED_OUT = 2
    PAUSED_TOO_LONG = 3


@dataclass(frozen=True)
class Limits:
    """When to stop following, in seconds (None: no limit). With neither set, follow until interrupted."""

    timeout: float | None = None
    paused_timeout: float | None = None

    @property
    def any(self) -> bool:
        return self.timeout is not None or self.paused_timeout is not None


def follow(
    read: Callable[[], RolloutView],
    show: Callable[[RolloutView | None, str | None], None],
    limits: Limits,
    *,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Outcome, str]:
    """Read and ``show`` (the view, or None and why it could not be read) until a limit decides.

    A read that fails (the apiserver restarting, a lost connection) is shown and retried until the
    timeout: a pipeline waiting for a rollout should not fail on one unanswered request.
    """
    started = clock()
    paused_since: float | None = None
    while True:
        now = clock()
        try:
            view = read()
        except ClusterError as error:
            show(None, str(error))
        else:
            show(view, None)
            paused_since = (now if paused_since is None else paused_since) if view.phase == Phase.PAUSED else None
            if limits.any:
                ended = _ended(view, limits, now - paused_since if paused_since is not None else None)
                if ended is not None:
                    return ended
        if limits.timeout is not None and now - started >= limits.timeout:
            ended_by = "not Promoted, Completed, RolledBack or Failed"
            return Outcome.TIMED_OUT, f"{ended_by} within --timeout {_span(limits.timeout)}"
        sleep(interval)


def _ended(view: RolloutView, limits: Limits, paused_for: float | None) -> tuple[Outcome, str] | None:
    ref = f"{view.namespace}/{view.name}"
    if view.phase in (Phase.PROMOTED, Phase.COMPLETED):
        return Outcome.PROMOTED, f"{ref} is {view.phase}"
    if view.phase in (Phase.ROLLED_BACK, Phase.FAILED):
        return Outcome.ROLLED_BACK, f"{ref} is {view.phase}: {view.message}"
    if limits.paused_timeout is not None and paused_for is not None and paused_for > limits.paused_timeout:
        why = view.pause_reason or view.message
        return Outcome.PAUSED_TOO_LONG, (
            f"{ref} has been Paused for {_span(paused_for)}, longer than --paused-timeout "
            f"{_span(limits.paused_timeout)}: {why}"
        )
    return None


def _span(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))
