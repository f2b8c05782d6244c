"""Anytime-valid comparison of a candidate with its control: is the candidate worse, and how sure are we?

A threshold guardrail re-read every tick is naive peeking: with enough looks a healthy candidate crosses it
by chance, and a small sample passes a real regression. This module is the statistics that stay valid however
often the operator looks: a one-sided normal-mixture confidence sequence on the harm contrast (the
GrowthBook / Waudby-Smith asymptotic confidence sequence, the same object as the Johari et al. mSPRT), fed
by the sufficient statistics Prometheus counters give (counts, sums, histogram buckets).

Choices, each made so a decision can be trusted and explained:

- Harm is one-sided: the contrast is ``candidate - (1 + relative) x control - absolute`` in the direction
  that hurts (for higher-is-better metrics ``(1 - relative) x control - absolute - candidate``), a linear
  contrast, so a relative margin needs no delta method. Harm is shown when the lower confidence bound of
  that contrast is above 0, which is exactly when the one-sided e-value reaches 1/alpha.
- Stages with different splits are never pooled (a Simpson's paradox): each stage is its own stratum and
  the strata combine in information time (`combine`), which is one Brownian motion in cumulative
  information, so one test with one alpha covers the whole rollout.
- The mixing index ``x = c(2 alpha) x I / I*`` uses an ``I*`` fixed before the data (`design`): the
  information planned at the end of the first gating stage. Tuning it from the same data would void the
  guarantee.
- ``upper_bound`` is the mirror of the lower bound at the same alpha and x, so ``[lower, upper]`` is a
  ``1 - 2 alpha`` confidence sequence; it is for display, never for a decision.
- No decision below the validity gate (`validity`): the normal approximation has no small-sample guarantee.
- Safe means no harm and the stage's planned sample reached (non-inferiority at the planned power), not
  merely "no harm yet".

Only the standard library: the operator image carries no numpy or scipy for sixty lines of arithmetic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

__all__ = [
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
]

SEGMENT_ALPHA = 0.01
"""The false-rollback budget shared by all segment tests of a rollout (the guardrails share 0.04)."""
MIN_CANDIDATE_SAMPLES = 100
"""The validity gate: no decision before the candidate has this many samples."""
MIN_EVENTS = 5
"""The validity gate for rates: at least this many control events, and as many expected in the candidate."""

_STANDARD_NORMAL = NormalDist()
# exp() overflows past ~709.78; an e-value that large is "infinite evidence" for every alpha in use.
_MAX_EXPONENT = 700.0


@dataclass(frozen=True)
class Arm:
    """One arm's sufficient statistics over one stratum: sample size, sum and unit variance.

    ``total`` is the number of events for a rate and the sum of the values for a mean, so the arm's mean
    is ``total / n`` either way.
    """

    n: float
    total: float
    variance: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0


@dataclass(frozen=True)
class Margin:
    """How much worse the candidate may be before it counts as harm: ``absolute + relative x control``."""

    absolute: float = 0.0
    relative: float = 0.0


@dataclass(frozen=True)
class Contrast:
    """An estimate of the harm contrast (positive = the candidate is worse) and its variance."""

    estimate: float
    variance: float

    @property
    def information(self) -> float:
        return 1.0 / self.variance


@dataclass(frozen=True)
class HarmTest:
    """The one-sided anytime-valid test of harm at one tick, and the numbers that justify it."""

    estimate: float
    standard_error: float
    lower_bound: float
    """Harm is shown when this is above 0 (the margin is already subtracted)."""
    upper_bound: float
    """The mirror of ``lower_bound`` (a ``1 - 2 alpha`` confidence sequence with it); for display only."""
    e_value: float
    p_value: float
    """``min(1, 1/e_value)``: anytime-valid; keep its running minimum to display it."""
    mixing_index: float
    harm: bool


@dataclass(frozen=True)
class Design:
    """What is fixed before a rollout's analysis starts, so that looking at the data never changes it."""

    information_star: float
    """The information planned at the end of the first gating stage; tunes the confidence sequence."""
    required_candidate_n: float
    """Candidate samples a stage needs to show no harm at the planned power (then it is safe)."""


@dataclass(frozen=True)
class Assessment:
    """One guardrail's state at one tick (spec section 7), with a sentence that says why."""

    state: Literal["harm", "safe", "insufficient", "monitoring"]
    test: HarmTest | None
    """The stratified test; None while the current stage is below the validity gate."""
    candidate_n: float
    """Candidate samples in the current stage."""
    control_n: float
    needed_candidate_n: float
    """Candidate samples the current stage still needs before it can be called safe."""
    reason: str


