"""The anytime-valid harm test: the specification's reference vectors (GrowthBook's own test vectors and the
self-generated ones) to their printed precision, and the properties a rollout decision relies on."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airollout.guardrails import sequential
from airollout.guardrails.sequential import (
    SEGMENT_ALPHA,
    Arm,
    Contrast,
    Design,
    Margin,
    alphas,
    arm_from_bounds,
    arm_from_histogram,
    arm_from_sums,
    assess,
    attributed_segments,
    average_e_value,
    combine,
    contrast,
    design,
    exceedance_arm,
    harm_test,
    mixing_index,
    one_sided_half_width,
    proportion_arm,
    relative_difference,
    segment_alarm,
    two_sided_interval,
    two_sided_p_value,
    validity,
)

ALPHA = 0.05
# GrowthBook's test data (packages/stats/tests/frequentist/test_tests.py): control a, candidate b.
GB_A = arm_from_sums(3000, 1396.87, 52377.9767)
GB_B = arm_from_sums(3461, 2422.7, 134698.29)
GB_N = 3000 + 3461
EDGES = [0.05, 0.1, 0.25, 0.5, 1, 2.5]
CONTROL_BUCKETS = [4000, 7000, 8800, 9500, 9850, 9980, 10000]
CANDIDATE_BUCKETS = [150, 300, 400, 440, 470, 493, 500]


def gb_one_sided(c: Contrast, n_star: float) -> tuple[float, float, float]:
    """GrowthBook's n-indexed one-sided test: x = c(2 alpha) n / N*, the same as I* = I N* / n."""
    test = harm_test(c, ALPHA, c.information * n_star / GB_N)
    return test.lower_bound, test.upper_bound, test.p_value


def gb_two_sided(c: Contrast, n_star: float) -> tuple[float, float, float]:
    se = math.sqrt(c.variance)
    x = mixing_index(GB_N, n_star, ALPHA, one_sided=False)
    low, high = two_sided_interval(c.estimate, se, x, ALPHA)
    return low, high, two_sided_p_value(c.estimate, se, x)


def test_the_public_surface() -> None:
    assert set(sequential.__all__) == {
        "MIN_CANDIDATE_SAMPLES",
        "MIN_EVENTS",
        "SEGMENT_ALPHA",
        "Arm",
        "Assessment",
        "Contrast",
        "Design",
        "HarmTest",
        "Margin",
        "alphas",
        "arm_from_bounds",
        "arm_from_histogram",
        "arm_from_sums",
        "assess",
        "attributed_segments",
        "average_e_value",
        "combine",
        "contrast",
        "design",
        "exceedance_arm",
        "harm_test",
        "mixing_index",
        "one_sided_half_width",
        "proportion_arm",
        "relative_difference",
        "segment_alarm",
        "two_sided_interval",
        "two_sided_p_value",
        "validity",
    }


def test_v1_two_sided_relative_means_with_n_star_1000() -> None:
    c = relative_difference(GB_A, GB_B)
    assert c.estimate == pytest.approx(0.50336, abs=5e-6)
    assert math.sqrt(c.variance) == pytest.approx(0.33341, abs=5e-6)
    low, high, p = gb_two_sided(c, 1000)
    assert (low, high) == (pytest.approx(-0.55844, abs=5e-6), pytest.approx(1.56516, abs=5e-6))
    assert p == 1.0


def test_v2_two_sided_relative_proportions() -> None:
    c = relative_difference(proportion_arm(3000, 1396), proportion_arm(3461, 2422))
    assert c.estimate == pytest.approx(0.50386, abs=5e-6)
    assert math.sqrt(c.variance) == pytest.approx(0.03386, abs=5e-6)
    low, high, p = gb_two_sided(c, 5000)
    assert (low, high) == (pytest.approx(0.40098, abs=5e-6), pytest.approx(0.60675, abs=5e-6))
    assert round(p, 5) == 0.0
    assert p == pytest.approx(5.17e-44, rel=1e-3)


