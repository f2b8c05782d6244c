"""Judging a comparison: the counts of a stage in, an outcome per segment out, with how sure it is.

Pure, like the threshold judge: `counting` asks Prometheus, this turns the totals into arms, plans the test
once (from the control's baseline, the first time the stage can be judged), combines the finished stages
with the current one in information time, and says one of:

- Breached: harm beyond the margin is shown (the one-sided confidence bound is above zero);
- Passed: no harm, and the stage has seen the sample it needs to have shown a harm of the planned size;
- Inconclusive: no harm shown yet, and not enough sample to call it safe: the stage holds, and the message
  says how many more samples are needed and about how long they take at the current traffic;
- Warning: harm shown within the segments (the average of their e-values crossed their budget), not
  overall: the stage holds, naming the segments.

The overall test takes its share of the rollout's false-rollback budget; segments share a smaller budget
of their own, tested within the stage (each stage a fresh test, so their budget is divided by the stages).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from airollout.guardrails import sequential
from airollout.guardrails.counting import Counted, Totals
from airollout.guardrails.judging import GuardrailVerdict, Outcome, SegmentJudgement
from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits, bounded_text
from airollout.model.comparison import Comparison, Statistic
from airollout.model.spec import Guardrail, NoDataPolicy
from airollout.model.status import ArmTotals, ComparisonRecord, Evidence, Stratum

__all__ = ["ComparisonContext", "judge_comparison"]

_MAX_SEGMENTS = 5
"""Segments tested per comparison: the busiest ones (spec: top K by traffic, K <= 5)."""

_FIRST_COUNTS_SECONDS = 30
"""A window younger than this may have no series yet (two scrapes are needed): not yet a sign of no data."""

_STATE_OUTCOME = {
    "harm": Outcome.BREACHED,
    "safe": Outcome.PASSED,
    "monitoring": Outcome.INCONCLUSIVE,
    "insufficient": Outcome.INCONCLUSIVE,
}


@dataclass(frozen=True)
class ComparisonContext:
    """What the judge needs to know of the rollout besides the counts."""

    stage: str
    share: float | None
    """The candidate's share the stage asks for, in (0, 1); None when the stage splits no plain percentage
    (segments or an audience), and the observed share stands in for planning the sample."""
    alpha: float
    """This guardrail's share of the false-rollback budget."""
    segment_alpha: float
    """Its segments' share, for this stage."""
    window_seconds: float
    record: ComparisonRecord | None
    """What earlier analyses fixed and counted; None before the first."""


def _arm(comparison: Comparison, totals: Totals) -> sequential.Arm:
    if comparison.statistic is Statistic.PROPORTION:
        return sequential.proportion_arm(totals.count, totals.events or 0.0)
    total = totals.sum or 0.0
    if comparison.sum_of_squares is not None:
        return sequential.arm_from_sums(totals.count, total, totals.sum_of_squares or 0.0)
    if comparison.bounds is not None:
        return sequential.arm_from_bounds(totals.count, total, comparison.bounds.low, comparison.bounds.high)
    edges = [edge for edge, _ in totals.buckets[:-1]]
    cumulative = [count for _, count in totals.buckets]
    return sequential.arm_from_histogram(edges, cumulative, total, comparison.cap or math.inf)


def _pooled(totals: Sequence[Totals]) -> Totals | None:
    """All segments of one variant together: every total adds up (buckets edge by edge)."""
    if not totals:
        return None
    edges: dict[float, float] = {}
    for t in totals:
        for edge, count in t.buckets:
            edges[edge] = edges.get(edge, 0.0) + count

    def added(name: str) -> float | None:
        values = [getattr(t, name) for t in totals]
        return None if any(v is None for v in values) else float(sum(values))

    return Totals(
        count=sum(t.count for t in totals),
        events=added("events"),
        sum=added("sum"),
        sum_of_squares=added("sum_of_squares"),
        buckets=tuple(sorted(edges.items())),
    )


def _record_arm(arm: sequential.Arm) -> ArmTotals:
    return ArmTotals(n=arm.n, total=arm.total, variance=arm.variance)


def _live_arm(record: ArmTotals) -> sequential.Arm:
    return sequential.Arm(record.n, record.total, record.variance)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _number(x: float) -> str:
    return f"{x:.4g}"