# --- arms from what Prometheus gives -------------------------------------------------------------------------


def _count(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite count >= 0, got {value!r}")
    # Counts come from increase(), which extrapolates to the window's edges: round them (spec section 3.3).
    return float(round(value))


def proportion_arm(n: float, events: float) -> Arm:
    """An arm of a rate: ``n`` trials (requests), ``events`` of them counted (errors); variance p(1-p)."""
    trials = _count(n, "n")
    hits = min(_count(events, "events"), trials)
    p = hits / trials if trials > 0 else 0.0
    return Arm(trials, hits, p * (1.0 - p))


def arm_from_sums(n: float, total: float, sum_squares: float) -> Arm:
    """An arm of a mean from counters of the values and of their squares (sample variance, n-1)."""
    count = _count(n, "n")
    if count < 2:
        return Arm(count, total, 0.0)
    variance = (sum_squares - total * total / count) / (count - 1.0)
    return Arm(count, total, max(variance, 0.0))


def arm_from_bounds(n: float, total: float, low: float, high: float) -> Arm:
    """An arm of a mean known to lie in [low, high] (a score), with the Bhatia-Davis bound as its variance.

    ``(high - mean)(mean - low)`` is the largest variance any distribution on [low, high] with that mean
    can have, so the test stays valid without a second moment; it is conservative.
    """
    if not high > low:
        raise ValueError(f"the bounds of a score need high > low, got low={low!r}, high={high!r}")
    count = _count(n, "n")
    if count == 0:
        return Arm(0.0, 0.0, 0.0)
    mean = min(max(total / count, low), high)
    return Arm(count, total, (high - mean) * (mean - low))


def _buckets(edges: Sequence[float], cumulative: Sequence[float]) -> list[float]:
    if len(cumulative) != len(edges) + 1:
        raise ValueError(
            f"a histogram needs one cumulative count per finite edge plus +Inf last: "
            f"{len(edges)} edges, {len(cumulative)} counts"
        )
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"histogram edges must increase, got {list(edges)}")
    # A bucket can read lower than the one below it when increase() extrapolates each series on its own:
    # a running maximum over le restores a distribution, as histogram_quantile does (spec section 3.3).
    counts: list[float] = []
    running = 0.0
    for value in cumulative:
        running = max(running, _count(value, "a histogram bucket"))
        counts.append(running)
    return counts


def arm_from_histogram(edges: Sequence[float], cumulative: Sequence[float], total: float, cap: float) -> Arm:
    """An arm of a mean from a classic histogram (spec section 2.2, option 3).

    ``edges`` are the finite ``le`` values; ``cumulative`` the bucket counts with +Inf last; ``total`` the
    ``_sum``; ``cap`` the largest value possible (a request timeout). Values are taken as uniform inside
    each finite bucket; the +Inf bucket's second moment is the Bhatia-Davis bound between the last edge
    and ``cap``, with its mean taken from ``_sum`` less the finite buckets' midpoints.
    """
    if edges and edges[0] < 0:
        raise ValueError(f"histogram edges must be >= 0 (latencies, sizes), got {edges[0]!r}")
    last = edges[-1] if edges else 0.0
    if not (cap > last and math.isfinite(cap)):
        raise ValueError(f"the cap must be finite and above the last finite edge {last!r}, got {cap!r}")
    counts = _buckets(edges, cumulative)
    n = counts[-1]
    if n < 2:
        return Arm(n, total, 0.0)
    second_moment = 0.0
    finite_mass = 0.0
    lower = 0.0
    previous = 0.0
    for upper, count in zip(edges, counts, strict=False):
        in_bucket = count - previous
        second_moment += in_bucket * (lower * lower + lower * upper + upper * upper) / 3.0
        finite_mass += in_bucket * (lower + upper) / 2.0
        lower, previous = upper, count
    overflow = n - previous
    if overflow > 0:
        overflow_mean = min(max((total - finite_mass) / overflow, last), cap)
        second_moment += overflow * (overflow_mean * (last + cap) - last * cap)
    mean = total / n
    variance = (second_moment / n - mean * mean) * n / (n - 1.0)
    return Arm(n, total, max(variance, 0.0))