def test_v3_v5_one_sided_relative_bounds() -> None:
    c = relative_difference(GB_A, GB_B)
    assert c.estimate == pytest.approx(0.5033610858562358, rel=1e-14)
    assert math.sqrt(c.variance) == pytest.approx(0.3334122146400735, rel=1e-14)
    lower, upper, _ = gb_one_sided(c, 5000)
    assert lower == pytest.approx(-0.42356454602790883, rel=1e-13)
    assert upper == pytest.approx(1.4302867177403806, rel=1e-13)


def test_v4_v6_one_sided_absolute_bounds_and_fixed_x_p_value() -> None:
    c = contrast(GB_A, GB_B, Margin())
    assert c.estimate == pytest.approx(0.23437666666666668, rel=1e-14)
    assert math.sqrt(c.variance) == pytest.approx(0.12983081254184736, rel=1e-14)
    lower, upper, p = gb_one_sided(c, 5000)
    assert lower == pytest.approx(-0.12656844172804982, rel=1e-13)
    assert upper == pytest.approx(0.5953217750613832, rel=1e-13)
    # Fixed-x p, which differs from GrowthBook's bisection p (0.46316) by construction.
    assert p == pytest.approx(0.463047, abs=5e-7)


def test_v7_the_bound_is_narrowest_when_n_star_is_the_sample_and_widest_when_far_too_small() -> None:
    c = contrast(GB_A, GB_B, Margin())
    widths = {n_star: c.estimate - gb_one_sided(c, n_star)[0] for n_star in (10, 6461, 10000)}
    assert widths[6461] < widths[10000] < widths[10]


def test_the_multiplier_table_of_the_one_sided_bound() -> None:
    table = {0.01: 9.03, 0.1: 3.68, 0.5: 2.84, 1: 2.779, 2: 2.80, 10: 2.99, 100: 3.33}
    for ratio, multiplier in table.items():
        width = one_sided_half_width(1.0, mixing_index(ratio, 1.0, ALPHA), ALPHA)
        assert width == pytest.approx(multiplier, abs=0.5 * 10 ** -(len(str(multiplier).split(".")[1])))
    two_sided = two_sided_interval(0.0, 1.0, mixing_index(1.0, 1.0, ALPHA, one_sided=False), ALPHA)[1]
    assert two_sided == pytest.approx(3.035, abs=5e-4)


@pytest.mark.parametrize(
    ("candidate_errors", "alpha", "margin", "estimate", "se", "lower", "harm", "p"),
    [
        (50, 0.05, Margin(), 0.0, 0.00144368, -0.00401212, False, "1.0"),
        (75, 0.05, Margin(), 0.005, 0.00174906, 0.00013920, True, "0.04093"),
        (90, 0.05, Margin(), 0.008, 0.00190772, 0.00269826, True, "0.000683"),
        (90, 0.05 / 3, Margin(), 0.008, 0.00190772, 0.00192503, True, "0.000582"),
        (90, 0.05, Margin(relative=0.2), 0.006, 0.00191970, 0.00066496, True, "0.02024"),
    ],
)
def test_error_rate_vectors(
    candidate_errors: int,
    alpha: float,
    margin: Margin,
    estimate: float,
    se: float,
    lower: float,
    harm: bool,
    p: str,
) -> None:
    c = contrast(proportion_arm(95_000, 950), proportion_arm(5_000, candidate_errors), margin)
    # N* = 100,000 = n: x = c(2 alpha), so I* is the information reached.
    test = harm_test(c, alpha, c.information)
    assert test.estimate == pytest.approx(estimate, abs=1e-12)
    assert test.standard_error == pytest.approx(se, abs=5e-9)
    assert test.lower_bound == pytest.approx(lower, abs=5e-9)
    assert test.harm is harm
    decimals = len(p.split(".")[1])
    assert test.p_value == pytest.approx(float(p), abs=0.5 * 10**-decimals)


