"""Power: a real regression at a 5 % canary is rolled back before the stage's planned sample is reached.

A stage is safe once its candidate has the sample `design` plans for detecting the harm at 80 % power; a
regression missed by then would be promoted. So the detection rate within the planned sample must be at least
80 % for the harms the defaults plan for: twice the error rate, and 20 % more mean latency. Run with ``-s``
to see the figures (docs/decisions.md quotes them).
"""

from __future__ import annotations

import numpy as np

from airollout.guardrails.sequential import Margin, alphas, design
from tests.simulation.rollouts import PROMOTED, ROLLED_BACK, Check, Errors, Latency, Stage, percent, simulate

# Two guardrails (error rate and latency) share the rollout's 0.04 equally.
ALPHA = alphas({"errors": 1.0, "latency": 1.0})["errors"]
SHARE = 0.05
RUNS = 1000


def test_twice_the_error_rate_is_rolled_back_within_the_planned_sample() -> None:
    plan = design(
        0.01, 0.0099, proportion=True, detect=Margin(relative=1.0), margin=Margin(), candidate_share=SHARE, alpha=ALPHA
    )
    outcomes = simulate(
        Errors(20, {"errors": 0.01}, harm={"errors": 2.0}),
        [Check("errors", True, ALPHA, (plan,))],
        [Stage(SHARE, 60)],
        runs=RUNS,
        seed=61,
    )
    at = outcomes.harm_candidate_n[0][outcomes.result == ROLLED_BACK]
    detected = float(np.sum(at <= plan.required_candidate_n)) / RUNS
    print(
        f"\npower, errors 1% -> 2%, 20 rps, 5% canary, alpha {ALPHA:g}, planned {plan.required_candidate_n:.0f} "
        f"candidate requests, {RUNS} runs: rolled back within the planned sample {percent(detected)}, within the "
        f"hour {percent(outcomes.rate(ROLLED_BACK))} (median at {np.median(at):.0f} candidate "
        f"requests, minute {np.median(outcomes.ended[outcomes.result == ROLLED_BACK]):.1f}); promoted "
        f"{percent(outcomes.rate(PROMOTED))}"
    )
    assert detected >= 0.8


def test_twenty_percent_more_mean_latency_is_rolled_back_within_the_planned_sample() -> None:
    baseline = Latency(20, 0.2, 1.0).baseline(seed=62)
    plan = design(
        baseline.mean,
        baseline.variance,
        proportion=False,
        detect=Margin(relative=0.2),
        margin=Margin(),
        candidate_share=SHARE,
        alpha=ALPHA,
    )
    outcomes = simulate(
        Latency(20, 0.2, 1.0, harm=1.2),
        [Check("latency", False, ALPHA, (plan,))],
        [Stage(SHARE, 60)],
        runs=RUNS,
        seed=63,
    )
    at = outcomes.harm_candidate_n[0][outcomes.result == ROLLED_BACK]
    detected = float(np.sum(at <= plan.required_candidate_n)) / RUNS
    print(
        f"\npower, mean latency +20% (log-normal, sigma 1, default buckets), 20 rps, 5% canary, alpha {ALPHA:g}, "
        f"planned {plan.required_candidate_n:.0f} candidate requests, {RUNS} runs: rolled back within the "
        f"planned sample {percent(detected)}, within the hour {percent(outcomes.rate(ROLLED_BACK))} (median at "
        f"{np.median(at):.0f} candidate requests); promoted {percent(outcomes.rate(PROMOTED))}"
    )
    assert detected >= 0.8
