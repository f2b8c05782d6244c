"""Simulated rollouts: traffic drawn with numpy, decided tick by tick by the operator's own `assess`.

Thousands of rollouts run side by side: each tick draws the next look's requests for every run at once
(vectorised, fixed seeds), adds them to the run's current stage stratum, and then asks `assess` (and, for
segments, `harm_test`) what the operator would decide for that run, as the planner would: roll back on harm,
advance a stage once every guardrail is safe and its duration has passed, extend it up to twice, then revert.
Worlds are small classes that draw additive sufficient statistics (counts, events, bucket counts, sums) per
arm, so every scenario of the specification's section 8.3 is a world plus a list of checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from airollout.guardrails.judging import Outcome, Sample, judge
from airollout.guardrails.sequential import (
    Arm,
    Design,
    Margin,
    arm_from_histogram,
    assess,
    average_e_value,
    combine,
    contrast,
    harm_test,
    proportion_arm,
    validity,
)
from airollout.model.spec import Guardrail

Floats = npt.NDArray[np.float64]

LOOK_SECONDS = 30.0
GRACE_SECONDS = 60.0
WINDOW_SECONDS = 300.0
MAX_EXTENSIONS = 2
# Prometheus's default histogram buckets, and a request timeout as the cap of the +Inf bucket.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TIMEOUT_SECONDS = 30.0

RUNNING, ROLLED_BACK, PROMOTED, REVERTED = 0, 1, 2, 3


@dataclass(frozen=True)
class Stage:
    share: float
    minutes: float


class World(Protocol):
    """Draws one look's additive statistics per metric: for each, (control, candidate) arrays of shape (runs, k)."""

    def step(
        self, rng: np.random.Generator, shares: Floats, minute: float, seconds: float
    ) -> dict[str, tuple[Floats, Floats]]: ...

    def arm(self, metric: str, stats: Floats) -> Arm: ...


def _split(rng: np.random.Generator, rps: float, shares: Floats, seconds: float) -> tuple[Floats, Floats]:
    total = rng.poisson(rps * seconds, shares.shape[0])
    candidate = rng.binomial(total, shares)
    return (total - candidate).astype(np.float64), candidate.astype(np.float64)


@dataclass(frozen=True)
class Errors:
    """Requests arrive (Poisson) and are split per request (binomial); each fails with its arm's rate.

    ``rates`` names one or more independent error-like metrics by their control rate; ``harm`` multiplies the
    candidate's; ``drift(minute)`` multiplies both arms' (a baseline that moves with time). With ``segments``
    (name -> traffic share) every metric is also reported per segment as ``metric/segment``.
    """

    rps: float
    rates: Mapping[str, float]
    harm: Mapping[str, float] = field(default_factory=dict)
    drift: Callable[[float], float] = lambda minute: 1.0
    segments: Mapping[str, float] = field(default_factory=dict)

    def step(
        self, rng: np.random.Generator, shares: Floats, minute: float, seconds: float
    ) -> dict[str, tuple[Floats, Floats]]:
        n_a, n_b = _split(rng, self.rps, shares, seconds)
        names = list(self.segments) or [""]
        weights = np.array(list(self.segments.values()) or [1.0])
        seg_a = rng.multinomial(n_a.astype(np.int64), weights / weights.sum()).astype(np.float64)
        seg_b = rng.multinomial(n_b.astype(np.int64), weights / weights.sum()).astype(np.float64)
        out: dict[str, tuple[Floats, Floats]] = {}
        for metric, rate in self.rates.items():
            p_a = min(rate * self.drift(minute), 1.0)
            p_b = min(p_a * self.harm.get(metric, 1.0), 1.0)
            e_a = rng.binomial(seg_a.astype(np.int64), p_a).astype(np.float64)
            e_b = rng.binomial(seg_b.astype(np.int64), p_b).astype(np.float64)
            out[metric] = (
                np.stack([n_a, e_a.sum(axis=1)], axis=1),
                np.stack([n_b, e_b.sum(axis=1)], axis=1),
            )
            if self.segments:
                for j, name in enumerate(names):
                    out[f"{metric}/{name}"] = (
                        np.stack([seg_a[:, j], e_a[:, j]], axis=1),
                        np.stack([seg_b[:, j], e_b[:, j]], axis=1),
                    )
        return out

    def arm(self, metric: str, stats: Floats) -> Arm:
        return proportion_arm(float(stats[0]), float(stats[1]))