def test_histogram_example_means_and_exceedance() -> None:
    control = arm_from_histogram(EDGES, CONTROL_BUCKETS, 1500, cap=10)
    candidate = arm_from_histogram(EDGES, CANDIDATE_BUCKETS, 140, cap=10)
    assert (control.mean, control.variance) == (pytest.approx(0.15), pytest.approx(0.142698, abs=5e-7))
    assert (candidate.mean, candidate.variance) == (pytest.approx(0.28), pytest.approx(0.521059, abs=5e-7))

    def test_at_n_star_20000(c: Contrast) -> tuple[float, float, float]:
        test = harm_test(c, ALPHA, c.information * 20_000 / 10_500)
        assert test.harm
        return test.estimate, test.standard_error, test.lower_bound

    est, se, lower = test_at_n_star_20000(contrast(control, candidate, Margin()))
    assert (est, se, lower) == (pytest.approx(0.13), pytest.approx(0.03250, abs=5e-6), pytest.approx(0.03797, abs=5e-6))
    est, _, lower = test_at_n_star_20000(contrast(control, candidate, Margin(relative=0.10)))
    assert (est, lower) == (pytest.approx(0.115), pytest.approx(0.02284, abs=5e-6))

    control_tail = exceedance_arm(EDGES, CONTROL_BUCKETS, 0.5)
    candidate_tail = exceedance_arm(EDGES, CANDIDATE_BUCKETS, 0.5)
    assert (control_tail.mean, candidate_tail.mean) == (pytest.approx(0.05), pytest.approx(0.12))
    _, se, lower = test_at_n_star_20000(contrast(control_tail, candidate_tail, Margin()))
    assert (se, lower) == (pytest.approx(0.01470, abs=5e-6), pytest.approx(0.02839, abs=5e-6))


