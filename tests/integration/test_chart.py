"""The Helm chart against the real tools: helm lints and renders it, and the apiserver accepts what it renders.

`helm template | kubectl apply --dry-run=server` sends every object through the apiserver's own validation
(helm's dry run does not), and a real apply lets `kubectl auth can-i` check the RBAC as the operator's
ServiceAccount would meet it.
"""

from __future__ import annotations

import re
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "airollout"

MODES = pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "namespaced"])


def _release() -> str:
    # ClusterRoles are cluster-scoped, so every test gets its own release name.
    return f"air-{uuid.uuid4().hex[:8]}"


@MODES
def test_helm_lint_passes_strictly(testbed: Testbed, cluster_wide: bool) -> None:
    result = testbed.helm("lint", "--strict", str(CHART), "--set", f"rbac.clusterWide={cluster_wide}")
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_follows_the_crd_link_into_the_chart(testbed: Testbed) -> None:
    rendered = testbed.helm("template", "airollout", str(CHART), "--include-crds").stdout
    assert "name: airollouts.airollout.dev" in rendered
    assert "x-kubernetes-validations" in rendered


@MODES
def test_the_rendered_chart_is_accepted_by_the_apiserver(
    testbed: Testbed, airollout_crd: Path, namespace: str, cluster_wide: bool
) -> None:
    rendered = testbed.helm(
        "template", _release(), str(CHART), "--namespace", namespace,
        "--set", f"rbac.clusterWide={cluster_wide}", "--set", "metrics.enabled=true",
    ).stdout  # fmt: skip
    applied = testbed.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stdout
    kinds = {line.split("/")[0] for line in applied.splitlines()}
    # A ClusterRole either way: ClusterGuardrailTemplates are cluster-scoped, even for a namespaced install.
    expected = {"serviceaccount", "deployment.apps", "service"}
    expected |= {"clusterrole.rbac.authorization.k8s.io", "clusterrolebinding.rbac.authorization.k8s.io"}
    if not cluster_wide:
        expected |= {"role.rbac.authorization.k8s.io", "rolebinding.rbac.authorization.k8s.io"}
    assert kinds == expected


@MODES
def test_the_service_account_can_do_what_the_operator_does_and_no_more(
    testbed: Testbed, airollout_crd: Path, namespace: str, cluster_wide: bool
) -> None:
    release = _release()
    rendered = testbed.helm(
        "template", release, str(CHART), "--namespace", namespace, "--set", f"rbac.clusterWide={cluster_wide}"
    ).stdout
    testbed.kubectl("apply", "-f", "-", input=rendered)
    service_account = f"system:serviceaccount:{namespace}:{release}-airollout"

    def can(*args: str) -> bool:
        result = testbed.kubectl("auth", "can-i", *args, "-n", namespace, f"--as={service_account}", check=False)
        return result.stdout.strip() == "yes"

    for verb in ("list", "watch", "patch"):
        assert can(verb, "airollouts.airollout.dev")
    assert can("patch", "airollouts.airollout.dev", "--subresource=status")
    assert can("create", "events")
    assert can("get", "secrets/featbit")
    assert not can("list", "secrets")
    assert not can("delete", "airollouts.airollout.dev")
    assert not can("create", "airollouts.airollout.dev")
    assert not can("update", "airollouts.airollout.dev", "--subresource=status")
    assert not can("get", "configmaps")
    watches_crds = testbed.kubectl(
        "auth", "can-i", "watch", "customresourcedefinitions.apiextensions.k8s.io", f"--as={service_account}",
        check=False,
    ).stdout.strip()  # fmt: skip
    assert watches_crds == "no"


def test_the_notes_show_a_first_rollout_the_apiserver_accepts(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    notes = testbed.helm(
        "install", _release(), str(CHART), "--namespace", namespace, "--dry-run=server",
        "--set", "rbac.clusterWide=false",
    ).stdout.split("NOTES:", 1)[1]  # fmt: skip
    assert f"-n {namespace} create secret generic featbit" in notes
    sample = re.search(r"kubectl apply -f - <<'YAML'\n(.*?)\n\s*YAML\n", notes, re.DOTALL)
    assert sample, notes
    result = testbed.kubectl("apply", "--dry-run=server", "-f", "-", input=textwrap.dedent(sample.group(1)))
    assert "airollout.airollout.dev/my-first-rollout created (server dry run)" in result.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("iamge.tag=1.0", "additional properties 'iamge' not allowed"),
        ("rbac.clusterwide=false", "additional properties 'clusterwide' not allowed"),
        ("metrics.serviceMonitor.intervall=1m", "additional properties 'intervall' not allowed"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("healthPort=http", "healthPort"),
    ],
    ids=["top-level-typo", "nested-typo", "deep-typo", "bad-enum", "bad-type"],
)
def test_a_values_mistake_is_refused_by_the_schema(testbed: Testbed, setting: str, complaint: str) -> None:
    result = testbed.helm("template", "airollout", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_a_service_monitor_without_metrics_is_refused(testbed: Testbed) -> None:
    result = testbed.helm(
        "template", "airollout", str(CHART), "--set", "metrics.serviceMonitor.enabled=true", check=False
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.enabled" in result.stderr


def test_replicas_share_shards_through_leases_they_may_use_and_need_shards_to_start(
    testbed: Testbed, airollout_crd: Path, namespace: str
) -> None:
    release = _release()
    rendered = testbed.helm(
        "template", release, str(CHART), "--namespace", namespace,
        "--set", "replicas=3", "--set", "shards=12", "--set", "operator.settings.routineWorkers=32",
    ).stdout  # fmt: skip
    assert "--shards=12" in rendered
    assert "--routine-workers=32" in rendered
    assert "type: RollingUpdate" in rendered
    testbed.kubectl("apply", "-f", "-", input=rendered)
    account = f"system:serviceaccount:{namespace}:{release}-airollout"
    for verb in ("get", "list", "create", "update", "delete"):
        allowed = testbed.kubectl("-n", namespace, "auth", "can-i", verb, "leases.coordination.k8s.io", "--as", account)
        assert allowed.stdout.strip() == "yes", verb
    refused = testbed.helm("template", release, str(CHART), "--set", "replicas=3", check=False)
    assert refused.returncode != 0
    assert "replicas > 1 needs shards > 0" in refused.stderr


def test_an_unknown_tunable_is_refused_by_the_chart(testbed: Testbed) -> None:
    refused = testbed.helm(
        "template", _release(), str(CHART), "--set", "operator.settings.routineWorkrs=3", check=False
    )
    assert refused.returncode != 0
    assert "routineWorkrs" in refused.stderr