def judge_comparison(
    guardrail: Guardrail,
    counted: Counted,
    context: ComparisonContext,
    limits: GuardrailLimits = DEFAULT_LIMITS,
) -> GuardrailVerdict:
    """The verdict of one comparison at one analysis, carrying its updated record for status."""
    comparison = guardrail.compare
    if comparison is None:
        raise ValueError(f"guardrail {guardrail.name!r} is not a comparison")
    window = f"{context.window_seconds:.0f}s"
    candidate = _pooled(list(counted.candidate.values()))
    control = _pooled(list(counted.control.values()))
    if candidate is None or control is None:
        missing = "the candidate" if candidate is None else "the control"
        if context.window_seconds < _FIRST_COUNTS_SECONDS:
            # increase() needs two scrapes inside its window: a window this young has no series yet.
            why = f"{guardrail.name} inconclusive: no counts for {missing} yet, {window} into the stage"
            judgement = SegmentJudgement(guardrail.name, "", Outcome.INCONCLUSIVE, None, None, None, window, why)
            return GuardrailVerdict(guardrail.name, Outcome.INCONCLUSIVE, (judgement,), record=context.record)
        detail = "; ".join(counted.problems)
        return _no_data(guardrail, f"no series for {missing}" + (f" ({detail})" if detail else ""), window, context)
    try:
        arms = (_arm(comparison, control), _arm(comparison, candidate))
    except ValueError as error:
        return _no_data(guardrail, f"the counts cannot be used: {error}", window, context)
    record = _planned(guardrail.name, comparison, arms, context)
    current = Stratum(stage=context.stage, control=_record_arm(arms[0]), candidate=_record_arm(arms[1]))
    record = record.model_copy(update={"current": current}) if record is not None else None
    overall, _ = _assess(comparison, arms, record, context, window, guardrail.name, "")
    outcome = overall.outcome
    judgements = [overall]
    if record is not None and (len(counted.candidate) > 1 or "" not in counted.candidate):
        segments = _segments(guardrail, comparison, counted, record, context, window)
        judgements += segments
        if outcome is not Outcome.BREACHED and any(j.outcome is Outcome.WARNING for j in segments):
            outcome = Outcome.WARNING
    judgements = [dataclasses.replace(j, message=bounded_text(j.message, limits.max_message_chars)) for j in judgements]
    return GuardrailVerdict(guardrail.name, outcome, tuple(judgements), record=record)


def _planned(
    name: str, comparison: Comparison, arms: tuple[sequential.Arm, sequential.Arm], context: ComparisonContext
) -> ComparisonRecord | None:
    """The record with its plan: kept once made, made the first time the stage passes the validity gate."""
    if context.record is not None:
        return context.record
    control, candidate = arms
    proportion = comparison.statistic is Statistic.PROPORTION
    if sequential.validity(control, candidate, proportion=proportion) is not None:
        return None
    try:
        plan = _design(comparison, control.mean, control.variance, context, arms)
    except ValueError:
        return None
    return ComparisonRecord(
        guardrail=name,
        baseline=control.mean,
        baseline_variance=control.variance,
        information_star=plan.information_star,
    )


def _design(
    comparison: Comparison,
    baseline: float,
    variance: float,
    context: ComparisonContext,
    arms: tuple[sequential.Arm, sequential.Arm],
) -> sequential.Design:
    """The stage's plan from the control's baseline: the sample it needs at its share, at this budget."""
    return sequential.design(
        baseline,
        variance,
        proportion=comparison.statistic is Statistic.PROPORTION,
        detect=_detect(comparison),
        margin=_margin(comparison),
        candidate_share=_share(context, arms),
        alpha=context.alpha,
        vif=comparison.variance_inflation,
        higher_is_better=comparison.higher_is_better,
    )


def _detect(comparison: Comparison) -> sequential.Margin:
    if comparison.detect is not None:
        return sequential.Margin(comparison.detect.absolute, comparison.detect.relative)
    # Twice the control's rate for errors; 20% worse for a mean, or for a success rate (which cannot double).
    doubles = comparison.statistic is Statistic.PROPORTION and not comparison.higher_is_better
    return sequential.Margin(0.0, (1.0 if doubles else 0.2) + comparison.margin.relative)


def _margin(comparison: Comparison) -> sequential.Margin:
    return sequential.Margin(comparison.margin.absolute, comparison.margin.relative)


def _share(context: ComparisonContext, arms: tuple[sequential.Arm, sequential.Arm]) -> float:
    if context.share is not None:
        return context.share
    control, candidate = arms
    observed = candidate.n / (candidate.n + control.n) if candidate.n + control.n else 0.5
    return min(max(observed, 0.001), 0.999)