class StickyUsers:
    """Per-user sticky assignment with heterogeneous users, the case where requests are not independent.

    Each run has ``users`` users, each assigned once to the candidate with probability ``share`` (one stage
    only), sending requests at a log-normal rate and failing with a Beta-distributed propensity of mean
    ``error_rate``.
    """

    def __init__(
        self,
        *,
        rps: float,
        users: int,
        runs: int,
        share: float,
        error_rate: float,
        propensity_concentration: float,
        rate_sigma: float,
        seed: int,
    ) -> None:
        rng = np.random.default_rng(seed)
        shape = (runs, users)
        rates = rng.lognormal(0.0, rate_sigma, shape)
        self._rates = rates * rps / rates.sum(axis=1, keepdims=True)
        a, b = error_rate * propensity_concentration, (1.0 - error_rate) * propensity_concentration
        self._propensity = rng.beta(a, b, shape)
        self._candidate = rng.random(shape) < share

    def step(
        self, rng: np.random.Generator, shares: Floats, minute: float, seconds: float
    ) -> dict[str, tuple[Floats, Floats]]:
        requests = rng.poisson(self._rates * seconds)
        errors = rng.binomial(requests, self._propensity)

        def per_arm(mask: npt.NDArray[np.bool_]) -> Floats:
            return np.stack([(requests * mask).sum(axis=1), (errors * mask).sum(axis=1)], axis=1).astype(np.float64)

        return {"errors": (per_arm(~self._candidate), per_arm(self._candidate))}

    def arm(self, metric: str, stats: Floats) -> Arm:
        return proportion_arm(float(stats[0]), float(stats[1]))


