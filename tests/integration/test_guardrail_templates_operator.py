"""Guardrail templates end to end: a ClusterGuardrailTemplate judged through the test bed's Prometheus.

A rollout that references a template which is not there yet, or without an argument the template needs, holds
where it is with a condition naming the template, the argument and the fix; once both are right it runs on
the template's guardrails, with the arguments filled in, exactly as if they had been written inline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.demo.ai_service import Behaviour, Knobs
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.guardrails import StartScrapedService
from tests.support.operator import apply, create_token_secret, events, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "ai-summary"
NAME = "summary-v2"
# The error rate of the service a template is about, whichever service an AIRollout names in args.job.
ERROR_RATE = (
    'sum(rate(ai_errors_total{job="{{args.job}}",variant="{{variant}}"}[15s])) / '
    'sum(rate(ai_requests_total{job="{{args.job}}",variant="{{variant}}"}[15s]))'
)


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


@pytest.fixture
def template_name(testbed: Testbed, namespace: str) -> Iterator[str]:
    """A ClusterGuardrailTemplate name of this test's own (cluster-scoped: it outlives the namespace)."""
    name = f"ai-errors-{namespace}"
    yield name
    testbed.kubectl("delete", "clusterguardrailtemplate", name, "--ignore-not-found")


def condition(testbed: Testbed, namespace: str, kind: str) -> dict[str, Any] | None:
    conditions = status_of(testbed, namespace, NAME).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def held_because(testbed: Testbed, namespace: str, reason: str, log: Path) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        f"GuardrailTemplatesResolved=False ({reason})",
        lambda: (c := condition(testbed, namespace, "GuardrailTemplatesResolved")) and c["reason"] == reason and c,
        timeout=30,
        log=log,
    )
    return found


def test_a_rollout_waits_for_its_template_and_arguments_then_is_judged_on_the_templates_guardrails(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, tmp_path: Path, airollout_crd: Path,
    scraped_ai_service: StartScrapedService, template_name: str,
) -> None:  # fmt: skip
    healthy = Behaviour(error_rate=0.02, latency_seconds=0.2, quality=0.9)
    workload = scraped_ai_service(FLAG, Knobs(default=healthy).merged({"variants": {"canary": {"error_rate": 0.06}}}))
    use: dict[str, Any] = {"templateRef": {"name": template_name, "kind": "ClusterGuardrailTemplate"}}
    manifest = rollout_manifest(
        namespace, NAME, api_url=flag_env.api_url, env_id=flag_env.env_id, flag=FLAG,
        stages=[{"name": "canary", "percentage": 20, "duration": "5m"}, {"name": "full", "percentage": 100}],
        prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
        analysis={"interval": "1s", "consecutiveErrorLimit": 3},
        guardrails=[use],
    )  # fmt: skip
    # Retries after a template problem come quickly here; by default they back off to 30 s.
    with OperatorProcess(tmp_path, testbed.kubeconfig, "--retry-backoff-cap", "1", "--template-ttl", "1") as operator:
        apply(testbed, manifest)
        missing = held_because(testbed, namespace, "GuardrailTemplateNotFound", operator.log)
        assert missing["status"] == "False"
        assert (
            f"ClusterGuardrailTemplate '{template_name}' named by spec.guardrails[0].templateRef does not exist"
            in (missing["message"])
        )
        assert status_of(testbed, namespace, NAME)["phase"] == "Pending"
        assert flag_env.get_flag(FLAG)["isEnabled"] is False  # nothing was served while it could not be judged

        template = {
            "apiVersion": "airollout.dev/v1alpha1",
            "kind": "ClusterGuardrailTemplate",
            "metadata": {"name": template_name},
            "spec": {
                "args": [{"name": "job"}],
                "guardrails": [{"name": "error-rate", "query": ERROR_RATE, "max": 0.5, "maxIncreaseOverControl": 0.5}],
            },
        }
        apply(testbed, template)
        argument = held_because(testbed, namespace, "GuardrailTemplateArgumentMissing", operator.log)
        assert argument["message"].startswith(
            f"spec.guardrails[0].args.job is missing: ClusterGuardrailTemplate {template_name} needs argument 'job'"
        )
        assert status_of(testbed, namespace, NAME)["phase"] == "Pending"
        warnings = [e for e in events(testbed, namespace, NAME) if e["reason"].startswith("GuardrailTemplate")]
        assert [(e["reason"], e["type"]) for e in warnings] == [
            ("GuardrailTemplateNotFound", "Warning"),
            ("GuardrailTemplateArgumentMissing", "Warning"),
        ]

        testbed.kubectl(
            "-n", namespace, "patch", "airollout", NAME, "--type=json", "-p",
            json.dumps([{"op": "add", "path": "/spec/guardrails/0/args", "value": {"job": workload.job}}]),
        )  # fmt: skip
        status = wait_for_phase(testbed, namespace, NAME, "RolledBack", timeout=90, log=operator.log)

    (verdict,) = status["guardrails"]
    assert (verdict["name"], verdict["outcome"]) == ("error-rate", "Breached")
    assert verdict["controlValue"] == pytest.approx(0.02, abs=0.01)
    assert verdict["value"] > verdict["threshold"]
    resolved = next(c for c in status["conditions"] if c["type"] == "GuardrailTemplatesResolved")
    assert (resolved["status"], resolved["reason"]) == ("True", "GuardrailTemplatesResolved")
    assert [e["reason"] for e in status["history"] if e["reason"] in ("Started", "GuardrailBreached")] == [
        "Started",
        "GuardrailBreached",
    ]