def _assess(
    comparison: Comparison,
    arms: tuple[sequential.Arm, sequential.Arm],
    record: ComparisonRecord | None,
    context: ComparisonContext,
    window: str,
    name: str,
    segment: str,
) -> tuple[SegmentJudgement, float]:
    """One segment's (or, for ``""``, the whole stage's) judgement, and its e-value (0 when untested)."""
    control, candidate = arms
    proportion = comparison.statistic is Statistic.PROPORTION
    where = f" for {segment}" if segment else ""
    if record is None:
        gate = sequential.validity(control, candidate, proportion=proportion) or "the test cannot be planned yet"
        evidence = Evidence(estimate=0.0, candidate_samples=candidate.n, control_samples=control.n)
        judgement = SegmentJudgement(
            name, segment, Outcome.INCONCLUSIVE, candidate.mean, None, control.mean, window,
            f"{name} inconclusive{where}: {gate} (window {window})", evidence,
        )  # fmt: skip
        return judgement, 0.0
    plan = _design(comparison, record.baseline, record.baseline_variance, context, arms)
    strata = [(_live_arm(s.control), _live_arm(s.candidate)) for s in record.strata] if not segment else []
    assessment = sequential.assess(
        [*strata, arms],
        proportion=proportion,
        margin=_margin(comparison),
        higher_is_better=comparison.higher_is_better,
        alpha=context.alpha,
        design=sequential.Design(record.information_star, plan.required_candidate_n),
        vif=comparison.variance_inflation,
    )
    test = assessment.test
    time_needed = None
    rate = candidate.n / context.window_seconds if context.window_seconds > 0 else 0.0
    if assessment.needed_candidate_n > 0 and rate > 0:
        time_needed = _duration(assessment.needed_candidate_n / rate)
    evidence = Evidence(
        estimate=test.estimate if test else 0.0,
        lower_bound=test.lower_bound if test else None,
        upper_bound=test.upper_bound if test else None,
        candidate_samples=candidate.n,
        control_samples=control.n,
        samples_needed=assessment.needed_candidate_n,
        time_needed=time_needed,
        p_value=test.p_value if test else None,
    )
    outcome = _STATE_OUTCOME[assessment.state]
    word = {"harm": "breached", "safe": "passed"}.get(assessment.state, "inconclusive")
    eta = f", about {time_needed} at the current traffic" if time_needed and outcome is Outcome.INCONCLUSIVE else ""
    message = (
        f"{name} {word}{where}: {assessment.reason}{eta}; candidate {_number(candidate.mean)} vs control "
        f"{_number(control.mean)} (window {window})"
    )
    threshold = test.lower_bound if test else None
    judgement = SegmentJudgement(
        name, segment, outcome, candidate.mean, threshold, control.mean, window, message, evidence
    )  # fmt: skip
    return judgement, test.e_value if test else 0.0


def _segments(
    guardrail: Guardrail,
    comparison: Comparison,
    counted: Counted,
    record: ComparisonRecord,
    context: ComparisonContext,
    window: str,
) -> list[SegmentJudgement]:
    """The busiest segments, each tested within the stage; harm among them holds the stage (Warning)."""
    paired = [s for s in counted.candidate if s in counted.control]
    busiest = sorted(paired, key=lambda s: counted.candidate[s].count + counted.control[s].count, reverse=True)
    judged: list[tuple[SegmentJudgement, float]] = []
    segment_context = dataclasses.replace(context, alpha=context.segment_alpha)
    for segment in busiest[:_MAX_SEGMENTS]:
        try:
            arms = (_arm(comparison, counted.control[segment]), _arm(comparison, counted.candidate[segment]))
        except ValueError:
            continue
        judgement, e_value = _assess(comparison, arms, record, segment_context, window, guardrail.name, segment)
        # A segment alone never rolls back: the average of the segments' e-values decides, below.
        if judgement.outcome is Outcome.BREACHED:
            judgement = dataclasses.replace(judgement, outcome=Outcome.INCONCLUSIVE)
        judged.append((judgement, e_value))
    tested = {j.segment: e for j, e in judged}
    if not tested or not sequential.segment_alarm(list(tested.values()), context.segment_alpha):
        return [j for j, _ in judged]
    named = set(sequential.attributed_segments(tested, context.segment_alpha)) or set(tested)
    return [
        dataclasses.replace(
            j,
            outcome=Outcome.WARNING,
            message=f"{guardrail.name} warning for {j.segment}: harm shown among the segments; {j.message}",
        )
        if j.segment in named
        else j
        for j, _ in judged
    ]


def _no_data(guardrail: Guardrail, reason: str, window: str, context: ComparisonContext) -> GuardrailVerdict:
    outcome = {
        NoDataPolicy.HOLD: Outcome.NO_DATA,
        NoDataPolicy.PASS: Outcome.PASSED,
        NoDataPolicy.FAIL: Outcome.BREACHED,
    }[guardrail.no_data]
    message = f"{guardrail.name} has no data: {reason}; noData: {guardrail.no_data.value} (window {window})"
    judgement = SegmentJudgement(guardrail.name, "", outcome, None, None, None, window, message)
    return GuardrailVerdict(guardrail.name, outcome, (judgement,), record=context.record)
