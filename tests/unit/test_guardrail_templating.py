from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query, validate_query

VARS = QueryVariables(flag="ai-summary", namespace="shop", stage="canary-5")
ISSUE_EXAMPLE = (
    'sum by (locale) (rate(ai_errors_total{variant="{{variant}}"}[5m])) '
    '/ sum by (locale) (rate(ai_requests_total{variant="{{variant}}"}[5m]))'
)


def problems_of(template: str) -> tuple[str, ...]:
    with pytest.raises(QueryTemplateInvalid) as caught:
        validate_query(template)
    return caught.value.problems


def test_renders_every_placeholder() -> None:
    template = 'x{variant="{{variant}}", flag="{{flag}}", ns="{{namespace}}", stage="{{stage}}"}'
    assert (
        render_query(template, VARS, "canary") == 'x{variant="canary", flag="ai-summary", ns="shop", stage="canary-5"}'
    )


def test_renders_the_issue_example_for_candidate_and_control() -> None:
    assert render_query(ISSUE_EXAMPLE, VARS, "stable").count('variant="stable"') == 2
    assert "{{" not in render_query(ISSUE_EXAMPLE, VARS, "canary")


def test_tolerates_spaces_inside_the_braces() -> None:
    assert render_query('x{v="{{ variant }}"}', VARS, "canary") == 'x{v="canary"}'


def test_a_template_without_placeholders_renders_unchanged() -> None:
    assert render_query("sum(rate(x[1m]))", VARS, "canary") == "sum(rate(x[1m]))"


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ('say "hi"', r'x{v="say \"hi\""}'),
        ("back\\slash", r'x{v="back\\slash"}'),
        ("two\nlines", r'x{v="two\nlines"}'),
        ('\\"', r'x{v="\\\""}'),
    ],
)
def test_values_are_escaped_for_a_double_quoted_string(value: str, rendered: str) -> None:
    assert render_query('x{v="{{variant}}"}', VARS, value) == rendered


@given(st.text())
def test_any_value_stays_inside_its_string_literal(value: str) -> None:
    rendered = render_query('x{v="{{variant}}"} + y', VARS, value)
    literal = re.fullmatch(r'x\{v=("(?:[^"\\\n]|\\.)*")\} \+ y', rendered, re.DOTALL)
    assert literal is not None, rendered
    # PromQL's escapes for these characters are JSON's, so JSON reads the literal back.
    assert json.loads(literal[1], strict=False) == value


def test_unknown_placeholder_is_named_with_the_known_ones() -> None:
    (problem,) = problems_of('x{v="{{variants}}"}')
    assert problem == (
        "unknown placeholder {{variants}}; known placeholders: {{flag}}, {{namespace}}, {{stage}}, {{variant}}, "
        "{{window}}"
    )


def test_a_go_template_habit_is_reported_as_written() -> None:
    (problem,) = problems_of('x{v="{{ .Variant }}"}')
    assert problem.startswith("unknown placeholder {{ .Variant }};")


def test_render_refuses_an_invalid_template() -> None:
    with pytest.raises(QueryTemplateInvalid, match=r"unknown placeholder \{\{args.service\}\}"):
        render_query('x{v="{{args.service}}"}', VARS, "canary")


def test_the_error_is_a_value_error_so_model_validators_can_raise_it() -> None:
    assert issubclass(QueryTemplateInvalid, ValueError)


@pytest.mark.parametrize("template", ["", "   ", "\n\t"])
def test_an_empty_query_is_invalid(template: str) -> None:
    assert problems_of(template) == ("the query is empty",)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('x{v="{{variant"}', "unclosed placeholder at position 5"),
        ('x{v="{{variant}"}', "unclosed placeholder at position 5"),
        ('x{v="a"}}', "'}}' without a matching '{{' at position 7"),
        ('x{v="a"', "1 unclosed '{'"),
        ('x v="a"}', "'}' without a matching '{' at position 7"),
        ('x{v="a}', "unterminated string literal"),
        ('x{v="\\{{variant}}"}', "a backslash right before the placeholder at position 6"),
    ],
)
def test_unbalanced_braces_and_quotes_are_reported(template: str, expected: str) -> None:
    assert any(expected in p for p in problems_of(template)), problems_of(template)


def test_braces_inside_strings_are_content() -> None:
    validate_query('rate(http_requests_total{path=~"/v1/{id}/[a-z]+", v="{{variant}}"}[5m])')
    validate_query("x{path=`/raw/{`}")


@pytest.mark.parametrize("template", ["x{v={{variant}}}", "x{v='{{variant}}'}", "sum by ({{variant}}) (x)"])
def test_a_placeholder_outside_double_quotes_is_refused(template: str) -> None:
    (problem,) = problems_of(template)
    assert "must sit inside a double-quoted string" in problem


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of('x{v="{{nope}}", w="{{flag}}"} + y{w={{stage}}')
    assert len(problems) == 3, problems
    assert any("{{nope}}" in p for p in problems)
    assert any("{{stage}} must sit inside" in p for p in problems)
    assert "1 unclosed '{'" in problems


def test_valid_templates_pass_validation() -> None:
    validate_query(ISSUE_EXAMPLE)
    validate_query('histogram_quantile(0.99, sum by (le) (rate(x_bucket{flag="{{flag}}"}[1m:10s])))')


PIECES = ["{{variant}}", "{{ flag }}", "{{nope}}", "{{", "}}", "{", "}", '"', "'", "`", "\\", "x", " ", "\n"]


@given(st.lists(st.sampled_from(PIECES)).map("".join))
def test_any_template_either_renders_completely_or_says_why(template: str) -> None:
    rendered: str | None = None
    problems: tuple[str, ...] = ()
    try:
        rendered = render_query(template, VARS, "canary")
    except QueryTemplateInvalid as error:
        problems = error.problems
    assert (rendered is None) == bool(problems)
    assert rendered is None or "{{" not in rendered


@given(st.lists(st.sampled_from(PIECES)).map("".join), st.text(alphabet=st.characters(exclude_characters="{}")))
def test_no_value_can_change_the_shape_of_a_valid_query(template: str, value: str) -> None:
    try:
        validate_query(template)
    except QueryTemplateInvalid:
        return
    # Strings still close where they did and braces still balance: the rendered text is itself valid.
    validate_query(render_query(template, VARS, value))
