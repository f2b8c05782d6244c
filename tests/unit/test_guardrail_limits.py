"""Every text a guardrail writes is one line and bounded, whatever Prometheus or a label value holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airollout.guardrails.judging import Outcome, Sample, judge, judge_error
from airollout.guardrails.limits import GuardrailLimits, bounded_text
from airollout.model.spec import Guardrail

ERROR_RATE = Guardrail(name="error-rate", query='sum by (path) (rate(errors{variant="{{variant}}"}[5m]))', max=0.1)


@given(st.text(), st.integers(min_value=1, max_value=300), st.booleans())
def test_a_bounded_text_is_one_printable_line_within_its_limit(text: str, limit: int, digest: bool) -> None:
    bounded = bounded_text(text, limit, digest=digest)
    assert len(bounded) <= limit
    assert all(c.isprintable() for c in bounded)


@given(st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=50))
def test_a_short_clean_text_is_left_alone(text: str) -> None:
    assert bounded_text(text, 50) == text


def test_a_cut_text_ends_with_an_ellipsis_and_line_breaks_become_spaces() -> None:
    assert bounded_text("Traceback:\n  File x\r\n\x1b[31mboom", 100) == "Traceback: File x [31mboom"
    assert bounded_text("a" * 30, 10) == "aaaaaaaaa…"


def test_a_50_megabyte_text_is_cut_without_reading_it_all() -> None:
    assert bounded_text("x" * 50_000_000, 20) == "x" * 19 + "…"


def test_digests_keep_two_long_texts_with_one_prefix_apart() -> None:
    a, b = bounded_text("p" * 300 + "a", 40, digest=True), bounded_text("p" * 300 + "b", 40, digest=True)
    assert a != b
    assert a.startswith("p" * 30)
    assert len(a) == len(b) == 40


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_series must be at least 1, got 0"):
        GuardrailLimits(max_series=0)


def test_long_label_values_show_cut_but_still_pair_with_their_control() -> None:
    long_a, long_b = "/v1/" + "a" * 500 + "/one", "/v1/" + "a" * 500 + "/two"
    verdict = judge(
        ERROR_RATE.model_copy(update={"max_increase_over_control": 0.5}),
        [Sample({"path": long_a}, 0.05), Sample({"path": long_b}, 0.05)],
        [Sample({"path": long_a}, 0.01), Sample({"path": long_b}, 0.05)],
    )
    one, two = verdict.segments
    assert (one.outcome, one.control_value) == (Outcome.BREACHED, 0.01)
    assert (two.outcome, two.control_value) == (Outcome.PASSED, 0.05)
    assert len(one.segment) == len(two.segment) == 200
    assert one.segment != two.segment
    assert one.segment.startswith('path="/v1/aaaa')


def test_a_label_value_with_line_breaks_reads_on_one_line() -> None:
    (segment,) = judge(ERROR_RATE, [Sample({"path": "a\tb\x00c"}, 0.5)], None).segments
    assert segment.segment == 'path="a b c"'
    assert segment.message == 'error-rate breached for path="a b c": 0.5 > max 0.1 (window 5m)'


def test_segment_messages_are_cut_to_the_limit() -> None:
    limits = GuardrailLimits(max_message_chars=40)
    (segment,) = judge(ERROR_RATE, [Sample({"path": "/checkout"}, 0.5)], None, limits).segments
    assert segment.message == 'error-rate breached for path="/checkout…'
    assert len(segment.message) == 40


def test_an_error_quoting_a_huge_body_is_one_bounded_line() -> None:
    verdict = judge_error(ERROR_RATE, "answered HTTP 502: <html>\n" + "<p>bad gateway</p>\n" * 10_000)
    assert verdict.error is not None
    assert len(verdict.error) == 1000
    assert verdict.error.startswith("answered HTTP 502: <html> <p>bad gateway</p> <p>")
    assert verdict.error.endswith("…")
    (segment,) = verdict.segments
    assert len(segment.message) <= 1000
    assert "\n" not in segment.message
