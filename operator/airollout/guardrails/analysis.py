"""One analysis of one rollout: every guardrail measured at one tick, and the traffic split checked.

Threshold guardrails are measured as they always were; comparisons count the stage since its warm-up and
judge the counts against what status recorded of the earlier stages; the sample-ratio check counts
assignment units per variant and compares their shares with the split the stage asks for. Everything a
judgement depends on besides Prometheus (the stage, its share, the budget, the window) is worked out here
from spec and status, so the judges stay pure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from airollout.guardrails import srm
from airollout.guardrails.comparing import ComparisonContext, judge_comparison
from airollout.guardrails.counting import CountingFailed, count
from airollout.guardrails.judging import GuardrailVerdict, Outcome, SegmentJudgement, judge_error
from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits, bounded_text
from airollout.guardrails.prometheus import measure, without_variant_labels
from airollout.guardrails.source import GuardrailQueryFailed, MetricsSource
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query
from airollout.model.spec import AIRolloutSpec, Guardrail, Stage, parse_duration
from airollout.model.status import AIRolloutStatus, SampleRatioStatus

__all__ = ["OVERALL_SHARE", "Measured", "analyse", "comparison_alphas"]

OVERALL_SHARE = 0.8
"""The part of the false-rollback budget the comparisons' overall tests share; their segments get the rest."""


@dataclass(frozen=True)
class Measured:
    """What one analysis found."""

    verdicts: tuple[GuardrailVerdict, ...]
    sample_ratio: SampleRatioStatus | None = None
    """None when the split was not checked (not configured, or no plain percentage at this stage)."""


def comparison_alphas(spec: AIRolloutSpec) -> dict[str, tuple[float, float]]:
    """Each comparison's (overall, per-stage segment) share of ``analysis.falseRollbackRate``, by weight.

    Segments are tested stage by stage, each stage a fresh test, so their share is divided by the stages
    that compare (those below 100%).
    """
    weights = {g.name: g.compare.weight for g in spec.inline_guardrails if g.compare is not None}
    whole = sum(weights.values())
    budget = spec.analysis.false_rollback_rate
    compared_stages = max(1, sum(1 for s in spec.path if s.percentage < 100))
    return {
        name: (budget * OVERALL_SHARE * w / whole, budget * (1 - OVERALL_SHARE) * w / whole / compared_stages)
        for name, w in weights.items()
    }


def _plain_share(spec: AIRolloutSpec, index: int) -> float | None:
    """The candidate's share of traffic when the stage splits a plain percentage; None otherwise."""
    stage = spec.path[index]
    granted = any(s.segments for s in spec.path[: index + 1])
    if stage.audience or granted or not 0 < stage.percentage < 100:
        return None
    return stage.percentage / 100


async def analyse(
    spec: AIRolloutSpec,
    status: AIRolloutStatus,
    namespace: str,
    source: MetricsSource,
    at: datetime,
    limits: GuardrailLimits = DEFAULT_LIMITS,
) -> Measured:
    """Measure every guardrail at ``at`` (an analysis tick) and check the split, concurrently."""
    index = status.stage_index
    stage = spec.path[index] if index is not None and index < len(spec.path) else None
    started = status.stage_started_at
    window_start = started + parse_duration(spec.analysis.warmup) if started is not None else None
    window = max(0, int((at - window_start).total_seconds())) if window_start is not None else 0
    variables = QueryVariables(flag=spec.flag.key, namespace=namespace, stage=status.stage_name or "")
    counted = QueryVariables(variables.flag, variables.namespace, variables.stage, window=f"{window}s")
    alphas = comparison_alphas(spec)
    records = {r.guardrail: r for r in status.comparisons}
    tick = at.timestamp()

    async def one(guardrail: Guardrail) -> GuardrailVerdict:
        comparison = guardrail.compare
        if comparison is None:
            return await measure(guardrail, variables, source, spec.flag.candidate, spec.flag.control, limits, tick)
        if stage is None or index is None:
            return _held(guardrail, "no stage under way", "")
        if stage.percentage >= 100:
            return _passed(guardrail, "the control serves no traffic at 100%: nothing left to compare with")
        if stage.percentage <= 0:
            # Internal users are few by design: no stage of theirs could ever collect a comparison's sample.
            return _passed(guardrail, f"stage {stage.name} serves no percentage: compared from the first that does")
        if window < 1:
            return _held(guardrail, f"warming up: counting starts {spec.analysis.warmup} into the stage", "")
        overall_alpha, segment_alpha = alphas[guardrail.name]
        context = ComparisonContext(
            stage=stage.name,
            share=_plain_share(spec, index),
            alpha=overall_alpha,
            segment_alpha=segment_alpha,
            window_seconds=float(window),
            record=records.get(guardrail.name),
        )
        try:
            totals = await count(
                comparison, counted, source, spec.flag.candidate, spec.flag.control, tick, limits
            )  # fmt: skip
        except CountingFailed as error:
            return judge_error(guardrail, str(error), limits)
        return judge_comparison(guardrail, totals, context, limits)

    guarded = asyncio.gather(*(one(g) for g in spec.inline_guardrails))
    split = _sample_ratio(spec, status, counted, source, tick, limits, window)
    verdicts, sample_ratio = await asyncio.gather(guarded, split)
    return Measured(tuple(verdicts), sample_ratio)


async def _sample_ratio(
    spec: AIRolloutSpec,
    status: AIRolloutStatus,
    variables: QueryVariables,
    source: MetricsSource,
    at: float,
    limits: GuardrailLimits,
    window: int,
) -> SampleRatioStatus | None:
    check = spec.analysis.sample_ratio
    index = status.stage_index
    if check is None or index is None or index >= len(spec.path) or window < 1:
        return None
    share = _plain_share(spec, index)
    if share is None:
        return None
    stage: Stage = spec.path[index]
    units = []
    try:
        for variant in (spec.flag.control, spec.flag.candidate):
            samples = await source.query(render_query(check.query, variables, variant), at)
            kept, _ = without_variant_labels((samples, variant), None)
            units.append(sum(s.value for s in kept if s.value == s.value and s.value >= 0))
    except (GuardrailQueryFailed, QueryTemplateInvalid) as error:
        message = bounded_text(f"the sample-ratio query could not be answered: {error}", limits.max_message_chars)
        previous = status.sample_ratio
        return previous.model_copy(update={"message": message}) if previous and previous.stage == stage.name else None
    previous = status.sample_ratio
    previous_p = previous.p_value if previous is not None and previous.stage == stage.name else None
    result = srm.srm_check([round(u) for u in units], [1 - share, share], previous_p)
    observed = result.observed_shares[1] if len(result.observed_shares) > 1 else 0.0
    return SampleRatioStatus(
        stage=stage.name,
        expected=share,
        observed=observed,
        units=float(sum(round(u) for u in units)),
        p_value=result.p,
        mismatch=result.mismatch,
        message=bounded_text(result.message, limits.max_message_chars),
    )


def _held(guardrail: Guardrail, why: str, window: str) -> GuardrailVerdict:
    message = f"{guardrail.name} inconclusive: {why}"
    judgement = SegmentJudgement(guardrail.name, "", Outcome.INCONCLUSIVE, None, None, None, window or None, message)
    return GuardrailVerdict(guardrail.name, Outcome.INCONCLUSIVE, (judgement,))


def _passed(guardrail: Guardrail, why: str) -> GuardrailVerdict:
    judgement = SegmentJudgement(guardrail.name, "", Outcome.PASSED, None, None, None, None, f"{guardrail.name}: {why}")
    return GuardrailVerdict(guardrail.name, Outcome.PASSED, (judgement,))
