from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airollout.guardrails.judging import (
    GuardrailVerdict,
    Outcome,
    Sample,
    SegmentJudgement,
    judge,
    judge_error,
    overall,
)
from airollout.model.spec import Guardrail

ERROR_RATE = (
    'sum by (locale) (rate(ai_errors_total{variant="{{variant}}"}[5m])) '
    '/ sum by (locale) (rate(ai_requests_total{variant="{{variant}}"}[5m]))'
)
WORST_FIRST = [Outcome.BREACHED, Outcome.ERROR, Outcome.WARNING, Outcome.INCONCLUSIVE, Outcome.NO_DATA, Outcome.PASSED]


def guardrail(**fields: Any) -> Guardrail:
    defaults: dict[str, Any] = {"name": "error-rate", "query": ERROR_RATE}
    return Guardrail.model_validate({**defaults, **fields})


def by_locale(**values: float) -> list[Sample]:
    return [Sample({"locale": locale}, value) for locale, value in values.items()]


def only(verdict: GuardrailVerdict) -> SegmentJudgement:
    (segment,) = verdict.segments
    return segment


def test_a_breach_names_the_segment_with_value_threshold_control_and_window() -> None:
    verdict = judge(
        guardrail(max=0.015),
        by_locale(en=0.010, de=0.042),
        by_locale(en=0.010, de=0.011),
    )
    assert verdict.outcome is Outcome.BREACHED
    en, de = verdict.segments
    assert (en.segment, en.outcome) == ('locale="en"', Outcome.PASSED)
    assert de == SegmentJudgement(
        guardrail="error-rate",
        segment='locale="de"',
        outcome=Outcome.BREACHED,
        value=0.042,
        threshold=0.015,
        control_value=0.011,
        window="5m",
        message='error-rate breached for locale="de": 0.042 > max 0.015 (control 0.011, window 5m)',
    )


def test_a_pass_says_why() -> None:
    segment = only(judge(guardrail(max=0.015), by_locale(en=0.01), None))
    assert segment.outcome is Outcome.PASSED
    assert segment.message == 'error-rate passed for locale="en": 0.01 <= max 0.015 (window 5m)'


def test_the_limit_itself_is_not_a_breach() -> None:
    assert judge(guardrail(max=0.015), by_locale(en=0.015), None).outcome is Outcome.PASSED
    assert judge(guardrail(min=0.8), by_locale(en=0.8), None).outcome is Outcome.PASSED


def test_segments_are_sorted_comma_joined_label_sets() -> None:
    samples = [Sample({"tier": "pro", "locale": "de"}, 1.0), Sample({"path": 'a"b\\c'}, 1.0), Sample({}, 1.0)]
    verdict = judge(guardrail(max=2), samples, None)
    assert [s.segment for s in verdict.segments] == ['locale="de",tier="pro"', r'path="a\"b\\c"', ""]


def test_a_label_less_result_reads_without_a_segment() -> None:
    segment = only(judge(guardrail(max=0.015, query="scalar(x[5m])"), [Sample({}, 0.5)], None))
    assert segment.message == "error-rate breached: 0.5 > max 0.015 (window 5m)"


def test_a_relative_breach_is_judged_against_the_same_segment_of_the_control() -> None:
    verdict = judge(
        guardrail(max_increase_over_control=0.2),
        by_locale(en=0.011, de=0.02),
        by_locale(en=0.010, de=0.010),
    )
    en, de = verdict.segments
    assert en.outcome is Outcome.PASSED
    assert de.outcome is Outcome.BREACHED
    assert de.threshold == pytest.approx(0.012)
    assert de.message == 'error-rate breached for locale="de": 0.02 > control 0.01 +20% = 0.012 (window 5m)'


def test_every_limit_crossed_is_named_and_the_tightest_is_the_threshold() -> None:
    segment = only(judge(guardrail(max=0.015, max_increase_over_control=0.2), by_locale(de=0.042), by_locale(de=0.011)))
    assert segment.threshold == pytest.approx(0.0132)
    assert segment.message == (
        'error-rate breached for locale="de": 0.042 > max 0.015 and > control 0.011 +20% = 0.0132 (window 5m)'
    )


