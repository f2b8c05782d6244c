"""Every combination of chart values the README documents, linted strictly and accepted by the real apiserver;
and the CRDs as the chart ships them, installed and upgraded the documented way, with their field descriptions.

`helm template | kubectl apply --dry-run=server` sends each object through the apiserver's validation and
admission (helm's own dry run does not). The Prometheus Operator's kinds need their CRDs for that: a reduced
pair from `manifests/` (names and an open schema) stands in for them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from airollout_testbed.waiting import wait_for
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "airollout"
CRDS = ROOT / "crds"
PROMETHEUS_OPERATOR_CRDS = Path(__file__).parent / "manifests" / "prometheus-operator-crds.yaml"
# The documented way to install the CRDs before the chart, and to upgrade them after `helm upgrade` (docs/packaging.md).
CRD_COMMAND = ("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))

_BASE = {"serviceaccount", "deployment.apps", "clusterrole.rbac.authorization.k8s.io"}
_CLUSTER_WIDE = {"clusterrolebinding.rbac.authorization.k8s.io"}
_METRICS = {"service"}
_ROLES = {"role.rbac.authorization.k8s.io", "rolebinding.rbac.authorization.k8s.io"}
COMBINATIONS = {
    "defaults": ((), _BASE | _CLUSTER_WIDE),
    "namespaced": (
        ("rbac.clusterWide=false", "watchNamespaces={NS-a,NS-b}"),
        # ClusterGuardrailTemplates are cluster-scoped: a ClusterRole for them alone, even here.
        _BASE | _CLUSTER_WIDE | _ROLES,
    ),
    "metrics": (("metrics.enabled=true",), _BASE | _CLUSTER_WIDE | _METRICS),
    "service-monitor": (
        ("metrics.enabled=true", "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=1m"),
        _BASE | _CLUSTER_WIDE | _METRICS | {"servicemonitor.monitoring.coreos.com"},
    ),
    "replicas-and-shards": (
        ("replicas=3", "shards=12", "operator.settings.routineWorkers=32"),
        _BASE | _CLUSTER_WIDE | _ROLES,
    ),
    "observability": (
        (
            "metrics.enabled=true", "metrics.serviceMonitor.enabled=true", "dashboard.enabled=true",
            "prometheusRule.enabled=true", "prometheusRule.additionalLabels.release=kube-prometheus-stack",
        ),
        _BASE | _CLUSTER_WIDE | _METRICS
        | {"servicemonitor.monitoring.coreos.com", "configmap", "prometheusrule.monitoring.coreos.com"},
    ),
}  # fmt: skip
"""Name: (helm --set values, NS standing for the test's namespace; the kinds the apiserver must take)."""


@pytest.fixture(scope="module")
def prometheus_operator_crds(testbed: Testbed) -> None:
    testbed.kubectl("apply", "--server-side", "-f", str(PROMETHEUS_OPERATOR_CRDS))
    for name in ("servicemonitors", "prometheusrules"):
        testbed.kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com", "--timeout=60s")


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_each_documented_combination_lints_strictly_and_the_apiserver_takes_every_object(
    testbed: Testbed, airollout_crd: Path, prometheus_operator_crds: None, namespace: str, combination: str
) -> None:
    settings, kinds = COMBINATIONS[combination]
    values = [value.replace("NS", namespace) for value in settings]
    for watched in {v.split("=", 1)[1].strip("{}") for v in values if v.startswith("watchNamespaces=")}:
        for name in watched.split(","):
            testbed.kubectl("create", "namespace", name)
    sets = [arg for value in values for arg in ("--set", value)]
    linted = testbed.helm("lint", "--strict", str(CHART), "--namespace", namespace, *sets)
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout
    release = f"m-{uuid.uuid4().hex[:8]}"  # cluster-scoped names differ per test
    rendered = testbed.helm("template", release, str(CHART), "--namespace", namespace, *sets).stdout
    applied = testbed.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stdout
    assert {line.split("/")[0] for line in applied.splitlines()} == kinds
    assert all(line.endswith("(server dry run)") for line in applied.splitlines())


def _descriptions(schema: dict[str, object], path: str = "") -> dict[str, str]:
    """Every field's description in an OpenAPI schema, by dotted path."""
    found = {}
    for name, field in (schema.get("properties") or {}).items():  # type: ignore[attr-defined]
        where = f"{path}.{name}" if path else name
        if "description" in field:
            found[where] = " ".join(field["description"].split())
        found |= _descriptions(field, where)
        if "items" in field:
            found |= _descriptions(field["items"], where)
    return found


def test_the_crds_ship_in_the_chart_and_the_documented_upgrade_replaces_what_helm_installed_keeping_descriptions(
    testbed: Testbed, airollout_crd: Path
) -> None:
    # `helm show crds` joins the files without separators; `template --include-crds` keeps them documents apart.
    rendered = testbed.helm("template", "crds", str(CHART), "--include-crds").stdout
    shipped = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "CustomResourceDefinition"]
    in_repository = [yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml"))]
    assert sorted(d["metadata"]["name"] for d in shipped) == sorted(d["metadata"]["name"] for d in in_repository)
    # An older release, as `helm install` created it from the chart's crds/ (its own field manager): one
    # description differs. The documented command must take it over and bring the new one.
    (crd,) = (d for d in shipped if d["metadata"]["name"] == "airollouts.airollout.dev")
    older = json.loads(json.dumps(crd))
    spec_schema = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["description"] = "An older description."
    current = testbed.kubectl("get", "crd", "airollouts.airollout.dev", "-o", "jsonpath={.metadata.resourceVersion}")
    older["metadata"]["resourceVersion"] = current.stdout
    testbed.kubectl("replace", "--field-manager=helm", "-f", "-", input=json.dumps(older))

    def explained(field: str) -> str:
        # The apiserver republishes a CRD's OpenAPI a moment after the CRD changes.
        return " ".join(testbed.kubectl("explain", f"airollouts.{field}").stdout.split())

    wait_for("the older description", lambda: "An older description." in explained("spec"), timeout=30)
    testbed.kubectl(*CRD_COMMAND)
    described = _descriptions(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    wait_for("the shipped description", lambda: described["spec"] in explained("spec"), timeout=30)
    for field in ("spec.stages", "spec.stages.percentage", "spec.flag", "spec.killSwitch", "status.phase"):
        assert described[field] in explained(field), field