def test_histogram_counts_are_rounded_and_made_monotone_before_use() -> None:
    jittered = [3999.6, 7000.2, 8800, 9499.8, 9850.4, 9979.9, 10000.3]
    assert arm_from_histogram(EDGES, jittered, 1500, cap=10) == arm_from_histogram(EDGES, CONTROL_BUCKETS, 1500, 10)
    dipped = [4000, 7000, 6990, 9500, 9850, 9980, 10000]
    assert arm_from_histogram(EDGES, dipped, 1500, 10) == arm_from_histogram(
        EDGES, [4000, 7000, 7000, 9500, 9850, 9980, 10000], 1500, 10
    )


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: arm_from_histogram(EDGES, CONTROL_BUCKETS[:-1], 1500, 10), "cumulative count"),
        (lambda: arm_from_histogram(EDGES, CONTROL_BUCKETS, 1500, 2.5), "cap"),
        (lambda: arm_from_histogram(EDGES, CONTROL_BUCKETS, 1500, math.inf), "cap must be finite"),
        (lambda: arm_from_histogram([0.1, 0.05], [1, 2, 3], 1, 10), "edges must increase"),
        (lambda: exceedance_arm(EDGES, CONTROL_BUCKETS, 0.3), "one of the histogram's edges"),
        (lambda: proportion_arm(-1, 0), "n must be"),
        (lambda: arm_from_bounds(10, 5, 1, 0), "high > low"),
        (lambda: harm_test(Contrast(0.1, 0.0), ALPHA, 1.0), "variance"),
        (lambda: mixing_index(1, 1, 0.7), "alpha"),
        (lambda: contrast(GB_A, GB_B, Margin(relative=1.0), higher_is_better=True), "must be below 1"),
    ],
)
def test_bad_input_is_refused_naming_what_to_fix(call: object, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        call()  # type: ignore[operator]


def test_arms_post_process_counts() -> None:
    assert proportion_arm(100.4, 120) == Arm(100, 100, 0.0)
    assert proportion_arm(1000, 10) == Arm(1000, 10, pytest.approx(0.0099))
    assert arm_from_bounds(100, 70, 0, 1) == Arm(100, 70, pytest.approx(0.21))
    assert arm_from_sums(1, 3.0, 9.0).variance == 0.0


def test_a_higher_is_better_margin_allows_the_candidate_to_be_lower_by_that_much() -> None:
    control, candidate = arm_from_bounds(10_000, 8_000, 0, 1), arm_from_bounds(10_000, 7_700, 0, 1)
    plain = contrast(control, candidate, Margin(), higher_is_better=True)
    loose = contrast(control, candidate, Margin(relative=0.1), higher_is_better=True)
    assert plain.estimate == pytest.approx(0.03)  # 0.80 - 0.77: worse by 3 points
    assert loose.estimate == pytest.approx(0.72 - 0.77)  # within the 10 % allowance
    assert contrast(candidate, control, Margin(), higher_is_better=True).estimate == pytest.approx(-0.03)


def test_vif_inflates_the_variance_only() -> None:
    a, b = proportion_arm(95_000, 950), proportion_arm(5_000, 75)
    plain, inflated = contrast(a, b, Margin()), contrast(a, b, Margin(), vif=3.0)
    assert inflated.estimate == plain.estimate
    assert inflated.variance == pytest.approx(3 * plain.variance)


def test_combining_one_stratum_changes_nothing_and_strata_weigh_by_information() -> None:
    one = Contrast(0.2, 0.01)
    assert combine([one]) == one
    both = combine([Contrast(1.0, 1.0), Contrast(0.0, 1 / 3)])
    assert (both.estimate, both.information) == (pytest.approx(0.25), pytest.approx(4.0))


def test_the_power_design_of_the_worked_example() -> None:
    def required(alpha: float) -> float:
        plan = design(
            0.01,
            0.01 * 0.99,
            proportion=True,
            detect=Margin(relative=1.0),
            margin=Margin(),
            candidate_share=0.05,
            alpha=alpha,
        )
        return plan.required_candidate_n

    assert required(0.05) == 2638
    assert 3261 < required(0.05 / 3) <= 3262
    assert 3644 <= required(0.05 / 6) <= 3645


def test_i_star_is_the_information_reached_with_the_planned_sample_under_no_harm() -> None:
    plan = design(
        0.01,
        0.0099,
        proportion=True,
        detect=Margin(relative=1.0),
        margin=Margin(),
        candidate_share=0.05,
        alpha=ALPHA,
    )
    n_b = plan.required_candidate_n
    reached = contrast(Arm(n_b * 19, n_b * 19 * 0.01, 0.0099), Arm(n_b, n_b * 0.01, 0.0099), Margin())
    assert reached.information == pytest.approx(plan.information_star)


def test_a_mean_design_scales_the_variance_with_the_harmed_mean() -> None:
    plan = design(
        0.2, 0.04, proportion=False, detect=Margin(relative=0.2), margin=Margin(), candidate_share=0.05, alpha=ALPHA
    )
    k = one_sided_half_width(1.0, mixing_index(1, 1, ALPHA), ALPHA)
    expected = (k + 0.8416212335729143) ** 2 * (0.04 * 1.44 + 0.04 / 19) / 0.04**2
    assert plan.required_candidate_n == math.ceil(expected)


def test_a_higher_is_better_design_detects_a_drop() -> None:
    def plan(relative: float) -> float:
        return design(
            0.8,
            0.16,
            proportion=True,
            detect=Margin(relative=relative),
            margin=Margin(),
            candidate_share=0.05,
            alpha=ALPHA,
            higher_is_better=True,
        ).required_candidate_n

    # A 10 % drop in success (0.8 -> 0.72) takes more samples to show than a 20 % drop (0.8 -> 0.64).
    assert plan(0.1) > plan(0.2)
    with pytest.raises(ValueError, match="relative drop, below 1"):
        plan(1.0)


def test_a_detectable_harm_must_exceed_the_margin() -> None:
    with pytest.raises(ValueError, match="must exceed the margin"):
        design(
            0.01,
            0.0099,
            proportion=True,
            detect=Margin(relative=0.1),
            margin=Margin(relative=0.2),
            candidate_share=0.05,
            alpha=ALPHA,
        )


@pytest.mark.parametrize(
    ("control", "candidate", "proportion", "reason"),
    [
        (proportion_arm(10_000, 100), proportion_arm(37, 1), True, "needs 100 candidate samples, has 37"),
        (proportion_arm(10_000, 4), proportion_arm(500, 1), True, "needs 5 control events, has 4"),
        (proportion_arm(10_000, 50), proportion_arm(500, 1), True, "expected candidate events"),
        (proportion_arm(10_000, 100), proportion_arm(600, 0), True, "candidate's values do not vary"),
        (Arm(1000, 100, 0.0), Arm(200, 20, 1.0), False, "control's values do not vary"),
    ],
)
def test_the_validity_gate_says_what_is_missing(control: Arm, candidate: Arm, proportion: bool, reason: str) -> None:
    message = validity(control, candidate, proportion=proportion)
    assert message is not None
    assert reason in message


def test_the_validity_gate_passes_an_evaluable_stratum() -> None:
    assert validity(proportion_arm(10_000, 100), proportion_arm(500, 5), proportion=True) is None
    assert validity(arm_from_bounds(1000, 500, 0, 1), arm_from_bounds(100, 50, 0, 1), proportion=False) is None


PLAN = Design(information_star=253_141.0, required_candidate_n=2638.0)


def assess_rate(strata: list[tuple[Arm, Arm]]) -> object:
    return assess(strata, proportion=True, margin=Margin(), higher_is_better=False, alpha=ALPHA, design=PLAN)


def test_assess_is_insufficient_below_the_gate_and_says_why() -> None:
    result = assess(
        [(proportion_arm(1900, 19), proportion_arm(60, 3))],
        proportion=True,
        margin=Margin(),
        higher_is_better=False,
        alpha=ALPHA,
        design=PLAN,
    )
    assert result.state == "insufficient"
    assert result.test is None
    assert result.reason == "needs 100 candidate samples, has 60"
    assert result.needed_candidate_n == 2578


def test_assess_shows_harm_at_once_even_before_the_planned_sample() -> None:
    result = assess(
        [(proportion_arm(19_000, 190), proportion_arm(1_000, 40))],
        proportion=True,
        margin=Margin(),
        higher_is_better=False,
        alpha=ALPHA,
        design=PLAN,
    )
    assert result.state == "harm"
    assert result.test is not None
    assert result.test.harm
    assert result.reason.startswith("harm shown")


def test_assess_monitors_until_the_planned_sample_then_calls_it_safe() -> None:
    def at(n_b: float) -> object:
        return assess(
            [(proportion_arm(19 * n_b, 0.19 * n_b), proportion_arm(n_b, 0.01 * n_b))],
            proportion=True,
            margin=Margin(),
            higher_is_better=False,
            alpha=ALPHA,
            design=PLAN,
        )

    early = at(1000)
    assert early.state == "monitoring"  # type: ignore[attr-defined]
    assert early.needed_candidate_n == 1638  # type: ignore[attr-defined]
    assert "needs 1638 more candidate samples" in early.reason  # type: ignore[attr-defined]
    done = at(3000)
    assert done.state == "safe"  # type: ignore[attr-defined]
    assert done.needed_candidate_n == 0  # type: ignore[attr-defined]


def test_assess_counts_only_the_current_stage_towards_the_planned_sample() -> None:
    earlier = (proportion_arm(99_000, 990), proportion_arm(1_000, 10))
    current = (proportion_arm(19_000, 190), proportion_arm(1_000, 10))
    result = assess(
        [earlier, current],
        proportion=True,
        margin=Margin(),
        higher_is_better=False,
        alpha=ALPHA,
        design=PLAN,
    )
    assert result.state == "monitoring"
    assert result.candidate_n == 1000
    assert result.test is not None
    # Both strata count towards the evidence.
    single = harm_test(contrast(*current, Margin()), ALPHA, PLAN.information_star)
    assert result.test.standard_error < single.standard_error


def test_alpha_budget_splits_by_normalised_weight() -> None:
    split = alphas({"errors": 2, "latency": 1, "quality": 1})
    assert split == {"errors": pytest.approx(0.02), "latency": pytest.approx(0.01), "quality": pytest.approx(0.01)}
    assert sum(alphas({"a": 0.3, "b": 0.3}, SEGMENT_ALPHA).values()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="latency"):
        alphas({"errors": 1, "latency": 0})


def test_segment_alarm_averages_e_values_and_attribution_needs_k_over_alpha() -> None:
    e_values = {"de": 300.0, "fr": 100.0, "en": 0.5, "ja": 0.0}
    assert average_e_value(list(e_values.values())) == pytest.approx(100.125)
    assert segment_alarm(list(e_values.values()), 0.01)
    assert attributed_segments(e_values, 0.01) == []
    assert attributed_segments({**e_values, "de": 400.0}, 0.01) == ["de"]
    assert not segment_alarm([99.0, 99.0], 0.01)


finite = st.floats(min_value=-0.05, max_value=0.05, allow_nan=False)
positive = st.floats(min_value=1e-8, max_value=1e-3)


@given(
    estimate=finite,
    variance=positive,
    ratio=st.floats(min_value=1e-3, max_value=1e3),
    alpha=st.sampled_from([0.05, 0.0125, 0.002]),
)
def test_harm_is_exactly_an_e_value_of_one_over_alpha(
    estimate: float, variance: float, ratio: float, alpha: float
) -> None:
    c = Contrast(estimate, variance)
    test = harm_test(c, alpha, c.information / ratio)
    margin = abs(test.lower_bound) / test.standard_error
    if margin > 1e-9:  # away from the boundary, where rounding may go either way
        assert test.harm == (test.e_value >= 1 / alpha)
    assert test.lower_bound <= test.estimate <= test.upper_bound
    assert test.p_value == pytest.approx(min(1.0, 1 / test.e_value) if test.e_value > 0 else 1.0)


@given(
    estimate=finite,
    variance=positive,
    ratio=st.floats(min_value=1.0, max_value=1e4),
    factor=st.floats(min_value=1.0, max_value=1e3),
)
def test_an_i_star_further_from_the_information_reached_never_tightens_the_bound(
    estimate: float, variance: float, ratio: float, factor: float
) -> None:
    # The bound is tightest when I* is near the information reached; planning for twice as much or more,
    # or for a tenth or less, and moving further away, only widens it (the spec's multiplier table).
    c = Contrast(estimate, variance)
    too_large, further = 2 * ratio * c.information, 2 * ratio * factor * c.information
    assert harm_test(c, ALPHA, further).lower_bound <= harm_test(c, ALPHA, too_large).lower_bound + 1e-15
    too_small, smaller = c.information / (10 * ratio), c.information / (10 * ratio * factor)
    assert harm_test(c, ALPHA, smaller).lower_bound <= harm_test(c, ALPHA, too_small).lower_bound + 1e-15


@given(vif=st.floats(min_value=1.0, max_value=10.0), share=st.floats(min_value=0.01, max_value=0.5))
def test_the_required_sample_grows_with_the_variance_inflation(vif: float, share: float) -> None:
    def required(v: float) -> float:
        return design(
            0.01,
            0.0099,
            proportion=True,
            detect=Margin(relative=1.0),
            margin=Margin(),
            candidate_share=share,
            alpha=ALPHA,
            vif=v,
        ).required_candidate_n

    assert required(1.0) <= required(vif) <= vif * required(1.0) + 1