def test_a_min_guardrail_breaches_below_its_floor_and_below_the_control() -> None:
    quality = guardrail(name="quality", query="avg by (locale) (q[1m])", min=0.8, max_increase_over_control=0.1)
    verdict = judge(quality, by_locale(en=0.85, de=0.7, fr=0.81), by_locale(en=0.9, de=0.9, fr=0.95))
    en, de, fr = verdict.segments
    assert en.outcome is Outcome.PASSED  # 0.85 >= 0.9 x 0.9 = 0.81
    assert de.message == 'quality breached for locale="de": 0.7 < min 0.8 and < control 0.9 -10% = 0.81 (window 1m)'
    assert fr.outcome is Outcome.BREACHED  # 0.81 < 0.95 x 0.9 = 0.855
    assert fr.threshold == pytest.approx(0.855)


def test_warn_at_warns_short_of_a_breach() -> None:
    verdict = judge(guardrail(max=0.015, warn_at=0.01), by_locale(en=0.005, de=0.012, fr=0.02), None)
    assert [s.outcome for s in verdict.segments] == [Outcome.PASSED, Outcome.WARNING, Outcome.BREACHED]
    assert verdict.outcome is Outcome.BREACHED
    de = verdict.segments[1]
    assert de.threshold == 0.01
    assert de.message == 'error-rate warning for locale="de": 0.012 > warnAt 0.01, within max 0.015 (window 5m)'


def test_warn_at_of_a_min_guardrail_warns_below_it() -> None:
    segment = only(judge(guardrail(min=0.8, warn_at=0.85), by_locale(en=0.83), None))
    assert segment.outcome is Outcome.WARNING


@pytest.mark.parametrize(
    ("policy", "outcome", "consequence"),
    [
        ("hold", Outcome.NO_DATA, "holding (noData: hold)"),
        ("pass", Outcome.PASSED, "counted as passed (noData: pass)"),
        ("fail", Outcome.BREACHED, "counted as a breach (noData: fail)"),
    ],
)
def test_an_empty_result_follows_the_no_data_policy(policy: str, outcome: Outcome, consequence: str) -> None:
    segment = only(judge(guardrail(max=0.015, no_data=policy), [], []))
    assert segment.outcome is outcome
    assert (segment.segment, segment.value) == ("", None)
    assert segment.message == f"error-rate has no data: the query returned no series; {consequence} (window 5m)"


@pytest.mark.parametrize(
    ("policy", "outcome"), [("hold", Outcome.NO_DATA), ("pass", Outcome.PASSED), ("fail", Outcome.BREACHED)]
)
def test_nan_is_no_data_for_that_series(policy: str, outcome: Outcome) -> None:
    verdict = judge(guardrail(max=0.015, no_data=policy), by_locale(en=0.01, ja=math.nan), None)
    en, ja = verdict.segments
    assert en.outcome is Outcome.PASSED
    assert (ja.outcome, ja.value) == (outcome, None)
    assert ja.message.startswith('error-rate has no data for locale="ja": the value is NaN; ')


@pytest.mark.parametrize("policy", ["hold", "pass", "fail"])
@pytest.mark.parametrize(
    ("fields", "value", "message"),
    [
        ({"max": 0.015}, math.inf, "+Inf > max 0.015 (control 0.01, window 5m)"),
        ({"min": 0.8}, -math.inf, "-Inf < min 0.8 (control 0.01, window 5m)"),
        ({"max_increase_over_control": 0.2}, math.inf, "+Inf > control 0.01 +20% = 0.012 (window 5m)"),
        (
            {"min": 0.5, "max_increase_over_control": 0.2},
            -math.inf,
            "-Inf < min 0.5 and < control 0.01 -20% = 0.008 (window 5m)",
        ),
    ],
)
def test_an_infinity_on_the_bad_side_is_a_breach_whatever_the_no_data_policy(
    fields: dict[str, Any], value: float, message: str, policy: str
) -> None:
    segment = only(judge(guardrail(no_data=policy, **fields), by_locale(ja=value), by_locale(ja=0.01)))
    assert (segment.outcome, segment.value) == (Outcome.BREACHED, value)
    assert segment.message == f'error-rate breached for locale="ja": {message}'


