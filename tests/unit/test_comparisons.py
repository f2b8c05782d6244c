"""Comparison guardrails end to end through the pure core: counts in, an outcome and a plan a user can read out.

Prometheus is a table here (each query answered by the metric and variant it names); the same analyses run
against a real Prometheus in tests/integration/test_comparisons_operator.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from airollout.guardrails.analysis import Measured, analyse, comparison_alphas
from airollout.guardrails.judging import Outcome, Sample
from airollout.guardrails.source import GuardrailQueryFailed
from airollout.model import AIRolloutSpec, AIRolloutStatus, Phase
from airollout.planner import FlagSync, FlagView, Observation, plan
from airollout.reasons import Reason
from airollout.reconciler import parse_spec

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IN_SYNC = FlagView(sync=FlagSync.IN_SYNC, revision="r1")
ERRORS = {
    "name": "error-rate",
    "compare": {
        "statistic": "proportion",
        "count": 'sum by (locale) (increase(requests_total{variant="{{variant}}"}[{{window}}]))',
        "events": 'sum by (locale) (increase(errors_total{variant="{{variant}}"}[{{window}}]))',
    },
}
SPLIT = {"query": 'sum(increase(users_total{variant="{{variant}}"}[{{window}}]))'}


def make_spec(*guardrails: Mapping[str, Any], **analysis: Any) -> AIRolloutSpec:
    return AIRolloutSpec.model_validate(
        {
            "flag": {
                "key": "summarizer",
                "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b",
                "candidate": "v2",
                "control": "v1",
            },
            "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
            "prometheus": {"url": "http://prometheus:9090"},
            "analysis": {"warmup": "10s", **analysis},
            "stages": [
                {"name": "canary", "percentage": 5, "duration": "10m"},
                {"name": "ramp", "percentage": 25, "duration": "10m"},
                {"name": "full", "percentage": 100},
            ],
            "guardrails": list(guardrails or [ERRORS]),
        }
    )


class Table:
    """Answers a query by the metric and variant it names: {("requests_total", "v2"): {"de": 100, ...}}."""

    def __init__(self, series: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        self.series = series
        self.asked: list[str] = []

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        self.asked.append(promql)
        metric, variant = re.search(r'(\w+)\{variant="([^"]+)"', promql).groups()  # type: ignore[union-attr]
        if metric == "down_total":
            raise GuardrailQueryFailed("connection refused", promql)
        return [
            Sample({"variant": variant, **({"locale": segment} if segment else {})}, value)
            for segment, value in self.series.get((metric, variant), {}).items()
        ]


def traffic(candidate: tuple[float, float], control: tuple[float, float], **segments: Any) -> Table:
    """Requests and errors per variant (one segment ""), or per segment with ``segments``."""
    if not segments:
        segments = {"": (candidate, control)}
    series: dict[tuple[str, str], dict[str, float]] = {}
    for segment, ((n_b, e_b), (n_a, e_a)) in segments.items():
        for metric, variant, value in (
            ("requests_total", "v2", n_b),
            ("errors_total", "v2", e_b),
            ("requests_total", "v1", n_a),
            ("errors_total", "v1", e_a),
        ):
            series.setdefault((metric, variant), {})[segment] = value
    return Table(series)


def in_stage(spec: AIRolloutSpec, index: int = 0, **fields: Any) -> AIRolloutStatus:
    stage = spec.stages[index]
    return AIRolloutStatus(
        phase=Phase.PROGRESSING,
        stage_index=index,
        stage_name=stage.name,
        percentage=stage.percentage,
        stage_started_at=T0,
        flag_revision="r1",
        **fields,
    )


def analysed(spec: AIRolloutSpec, status: AIRolloutStatus, source: Table, after: float = 300) -> Measured:
    return asyncio.run(analyse(spec, status, "shop", source, T0 + timedelta(seconds=after)))


def test_counts_are_asked_over_the_stage_since_its_warm_up() -> None:
    source = traffic((3000, 30), (57000, 570))
    analysed(make_spec(), in_stage(make_spec()), source, after=300)
    assert 'sum by (locale) (increase(requests_total{variant="v2"}[290s]))' in source.asked
    assert 'sum by (locale) (increase(errors_total{variant="v1"}[290s]))' in source.asked


def test_a_healthy_candidate_with_its_planned_sample_passes_and_says_how_sure_it_is() -> None:
    verdict = analysed(make_spec(), in_stage(make_spec()), traffic((3000, 30), (57000, 570))).verdicts[0]
    assert verdict.outcome is Outcome.PASSED
    (judgement,) = verdict.segments
    assert judgement.evidence is not None
    assert judgement.evidence.candidate_samples == 3000
    assert judgement.evidence.control_samples == 57000
    assert judgement.evidence.lower_bound is not None
    assert judgement.evidence.lower_bound < 0
    assert judgement.evidence.samples_needed == 0
    assert "no harm" in judgement.message


def test_a_stage_short_of_its_sample_holds_saying_how_many_more_and_how_long() -> None:
    verdict = analysed(make_spec(), in_stage(make_spec()), traffic((1000, 10), (19000, 190))).verdicts[0]
    assert verdict.outcome is Outcome.INCONCLUSIVE
    evidence = verdict.segments[0].evidence
    assert evidence is not None
    assert evidence.samples_needed > 1000
    # 1,000 candidate samples in 290 s: the rest takes minutes at this traffic, and the message says so.
    assert evidence.time_needed is not None
    assert evidence.time_needed.endswith("m")
    assert f"needs {evidence.samples_needed:.0f} more candidate samples" in verdict.segments[0].message
    assert f"about {evidence.time_needed} at the current traffic" in verdict.segments[0].message


def test_a_doubled_error_rate_is_a_breach_as_soon_as_it_is_shown() -> None:
    verdict = analysed(make_spec(), in_stage(make_spec()), traffic((1500, 45), (28500, 285))).verdicts[0]
    assert verdict.outcome is Outcome.BREACHED
    assert "harm shown" in verdict.segments[0].message


def test_too_little_traffic_is_never_judged() -> None:
    # 50 candidate requests with 5 errors (10% against 1%) is below the validity gate: no decision either way.
    verdict = analysed(make_spec(), in_stage(make_spec()), traffic((50, 5), (950, 9))).verdicts[0]
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "needs 100 candidate samples, has 50" in verdict.segments[0].message
    assert verdict.record is None


def test_the_plan_is_fixed_once_and_kept_whatever_later_counts_say() -> None:
    spec = make_spec()
    first = analysed(spec, in_stage(spec), traffic((3000, 30), (57000, 570))).verdicts[0].record
    assert first is not None
    assert first.baseline == pytest.approx(0.01)
    status = in_stage(spec, comparisons=(first,))
    later = analysed(spec, status, traffic((6000, 60), (114000, 2280))).verdicts[0].record
    assert later is not None
    assert (later.baseline, later.information_star) == (first.baseline, first.information_star)


def test_harm_within_one_segment_holds_the_stage_and_names_the_segment() -> None:
    # German users get 4% errors; the others fewer than on the control: overall the candidate is no worse.
    better = ((2000, 5), (38000, 380))
    source = traffic((0, 0), (0, 0), de=((2000, 80), (38000, 380)), fr=better, it=better, es=better, nl=better)
    spec = make_spec()
    verdict = analysed(spec, in_stage(spec), source).verdicts[0]
    assert verdict.outcome is Outcome.WARNING
    overall = next(j for j in verdict.segments if j.segment == "")
    assert overall.outcome is not Outcome.BREACHED
    assert [j.segment for j in verdict.segments if j.outcome is Outcome.WARNING] == ['locale="de"']


def test_at_full_exposure_there_is_nothing_to_compare_with() -> None:
    spec = make_spec()
    verdict = analysed(spec, in_stage(spec, 2), traffic((3000, 30), (0, 0))).verdicts[0]
    assert verdict.outcome is Outcome.PASSED
    assert "nothing left to compare with" in verdict.segments[0].message


def test_during_the_warm_up_nothing_is_counted() -> None:
    source = traffic((3000, 30), (57000, 570))
    verdict = analysed(make_spec(), in_stage(make_spec()), source, after=5).verdicts[0]
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "warming up" in verdict.segments[0].message
    assert source.asked == []


def test_a_variant_with_no_series_is_no_data_never_zero() -> None:
    source = Table({("requests_total", "v2"): {"": 3000}, ("errors_total", "v2"): {"": 30}})
    verdict = analysed(make_spec(), in_stage(make_spec()), source).verdicts[0]
    assert verdict.outcome is Outcome.NO_DATA
    assert "no series for the control" in verdict.segments[0].message
    # In the window's first seconds Prometheus may simply not have two scrapes of it yet.
    young = analysed(make_spec(), in_stage(make_spec()), source, after=20).verdicts[0]
    assert young.outcome is Outcome.INCONCLUSIVE
    assert "no counts for the control yet, 10s into the stage" in young.segments[0].message


def test_a_query_that_fails_is_an_error_that_quotes_it_not_a_breach() -> None:
    down = 'sum(increase(down_total{variant="{{variant}}"}[{{window}}]))'
    broken = {**ERRORS, "compare": {**ERRORS["compare"], "events": down}}
    spec = make_spec(broken)
    verdict = analysed(spec, in_stage(spec), traffic((3000, 30), (57000, 570))).verdicts[0]
    assert verdict.outcome is Outcome.ERROR
    assert "connection refused" in (verdict.error or "")
    assert "down_total" in (verdict.error or "")


def test_the_false_rollback_budget_is_shared_by_weight_and_segments_get_their_own() -> None:
    latency = {"name": "latency", "compare": {**ERRORS["compare"], "weight": 3}}
    alphas = comparison_alphas(make_spec(ERRORS, latency))
    assert alphas["error-rate"][0] == pytest.approx(0.05 * 0.8 / 4)
    assert alphas["latency"][0] == pytest.approx(0.05 * 0.8 * 3 / 4)
    # Two stages below 100% compare, each a fresh test for the segments.
    assert alphas["latency"][1] == pytest.approx(0.05 * 0.2 * 3 / 4 / 2)
    total = sum(overall + segment * 2 for overall, segment in alphas.values())
    assert total == pytest.approx(0.05)


def test_a_broken_split_is_shown_with_the_expected_and_observed_shares() -> None:
    spec = make_spec(sampleRatio=SPLIT)
    source = traffic((3000, 30), (57000, 570))
    source.series = {**source.series, ("users_total", "v2"): {"": 60}, ("users_total", "v1"): {"": 5940}}
    check = analysed(spec, in_stage(spec), source).sample_ratio
    assert check is not None
    assert check.mismatch
    assert check.expected == 0.05
    assert check.observed == pytest.approx(0.01)
    assert "5%" in check.message
    assert "1%" in check.message


def test_the_split_is_not_checked_where_the_stage_splits_no_plain_percentage() -> None:
    spec = AIRolloutSpec.model_validate(
        {
            **make_spec(sampleRatio=SPLIT).model_dump(by_alias=True, exclude_none=True),
            "stages": [
                {"name": "internal", "segments": ["staff"], "duration": "1m"},
                {"name": "full", "percentage": 100},
            ],
        }
    )
    assert analysed(spec, in_stage(spec), traffic((3000, 30), (57000, 570))).sample_ratio is None


# -- the planner: holding, closing strata, acting on a mismatch ------------------------------------------------


def decide(spec: AIRolloutSpec, status: AIRolloutStatus, measured: Measured, after: float) -> AIRolloutStatus:
    observation = Observation(flag=IN_SYNC, verdicts=measured.verdicts, sample_ratio=measured.sample_ratio)
    return plan(spec, status, observation, T0 + timedelta(seconds=after), 1).status


def test_an_inconclusive_stage_holds_past_its_duration_and_says_so_once() -> None:
    spec = make_spec()
    short = traffic((1000, 10), (19000, 190))
    held = decide(spec, in_stage(spec), analysed(spec, in_stage(spec), short, after=700), after=700)
    assert held.stage_name == "canary"
    assert [e.reason for e in held.history].count(Reason.GUARDRAIL_INCONCLUSIVE) == 1
    again = decide(spec, held, analysed(spec, held, short, after=730), after=730)
    assert [e.reason for e in again.history].count(Reason.GUARDRAIL_INCONCLUSIVE) == 1


def test_a_stage_that_passes_is_kept_as_a_stratum_of_its_own() -> None:
    spec = make_spec()
    passing = analysed(spec, in_stage(spec), traffic((3000, 30), (57000, 570)), after=600)
    advanced = decide(spec, in_stage(spec), passing, after=600)
    assert advanced.stage_name == "ramp"
    (record,) = advanced.comparisons
    assert [s.stage for s in record.strata] == ["canary"]
    assert record.strata[0].candidate.n == 3000
    assert record.current is None


def test_a_retry_starts_a_fresh_analysis() -> None:
    spec = make_spec()
    passing = analysed(spec, in_stage(spec), traffic((3000, 30), (57000, 570)), after=600)
    rolled_back = decide(spec, in_stage(spec), passing, after=600).model_copy(update={"phase": Phase.ROLLED_BACK})
    retried = plan(spec, rolled_back, Observation(flag=IN_SYNC, verb="retry", actor="ann"), T0, 1).status
    assert retried.comparisons == ()


def test_a_sample_ratio_mismatch_pauses_once_and_a_resume_is_not_overruled() -> None:
    spec = make_spec(sampleRatio=SPLIT)
    source = traffic((3000, 30), (57000, 570))
    source.series = {**source.series, ("users_total", "v2"): {"": 60}, ("users_total", "v1"): {"": 5940}}
    paused = decide(spec, in_stage(spec), analysed(spec, in_stage(spec), source), after=300)
    assert paused.phase is Phase.PAUSED
    assert paused.pause_reason == Reason.SAMPLE_RATIO_MISMATCH
    assert "observed" in paused.message
    assert "5%" in paused.message
    resumed = plan(spec, paused, Observation(flag=IN_SYNC, verb="resume", actor="ann"), T0, 1).status
    assert resumed.phase is Phase.PROGRESSING
    later = decide(spec, resumed, analysed(spec, resumed, source, after=330), after=330)
    assert later.phase is Phase.PROGRESSING


# -- the spec ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guardrail", "named"),
    [
        ({**ERRORS, "query": "up", "max": 1}, "compare replaces query, max"),
        ({"name": "x", "compare": {"statistic": "proportion", "count": "a"}}, "needs events"),
        ({"name": "x", "compare": {"statistic": "mean", "count": "a", "sum": "b"}}, "exactly one of sumOfSquares"),
        (
            {"name": "x", "compare": {"statistic": "mean", "count": "a", "sum": "b", "buckets": "c"}},
            "buckets needs cap",
        ),
        ({"name": "x", "query": "rate(x[{{window}}])", "max": 1}, "{{window}} is for compare queries"),
    ],
)
def test_a_comparison_written_wrong_is_refused_naming_the_fix(guardrail: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as error:
        make_spec(guardrail)
    assert named in str(error.value)


def test_a_window_placeholder_in_quotes_is_refused_at_admission() -> None:
    raw = make_spec().model_dump(by_alias=True, exclude_none=True)
    raw["guardrails"][0]["compare"]["count"] = 'sum(x{w="{{window}}", variant="{{variant}}"})'
    spec, problem = parse_spec(raw)
    assert spec is None
    assert problem is not None
    assert "spec.guardrails[0].compare.count" in problem
    assert "unquoted" in problem


@pytest.mark.parametrize(
    ("action", "phase", "stage"), [("revert", Phase.ROLLED_BACK, "canary"), ("proceed", Phase.PROGRESSING, "ramp")]
)
def test_a_stage_still_short_of_its_sample_after_its_extensions_does_what_the_spec_says(
    action: str, phase: Phase, stage: str
) -> None:
    spec = make_spec(onInsufficientSample=action, maxExtensions=1)
    short = traffic((1000, 10), (19000, 190))
    extended = decide(spec, in_stage(spec), analysed(spec, in_stage(spec), short, after=900), after=900)
    assert extended.phase is Phase.PROGRESSING
    assert extended.stage_name == "canary"
    # Duration 10 minutes plus one extension of 10 minutes: at minute 21 the stage has had its chance.
    over = decide(spec, extended, analysed(spec, extended, short, after=1260), after=1260)
    assert over.phase is phase
    assert over.stage_name == stage
    assert "did not reach the sample" in over.history[-1].message or "did not reach the sample" in over.message


def test_by_default_a_stage_short_of_its_sample_holds_however_long_it_takes() -> None:
    spec = make_spec()
    short = traffic((1000, 10), (19000, 190))
    held = decide(spec, in_stage(spec), analysed(spec, in_stage(spec), short, after=7200), after=7200)
    assert held.phase is Phase.PROGRESSING
    assert held.stage_name == "canary"


def test_a_stage_of_internal_users_alone_is_not_compared_and_does_not_wait_for_a_sample() -> None:
    spec = AIRolloutSpec.model_validate(
        {
            **make_spec().model_dump(by_alias=True, exclude_none=True),
            "stages": [
                {"name": "internal", "segments": ["staff"], "duration": "1m"},
                {"name": "canary", "percentage": 5, "duration": "10m"},
            ],
        }
    )
    verdict = analysed(spec, in_stage(spec), traffic((20, 1), (57000, 570))).verdicts[0]
    assert verdict.outcome is Outcome.PASSED
    assert "compared from the first that does" in verdict.segments[0].message
    assert verdict.record is None
