"""Gates: no decision below the validity gate, and a stage without its planned sample is extended, then reverted.

Run with ``-s`` to see the figures (docs/decisions.md quotes them).
"""

from __future__ import annotations

import numpy as np

from airollout.guardrails.sequential import Margin, design
from tests.simulation.rollouts import PROMOTED, REVERTED, ROLLED_BACK, Check, Errors, Stage, percent, simulate

ALPHA = 0.05
SHARE = 0.05
RUNS = 1000
PLAN = design(
    0.01, 0.0099, proportion=True, detect=Margin(relative=1.0), margin=Margin(), candidate_share=SHARE, alpha=ALPHA
)
CHECKS = [Check("errors", True, ALPHA, (PLAN,))]


def test_even_a_glaring_regression_waits_for_the_validity_gate() -> None:
    # Ten times the errors: the test would fire on a handful of requests, but the gate asks for five expected
    # candidate errors at the control's 1 % (about 500 candidate requests) first.
    outcomes = simulate(
        Errors(20, {"errors": 0.01}, harm={"errors": 10.0}), CHECKS, [Stage(SHARE, 60)], runs=RUNS, seed=71
    )
    at = outcomes.harm_candidate_n[0][outcomes.result == ROLLED_BACK]
    print(
        f"\ngate, errors 1% -> 10%, 20 rps, 5% canary, {RUNS} runs: rolled back {percent(outcomes.rate(ROLLED_BACK))}, "
        f"first at {at.min():.0f} candidate requests (median {np.median(at):.0f})"
    )
    assert outcomes.rate(ROLLED_BACK) == 1.0
    assert outcomes.decisions_below_gate == 0
    assert at.min() >= 100


def test_a_stage_short_of_its_planned_sample_is_extended_twice_then_reverted() -> None:
    # 20 rps at 5 % gives one candidate request a second: the 2,638 planned take 44 minutes, more than a
    # 10-minute stage and its two extensions.
    outcomes = simulate(Errors(20, {"errors": 0.01}), CHECKS, [Stage(SHARE, 10)], runs=RUNS, seed=72)
    reverted = outcomes.result == REVERTED
    print(
        f"\ngate, A/A 20 rps, 5% canary, 10 min stage, planned {PLAN.required_candidate_n:.0f} candidate requests, "
        f"{RUNS} runs: reverted {percent(reverted.mean())} at minute {np.unique(outcomes.ended[reverted])}, "
        f"promoted {percent(outcomes.rate(PROMOTED))}, rolled back {percent(outcomes.rate(ROLLED_BACK))}"
    )
    assert outcomes.rate(PROMOTED) == 0.0
    assert reverted.mean() >= 0.99
    assert np.all(outcomes.ended[reverted] == 30.0)


def test_a_stage_that_reaches_its_planned_sample_during_an_extension_is_promoted_then() -> None:
    # 60 rps at 5 %: three candidate requests a second reach 2,638 after about 16 minutes (with the grace).
    outcomes = simulate(Errors(60, {"errors": 0.01}), CHECKS, [Stage(SHARE, 10)], runs=RUNS, seed=73)
    promoted = outcomes.result == PROMOTED
    print(
        f"\ngate, A/A 60 rps, 5% canary, 10 min stage, {RUNS} runs: promoted {percent(promoted.mean())} between "
        f"minute {outcomes.ended[promoted].min():.1f} and {outcomes.ended[promoted].max():.1f}, reverted "
        f"{percent(outcomes.rate(REVERTED))}"
    )
    assert promoted.mean() >= 0.95
    assert np.all((outcomes.ended[promoted] > 10) & (outcomes.ended[promoted] <= 20))
