"""`status --timeout` decides CI's exit status from what it reads; a read that fails once is not an outcome."""

from __future__ import annotations

from collections.abc import Iterator

from airollout.console.cluster import ClusterError
from airollout.console.following import Limits, Outcome, follow
from airollout.console.reading import RolloutView, read_rollout


def view(phase: str) -> RolloutView:
    return read_rollout({"metadata": {"namespace": "ns", "name": "r"}, "status": {"phase": phase, "message": "m"}})


def run(phases: list[str | None], limits: Limits) -> tuple[Outcome, str, list[str]]:
    """Follow a rollout that reads as ``phases`` (None: kubectl fails), one read per simulated second."""
    clock = [0.0]
    reads: Iterator[str | None] = iter(phases)
    shown: list[str] = []

    def read() -> RolloutView:
        phase = next(reads, phases[-1])
        if phase is None:
            raise ClusterError("connection refused")
        return view(phase)

    def show(seen: RolloutView | None, error: str | None) -> None:
        shown.append(seen.phase if seen is not None else f"error: {error}")

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    outcome, said = follow(read, show, limits, interval=1.0, clock=lambda: clock[0], sleep=sleep)
    return outcome, said, shown


def test_promoted_rolled_back_and_failed_end_the_wait_with_their_exit_status() -> None:
    assert run(["Progressing", "Promoted"], Limits(timeout=60))[0] is Outcome.PROMOTED
    assert run(["Progressing", "RolledBack"], Limits(timeout=60))[0] is Outcome.ROLLED_BACK
    outcome, said, _ = run(["Failed"], Limits(timeout=60))
    assert outcome is Outcome.ROLLED_BACK
    assert said == "ns/r is Failed: m"


def test_a_rollout_still_progressing_at_the_timeout_exits_2() -> None:
    outcome, said, shown = run(["Progressing"], Limits(timeout=5))
    assert outcome is Outcome.TIMED_OUT
    assert "within --timeout 5s" in said
    assert len(shown) == 6


def test_paused_longer_than_allowed_exits_3_but_a_short_pause_does_not() -> None:
    outcome, said, _ = run(["Paused"], Limits(timeout=60, paused_timeout=3))
    assert outcome is Outcome.PAUSED_TOO_LONG
    assert "longer than --paused-timeout 3s" in said
    brief = ["Paused", "Paused", "Progressing", "Paused", "Paused", "Progressing", "Promoted"]
    assert run(brief, Limits(timeout=60, paused_timeout=3))[0] is Outcome.PROMOTED


def test_a_failed_read_is_shown_and_retried_not_taken_as_an_outcome() -> None:
    outcome, _, shown = run([None, None, "Promoted"], Limits(timeout=60))
    assert outcome is Outcome.PROMOTED
    assert shown == ["error: connection refused", "error: connection refused", "Promoted"]
