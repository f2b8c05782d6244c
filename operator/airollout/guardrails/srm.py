"""Sample ratio mismatch: does each variant receive the share of traffic the stage asked for?

When it does not (a broken bucketing, a cache in front of one variant, a bot, a candidate that crashes before
its metrics are recorded), every comparison after it is biased, so the rollout must stop trusting its
guardrails until someone looks. Two tests live here:

- `chi_square_srm`, GrowthBook's fixed-sample check (``check_srm``), for display and comparison. Re-run at
  every tick it is not anytime-valid (about 1-2 % false alarms over a day of looks at p < 0.001).
- `sequential_srm_p_value`, the anytime-valid Dirichlet-multinomial test of Lindon & Malek (Optimizely's
  ``ssrm``), which `srm_check` uses: the Bayes factor of "shares drawn around the split" against "exactly
  the split", computed in one batch from the cumulative counts (the increments telescope), with the running
  minimum of ``1/BF`` as the p-value.

Counts should be assignment units (users); request counts under sticky per-user assignment are overdispersed
and raise false alarms. Only the standard library: the chi-square tail is ``erfc`` for two arms and a
regularised upper incomplete gamma for more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SRM_MIN_PER_ARM",
    "SRM_THRESHOLD",
    "SrmResult",
    "chi_square_srm",
    "chi_square_survival",
    "sequential_srm_p_value",
    "srm_check",
]

SRM_THRESHOLD = 0.001
"""A mismatch is flagged below this p-value (GrowthBook's and Statsig's alert level)."""
SRM_MIN_PER_ARM = 8
"""No verdict before the arms together hold this many units per arm (GrowthBook's rule)."""

_DEFAULT_CONCENTRATION = 10_000.0
_GAMMA_ITERATIONS = 500
_GAMMA_EPSILON = 1e-15
_TINY = 1e-300


@dataclass(frozen=True)
class SrmResult:
    """The sample-ratio check at one tick, with the shares that explain it."""

    p: float
    """The running minimum of the sequential p-value."""
    mismatch: bool
    expected_shares: tuple[float, ...]
    observed_shares: tuple[float, ...]
    message: str


def _positive(observed: Sequence[float], weights: Sequence[float]) -> tuple[list[float], list[float]]:
    """The arms the split sends traffic to, with weights normalised to shares; a clear error for bad input."""
    if len(observed) != len(weights):
        raise ValueError(f"one count per weight is needed: {len(observed)} counts, {len(weights)} weights")
    if any(not (math.isfinite(w) and w >= 0) for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
    if any(not (math.isfinite(o) and o >= 0) for o in observed):
        raise ValueError(f"counts must be finite and >= 0, got {list(observed)}")
    kept = [(o, w) for o, w in zip(observed, weights, strict=True) if w > 0]
    whole = sum(w for _, w in kept)
    return [o for o, _ in kept], [w / whole for _, w in kept]


def _upper_gamma(a: float, x: float) -> float:
    """The regularised upper incomplete gamma Q(a, x): a series below a + 1, a continued fraction above."""
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(_GAMMA_ITERATIONS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _GAMMA_EPSILON:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # Modified Lentz evaluation of the continued fraction for Q (Numerical Recipes 6.2).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _GAMMA_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _GAMMA_EPSILON:
            break
    return math.exp(log_prefix) * h


def chi_square_survival(statistic: float, degrees_of_freedom: int) -> float:
    """P(X >= statistic) for a chi-square variable with the given degrees of freedom."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {degrees_of_freedom}")
    if degrees_of_freedom == 1:
        return math.erfc(math.sqrt(max(statistic, 0.0) / 2.0))
    return _upper_gamma(degrees_of_freedom / 2.0, statistic / 2.0)


def chi_square_srm(observed: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """GrowthBook's ``check_srm``: the chi-square statistic and p-value of the counts against the split.

    Arms with weight 0 are left out; with no units at all the p-value is 1.
    """
    counts, shares = _positive(observed, weights)
    total = sum(counts)
    if total == 0 or len(counts) < 2:
        return 0.0, 1.0
    statistic = sum((o - s * total) ** 2 / (s * total) for o, s in zip(counts, shares, strict=True))
    return statistic, chi_square_survival(statistic, len(counts) - 1)


def _log_bayes_factor(counts: Sequence[float], shares: Sequence[float], prior: Sequence[float]) -> float:
    """ln of the Dirichlet(prior)-multinomial marginal likelihood over the multinomial(shares) one.

    The multinomial coefficient is common to both and cancels.
    """
    prior_total = sum(prior)
    mixture = math.lgamma(prior_total) - math.lgamma(prior_total + sum(counts))
    mixture += sum(math.lgamma(a + x) - math.lgamma(a) for a, x in zip(prior, counts, strict=True))
    null = sum(x * math.log(s) for x, s in zip(counts, shares, strict=True) if x > 0)
    return mixture - null


def sequential_srm_p_value(
    cumulative_counts: Sequence[float], weights: Sequence[float], concentration: float = _DEFAULT_CONCENTRATION
) -> float:
    """The anytime-valid SRM p-value ``min(1, 1/BF)`` of the counts so far; the caller keeps its running minimum.

    The prior is Dirichlet(concentration x shares), centred on the split.
    """
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    counts, shares = _positive(cumulative_counts, weights)
    log_bf = _log_bayes_factor(counts, shares, [concentration * s for s in shares])
    return 1.0 if log_bf <= 0 else math.exp(-log_bf)


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def srm_check(
    cumulative_counts: Sequence[float], weights: Sequence[float], previous_p: float | None = None
) -> SrmResult:
    """The sequential SRM verdict on cumulative unit counts per arm (spec section 4).

    ``previous_p`` is the last tick's ``p``: the p-value shown is the running minimum, so a mismatch once
    shown stays shown. A mismatch needs p below `SRM_THRESHOLD` and at least `SRM_MIN_PER_ARM` units per arm
    in total; a per-arm minimum would never judge a split that sends nothing to one arm.
    """
    counts, shares = _positive(cumulative_counts, weights)
    total = sum(counts)
    observed = tuple(c / total if total else 0.0 for c in counts)
    p = sequential_srm_p_value(counts, shares)
    if previous_p is not None:
        p = min(p, previous_p)
    expected = tuple(shares)
    enough = total >= SRM_MIN_PER_ARM * len(counts)
    mismatch = enough and p < SRM_THRESHOLD
    shown = "/".join(_percent(s) for s in observed)
    asked = "/".join(_percent(s) for s in expected)
    if mismatch:
        message = f"sample ratio mismatch: observed {shown} of {total:.0f} units where the split asks {asked}"
    elif not enough:
        message = f"too few units to check the split: {total:.0f}, needs {SRM_MIN_PER_ARM * len(counts)}"
    else:
        message = f"the split holds: observed {shown} of {total:.0f} units, asked {asked}"
    return SrmResult(p, mismatch, expected, observed, f"{message} (sequential SRM p = {p:.3g})")