def test_an_infinity_on_the_good_side_passes() -> None:
    assert only(judge(guardrail(max=0.015), by_locale(ja=-math.inf), None)).outcome is Outcome.PASSED
    segment = only(judge(guardrail(min=0.8), by_locale(ja=math.inf), None))
    assert segment.outcome is Outcome.PASSED
    assert segment.message == 'error-rate passed for locale="ja": +Inf >= min 0.8 (window 5m)'


def test_no_data_holds_by_default_and_never_passes() -> None:
    assert judge(guardrail(max=0.015), by_locale(ja=math.nan), None).outcome is Outcome.NO_DATA


def test_without_a_control_series_a_segment_is_judged_on_absolute_thresholds_only() -> None:
    verdict = judge(
        guardrail(max=0.015, max_increase_over_control=0.2),
        by_locale(en=0.011, ja=0.012),
        by_locale(en=0.010),
    )
    en, ja = verdict.segments
    assert en.outcome is Outcome.PASSED
    assert ja.outcome is Outcome.PASSED
    assert ja.control_value is None
    assert ja.message == (
        'error-rate passed for locale="ja": 0.012 <= max 0.015 (window 5m, '
        "no control series for this segment: judged on absolute thresholds only)"
    )


def test_a_nan_control_counts_as_no_control() -> None:
    segment = only(
        judge(guardrail(max=0.015, max_increase_over_control=0.2), by_locale(ja=0.5), by_locale(ja=math.nan))
    )
    assert segment.outcome is Outcome.BREACHED
    assert "the control value is NaN for this segment: judged on absolute thresholds only" in segment.message


def test_an_infinite_control_is_no_basis_for_a_comparison() -> None:
    segment = only(
        judge(guardrail(max=0.015, max_increase_over_control=0.2), by_locale(ja=0.01), by_locale(ja=-math.inf))
    )
    assert segment.outcome is Outcome.PASSED
    assert segment.control_value is None
    assert "the control value is -Inf for this segment: judged on absolute thresholds only" in segment.message


@pytest.mark.parametrize(
    ("control", "reason"),
    [
        ([], "no control series for this segment"),
        (None, "the control was not measured"),
    ],
)
def test_a_relative_only_guardrail_without_control_has_no_data(control: list[Sample] | None, reason: str) -> None:
    segment = only(judge(guardrail(max_increase_over_control=0.2), by_locale(ja=0.5), control))
    assert segment.outcome is Outcome.NO_DATA
    assert segment.message == (
        f'error-rate has no data for locale="ja": {reason}, and no absolute threshold is set; holding (noData: hold) '
        "(window 5m)"
    )


def test_unequal_numbers_never_print_the_same() -> None:
    segment = only(judge(guardrail(max=0.015), by_locale(de=0.0150001), None))
    assert segment.message.startswith('error-rate breached for locale="de": 0.0150001 > max 0.015 ')


@pytest.mark.parametrize(
    ("query", "window"),
    [
        ("rate(x[5m])", "5m"),
        ("rate(x[1h30m]) / rate(y[5m])", "1h30m"),
        ("max_over_time(rate(x[1m])[30m:10s])", "1m"),
        ("max_over_time(x[ 30m:1m ])", "30m"),
        ('rate(x{path="/v1/[5m]"}[2m])', "2m"),
        ("x / y", None),
    ],
)
def test_the_window_is_the_first_range_selector(query: str, window: str | None) -> None:
    assert only(judge(guardrail(max=1, query=query), [Sample({}, 0.5)], None)).window == window


def test_an_error_is_never_a_breach_and_carries_the_cause() -> None:
    verdict = judge_error(guardrail(max=0.015), "Prometheus answered HTTP 400 (bad_data): parse error")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.error == "Prometheus answered HTTP 400 (bad_data): parse error"
    segment = only(verdict)
    assert segment.outcome is Outcome.ERROR
    assert segment.message == "error-rate could not be evaluated: Prometheus answered HTTP 400 (bad_data): parse error"
    assert segment.window == "5m"


