"""The chart's observability pack as tests read it: its alert rules rendered by helm, its dashboard's queries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from airollout_testbed.sandbox.tools import tool

CHART = Path(__file__).resolve().parents[2] / "charts" / "airollout"
DASHBOARD = CHART / "dashboards" / "airollout.json"
RATE_INTERVAL = "1m"
"""What Grafana's $__rate_interval stands for in these tests: four scrapes at the sandbox's 1 s would do; a
minute smooths the demo's curves as a dashboard would."""


def alert_rules(*sets: str) -> list[dict[str, Any]]:
    """The rule groups of the chart's PrometheusRule (release `airollout`), with ``--set`` values ``sets``."""
    rendered = subprocess.run(
        [
            str(tool("helm")), "template", "airollout", str(CHART), "--show-only", "templates/prometheusrule.yaml",
            "--set", "metrics.enabled=true", "--set", "prometheusRule.enabled=true",
            *(arg for value in sets for arg in ("--set", value)),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    groups: list[dict[str, Any]] = yaml.safe_load(rendered.stdout)["spec"]["groups"]
    return groups


def alert_expr(alert: str, *sets: str) -> str:
    """The expression of the chart's alert named ``alert``, rendered with ``--set`` values ``sets``."""
    (expr,) = [rule["expr"] for group in alert_rules(*sets) for rule in group["rules"] if rule["alert"] == alert]
    return str(expr)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, its variables set as Grafana sets "All"."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$namespace": ".*", "$rollout": ".*", "$__rate_interval": RATE_INTERVAL}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries
