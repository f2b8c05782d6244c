"""The chart's dashboard and alerts as `helm` renders them: optional, labelled for Grafana's sidecar, checked.

Whether their queries return data is tested against a real run in test_demo.py, and when each alert fires
with promtool in test_alert_rules.py; here: what the chart installs, and that it only names real metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import airollout.kube.metrics  # noqa: F401  (registers the operator's metrics)
from airollout_testbed.sandbox.tools import tool
from tests.support.observability import CHART, DASHBOARD, alert_rules, panel_queries
from tests.support.sandbox import require_tools

pytestmark = pytest.mark.integration

OBSERVABILITY = ("metrics.enabled=true", "dashboard.enabled=true", "prometheusRule.enabled=true")


def helm_template(*sets: str) -> subprocess.CompletedProcess[str]:
    require_tools(("helm",))
    flags = [arg for value in sets for arg in ("--set", value)]
    return subprocess.run(
        [str(tool("helm")), "template", "airollout", str(CHART), "-n", "ops", *flags], capture_output=True, text=True
    )


def rendered(*sets: str) -> dict[str, dict[str, Any]]:
    result = helm_template(*sets)
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def test_neither_is_installed_unless_asked_for() -> None:
    kinds = rendered("metrics.enabled=true")
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds


def test_the_dashboard_ships_as_a_configmap_the_grafana_sidecar_loads() -> None:
    configmap = rendered(*OBSERVABILITY, "dashboard.namespace=monitoring")["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"]["airollout.json"]) == json.loads(DASHBOARD.read_text())


def test_the_alert_thresholds_and_labels_come_from_values() -> None:
    rule = rendered(
        *OBSERVABILITY, "prometheusRule.pausedFor=2h", "prometheusRule.additionalLabels.release=kube-prometheus-stack"
    )["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    paused = next(r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "AIRolloutPaused")
    assert paused["for"] == "2h"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("dashboard.enabled=true",), "dashboard.enabled needs metrics.enabled"),
        (("prometheusRule.enabled=true",), "prometheusRule.enabled needs metrics.enabled"),
        ((*OBSERVABILITY, "prometheusRule.pausedFor=1.5m"), "/prometheusRule/pausedFor"),
        ((*OBSERVABILITY, "dashboard.lables.x=y"), "additional properties 'lables' not allowed"),
    ],
)
def test_a_bad_combination_or_value_is_refused_naming_it(sets: tuple[str, ...], message: str) -> None:
    result = helm_template(*sets)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_dashboard_and_the_alerts_name_only_metrics_the_operator_exports() -> None:
    exported = {metric.name for metric in REGISTRY.collect()}
    queries = [query for _title, query in panel_queries()]
    queries += [rule["expr"] for group in alert_rules() for rule in group["rules"]]
    named = {
        re.sub(r"_(bucket|count|sum|total)$", "", name) for q in queries for name in re.findall(r"airollout_\w+", q)
    }
    assert named
    assert named <= exported, named - exported
