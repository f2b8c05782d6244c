"""The sample-ratio check on simulated traffic: silent on a healthy split however often it looks, quick on a
broken one. Run with ``-s`` to see the figures (docs/decisions.md quotes them).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from airollout.guardrails.srm import SRM_MIN_PER_ARM, SRM_THRESHOLD, chi_square_srm, srm_check
from tests.simulation.rollouts import LOOK_SECONDS, mcse, percent

RPS = 20
SHARE = 0.05
LOOKS = 120  # an hour of looks every 30 s


def counts(served_share: float, runs: int, seed: int) -> npt.NDArray[np.float64]:
    """Cumulative (control, candidate) requests per look and run, randomised per request."""
    rng = np.random.default_rng(seed)
    total = rng.poisson(RPS * LOOK_SECONDS, (LOOKS, runs))
    candidate = rng.binomial(total, served_share)
    return np.cumsum(np.stack([total - candidate, candidate], axis=-1), axis=0).astype(np.float64)


def first_alarms(cumulative: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per run, the minute of the first mismatch by the sequential check and by a chi-square re-run each look
    (GrowthBook's check at 0.001 with as many units); NaN if none."""
    looks, runs, _ = cumulative.shape
    sequential, repeated = np.full(runs, np.nan), np.full(runs, np.nan)
    weights = [1 - SHARE, SHARE]
    for r in range(runs):
        previous = None
        for t in range(looks):
            observed = cumulative[t, r].tolist()
            result = srm_check(observed, weights, previous)
            previous = result.p
            minute = (t + 1) * LOOK_SECONDS / 60
            if result.mismatch and np.isnan(sequential[r]):
                sequential[r] = minute
            enough = sum(observed) >= SRM_MIN_PER_ARM * 2
            if enough and np.isnan(repeated[r]) and chi_square_srm(observed, weights)[1] < SRM_THRESHOLD:
                repeated[r] = minute
            if not (np.isnan(sequential[r]) or np.isnan(repeated[r])):
                break
    return sequential, repeated


def test_a_healthy_split_raises_no_alarm_however_often_it_is_checked() -> None:
    runs = 2000
    sequential, repeated = first_alarms(counts(SHARE, runs, seed=81))
    false_alarms, chi_square = (float(np.mean(~np.isnan(first))) for first in (sequential, repeated))
    print(
        f"\nSRM, healthy 5% split, {RPS} rps, {LOOKS} looks of 30 s, {runs} runs: sequential check "
        f"{percent(false_alarms)} false alarms; chi-square re-run at every look {percent(chi_square)}"
    )
    assert false_alarms <= SRM_THRESHOLD + 3 * mcse(SRM_THRESHOLD, runs)


def test_a_split_that_serves_less_than_it_asks_is_caught() -> None:
    runs = 500
    slightly, _ = first_alarms(counts(0.045, runs, seed=82))
    broken, _ = first_alarms(counts(0.01, runs, seed=83))
    caught, caught_broken = (float(np.mean(~np.isnan(first))) for first in (slightly, broken))
    print(
        f"\nSRM, {RPS} rps asking 5%, {runs} runs: serving 4.5% caught within the hour in {percent(caught)} "
        f"(median minute {np.nanmedian(slightly):.1f}); serving 1% caught in {percent(caught_broken)} "
        f"(median minute {np.nanmedian(broken):.1f})"
    )
    assert caught >= 0.9
    assert np.all(~np.isnan(broken))
