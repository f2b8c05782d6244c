"""The guardrail template CRDs, and template references in an AIRollout, on a real kube-apiserver.

What a user sees at `kubectl apply` and `kubectl explain`: a good template and reference are taken, a
reference that also writes a query (or a template without a threshold) is refused with the field named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.harness import rollout_manifest
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

ENV = "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b"
QUERY = 'sum(rate(ai_errors_total{service="{{args.service}}",variant="{{variant}}"}[5m]))'


def _apply(testbed: Testbed, manifest: dict[str, Any]) -> Any:
    return testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)


def _template(namespace: str, **guardrail: Any) -> dict[str, Any]:
    return {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "GuardrailTemplate",
        "metadata": {"name": "ai-errors", "namespace": namespace},
        "spec": {"args": [{"name": "service"}], "guardrails": [{"name": "error-rate", "query": QUERY, **guardrail}]},
    }


def _rollout(namespace: str, *guardrails: dict[str, Any]) -> dict[str, Any]:
    return rollout_manifest(
        namespace, "summary-v2", flag="ai-summary", env_id=ENV, api_url="http://featbit:5000",
        prometheus={"url": "http://prometheus:9090"}, guardrails=list(guardrails),
    )  # fmt: skip


def test_a_template_and_a_reference_to_it_are_taken_and_listed(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    assert _apply(testbed, _template(namespace, max=0.05)).returncode == 0
    reference = {"templateRef": {"name": "ai-errors"}, "args": {"service": "summarizer"}}
    result = _apply(testbed, _rollout(namespace, reference, {"name": "latency", "query": "x", "max": 1}))
    assert result.returncode == 0, result.stderr
    stored = json.loads(testbed.kubectl("-n", namespace, "get", "airollout", "summary-v2", "-o", "json").stdout)
    assert stored["spec"]["guardrails"][0]["templateRef"] == {"name": "ai-errors", "kind": "GuardrailTemplate"}
    row = testbed.kubectl("-n", namespace, "get", "grt", "--no-headers").stdout.split()
    assert row[:2] == ["ai-errors", "error-rate"]


def test_a_reference_that_also_writes_a_query_is_refused(testbed: Testbed, airollout_crd: Path, namespace: str) -> None:
    both = {"templateRef": {"name": "ai-errors"}, "query": "x", "max": 1}
    result = _apply(testbed, _rollout(namespace, both))
    assert result.returncode != 0
    assert "spec.guardrails[0]: Invalid value: an entry with templateRef takes its guardrails from the template" in (
        result.stderr
    )


def test_args_without_a_template_are_refused(testbed: Testbed, airollout_crd: Path, namespace: str) -> None:
    result = _apply(testbed, _rollout(namespace, {"name": "e", "query": "x", "max": 1, "args": {"service": "s"}}))
    assert "spec.guardrails[0]: Invalid value: args go with a templateRef" in result.stderr


def test_a_template_guardrail_without_a_threshold_is_refused(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    result = _apply(testbed, _template(namespace))
    assert result.returncode != 0
    assert "spec.guardrails[0]: Invalid value: a guardrail needs a threshold" in result.stderr


def test_kubectl_explain_documents_template_arguments(testbed: Testbed, airollout_crd: Path) -> None:
    explained = " ".join(testbed.kubectl("explain", "clusterguardrailtemplate.spec.args").stdout.split())
    assert "The arguments the queries use as {{args.NAME}}" in explained
    reference = " ".join(testbed.kubectl("explain", "airollout.spec.guardrails.templateRef").stdout.split())
    assert "Use the guardrails of this template instead of writing them here" in reference
