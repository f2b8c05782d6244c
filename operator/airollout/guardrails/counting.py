"""Counting for a comparison: each variant's requests, events, sums and buckets since the stage started.

A comparison needs sufficient statistics, not a rate: how many requests each variant served in the stage and
how many of them failed (or the sum of their latencies, and its spread). Each is one instant query per
variant over one window from the stage's start (after its warm-up) to the analysis tick, as
``increase()`` of a counter summed afterwards: one window makes one extrapolation error at its edges, and
``increase()`` per series absorbs the counter resets of restarted pods, which a sum taken first would turn
into huge false increments.

What comes back is checked before it is believed (a Prometheus that lies must not decide a rollout):
counts are rounded, events clamped to their count, cumulative buckets made monotone, and a segment missing
from one variant is no data for that segment, never zero.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airollout.guardrails.judging import Sample, segment_of
from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits, bounded_text
from airollout.guardrails.prometheus import without_variant_labels
from airollout.guardrails.source import GuardrailQueryFailed, MetricsSource
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query
from airollout.model.comparison import Comparison

__all__ = ["Counted", "CountingFailed", "Totals", "count"]


@dataclass(frozen=True)
class Totals:
    """One variant's sufficient statistics for one segment over the window."""

    count: float
    events: float | None = None
    sum: float | None = None
    sum_of_squares: float | None = None
    buckets: tuple[tuple[float, float], ...] = ()
    """(upper edge, cumulative count), ascending, the last edge +Inf."""


@dataclass(frozen=True)
class Counted:
    """Both variants' totals by segment (``locale="de"``; ``""`` for a query without segment labels)."""

    candidate: Mapping[str, Totals]
    control: Mapping[str, Totals]
    problems: tuple[str, ...] = field(default=())
    """Segments left out and why (a missing series, buckets that do not add up)."""


class CountingFailed(Exception):
    """A comparison's query could not be rendered or answered; the message quotes the cause and the query."""


async def count(
    comparison: Comparison,
    variables: QueryVariables,
    source: MetricsSource,
    candidate: str,
    control: str,
    at: float | None,
    limits: GuardrailLimits = DEFAULT_LIMITS,
) -> Counted:
    """Ask every query of ``comparison`` for both variants at ``at``, and read the answers into totals."""
    queries = comparison.queries
    rendered: list[tuple[str, str, str]] = []  # (field, role, promql)
    try:
        for name, template in queries.items():
            for role, variant in (("candidate", candidate), ("control", control)):
                rendered.append((name, role, render_query(template, variables, variant)))
    except QueryTemplateInvalid as exc:
        raise CountingFailed(f"the query template is invalid: {exc}") from None
    answers = await asyncio.gather(*(source.query(q, at) for _, _, q in rendered), return_exceptions=True)
    errors = []
    by_field: dict[str, dict[str, list[Sample]]] = {}
    for (name, role, promql), answer in zip(rendered, answers, strict=True):
        if isinstance(answer, GuardrailQueryFailed):
            quoted = bounded_text(promql, limits.max_quote_chars)
            errors.append(f"{role} {name} query failed: {answer} (query: {quoted})")
        elif isinstance(answer, BaseException):
            raise answer  # a bug, not a measurement problem
        else:
            by_field.setdefault(name, {})[role] = list(answer)
    if errors:
        raise CountingFailed("; ".join(errors))
    paired = {
        name: without_variant_labels((roles["candidate"], candidate), (roles["control"], control))
        for name, roles in by_field.items()
    }
    problems: list[str] = []
    totals = {}
    for index, role in enumerate(("candidate", "control")):
        columns = {name: (pair[index] or []) for name, pair in paired.items()}
        totals[role] = _totals(columns, role, problems)
    return Counted(totals["candidate"], totals["control"], tuple(problems[:10]))


def _totals(columns: Mapping[str, Sequence[Sample]], role: str, problems: list[str]) -> dict[str, Totals]:
    scalars = {name: _by_segment(samples) for name, samples in columns.items() if name != "buckets"}
    buckets = _buckets(columns.get("buckets", ()))
    totals = {}
    for segment, requests in scalars["count"].items():
        n = _whole(requests)
        values: dict[str, float | None] = {}
        for name in ("events", "sum", "sum_of_squares"):
            if name in scalars:
                values[name] = scalars[name].get(segment)
        missing = [name for name, value in values.items() if value is None]
        if missing:
            problems.append(f"{role} {_where(segment)}has count but no {', '.join(missing)}")
            continue
        edges: tuple[tuple[float, float], ...] = ()
        if "buckets" in columns:
            edges = buckets.get(segment, ())
            if not edges or not math.isinf(edges[-1][0]):
                problems.append(f"{role} {_where(segment)}has no +Inf bucket")
                continue
            if abs(edges[-1][1] - n) > max(1.0, 0.01 * n):
                problems.append(f"{role} {_where(segment)}buckets add up to {edges[-1][1]:g}, count is {n:g}")
                continue
        events = values.get("events")
        totals[segment] = Totals(
            count=n,
            events=None if events is None else min(max(_whole(events), 0.0), n),
            sum=values.get("sum"),
            sum_of_squares=values.get("sum_of_squares"),
            buckets=edges,
        )
    return totals


def _by_segment(samples: Sequence[Sample]) -> dict[str, float]:
    return {segment_of(s.labels): s.value for s in samples if math.isfinite(s.value)}


def _buckets(samples: Sequence[Sample]) -> dict[str, tuple[tuple[float, float], ...]]:
    edges: dict[str, dict[float, float]] = {}
    for sample in samples:
        le = sample.labels.get("le")
        if le is None or not math.isfinite(sample.value):
            continue
        try:
            edge = float(le)
        except ValueError:
            continue
        segment = segment_of({k: v for k, v in sample.labels.items() if k != "le"})
        edges.setdefault(segment, {})[edge] = sample.value
    result = {}
    for segment, counts in edges.items():
        running, ordered = 0.0, []
        for edge in sorted(counts):
            # Cumulative counts never fall, as histogram_quantile assumes; extrapolation can make them.
            running = max(running, _whole(counts[edge]))
            ordered.append((edge, running))
        result[segment] = tuple(ordered)
    return result


def _whole(value: float) -> float:
    return float(max(round(value), 0))


def _where(segment: str) -> str:
    return f"segment {segment} " if segment else ""