def exceedance_arm(edges: Sequence[float], cumulative: Sequence[float], threshold: float) -> Arm:
    """An arm of the rate of values above ``threshold``, one of the histogram's edges (spec section 2.3).

    Counts at an ``le`` edge are exact, so a tail guardrail tested this way involves no interpolation.
    """
    if threshold not in edges:
        raise ValueError(f"the exceedance threshold {threshold!r} must be one of the histogram's edges {list(edges)}")
    counts = _buckets(edges, cumulative)
    n = counts[-1]
    return proportion_arm(n, n - counts[list(edges).index(threshold)])


# --- the contrast and its test --------------------------------------------------------------------------------


def _factor(margin: Margin, higher_is_better: bool) -> float:
    """The control's coefficient in the harm contrast: 1 + relative, or 1 - relative the other way round."""
    if higher_is_better and margin.relative >= 1:
        raise ValueError(
            f"a relative margin for a higher-is-better metric must be below 1 (100% lower is no value left), "
            f"got {margin.relative:g}"
        )
    return 1.0 - margin.relative if higher_is_better else 1.0 + margin.relative


def contrast(
    control: Arm, candidate: Arm, margin: Margin, *, higher_is_better: bool = False, vif: float = 1.0
) -> Contrast:
    """The harm contrast of one stratum: positive when the candidate is worse than the margin allows.

    ``vif`` inflates the variance when requests are not independent (sticky per-user assignment).
    """
    if control.n <= 0 or candidate.n <= 0:
        raise ValueError(f"a contrast needs samples in both arms, got control n={control.n}, candidate n={candidate.n}")
    factor = _factor(margin, higher_is_better)
    worse = candidate.mean - factor * control.mean
    estimate = (-worse if higher_is_better else worse) - margin.absolute
    variance = vif * (candidate.variance / candidate.n + factor * factor * control.variance / control.n)
    return Contrast(estimate, variance)


def relative_difference(control: Arm, candidate: Arm) -> Contrast:
    """``(candidate - control) / |control|`` with its delta-method variance, for display only.

    Never gate on it at small counts: the delta method is an approximation; margins use `contrast`.
    """
    if control.n <= 0 or candidate.n <= 0 or control.mean == 0:
        raise ValueError("a relative difference needs samples in both arms and a control mean other than 0")
    m_a, m_b = control.mean, candidate.mean
    variance = candidate.variance / candidate.n / m_a**2 + control.variance / control.n * m_b**2 / m_a**4
    return Contrast((m_b - m_a) / abs(m_a), variance)


def combine(strata: Sequence[Contrast]) -> Contrast:
    """Stage strata combined in information time (spec section 1.6, design A): information-weighted."""
    if not strata:
        raise ValueError("combine needs at least one stratum")
    information = sum(s.information for s in strata)
    return Contrast(sum(s.estimate * s.information for s in strata) / information, 1.0 / information)


def _c(a: float) -> float:
    return -2.0 * math.log(a) + math.log(1.0 - 2.0 * math.log(a))


