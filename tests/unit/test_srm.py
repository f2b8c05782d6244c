"""Sample-ratio checks: GrowthBook's chi-square semantics, the sequential Dirichlet-multinomial test and its
reference values (the specification's tables and Optimizely's ssrm marginal likelihoods), and the verdict."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airollout.guardrails import srm
from airollout.guardrails.srm import (
    SRM_MIN_PER_ARM,
    SRM_THRESHOLD,
    _log_bayes_factor,
    chi_square_srm,
    chi_square_survival,
    sequential_srm_p_value,
    srm_check,
)


def test_the_public_surface() -> None:
    assert sorted(srm.__all__) == [
        "SRM_MIN_PER_ARM",
        "SRM_THRESHOLD",
        "SrmResult",
        "chi_square_srm",
        "chi_square_survival",
        "sequential_srm_p_value",
        "srm_check",
    ]


@pytest.mark.parametrize(
    ("observed", "weights", "statistic", "p"),
    [
        ([500, 600], [0.5, 0.5], 9.090909, 0.00256883),
        ([9500, 500], [0.95, 0.05], 0.0, 1.0),
        ([9600, 400], [0.95, 0.05], 21.052632, 4.46839e-06),
        ([9560, 440], [0.95, 0.05], 7.578947, 0.00590539),
    ],
)
def test_chi_square_table(observed: list[float], weights: list[float], statistic: float, p: float) -> None:
    got_statistic, got_p = chi_square_srm(observed, weights)
    assert got_statistic == pytest.approx(statistic, abs=5e-7)
    assert got_p == pytest.approx(p, rel=1e-5)


def test_chi_square_is_1_with_no_units_and_ignores_zero_weight_arms() -> None:
    assert chi_square_srm([0, 0], [0.5, 0.5]) == (0.0, 1.0)
    assert chi_square_srm([500, 600, 7], [0.5, 0.5, 0.0]) == chi_square_srm([500, 600], [0.5, 0.5])


@pytest.mark.parametrize(
    ("statistic", "dof", "expected"),
    # scipy.stats.chi2.sf at these points.
    [
        (3.2, 2, 0.20189651799465547),
        (10.0, 3, 0.01856613546304325),
        (0.5, 4, 0.9735009788392561),
        (50.0, 5, 1.3857973367009573e-09),
        (7.8, 9, 0.554420435872857),
        (1e-3, 3, 0.9999915920809419),
        (200.0, 20, 1.1253473960842808e-31),
    ],
)
def test_chi_square_survival_for_more_than_two_arms(statistic: float, dof: int, expected: float) -> None:
    assert chi_square_survival(statistic, dof) == pytest.approx(expected, rel=1e-12)


def test_a_three_arm_split_uses_two_degrees_of_freedom() -> None:
    statistic, p = chi_square_srm([400, 300, 300], [1, 1, 1])
    assert statistic == pytest.approx(20.0)
    assert p == pytest.approx(4.5399929762484854e-05, rel=1e-12)  # exp(-10)


@pytest.mark.parametrize(
    ("counts", "weights", "p"),
    [
        ([100, 900], [0.5, 0.5], "2.37e-13"),
        ([500, 500], [0.5, 0.5], "1"),
        ([9600, 400], [0.95, 0.05], "0.00585"),
        ([60 * 1146, 60 * 54], [0.95, 0.05], "1.01e-7"),
        ([60 * 1140, 60 * 60], [0.95, 0.05], "1"),
    ],
)
def test_sequential_srm_table(counts: list[float], weights: list[float], p: str) -> None:
    got = sequential_srm_p_value(counts, weights)
    if p == "1":
        assert got == 1.0
    else:
        assert f"{got:.3g}" == f"{float(p):.3g}"


def test_optimizely_marginal_likelihoods_differ_by_the_log_bayes_factor() -> None:
    # optimizely/ssrm test_sequential_posteriors: prior all ones, null [0.4, 0.4, 0.2], cumulative
    # log marginal likelihoods (M1, M0) after each step; their difference is the log Bayes factor.
    steps = [[20, 17, 9], [18, 21, 8], [4, 6, 4], [18, 19, 11]]
    expected = [
        (-7.028201432058012, -4.0776406466061985),
        (-11.947847738358888, -8.265946861099877),
        (-15.471401950257842, -11.610743519545139),
        (-19.96484521090386, -15.781031228536165),
    ]
    cumulative = [list(map(sum, zip(*steps[: i + 1], strict=True))) for i in range(len(steps))]
    for counts, (m1, m0) in zip(cumulative, expected, strict=True):
        assert _log_bayes_factor(counts, [0.4, 0.4, 0.2], [1, 1, 1]) == pytest.approx(m1 - m0, abs=1e-12)
    assert sequential_srm_p_value(cumulative[-1], [0.4, 0.4, 0.2]) == 1.0


@given(
    batches=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=8),
    share=st.sampled_from([0.5, 0.05, 0.25]),
)
def test_the_batch_bayes_factor_is_the_sum_of_its_increments(batches: list[tuple[int, int]], share: float) -> None:
    shares, prior = [1 - share, share], [10_000 * (1 - share), 10_000 * share]
    total = 0.0
    seen = [0, 0]
    for batch in batches:
        # Each increment is the log Bayes factor of the batch under the prior updated by what came before.
        updated = [p + s for p, s in zip(prior, seen, strict=True)]
        total += _log_bayes_factor(batch, shares, updated)
        seen = [s + b for s, b in zip(seen, batch, strict=True)]
    assert _log_bayes_factor(seen, shares, prior) == pytest.approx(total, abs=1e-7)


def test_srm_check_flags_a_broken_split_and_names_the_shares() -> None:
    result = srm_check([9900, 100], [95, 5])
    assert result.mismatch
    assert result.p < SRM_THRESHOLD
    assert result.expected_shares == (0.95, 0.05)
    assert result.observed_shares == (0.99, 0.01)
    assert result.message.startswith(
        "sample ratio mismatch: observed 99%/1% of 10000 units where the split asks 95%/5%"
    )


def test_srm_check_keeps_the_running_minimum() -> None:
    shown = srm_check([9600, 400], [0.95, 0.05], previous_p=1e-4)
    assert shown.p == 1e-4
    assert shown.mismatch


def test_srm_check_waits_for_enough_units_even_when_one_arm_gets_none() -> None:
    few = srm_check([2 * SRM_MIN_PER_ARM - 1, 0], [0.5, 0.5])
    assert not few.mismatch
    assert "too few units" in few.message
    assert srm_check([2000, 0], [0.95, 0.05]).mismatch


def test_srm_check_passes_a_healthy_split() -> None:
    result = srm_check([9500, 500], [0.95, 0.05])
    assert not result.mismatch
    assert result.p == 1.0
    assert result.message.startswith("the split holds")


@pytest.mark.parametrize(
    ("counts", "weights", "names"),
    [
        ([1, 2], [1.0], "one count per weight"),
        ([1, 2], [0.0, 0.0], "weights"),
        ([1, -2], [0.5, 0.5], "counts"),
    ],
)
def test_bad_input_is_refused_naming_it(counts: list[float], weights: list[float], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        srm_check(counts, weights)


def test_on_a_single_look_the_sequential_test_is_more_conservative_than_chi_square() -> None:
    # A sanity relation: the anytime-valid test pays for optional stopping, so on one look it is the more
    # conservative of the two wherever the chi-square test is not already at 1.
    for candidate, total in itertools.product([400, 450, 480, 520], [10_000, 40_000]):
        scaled = candidate * total // 10_000
        counts = [total - scaled, scaled]
        assert sequential_srm_p_value(counts, [0.95, 0.05]) >= chi_square_srm(counts, [0.95, 0.05])[1]
