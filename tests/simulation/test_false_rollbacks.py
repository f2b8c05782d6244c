"""A/A rollouts (the candidate is the control): how often does the operator roll back a healthy release?

The anytime-valid comparison must stay at or under its false-rollback budget whatever the traffic, the share,
a drifting baseline across stage changes, clustered users (with the calibrated VIF) and many guardrails times
segments; today's threshold guardrails, judged by the same simulated traffic, are measured beside it.
Run with ``-s`` to see the figures (docs/decisions.md quotes them).
"""

from __future__ import annotations

import math

import pytest

from airollout.guardrails.sequential import SEGMENT_ALPHA, Design, Margin, alphas, design
from airollout.model.spec import Guardrail
from tests.simulation.rollouts import (
    PROMOTED,
    REVERTED,
    ROLLED_BACK,
    Check,
    Errors,
    Latency,
    Stage,
    StickyUsers,
    design_effect,
    mcse,
    percent,
    simulate,
    threshold_rollbacks,
)

ALPHA = 0.05
BASELINE = 0.01
TWICE = Margin(relative=1.0)
ERROR_RATE_QUERY = (
    'sum(rate(ai_errors_total{variant="{{variant}}"}[5m])) / sum(rate(ai_requests_total{variant="{{variant}}"}[5m]))'
)
README_GUARDRAIL = Guardrail.model_validate(
    {"name": "error-rate", "query": ERROR_RATE_QUERY, "max": 0.015, "maxIncreaseOverControl": 0.2}
)
RELATIVE_GUARDRAIL = Guardrail.model_validate(
    {"name": "error-rate", "query": ERROR_RATE_QUERY, "maxIncreaseOverControl": 0.5}
)


def plans(shares: list[float], alpha: float, baseline: float = BASELINE, vif: float = 1.0) -> tuple[Design, ...]:
    """Per stage: I* fixed from the first stage, the required sample at each stage's own share."""
    designs = [
        design(
            baseline,
            baseline * (1 - baseline),
            proportion=True,
            detect=TWICE,
            margin=Margin(),
            candidate_share=share,
            alpha=alpha,
            vif=vif,
        )
        for share in shares
    ]
    return tuple(Design(designs[0].information_star, d.required_candidate_n) for d in designs)


@pytest.mark.parametrize("share", [0.01, 0.05, 0.25])
@pytest.mark.parametrize("rps", [2, 20, 200])
def test_a_a_false_rollbacks_stay_within_alpha_at_every_traffic_level_and_share(rps: float, share: float) -> None:
    # The stage lasts as long as its planned sample takes at this traffic, as a user would size it; the
    # operator's 30 s cadence, or fewer looks where that would be thousands (consecutive looks at 2 rps
    # differ by a request or two, so the anytime-valid test sees the same evidence).
    runs = 2000
    (plan,) = plans([share], ALPHA)
    minutes = math.ceil(plan.required_candidate_n / (share * rps) / 60)
    look_seconds = max(30.0, minutes * 60 / 240)
    outcomes = simulate(
        Errors(rps, {"errors": BASELINE}),
        [Check("errors", True, ALPHA, (plan,))],
        [Stage(share, minutes)],
        runs=runs,
        seed=int(rps * 1000 + share * 100),
        look_seconds=look_seconds,
        grace_seconds=0.0,
    )
    rate = outcomes.rate(ROLLED_BACK)
    print(
        f"\nA/A errors {rps} rps, {percent(share)} canary, stage {minutes} min (+2 extensions), looks every "
        f"{look_seconds:.0f} s, {runs} runs: false rollbacks {percent(rate)}, "
        f"promoted {percent(outcomes.rate(PROMOTED))}, reverted for too few samples {percent(outcomes.rate(REVERTED))}"
    )
    assert rate <= ALPHA + 3 * mcse(ALPHA, runs)
    assert outcomes.decisions_below_gate == 0


def test_a_a_mean_latency_from_histogram_buckets_stays_within_alpha() -> None:
    runs = 1000
    baseline = Latency(20, 0.2, 1.0).baseline(seed=7)
    plan = design(
        baseline.mean,
        baseline.variance,
        proportion=False,
        detect=Margin(relative=0.2),
        margin=Margin(),
        candidate_share=0.05,
        alpha=ALPHA,
    )
    outcomes = simulate(
        Latency(20, 0.2, 1.0),
        [Check("latency", False, ALPHA, (plan,))],
        [Stage(0.05, 20)],
        runs=runs,
        seed=8,
    )
    rate = outcomes.rate(ROLLED_BACK)
    print(
        f"\nA/A mean latency (log-normal, default buckets) 20 rps, 5% canary, {runs} runs: false rollbacks "
        f"{percent(rate)}, promoted {percent(outcomes.rate(PROMOTED))}"
    )
    assert rate <= ALPHA + 3 * mcse(ALPHA, runs)


