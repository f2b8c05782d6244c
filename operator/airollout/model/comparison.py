"""A guardrail that compares the candidate with the control by an anytime-valid test, as the spec reads it.

A threshold guardrail asks "is this number too high?" at every analysis, however little traffic stood behind
it, so looking often is itself a source of false rollbacks. A comparison asks "has the candidate been shown
to harm users more than the margin allows?", from counts and sums Prometheus keeps since the stage started,
with a confidence sequence that stays valid however often it is read. It rolls back only on evidence of
harm, and passes a stage only once the stage has seen enough traffic to have shown a harm of the size the
guardrail is meant to catch.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

WINDOW_PLACEHOLDER = "{{window}}"
"""Where a comparison's queries take the stage's window (seconds since the stage started counting)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )


class Statistic(StrEnum):
    PROPORTION = "proportion"
    """A rate of events among requests (errors, timeouts, requests slower than a bucket edge)."""
    MEAN = "mean"
    """A mean value per request (latency, a quality score)."""


class Margin(_Model):
    """How much worse than the control the candidate may be before it counts as harm."""

    absolute: float = Field(default=0.0, ge=0)
    """In the metric's own unit (0.001 = 0.1 percentage points of an error rate)."""
    relative: float = Field(default=0.0, ge=0, le=10)
    """A fraction of the control's value (0.1 = 10% worse)."""


class Bounds(_Model):
    """The range a score can take: bounds its variance when no sum of squares is exported."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.high <= self.low:
            raise ValueError(f"bounds.high ({self.high:g}) must be above bounds.low ({self.low:g})")
        return self


class Comparison(_Model):
    """An anytime-valid one-sided test of harm of the candidate against the control.

    Every query is written once with ``{{variant}}`` (and ``{{window}}``, the stage's window such as ``540s``):
    ``sum by (locale) (increase(ai_requests_total{variant="{{variant}}"}[{{window}}]))``. Series are paired by
    their remaining labels; each label set is a segment.
    """

    statistic: Statistic
    count: str = Field(min_length=1, max_length=4096)
    """Requests (or scored requests) per variant over the window: an ``increase()`` of a counter."""
    events: str | None = Field(default=None, min_length=1, max_length=4096)
    """proportion: the requests that count as events (errors) over the window."""
    sum: str | None = Field(default=None, min_length=1, max_length=4096)
    """mean: the sum of the values over the window (``increase(x_sum[...])``)."""
    sum_of_squares: str | None = Field(default=None, min_length=1, max_length=4096)
    """mean: the sum of squared values over the window, for an exact variance."""
    buckets: str | None = Field(default=None, min_length=1, max_length=4096)
    """mean: the histogram's buckets over the window, ``sum by (le) (increase(x_bucket[...]))``, for a variance
    read off the buckets (conservative)."""
    cap: float | None = Field(default=None, gt=0)
    """mean with buckets: the largest value possible (the request timeout), bounding the +Inf bucket."""
    bounds: Bounds | None = None
    """mean: the range of a bounded score, which bounds its variance when no other source is given."""
    higher_is_better: bool = False
    """True for quality scores and success rates: harm is then the candidate being lower."""
    margin: Margin = Margin()
    detect: Margin | None = None
    """The harm each stage must have been able to show before it passes (default: twice the control's rate
    for a proportion, 20% worse for a mean)."""
    weight: float = Field(default=1.0, gt=0, le=1000)
    """This guardrail's share of the rollout's false-rollback budget, relative to the other comparisons."""
    variance_inflation: float = Field(default=1.0, ge=1, le=100)
    """Above 1 when a user's requests are correlated (sticky assignment): widens every interval by its root."""

    @model_validator(mode="after")
    def _sources(self) -> Comparison:
        if self.higher_is_better:
            drop = self.margin.relative + (self.detect.relative if self.detect else 0.2)
            if drop >= 1:
                raise ValueError(
                    "with higherIsBetter, margin.relative plus detect.relative (default 0.2) must stay below 1: "
                    "a value cannot fall by 100% or more"
                )
        if self.statistic is Statistic.PROPORTION:
            if self.events is None:
                raise ValueError("a proportion comparison needs events (the query counting errors)")
            extra = [n for n in ("sum", "sum_of_squares", "buckets", "bounds") if getattr(self, n) is not None]
            if extra:
                raise ValueError(f"a proportion comparison takes count and events only, not {', '.join(extra)}")
        else:
            if self.sum is None:
                raise ValueError("a mean comparison needs sum (the query summing the values)")
            if self.events is not None:
                raise ValueError("a mean comparison takes count and sum, not events")
            variances = [n for n in ("sum_of_squares", "buckets", "bounds") if getattr(self, n) is not None]
            if len(variances) != 1:
                raise ValueError(
                    "a mean comparison needs exactly one of sumOfSquares, buckets (with cap) or bounds, "
                    "to know the variance"
                )
            if self.buckets is not None and self.cap is None:
                raise ValueError("buckets needs cap: the largest value possible (e.g. the request timeout)")
        return self

    @property
    def queries(self) -> dict[str, str]:
        """Each query by the name of the field that holds it."""
        names = ("count", "events", "sum", "sum_of_squares", "buckets")
        return {name: query for name in names if (query := getattr(self, name)) is not None}


class OnMismatch(StrEnum):
    PAUSE = "pause"
    ROLLBACK = "rollback"
    WARN = "warn"


class InsufficientSample(StrEnum):
    HOLD = "hold"
    """Stay at the stage, saying how many more samples it needs, until it has them."""
    REVERT = "revert"
    """Roll back: a release that cannot be shown safe at this traffic does not go further."""
    PROCEED = "proceed"
    """Advance anyway: no harm was shown."""


class SampleRatio(_Model):
    """The check that each variant receives the share of traffic the stage asks for (a sample ratio mismatch)."""

    query: str = Field(min_length=1, max_length=4096)
    """Assignment units (users) per variant among those the percentage splits, e.g. a gauge of the distinct
    users each variant served lately: ``sum(ai_active_users{variant="{{variant}}"})``."""
    on_mismatch: OnMismatch = OnMismatch.PAUSE


__all__ = [
    "WINDOW_PLACEHOLDER",
    "Bounds",
    "Comparison",
    "InsufficientSample",
    "Margin",
    "OnMismatch",
    "SampleRatio",
    "Statistic",
]
