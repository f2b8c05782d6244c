"""The CRD on a real kube-apiserver: what users see when they apply a good or a bad AIRollout.

The schema, defaults and CEL rules are only proven by the apiserver that evaluates them, so every invalid
manifest here goes through `kubectl apply` and the test reads the message the user would read. Each case
is also fed to the pydantic model, which must refuse it too: the operator never trusts more than the
apiserver lets through.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from airollout.model import (
    AIRolloutSpec,
    AIRolloutStatus,
    Condition,
    GuardrailStatus,
    HistoryEntry,
    Phase,
)
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embedding-v2.yaml"

Manifest = dict[str, Any]


def _example(namespace: str, name: str = "embedding-v2") -> Manifest:
    manifest: Manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    return manifest


def _apply(testbed: Testbed, manifest: Manifest) -> Any:
    return testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)


def _get(testbed: Testbed, namespace: str, name: str) -> Manifest:
    result: Manifest = json.loads(testbed.kubectl("get", "airollout", name, "-n", namespace, "-o", "json").stdout)
    return result


def test_the_crd_is_established_with_its_short_name(testbed: Testbed, airollout_crd: Path) -> None:
    lines = testbed.kubectl("api-resources", "--api-group=airollout.dev", "--no-headers").stdout.splitlines()
    assert sorted(line.split() for line in lines) == [
        ["airollouts", "air", "airollout.dev/v1alpha1", "true", "AIRollout"],
        ["clusterguardrailtemplates", "cgrt", "airollout.dev/v1alpha1", "false", "ClusterGuardrailTemplate"],
        ["guardrailtemplates", "grt", "airollout.dev/v1alpha1", "true", "GuardrailTemplate"],
    ]


def test_the_example_is_accepted_and_stored_with_the_models_defaults(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    result = _apply(testbed, _example(namespace))
    assert result.returncode == 0, result.stderr
    stored = _get(testbed, namespace, "embedding-v2")["spec"]
    assert stored["flag"]["dispatchKey"] == "keyId"
    assert stored["stages"][0]["percentage"] == 0
    assert stored["analysis"] == {
        "interval": "30s",
        "consecutiveErrorLimit": 3,
        "warmup": "60s",
        "falseRollbackRate": 0.05,
        "onInsufficientSample": "hold",
        "maxExtensions": 2,
    }
    assert stored["prometheus"]["timeout"] == "10s"
    assert stored["featbit"]["tokenSecretRef"] == {"name": "featbit", "key": "token"}
    assert AIRolloutSpec.model_validate(stored) == AIRolloutSpec.model_validate(_example(namespace)["spec"])


def test_a_minimal_rollout_gets_every_default(testbed: Testbed, airollout_crd: Path, namespace: str) -> None:
    minimal = {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "AIRollout",
        "metadata": {"name": "minimal", "namespace": namespace},
        "spec": {
            "flag": {"key": "f", "envId": "0f3e8a52-6c1d-4b7e-9a2f-5d8c1e0b7a63", "candidate": "on", "control": "off"},
            "featbit": {"url": "https://featbit.example", "tokenSecretRef": {"name": "featbit"}},
            "stages": [{"name": "all", "percentage": 100}],
        },
    }
    result = _apply(testbed, minimal)
    assert result.returncode == 0, result.stderr
    stored = _get(testbed, namespace, "minimal")["spec"]
    assert AIRolloutSpec.model_validate(stored) == AIRolloutSpec.model_validate(minimal["spec"])
    assert stored["killSwitch"] is False
    assert stored["onBreach"] == "rollback"


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """Set (or, with DELETE, remove) the field at a dotted path of spec; numbers index lists."""

    def mutate(spec: Manifest) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = spec
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


DELETE = object()


def _add_second_guardrail(spec: Manifest) -> None:
    spec["guardrails"].append(copy.deepcopy(spec["guardrails"][0]))


def _drop_thresholds(spec: Manifest) -> None:
    # The example's second guardrail is its threshold one (the first is a comparison).
    for threshold in ("max", "maxIncreaseOverControl", "warnAt"):
        spec["guardrails"][1].pop(threshold, None)


# (case, change to the example's spec, what the user must read)
INVALID = [
    ("no-stages", _set("stages", []), "spec.stages: Required value: list at least one stage"),
    ("stages-missing", _set("stages", DELETE), "spec.stages: Required value"),
    (
        "duplicate-stage-names",
        _set("stages.1.name", "internal"),
        'spec.stages: Invalid value: two stages are named "internal"; give every stage its own name',
    ),
    (
        "percentage-150",
        _set("stages.3.percentage", 150),
        "spec.stages[3].percentage: Invalid value: 150: spec.stages[3].percentage in body should be less than or "
        "equal to 100",
    ),
    ("negative-percentage", _set("stages.1.percentage", -5), "spec.stages[1].percentage: Invalid value: -5"),
    (
        "decreasing-percentages",
        _set("stages.2.percentage", 1),
        "spec.stages: Invalid value: a stage's percentage is lower than the stage before it; percentages never "
        "decrease",
    ),
    (
        "duration-in-words",
        _set("stages.0.duration", "ten minutes"),
        'spec.stages[0].duration: Invalid value: "ten minutes"',
    ),
    (
        "stage-name-not-a-dns-label",
        _set("stages.0.name", "Internal_Users"),
        'spec.stages[0].name: Invalid value: "Internal_Users"',
    ),
    ("flag-key-missing", _set("flag.key", DELETE), "spec.flag.key: Required value"),
    ("flag-env-missing", _set("flag.envId", DELETE), "spec.flag.envId: Required value"),
    ("flag-env-not-a-guid", _set("flag.envId", "production"), 'spec.flag.envId: Invalid value: "production"'),
    ("flag-candidate-missing", _set("flag.candidate", DELETE), "spec.flag.candidate: Required value"),
    ("flag-control-missing", _set("flag.control", DELETE), "spec.flag.control: Required value"),
    (
        "flag-key-with-spaces-and-slashes",
        _set("flag.key", "new embedding/model"),
        'spec.flag.key: Invalid value: "new embedding/model"',
    ),
    (
        "candidate-equals-control",
        _set("flag.control", "canary"),
        'spec.flag.candidate: Invalid value: must differ from spec.flag.control (both are "canary")',
    ),
    (
        "featbit-url-without-scheme",
        _set("featbit.url", "featbit-api:5000"),
        'spec.featbit.url: Invalid value: "featbit-api:5000"',
    ),
    ("token-secret-missing", _set("featbit.tokenSecretRef", DELETE), "spec.featbit.tokenSecretRef: Required value"),
    (
        "on-breach-unknown",
        _set("onBreach", "explode"),
        'spec.onBreach: Unsupported value: "explode": supported values: "rollback", "pause"',
    ),
    (
        "no-data-unknown",
        _set("guardrails.1.noData", "ignore"),
        'spec.guardrails[1].noData: Unsupported value: "ignore": supported values: "hold", "pass", "fail"',
    ),
    (
        "guardrail-with-max-and-min",
        _set("guardrails.1.min", 0.1),
        "spec.guardrails[1]: Invalid value: set max or min, not both",
    ),
    (
        "guardrail-without-thresholds",
        _drop_thresholds,
        "spec.guardrails[1]: Invalid value: a guardrail needs a threshold; set max, min or maxIncreaseOverControl",
    ),
    (
        "negative-increase-over-control",
        _set("guardrails.1.maxIncreaseOverControl", -0.1),
        "spec.guardrails[1].maxIncreaseOverControl: Invalid value: -0.1",
    ),
    (
        "guardrails-without-prometheus",
        _set("prometheus", DELETE),
        "spec.prometheus: Required value: spec.guardrails are queried from Prometheus: add spec.prometheus.url",
    ),
    (
        "duplicate-guardrail-names",
        _add_second_guardrail,
        'spec.guardrails: Invalid value: two guardrails are named "error-rate"; give every guardrail its own name',
    ),
    (
        "analysis-interval-in-words",
        _set("analysis.interval", "often"),
        'spec.analysis.interval: Invalid value: "often"',
    ),
    ("unknown-field", _set("stagez", []), 'strict decoding error: unknown field "spec.stagez"'),
]

# The model has no candidate != control check yet; strict, so this fails loudly once it has one.
_MODEL_GAPS: dict[str, str] = {}


def _invalid(case: str, mutate: Callable[[Manifest], None], namespace: str) -> Manifest:
    manifest = _example(namespace, name=case)
    mutate(manifest["spec"])
    return manifest


@pytest.mark.parametrize(("case", "mutate", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_the_apiserver_refuses_an_invalid_rollout_and_names_the_field(
    testbed: Testbed, airollout_crd: Path, namespace: str, case: str, mutate: Callable[[Manifest], None], message: str
) -> None:
    result = _apply(testbed, _invalid(case, mutate, namespace))
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        pytest.param(case, mutate, id=case, marks=[pytest.mark.xfail(strict=True, reason=_MODEL_GAPS[case])])
        if case in _MODEL_GAPS
        else pytest.param(case, mutate, id=case)
        for case, mutate, _ in INVALID
    ],
)
def test_the_model_refuses_what_the_apiserver_refuses(case: str, mutate: Callable[[Manifest], None]) -> None:
    with pytest.raises(ValidationError):
        AIRolloutSpec.model_validate(_invalid(case, mutate, "any")["spec"])


def _status() -> AIRolloutStatus:
    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    passed = GuardrailStatus(
        name="error-rate",
        segment='{locale="de"}',
        outcome="Passed",
        value=0.004,
        threshold=0.015,
        control_value=0.005,
        window="5m",
        message="0.004 <= max 0.015",
    )
    return AIRolloutStatus(
        phase=Phase.PROGRESSING,
        stage_index=1,
        stage_name="canary",
        percentage=5.0,
        stage_started_at=now,
        message="canary serves 5% of traffic",
        conditions=(Condition(type="Progressing", status="True", reason="StageAdvanced", last_transition_time=now),),
        history=(
            HistoryEntry(time=now, reason="Started", stage="internal", percentage=0.0),
            HistoryEntry(time=now, reason="StageAdvanced", stage="canary", percentage=5.0, guardrails=(passed,)),
        ),
        observed_generation=1,
        flag_revision="7",
        flag_identity="env/new-embedding-model/canary/stable",
        guardrails=(passed, GuardrailStatus(name="latency", outcome="NoData")),
        guardrail_summary="error-rate: Passed",
        consecutive_errors=1,
        last_analysis_at=now,
    )


def test_status_written_through_the_subresource_survives_whole(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    assert _apply(testbed, _example(namespace)).returncode == 0
    status = _status()
    # As the operator writes it: the whole status, unset fields as null (which removes them).
    testbed.kubectl(
        "patch", "airollout", "embedding-v2", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status.to_k8s()}),
    )  # fmt: skip
    stored = _get(testbed, namespace, "embedding-v2")["status"]
    assert AIRolloutStatus.model_validate(stored) == status
    assert stored["history"][1]["guardrails"][0]["controlValue"] == 0.005


def test_status_fields_the_schema_does_not_declare_are_pruned(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    """Why every status field must be in the CRD: the apiserver silently drops the others."""
    assert _apply(testbed, _example(namespace)).returncode == 0
    testbed.kubectl(
        "patch", "airollout", "embedding-v2", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Paused", "undeclared": "lost"}}),
    )  # fmt: skip
    assert _get(testbed, namespace, "embedding-v2")["status"] == {"phase": "Paused"}


def test_the_status_subresource_refuses_an_unknown_phase(testbed: Testbed, airollout_crd: Path, namespace: str) -> None:
    assert _apply(testbed, _example(namespace)).returncode == 0
    result = testbed.kubectl(
        "patch", "airollout", "embedding-v2", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Done"}}', check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'status.phase: Unsupported value: "Done"' in result.stderr


def test_kubectl_get_shows_phase_stage_percentage_and_guardrails(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    assert _apply(testbed, _example(namespace)).returncode == 0
    before = testbed.kubectl("get", "air", "-n", namespace).stdout.splitlines()
    assert before[0].split() == ["NAME", "PHASE", "STAGE", "PERCENTAGE", "GUARDRAILS", "AGE"]
    testbed.kubectl(
        "patch", "airollout", "embedding-v2", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": _status().to_k8s()}),
    )  # fmt: skip
    row = testbed.kubectl("get", "airollouts", "-n", namespace, "--no-headers").stdout.split()
    assert row[:6] == ["embedding-v2", "Progressing", "canary", "5", "error-rate:", "Passed"]


def test_a_spec_update_cannot_change_status(testbed: Testbed, airollout_crd: Path, namespace: str) -> None:
    assert _apply(testbed, _example(namespace)).returncode == 0
    with_status = {**_example(namespace), "status": {"phase": "Promoted"}}
    testbed.kubectl("apply", "-f", "-", input=json.dumps(with_status))
    assert "status" not in _get(testbed, namespace, "embedding-v2")


def test_kubectl_explain_documents_the_audience(testbed: Testbed, airollout_crd: Path) -> None:
    explained = " ".join(testbed.kubectl("explain", "airollout.spec.stages.audience").stdout.split())
    assert "the stage's percentage applies only to members of these segments; everyone else is served control" in (
        explained
    )
    duration = " ".join(testbed.kubectl("explain", "airollout.spec.stages.duration").stdout.split())
    assert "like 30s, 10m or 1h30m" in duration
