"""Guardrails: render a query for a variant, measure it in Prometheus, judge each segment against limits.

Templating and judging are pure; `PrometheusSource` is the one adapter that talks to Prometheus, behind the
`MetricsSource` protocol so the rest of the operator never depends on how results are fetched.
"""

from airollout.guardrails.judging import (
    GuardrailVerdict,
    Outcome,
    Sample,
    SegmentJudgement,
    judge,
    judge_error,
    overall,
)
from airollout.guardrails.prometheus import GuardrailQueryFailed, MetricsSource, PrometheusSource, measure
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query, validate_query

__all__ = [
    "GuardrailQueryFailed",
    "GuardrailVerdict",
    "MetricsSource",
    "Outcome",
    "PrometheusSource",
    "QueryTemplateInvalid",
    "QueryVariables",
    "Sample",
    "SegmentJudgement",
    "judge",
    "judge_error",
    "measure",
    "overall",
    "render_query",
    "validate_query",
]