@pytest.mark.parametrize(("worse", "better"), list(itertools.combinations(WORST_FIRST, 2)))
def test_overall_is_the_worst_outcome(worse: Outcome, better: Outcome) -> None:
    verdicts = [GuardrailVerdict("a", better, ()), GuardrailVerdict("b", worse, ())]
    assert overall(verdicts) is worse
    assert overall(verdicts[::-1]) is worse


def test_no_guardrails_pass() -> None:
    assert overall([]) is Outcome.PASSED


# Properties --------------------------------------------------------------------------------------------------

SEVERITY = {outcome: len(WORST_FIRST) - i for i, outcome in enumerate(WORST_FIRST)}
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
# Candidates may be infinite: an infinity is a value like any other, only further out.
candidates = st.one_of(finite, st.sampled_from([math.inf, -math.inf]))
positive = st.floats(min_value=0, max_value=1e6, allow_nan=False)
relative = st.one_of(st.none(), st.floats(min_value=0, max_value=10))


@st.composite
def max_guardrails(draw: st.DrawFn) -> Guardrail:
    limit = draw(st.one_of(st.none(), finite))
    increase = draw(relative if limit is not None else st.floats(min_value=0, max_value=10))
    warn = draw(st.one_of(st.none(), finite))
    return guardrail(max=limit, max_increase_over_control=increase, warn_at=warn)


@st.composite
def min_guardrails(draw: st.DrawFn) -> Guardrail:
    return guardrail(
        min=draw(finite), max_increase_over_control=draw(relative), warn_at=draw(st.one_of(st.none(), finite))
    )


def outcome_of(g: Guardrail, value: float, control: float | None) -> Outcome:
    return judge(g, [Sample({}, value)], None if control is None else [Sample({}, control)]).outcome


@given(max_guardrails(), candidates, candidates, st.one_of(st.none(), finite))
def test_raising_the_candidate_never_improves_a_max_guardrail(
    g: Guardrail, a: float, b: float, c: float | None
) -> None:
    low, high = sorted((a, b))
    assert SEVERITY[outcome_of(g, high, c)] >= SEVERITY[outcome_of(g, low, c)]


@given(min_guardrails(), candidates, candidates, st.one_of(st.none(), finite))
def test_lowering_the_candidate_never_improves_a_min_guardrail(
    g: Guardrail, a: float, b: float, c: float | None
) -> None:
    low, high = sorted((a, b))
    assert SEVERITY[outcome_of(g, low, c)] >= SEVERITY[outcome_of(g, high, c)]


@given(max_guardrails(), finite, positive, positive)
def test_raising_the_control_never_worsens_a_max_guardrail(g: Guardrail, value: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert SEVERITY[outcome_of(g, value, high)] <= SEVERITY[outcome_of(g, value, low)]


@given(
    st.one_of(max_guardrails(), min_guardrails()),
    st.lists(st.tuples(st.sampled_from(["en", "de", "fr", "ja"]), st.floats()), unique_by=lambda t: t[0]),
    st.sampled_from(["hold", "pass", "fail"]),
)
def test_a_verdict_is_its_worst_segment_and_covers_every_series(
    g: Guardrail, series: list[tuple[str, float]], policy: str
) -> None:
    g = g.model_copy(update={"no_data": policy})
    verdict = judge(g, [Sample({"locale": k}, v) for k, v in series], None)
    assert len(verdict.segments) == max(1, len(series))
    assert verdict.outcome is max((s.outcome for s in verdict.segments), key=SEVERITY.__getitem__)
    assert verdict.outcome is not Outcome.ERROR
    if policy != "fail" and all(math.isnan(v) for _, v in series):
        assert verdict.outcome is not Outcome.BREACHED


@given(st.lists(st.sampled_from(list(Outcome))))
def test_overall_does_not_depend_on_order(outcomes: list[Outcome]) -> None:
    verdicts = [GuardrailVerdict(str(i), o, ()) for i, o in enumerate(outcomes)]
    assert overall(verdicts) is overall(verdicts[::-1])
    assert overall(verdicts) is (min(outcomes, key=WORST_FIRST.index) if outcomes else Outcome.PASSED)