def test_a_drifting_baseline_across_stage_changes_needs_stratification() -> None:
    runs = 2000
    stages = [Stage(0.01, 20), Stage(0.05, 20), Stage(0.25, 30)]

    def drift(minute: float) -> float:
        # The baseline doubles (1 % -> 2 %) during the 25 % stage.
        return 1.0 + min(max((minute - 40.0) / 30.0, 0.0), 1.0)

    designs = plans([s.share for s in stages], ALPHA)
    checks = [
        Check("errors", True, ALPHA, designs),
        Check("errors", True, ALPHA, designs, pooled=True),
    ]
    outcomes = simulate(
        Errors(200, {"errors": BASELINE}, drift=drift),
        checks,
        stages,
        runs=runs,
        seed=11,
        advance="on_schedule",
        stop_on_harm=False,
    )
    stratified, pooled = (float((outcomes.first_harm[i] >= 0).mean()) for i in range(2))
    print(
        f"\nA/A, 200 rps, stages 1% -> 5% -> 25% (20/20/30 min), baseline 1% -> 2% during the 25% stage, "
        f"{runs} runs: stratified by stage {percent(stratified)} false rollbacks; pooled counts {percent(pooled)}"
    )
    assert stratified <= ALPHA
    assert pooled > 0.2, "the scenario must be sharp enough to catch a pooling bug"


def test_sticky_users_need_the_calibrated_vif() -> None:
    runs, minutes = 1000, 60

    def world(seed: int) -> StickyUsers:
        return StickyUsers(
            rps=20,
            users=1000,
            runs=runs,
            share=0.05,
            error_rate=BASELINE,
            propensity_concentration=40.0,
            rate_sigma=1.0,
            seed=seed,
        )

    # Calibrated as an A/A shadow split would be: on other runs (other users) of the same population.
    vif = max(1.0, design_effect(world(21), "errors", minutes, runs=runs, seed=22))
    checks = [
        Check("errors", True, ALPHA, plans([0.05], ALPHA)),
        Check("errors", True, ALPHA, plans([0.05], ALPHA, vif=vif), vif=vif),
    ]
    outcomes = simulate(
        world(23), checks, [Stage(0.05, minutes)], runs=runs, seed=24, advance="on_schedule", stop_on_harm=False
    )
    plain, calibrated = (float((outcomes.first_harm[i] >= 0).mean()) for i in range(2))
    print(
        f"\nA/A, sticky per-user assignment (1,000 heterogeneous users), 20 rps, 5% canary, {minutes} min, {runs} "
        f"runs: request-level variance (VIF 1) {percent(plain)} false rollbacks; measured design effect "
        f"{vif:.2f} used as VIF {percent(calibrated)}"
    )
    assert plain > ALPHA, "requests of the same users are correlated: without the VIF the budget is exceeded"
    assert calibrated <= ALPHA + 3 * mcse(ALPHA, runs)


def test_many_guardrails_and_segments_share_one_budget() -> None:
    runs = 1000
    weights = {"errors": 2.0, "timeouts": 1.0, "slow": 1.0}
    rates = {"errors": 0.01, "timeouts": 0.005, "slow": 0.05}
    segments = {"en": 0.4, "de": 0.25, "fr": 0.15, "ja": 0.1, "es": 0.1}
    stages = [Stage(0.05, 10), Stage(0.25, 10)]
    budget, segment_budget = alphas(weights), alphas(weights, SEGMENT_ALPHA)
    checks = [
        Check(
            metric,
            True,
            budget[metric],
            plans([s.share for s in stages], budget[metric], baseline=rates[metric]),
            segments=tuple(f"{metric}/{name}" for name in segments),
            segment_shares=tuple(segments.values()),
            segment_alpha=segment_budget[metric],
        )
        for metric in weights
    ]
    outcomes = simulate(Errors(200, rates, segments=segments), checks, stages, runs=runs, seed=31)
    any_action = outcomes.rate(ROLLED_BACK)
    print(
        f"\nA/A, 3 guardrails x 5 segments (budget 0.04 by weight + 0.01 for segments), 200 rps, 5% -> 25%, "
        f"{runs} runs: any rollback or segment hold {percent(any_action)}; promoted {percent(outcomes.rate(PROMOTED))}"
    )
    assert any_action <= ALPHA


@pytest.mark.parametrize("rps", [20, 200])
def test_the_comparison_rolls_back_far_fewer_healthy_releases_than_the_readme_thresholds(rps: float) -> None:
    runs = 2000
    share = 0.05
    comparison = simulate(
        Errors(rps, {"errors": BASELINE}),
        [Check("errors", True, ALPHA, plans([share], ALPHA))],
        [Stage(share, 10)],
        runs=runs,
        seed=41 + rps,
    )
    thresholds = {
        name: threshold_rollbacks(
            guardrail, rps=rps, share=share, error_rate=BASELINE, minutes=10, runs=runs, seed=43 + rps
        )
        for name, guardrail in (("max 0.015 + 20 %", README_GUARDRAIL), ("+50 % only", RELATIVE_GUARDRAIL))
    }
    shown = ", ".join(f"{name} {percent(rate)}" for name, rate in thresholds.items())
    print(
        f"\nA/A {rps} rps, 5% canary, 10 min stage, {runs} runs: comparison rolls back "
        f"{percent(comparison.rate(ROLLED_BACK))} (promotes {percent(comparison.rate(PROMOTED))}, reverts "
        f"{percent(comparison.rate(REVERTED))} for too few samples after 2 extensions); thresholds roll back {shown}"
    )
    assert comparison.rate(ROLLED_BACK) <= ALPHA
    assert thresholds["max 0.015 + 20 %"] > 0.2