@dataclass(frozen=True)
class Latency:
    """Log-normal latencies observed into a classic Prometheus histogram; ``harm`` scales the candidate's."""

    rps: float
    median_seconds: float
    sigma: float
    harm: float = 1.0
    edges: tuple[float, ...] = DEFAULT_BUCKETS

    def _observe(self, rng: np.random.Generator, counts: Floats, scale: float) -> Floats:
        """Per run: the counts of each bucket (+Inf last) and the sum of the values, as Prometheus keeps them."""
        runs = counts.shape[0]
        owner = np.repeat(np.arange(runs), counts.astype(np.int64))
        values = np.minimum(
            rng.lognormal(math.log(self.median_seconds * scale), self.sigma, owner.size), TIMEOUT_SECONDS
        )
        bucket = np.searchsorted(np.array(self.edges), values, side="left")
        width = len(self.edges) + 1
        buckets = np.bincount(owner * width + bucket, minlength=runs * width).reshape(runs, width)
        sums = np.bincount(owner, weights=values, minlength=runs)
        return np.concatenate([buckets.astype(np.float64), sums[:, None]], axis=1)

    def baseline(self, *, seed: int, samples: int = 1_000_000) -> Arm:
        """The control's mean and bucket variance as a previous stage would have measured them."""
        stats = self._observe(np.random.default_rng(seed), np.array([float(samples)]), 1.0)
        return self.arm("latency", stats[0])

    def step(
        self, rng: np.random.Generator, shares: Floats, minute: float, seconds: float
    ) -> dict[str, tuple[Floats, Floats]]:
        n_a, n_b = _split(rng, self.rps, shares, seconds)
        return {"latency": (self._observe(rng, n_a, 1.0), self._observe(rng, n_b, self.harm))}

    def arm(self, metric: str, stats: Floats) -> Arm:
        return arm_from_histogram(self.edges, np.cumsum(stats[:-1]).tolist(), float(stats[-1]), TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Check:
    """One guardrail as the operator would run it: its metric, budget and, per stage, its design.

    ``segments`` are the metric's per-segment names, tested together by the average e-value at
    ``segment_alpha``; each segment's I* is the guardrail's times ``segment_shares``. ``pooled`` feeds
    `assess` one stratum summed across stages: the bug stratification exists to prevent.
    """

    metric: str
    proportion: bool
    alpha: float
    designs: tuple[Design, ...]
    margin: Margin = field(default_factory=Margin)
    vif: float = 1.0
    pooled: bool = False
    segments: tuple[str, ...] = ()
    segment_shares: tuple[float, ...] = ()
    segment_alpha: float = 0.0


@dataclass
class Outcomes:
    """What happened to each simulated rollout."""

    result: npt.NDArray[np.int64]
    ended: Floats
    """The minute each rollout was decided (rolled back, promoted or reverted); NaN if still running."""
    first_harm: npt.NDArray[np.int64]
    """Per check and run: the look at which harm was first shown, -1 if never."""
    harm_candidate_n: Floats
    """Per check and run: the current stage's candidate samples when harm was first shown."""
    segment_alarm: npt.NDArray[np.bool_]
    decisions_below_gate: int
    """Assessments other than insufficient made while the raw counts were below the validity gate."""
    looks: int

    def rate(self, result: int) -> float:
        return float(np.mean(self.result == result))

    @property
    def runs(self) -> int:
        return int(self.result.size)


def _arms(
    world: World,
    check: Check,
    metric: str,
    frozen: Sequence[Mapping[str, tuple[Floats, Floats]]],
    current: tuple[Floats, Floats],
) -> list[tuple[Arm, Arm]]:
    if check.pooled:
        a = current[0] + sum((s[metric][0] for s in frozen), np.zeros_like(current[0]))
        b = current[1] + sum((s[metric][1] for s in frozen), np.zeros_like(current[1]))
        return [(world.arm(metric, a), world.arm(metric, b))]
    strata = [(world.arm(metric, s[metric][0]), world.arm(metric, s[metric][1])) for s in frozen]
    return [*strata, (world.arm(metric, current[0]), world.arm(metric, current[1]))]


def _below_gate(check: Check, current: tuple[Floats, Floats]) -> bool:
    """The validity gate read straight off a rate's raw counts (n, events), independently of `validity`."""
    if not check.proportion:
        return False
    (n_a, e_a), (n_b, _) = current
    return bool(n_b < 100 or e_a < 5 or n_b * e_a / max(n_a, 1.0) < 5)


def _segment_e_value(check: Check, strata: list[tuple[Arm, Arm]], share: float, design: Design) -> float:
    """A segment's e-value at the segment budget; 0 (no evidence, still a valid e-value) below the gate."""
    if validity(*strata[-1], proportion=check.proportion) is not None:
        return 0.0
    contrasts = [
        contrast(a, b, check.margin, vif=check.vif)
        for a, b in strata
        if validity(a, b, proportion=check.proportion) is None
    ]
    return harm_test(combine(contrasts), check.segment_alpha, design.information_star * share).e_value


def simulate(
    world: World,
    checks: Sequence[Check],
    stages: Sequence[Stage],
    *,
    runs: int,
    seed: int,
    advance: Literal["when_safe", "on_schedule"] = "when_safe",
    stop_on_harm: bool = True,
    look_seconds: float = LOOK_SECONDS,
    grace_seconds: float = GRACE_SECONDS,
) -> Outcomes:
    """Run ``runs`` rollouts through ``stages``, one look every ``look_seconds``, and record the decisions.

    ``when_safe``: a stage advances at its duration once every check is safe, is extended up to twice by
    its duration, then reverted. ``on_schedule``: stages advance at their duration whatever the checks say
    (to study the harm decision alone). Looks within ``grace_seconds`` of a stage's start (SDKs converging
    on the new split) are left out of its stratum.
    """
    rng = np.random.default_rng(seed)
    shares_of = np.array([s.share for s in stages])
    minutes_of = np.array([s.minutes for s in stages])
    stage = np.zeros(runs, dtype=np.int64)
    started = np.zeros(runs)
    result = np.zeros(runs, dtype=np.int64)
    ended = np.full(runs, np.nan)
    first_harm = np.full((len(checks), runs), -1, dtype=np.int64)
    harm_n = np.full((len(checks), runs), np.nan)
    segment_alarm = np.zeros((len(checks), runs), dtype=bool)
    metrics = {c.metric for c in checks} | {s for c in checks for s in c.segments}
    frozen: list[list[dict[str, tuple[Floats, Floats]]]] = [[] for _ in range(runs)]
    current: dict[str, tuple[Floats, Floats]] = {}
    below_gate = 0
    horizon = float((minutes_of * (1 + (MAX_EXTENSIONS if advance == "when_safe" else 0))).sum())
    look = 0
    minute = 0.0
    while minute < horizon and np.any(result == RUNNING):
        look += 1
        minute = look * look_seconds / 60.0
        drawn = world.step(rng, shares_of[stage], minute, look_seconds)
        counting = (minute - started) * 60.0 >= grace_seconds + look_seconds - 1e-9
        for metric in metrics:
            a, b = drawn[metric]
            if metric not in current:
                current[metric] = (np.zeros_like(a), np.zeros_like(b))
            current[metric][0][counting] += a[counting]
            current[metric][1][counting] += b[counting]
        for r in np.flatnonzero((result == RUNNING) & counting):
            k = int(stage[r])
            states = []
            for i, check in enumerate(checks):
                row = (current[check.metric][0][r], current[check.metric][1][r])
                strata = _arms(world, check, check.metric, frozen[r], row)
                assessment = assess(
                    strata,
                    proportion=check.proportion,
                    margin=check.margin,
                    higher_is_better=False,
                    alpha=check.alpha,
                    design=check.designs[k],
                    vif=check.vif,
                )
                if assessment.state != "insufficient" and _below_gate(check, row):
                    below_gate += 1
                if assessment.state == "harm" and first_harm[i, r] < 0:
                    first_harm[i, r] = look
                    harm_n[i, r] = assessment.candidate_n
                if check.segments and not segment_alarm[i, r]:
                    e_values = [
                        _segment_e_value(
                            check,
                            _arms(world, check, seg, frozen[r], (current[seg][0][r], current[seg][1][r])),
                            share,
                            check.designs[0],
                        )
                        for seg, share in zip(check.segments, check.segment_shares, strict=True)
                    ]
                    segment_alarm[i, r] = average_e_value(e_values) >= 1.0 / check.segment_alpha
                states.append(assessment.state)
            if stop_on_harm and ("harm" in states or segment_alarm[:, r].any()):
                result[r], ended[r] = ROLLED_BACK, minute
                continue
            elapsed = minute - started[r]
            due = elapsed >= minutes_of[k] - 1e-9
            if advance == "on_schedule" or all(s == "safe" for s in states):
                if not due:
                    continue
            elif elapsed >= minutes_of[k] * (1 + MAX_EXTENSIONS) - 1e-9:
                result[r], ended[r] = REVERTED, minute
                continue
            else:
                continue
            if k + 1 == len(stages):
                result[r], ended[r] = PROMOTED, minute
                continue
            frozen[r].append({m: (current[m][0][r].copy(), current[m][1][r].copy()) for m in metrics})
            for m in metrics:
                current[m][0][r] = 0.0
                current[m][1][r] = 0.0
            stage[r] = k + 1
            started[r] = minute
    return Outcomes(result, ended, first_harm, harm_n, segment_alarm, below_gate, look)


def design_effect(world: World, metric: str, minutes: float, *, runs: int, seed: int) -> float:
    """The variance of the request-level z-score across A/A runs: the VIF an A/A shadow split would measure."""
    rng = np.random.default_rng(seed)
    shares = np.zeros(runs)
    totals: tuple[Floats, Floats] | None = None
    for look in range(1, int(minutes * 60 / LOOK_SECONDS) + 1):
        a, b = world.step(rng, shares, look * LOOK_SECONDS / 60, LOOK_SECONDS)[metric]
        totals = (a, b) if totals is None else (totals[0] + a, totals[1] + b)
    assert totals is not None
    (n_a, e_a), (n_b, e_b) = totals[0].T, totals[1].T
    p_a, p_b = e_a / n_a, e_b / n_b
    z = (p_b - p_a) / np.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return float(np.var(z[np.isfinite(z)]))


def _window_rate(windows: Floats) -> Floats:
    requests, errors = windows[..., 0], windows[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(requests > 0, errors / requests, math.nan)


def threshold_rollbacks(
    guardrail: Guardrail,
    *,
    rps: float,
    share: float,
    error_rate: float,
    minutes: float,
    runs: int,
    seed: int,
    harm: float = 1.0,
) -> float:
    """The share of stages today's threshold judge rolls back (healthy ones unless ``harm`` multiplies the
    candidate's error rate): one look every 30 s from the stage's start, each on the last 5 minutes' error
    rate per variant, as the guardrail's ``rate(...[5m])``."""
    rng = np.random.default_rng(seed)
    window = int(WINDOW_SECONDS / LOOK_SECONDS)
    looks = window + int(minutes * 60 / LOOK_SECONDS)
    world = Errors(rps, {"errors": error_rate}, harm={"errors": harm})
    # The window before the stage: all traffic on the control, whose series (unlike the candidate's) already
    # exists, so its rate is over a full window from the first look.
    steps = [
        world.step(rng, np.full(runs, share if t >= window else 0.0), 0.0, LOOK_SECONDS)["errors"] for t in range(looks)
    ]
    control = np.cumsum(np.stack([a for a, _ in steps]), axis=0)
    candidate = np.cumsum(np.stack([b for _, b in steps]), axis=0)
    rolled_back = 0
    first = window  # today's analysis looks from the first interval on, with no warm-up
    # Per look and run, the last window's (requests, errors) of each variant, and so its error rate.
    control_rate, candidate_rate = (
        _window_rate(c[first:] - c[first - window : looks - window]) for c in (control, candidate)
    )
    for r in range(runs):
        for t in range(looks - first):
            verdict = judge(guardrail, [Sample({}, candidate_rate[t, r])], [Sample({}, control_rate[t, r])])
            if verdict.outcome == Outcome.BREACHED:
                rolled_back += 1
                break
    return rolled_back / runs


def mcse(rate: float, runs: int) -> float:
    """The Monte Carlo standard error of a rate estimated from ``runs`` independent runs."""
    return math.sqrt(max(rate * (1 - rate), 1e-12) / runs)


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"
