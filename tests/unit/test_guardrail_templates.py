"""Guardrail templates: a reference in an AIRollout becomes the template's guardrails, or a problem naming the fix.

Expansion is pure (the templates are handed in), so every way a reference can go wrong is checked here; the
operator reading real templates from the apiserver is tested in tests/integration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airollout.guardrails.templating import ArgumentsMissing, QueryTemplateInvalid, fill_args
from airollout.kube.templates import TemplateKey, expand, references
from airollout.model import AIRolloutSpec, AIRolloutStatus, Phase
from airollout.planner import Observation, Problem, plan
from airollout.reasons import ConditionType, Reason

NS = "team-a"
ERRORS = 'sum(rate(ai_errors_total{service="{{args.service}}",variant="{{variant}}"}[5m]))'
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def template(*, args: list[dict[str, str]] | None = None, **guardrail: Any) -> dict[str, Any]:
    body = {"name": "error-rate", "query": ERRORS, "max": 0.05, **guardrail}
    return {
        "metadata": {"name": "ai-errors", "resourceVersion": "7"},
        "spec": {"args": args if args is not None else [{"name": "service"}], "guardrails": [body]},
    }


def spec(*guardrails: dict[str, Any]) -> dict[str, Any]:
    return {
        "flag": {"key": "summary", "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b", "candidate": "a", "control": "b"},
        "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
        "stages": [{"name": "full", "percentage": 100}],
        "prometheus": {"url": "http://prometheus:9090"},
        "guardrails": list(guardrails),
    }


CLUSTER = TemplateKey("ClusterGuardrailTemplate", "", "ai-errors")
LOCAL = TemplateKey("GuardrailTemplate", NS, "ai-errors")
USE = {"templateRef": {"name": "ai-errors", "kind": "ClusterGuardrailTemplate"}, "args": {"service": "summarizer"}}
INLINE = {"name": "latency", "query": 'x{variant="{{variant}}"}', "max": 1.0}


def test_a_reference_becomes_the_templates_guardrails_with_the_arguments_filled_in() -> None:
    expansion = expand(spec(INLINE, USE), NS, {CLUSTER: template()})
    assert expansion.problem is None
    assert expansion.versions == ((CLUSTER, "7"),)
    parsed = AIRolloutSpec.model_validate(expansion.spec)
    assert [g.name for g in parsed.inline_guardrails] == ["latency", "error-rate"]
    assert parsed.inline_guardrails[1].query == ERRORS.replace("{{args.service}}", "summarizer")
    assert parsed.inline_guardrails[1].max == 0.05


def test_a_spec_without_references_is_left_as_it_is() -> None:
    raw = spec(INLINE)
    assert expand(raw, NS, {}).spec is raw


def test_a_guardrail_template_is_looked_up_in_the_rollouts_namespace_and_a_cluster_one_cluster_wide() -> None:
    local = {"templateRef": {"name": "ai-errors"}, "args": {"service": "x"}}
    assert references(spec(local, USE), NS) == [LOCAL, CLUSTER]


def test_a_missing_template_names_itself_where_it_was_looked_for_and_the_fix() -> None:
    expansion = expand(spec(INLINE, {"templateRef": {"name": "ai-errors"}}), NS, {})
    assert expansion.problem is not None
    assert expansion.problem.reason is Reason.GUARDRAIL_TEMPLATE_NOT_FOUND
    assert expansion.problem.message.startswith(
        "GuardrailTemplate 'ai-errors' named by spec.guardrails[1].templateRef does not exist in namespace team-a"
    )
    assert "kubectl get guardrailtemplates -A" in expansion.problem.message
    # What does resolve is still judged.
    assert [g["name"] for g in expansion.spec["guardrails"]] == ["latency"]


def test_a_missing_argument_names_the_argument_the_template_and_the_fix() -> None:
    use = {"templateRef": {"name": "ai-errors", "kind": "ClusterGuardrailTemplate"}}
    expansion = expand(spec(use), NS, {CLUSTER: template()})
    assert expansion.problem == Problem(
        Reason.GUARDRAIL_TEMPLATE_ARGUMENT_MISSING,
        "spec.guardrails[0].args.service is missing: ClusterGuardrailTemplate ai-errors needs argument 'service' "
        "for its guardrail 'error-rate'; add it, e.g. args: {service: ...}, or give it a value in the template's "
        "spec.args",
    )


def test_an_argument_the_template_gives_a_value_may_be_left_out() -> None:
    use = {"templateRef": {"name": "ai-errors", "kind": "ClusterGuardrailTemplate"}}
    expansion = expand(spec(use), NS, {CLUSTER: template(args=[{"name": "service", "value": "default-svc"}])})
    assert expansion.problem is None
    assert 'service="default-svc"' in expansion.spec["guardrails"][0]["query"]


def test_an_argument_the_template_does_not_declare_is_refused_with_those_it_does() -> None:
    use = {**USE, "args": {"service": "s", "servce": "typo"}}
    expansion = expand(spec(use), NS, {CLUSTER: template()})
    assert expansion.problem is not None
    assert expansion.problem.reason is Reason.GUARDRAIL_TEMPLATE_INVALID
    assert "spec.guardrails[0].args.servce: ClusterGuardrailTemplate ai-errors declares no argument 'servce'" in (
        expansion.problem.message
    )
    assert "(it declares: service)" in expansion.problem.message


def test_a_template_with_a_bad_guardrail_is_reported_as_the_templates_fault() -> None:
    expansion = expand(spec(USE), NS, {CLUSTER: template(min=0.1)})
    assert expansion.problem is not None
    assert expansion.problem.reason is Reason.GUARDRAIL_TEMPLATE_INVALID
    assert expansion.problem.message.startswith("ClusterGuardrailTemplate ai-errors (spec.guardrails[0].templateRef)")
    assert "set max or min, not both" in expansion.problem.message
    assert expansion.problem.message.endswith("fix the template")


def test_a_name_given_twice_by_a_template_and_an_inline_guardrail_is_refused() -> None:
    clash = {**INLINE, "name": "error-rate"}
    expansion = expand(spec(clash, USE), NS, {CLUSTER: template()})
    assert expansion.problem is not None
    assert "the guardrail name 'error-rate' comes twice" in expansion.problem.message


def test_arguments_are_escaped_and_can_never_change_the_shape_of_the_query() -> None:
    filled = fill_args('x{service="{{args.service}}"}', {"service": 'a"} or vector(1) #'})
    assert filled == 'x{service="a\\"} or vector(1) #"}'


def test_an_argument_outside_a_quoted_string_is_refused() -> None:
    with pytest.raises(QueryTemplateInvalid, match="must sit inside a double-quoted string"):
        fill_args("rate(x[{{args.window}}])", {"window": "5m"})


def test_missing_arguments_are_all_named() -> None:
    with pytest.raises(ArgumentsMissing) as raised:
        fill_args('x{a="{{args.b}}",c="{{args.a}}"}', {})
    assert raised.value.names == ("a", "b")


def test_a_pending_rollout_whose_template_is_missing_does_not_start_and_says_why_once() -> None:
    parsed = AIRolloutSpec.model_validate(spec(INLINE))
    problem = Problem(Reason.GUARDRAIL_TEMPLATE_NOT_FOUND, "ClusterGuardrailTemplate 'ai-errors' ... does not exist")
    first = plan(parsed, AIRolloutStatus(), Observation(unresolved=problem), T0, 1)
    assert first.actions == ()
    assert first.status.phase is Phase.PENDING
    assert [e.reason for e in first.entries] == ["GuardrailTemplateNotFound"]
    (held,) = [c for c in first.status.conditions if c.type == ConditionType.GUARDRAIL_TEMPLATES_RESOLVED]
    assert (held.status, held.reason, held.message) == ("False", "GuardrailTemplateNotFound", problem.message)
    again = plan(parsed, first.status, Observation(unresolved=problem), T0, 1)
    assert again.entries == ()  # one Event, not one per retry

    resolved = plan(parsed, again.status, Observation(), T0, 1)
    assert [e.reason for e in resolved.entries] == ["Started"]
    (ok,) = [c for c in resolved.status.conditions if c.type == ConditionType.GUARDRAIL_TEMPLATES_RESOLVED]
    assert ok.status == "True"


def test_a_running_rollout_whose_template_went_missing_does_not_advance_past_its_bake_time() -> None:
    parsed = AIRolloutSpec.model_validate(
        {
            **spec(),
            "stages": [{"name": "canary", "percentage": 5, "duration": "10s"}, {"name": "full", "percentage": 100}],
        }
    )
    started = plan(parsed, AIRolloutStatus(), Observation(), T0, 1).status
    problem = Problem(Reason.GUARDRAIL_TEMPLATE_NOT_FOUND, "GuardrailTemplate 'ai-errors' ... does not exist")
    later = T0 + timedelta(minutes=5)
    held = plan(parsed, started, Observation(unresolved=problem), later, 1)
    assert (held.status.phase, held.status.stage_name, held.actions) == (Phase.PROGRESSING, "canary", ())
    assert [e.reason for e in held.entries] == ["GuardrailTemplateNotFound"]
    assert held.status.message == problem.message
    moved = plan(parsed, held.status, Observation(), later, 1)
    assert moved.status.stage_name == "full"
