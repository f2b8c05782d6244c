"""Guardrails: render a query for a variant, measure it in Prometheus, judge each segment against limits.

Templating, judging and reading answers are pure; `PrometheusSource` is the one adapter that talks to
Prometheus, behind the `MetricsSource` protocol so the rest of the operator never depends on how results
are fetched. `GuardrailLimits` bounds what a guardrail reads and writes; `QueryCounters` tells how much
of the querying was shared between rollouts.
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
from airollout.guardrails.limits import GuardrailLimits
from airollout.guardrails.prometheus import PrometheusSource, measure
from airollout.guardrails.sharing import QueryCounters
from airollout.guardrails.source import GuardrailQueryFailed, MetricsSource
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query, validate_query

__all__ = [
    "GuardrailLimits",
    "GuardrailQueryFailed",
    "GuardrailVerdict",
    "MetricsSource",
    "Outcome",
    "PrometheusSource",
    "QueryCounters",
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