def mixing_index(progress: float, planned: float, alpha: float, *, one_sided: bool = True) -> float:
    """How far along the test is: ``x = c(a) x progress / planned`` with a = 2 alpha one-sided, alpha two-sided.

    ``progress/planned`` is information over ``I*`` (information mode) or samples over ``N*`` (GrowthBook's
    n-indexed mode); within a stage the two agree.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    if not planned > 0:
        raise ValueError(f"the planned information (or sample) must be > 0, got {planned!r}")
    return _c(2.0 * alpha if one_sided else alpha) * progress / planned


def one_sided_half_width(standard_error: float, x: float, alpha: float) -> float:
    """The distance from the estimate to the one-sided anytime-valid bound at ``alpha``."""
    return standard_error * math.sqrt(2.0 * (1.0 + x) / x * math.log(1.0 + math.sqrt(1.0 + x) / (2.0 * alpha)))


def two_sided_interval(estimate: float, standard_error: float, x: float, alpha: float) -> tuple[float, float]:
    """The two-sided anytime-valid confidence sequence at ``alpha`` (x from ``mixing_index(one_sided=False)``)."""
    half = standard_error * math.sqrt(2.0 * (1.0 + x) / x * math.log(math.sqrt(1.0 + x) / alpha))
    return estimate - half, estimate + half


def two_sided_p_value(estimate: float, standard_error: float, x: float) -> float:
    """The two-sided mSPRT p-value ``min(1, 1/Lambda)`` matching `two_sided_interval` (GrowthBook's eq. 155)."""
    z = estimate / standard_error
    log_likelihood_ratio = x * z * z / (2.0 * (1.0 + x)) - 0.5 * math.log1p(x)
    return min(1.0, math.exp(-log_likelihood_ratio))


def _e_value(z: float, x: float) -> float:
    exponent = x * max(z, 0.0) ** 2 / (2.0 * (1.0 + x))
    if exponent > _MAX_EXPONENT:
        return math.inf
    return 2.0 * math.expm1(exponent) / math.sqrt(1.0 + x)


def harm_test(contrast: Contrast, alpha: float, information_star: float) -> HarmTest:
    """The one-sided anytime-valid test of harm (spec sections 1.2-1.3) at ``x = c(2 alpha) I / I*``.

    The e-value is the closed form that matches the bound: harm (lower bound > 0) exactly when
    ``e_value >= 1/alpha``.
    """
    if not contrast.variance > 0 or not math.isfinite(contrast.variance):
        raise ValueError(f"a harm test needs a finite variance > 0, got {contrast.variance!r}")
    x = mixing_index(contrast.information, information_star, alpha)
    se = math.sqrt(contrast.variance)
    half = one_sided_half_width(se, x, alpha)
    lower = contrast.estimate - half
    e_value = _e_value(contrast.estimate / se, x)
    return HarmTest(
        estimate=contrast.estimate,
        standard_error=se,
        lower_bound=lower,
        upper_bound=contrast.estimate + half,
        e_value=e_value,
        p_value=min(1.0, 1.0 / e_value) if e_value > 0 else 1.0,
        mixing_index=x,
        harm=lower > 0,
    )


# --- gate, plan and the per-tick procedure --------------------------------------------------------------------


def validity(control: Arm, candidate: Arm, *, proportion: bool) -> str | None:
    """None when the stratum may be judged, else why not (spec section 5.1): a sentence with the numbers."""
    if candidate.n < MIN_CANDIDATE_SAMPLES:
        return f"needs {MIN_CANDIDATE_SAMPLES} candidate samples, has {candidate.n:.0f}"
    if control.n < 1:
        return "the control has no samples"
    if proportion:
        if control.total < MIN_EVENTS:
            return f"needs {MIN_EVENTS} control events, has {control.total:.0f}"
        expected = candidate.n * control.mean
        if expected < MIN_EVENTS:
            return f"needs {MIN_EVENTS} expected candidate events at the control's rate, has {expected:.1f}"
    if control.variance <= 0:
        return "the control's values do not vary yet"
    if candidate.variance <= 0:
        return "the candidate's values do not vary yet"
    return None


def design(
    baseline: float,
    baseline_variance: float,
    *,
    proportion: bool,
    detect: Margin,
    margin: Margin,
    candidate_share: float,
    alpha: float,
    power: float = 0.8,
    vif: float = 1.0,
    higher_is_better: bool = False,
) -> Design:
    """Plan a guardrail's test from the control's baseline before the data (spec sections 5.2 and 1.6).

    ``detect`` is the harm the stage must be able to see (``relative=1.0``: 2x for a rate; ``0.2``: +20 %
    for a mean). Under that harm a rate's variance is p(1-p) at the harmed rate, and a mean's is the
    baseline's scaled by (harmed mean / baseline mean)^2 (same coefficient of variation, as latency
    scales). ``candidate_share`` is the stage's share, the control having the rest.
    """
    if not 0 < candidate_share < 1:
        raise ValueError(f"candidate_share must be in (0, 1), got {candidate_share!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if baseline_variance <= 0:
        raise ValueError(f"the baseline variance must be > 0, got {baseline_variance!r}")
    if higher_is_better and detect.relative >= 1:
        raise ValueError(
            f"the harm to detect on a higher-is-better metric is a relative drop, below 1 (0.2 = 20% lower), "
            f"got {detect.relative:g}"
        )
    harmed = _factor(detect, higher_is_better) * baseline
    harmed += -detect.absolute if higher_is_better else detect.absolute
    factor = _factor(margin, higher_is_better)
    effect = (factor * baseline - harmed if higher_is_better else harmed - factor * baseline) - margin.absolute
    if effect <= 0:
        raise ValueError(
            f"the harm to detect (relative {detect.relative:g}, absolute {detect.absolute:g}) must exceed the "
            f"margin (relative {margin.relative:g}, absolute {margin.absolute:g})"
        )
    if proportion:
        if not 0 < harmed < 1:
            raise ValueError(f"the rate to detect must be in (0, 1); baseline {baseline:g} gives {harmed:g}")
        harmed_variance = harmed * (1.0 - harmed)
    else:
        harmed_variance = baseline_variance * (harmed / baseline) ** 2 if baseline else baseline_variance
    ratio = candidate_share / (1.0 - candidate_share)
    k = one_sided_half_width(1.0, mixing_index(1.0, 1.0, alpha), alpha)
    z = _STANDARD_NORMAL.inv_cdf(power)
    required = vif * (k + z) ** 2 * (harmed_variance + factor**2 * baseline_variance * ratio) / effect**2
    required = math.ceil(required)
    # The information reached under no harm when the candidate has `required` samples at this share.
    control_n = required / ratio
    information_star = 1.0 / (vif * baseline_variance * (1.0 / required + factor**2 / control_n))
    return Design(information_star=information_star, required_candidate_n=float(required))


def _number(x: float) -> str:
    return f"{x:.3g}"


def assess(
    strata: Sequence[tuple[Arm, Arm]],
    *,
    proportion: bool,
    margin: Margin,
    higher_is_better: bool,
    alpha: float,
    design: Design,
    vif: float = 1.0,
) -> Assessment:
    """The per-tick procedure for one guardrail (spec section 7).

    ``strata`` holds (control, candidate) per stage, in order, the last being the current stage. Insufficient
    while the current stage is below the validity gate; harm when the stratified lower bound is above 0;
    safe when there is no harm and the current stage has its planned candidate sample; monitoring otherwise.
    Earlier stages below the gate are left out of the combination (their few samples carry no usable variance).
    """
    if not strata:
        raise ValueError("assess needs at least the current stage's stratum")
    control, candidate = strata[-1]
    needed = max(design.required_candidate_n - candidate.n, 0.0)
    gate = validity(control, candidate, proportion=proportion)
    if gate is not None:
        return Assessment("insufficient", None, candidate.n, control.n, needed, gate)
    contrasts = [
        contrast(a, b, margin, higher_is_better=higher_is_better, vif=vif)
        for a, b in strata
        if validity(a, b, proportion=proportion) is None
    ]
    test = harm_test(combine(contrasts), alpha, design.information_star)
    if test.harm:
        reason = (
            f"harm shown: the candidate is worse by at least {_number(test.lower_bound)} beyond the margin "
            f"(estimate {_number(test.estimate)}, e-value {_number(test.e_value)} >= {_number(1 / alpha)})"
        )
        return Assessment("harm", test, candidate.n, control.n, needed, reason)
    planned = f"{candidate.n:.0f} of {design.required_candidate_n:.0f} planned candidate samples"
    bounds = f"harm bound {_number(test.lower_bound)} to {_number(test.upper_bound)}"
    if needed == 0:
        return Assessment("safe", test, candidate.n, control.n, 0.0, f"no harm in {planned} ({bounds})")
    reason = f"no harm shown yet; needs {needed:.0f} more candidate samples ({planned}; {bounds})"
    return Assessment("monitoring", test, candidate.n, control.n, needed, reason)


# --- the false-rollback budget --------------------------------------------------------------------------------


def alphas(weights: Mapping[str, float], total: float = 0.04) -> dict[str, float]:
    """Split ``total`` over guardrails by weight (weighted Bonferroni; weights are normalised)."""
    if not weights:
        return {}
    bad = sorted(name for name, w in weights.items() if not (w > 0 and math.isfinite(w)))
    if bad:
        raise ValueError(f"guardrail weights must be finite and > 0; fix: {', '.join(bad)}")
    whole = sum(weights.values())
    return {name: total * w / whole for name, w in weights.items()}


def average_e_value(e_values: Sequence[float]) -> float:
    """The mean of segment e-values: itself an e-value for "harm in some segment" (spec section 6)."""
    if not e_values:
        raise ValueError("average_e_value needs at least one segment")
    return sum(e_values) / len(e_values)


def segment_alarm(e_values: Sequence[float], alpha: float) -> bool:
    """Harm somewhere among the segments: the average e-value reaches 1/alpha."""
    return average_e_value(e_values) >= 1.0 / alpha


def attributed_segments(e_values: Mapping[str, float], alpha: float) -> list[str]:
    """The segments to name as harmed: each whose own e-value reaches K/alpha (Bonferroni over K segments)."""
    threshold = len(e_values) / alpha
    return [name for name, e in e_values.items() if e >= threshold]
