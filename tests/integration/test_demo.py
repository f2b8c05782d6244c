"""`airollout demo` as a user runs it, and the observability pack read against what it leaves behind.

The demo runs once for the module (`--keep`, so its sandbox stays up afterwards): two rollouts, one promoted
and one rolled back on a breach, the operator's metrics scraped by the sandbox's real Prometheus. Then the
kill switch is engaged on the promoted rollout while FeatBit answers seconds late, so the kill-switch panels
and the not-acknowledged alert have something to show. The tests read what a user would: the report the
demo wrote, every dashboard panel's query and every alert rule against that Prometheus, and the operator's
/metrics while the kill switch waits and once a rollout is deleted.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from airollout_testbed.demo.scenario import NAMESPACE, OPERATOR_JOB
from airollout_testbed.sandbox.environment import down, read_env
from airollout_testbed.sandbox.prometheus import scrape_targets_dir
from airollout_testbed.sandbox.tools import tool
from airollout_testbed.waiting import wait_for
from tests.support.observability import alert_expr, alert_rules, panel_queries
from tests.support.sandbox import require_tools

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]  # the demo runs in setup

DEMO_TIMEOUT = 600
FEATBIT_DELAY = 6.0
"""Seconds FeatBit takes to answer while the kill switch is engaged: long enough for a few scrapes."""
WAITING = 'airollout_kill_switch_unacknowledged_seconds{namespace="demo",rollout="summarizer-v2"}'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class DemoRun:
    directory: Path
    env: dict[str, str]
    output: str
    started: float
    seen_waiting: set[str] = field(default_factory=set)
    """Where the kill switch was seen waiting for FeatBit: "metrics" (/metrics), "alert" (its alert fired)."""

    def kubectl(self, *args: str) -> str:
        return subprocess.run(
            [str(tool("kubectl")), "-n", NAMESPACE, *args],
            capture_output=True, text=True, check=True, env={**os.environ, "KUBECONFIG": self.env["KUBECONFIG"]},
        ).stdout  # fmt: skip

    def phase(self, name: str) -> str | None:
        phase: str | None = (json.loads(self.kubectl("get", "airollout", name, "-o", "json")).get("status") or {}).get(
            "phase"
        )
        return phase

    def prometheus(self, path: str, **params: str | float) -> dict[str, Any]:
        answer = httpx.get(f"{self.env['PROMETHEUS_URL']}{path}", params=params, timeout=30)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def featbit_latency(self, seconds: float) -> None:
        """Make the FeatBit double answer every management call ``seconds`` late."""
        httpx.post(
            f"{self.env['FEATBIT_API_URL']}/_double/faults",
            json={"latency": seconds},
            headers={"Authorization": self.env["FEATBIT_TOKEN"]},
            timeout=10,
        ).raise_for_status()

    def engage_kill_switch_while_featbit_is_slow(self, name: str) -> None:
        alert = alert_expr("AIRolloutKillSwitchNotAcknowledged", "prometheusRule.killSwitchUnacknowledgedSeconds=1")

        def rolled_back() -> bool:
            if WAITING in self.operator_metrics():
                self.seen_waiting.add("metrics")
            if any(
                s["metric"]["rollout"] == name for s in self.prometheus("/api/v1/query", query=alert)["data"]["result"]
            ):
                self.seen_waiting.add("alert")
            return self.phase(name) == "RolledBack"

        self.featbit_latency(FEATBIT_DELAY)
        try:
            self.kubectl("patch", "airollout", name, "--type=merge", "-p", '{"spec":{"killSwitch":true}}')
            wait_for(f"the kill switch to roll {name} back", rolled_back, timeout=60, interval=0.2)
        finally:
            self.featbit_latency(0)

    def operator_metrics(self) -> str:
        target = json.loads((scrape_targets_dir(self.directory) / f"{OPERATOR_JOB}.json").read_text())
        with urllib.request.urlopen(f"http://{target[0]['targets'][0]}/metrics", timeout=10) as answer:
            text: str = answer.read().decode()
        return text


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    require_tools(("etcd", "kube-apiserver", "prometheus", "kubectl"))
    directory = tmp_path_factory.mktemp("demo")
    started = time.time()
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "airollout", "demo", "--dir", str(directory), "--keep"],
            capture_output=True, text=True, timeout=DEMO_TIMEOUT,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        run = DemoRun(directory, read_env(directory), ran.stdout, started)
        run.engage_kill_switch_while_featbit_is_slow("summarizer-v2")
        time.sleep(3)  # a few scrapes of the operator after the kill switch
        yield run
    finally:
        down(directory)


def drawn(page: Path) -> set[str]:
    """The ids of what the report's figure drew (each series and marker carries one)."""
    return set(re.findall(r'<g id="([^"]+)"', page.read_text()))


def test_the_demo_draws_each_rollout_with_its_exposure_guardrails_stages_and_breach(demo: DemoRun) -> None:
    report = demo.directory / "report"
    assert f"the picture of reranker-v3: {report / 'reranker-v3.html'}" in demo.output

    rolled_back = drawn(report / "reranker-v3.html")
    assert {"exposure", "stage-internal", "stage-canary", "breach"} <= rolled_back
    assert {
        f"guardrail-{g}--{v}" for g in ("error-rate", "latency-p95") for v in ("candidate", "control")
    } <= rolled_back
    assert "stage-full" not in rolled_back  # the breach stopped it at canary

    promoted = drawn(report / "summarizer-v2.html")
    assert {"exposure", "stage-canary", "stage-ramp-25", "stage-ramp-50", "stage-full", "promoted"} <= promoted
    assert "breach" not in promoted

    for name in ("reranker-v3", "summarizer-v2"):
        png = (report / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert len(png) < 200_000
    assert "GuardrailBreached" in (report / "reranker-v3.html").read_text()  # the history table


@pytest.mark.parametrize(("panel", "query"), panel_queries(), ids=[title for title, _ in panel_queries()])
def test_every_dashboard_query_parses_and_returns_data_from_the_demo(demo: DemoRun, panel: str, query: str) -> None:
    answer = demo.prometheus(
        "/api/v1/query_range", query=query, start=demo.started, end=time.time(), step=2
    )  # a parse error is HTTP 400, raised above
    values = [float(v) for series in answer["data"]["result"] for _, v in series["values"]]
    assert [v for v in values if not math.isnan(v)], f"{panel}: {query} returned no data"


def test_the_alert_rules_parse_and_only_the_rollbacks_fire_after_the_demo(demo: DemoRun) -> None:
    firing = {}
    for group in alert_rules(f"prometheusRule.operatorJob={OPERATOR_JOB}"):
        for rule in group["rules"]:
            answer = demo.prometheus("/api/v1/query", query=rule["expr"])
            firing[rule["alert"]] = sorted(s["metric"].get("rollout", "") for s in answer["data"]["result"])
    assert firing == {
        "AIRolloutPaused": [],
        "AIRolloutAnalysisFailing": [],
        "AIRolloutRolledBack": ["reranker-v3", "summarizer-v2"],  # a breach, then the kill switch
        "AIRolloutOperatorDown": [],
        "AIRolloutKillSwitchNotAcknowledged": [],
    }


def test_the_operator_down_alert_reads_the_operators_real_scrape_target(demo: DemoRun) -> None:
    expr = alert_expr("AIRolloutOperatorDown", "prometheusRule.operatorJob=no-such-job")
    assert demo.prometheus("/api/v1/query", query=expr)["data"]["result"], "an unscraped job counts as down"
    up = demo.prometheus("/api/v1/query", query=f'up{{job="{OPERATOR_JOB}"}}')["data"]["result"]
    assert [s["value"][1] for s in up] == ["1"]


def test_a_kill_switch_waiting_for_featbit_shows_on_metrics_and_fires_its_alert_until_acknowledged(
    demo: DemoRun,
) -> None:
    assert demo.seen_waiting == {"metrics", "alert"}
    assert WAITING not in demo.operator_metrics()  # acknowledged: the series is gone
    latency = demo.prometheus("/api/v1/query", query="max(airollout_kill_switch_seconds_sum)")["data"]["result"]
    assert float(latency[0]["value"][1]) >= FEATBIT_DELAY


def test_a_deleted_rollouts_series_leave_the_operators_metrics(demo: DemoRun) -> None:
    assert 'rollout="reranker-v3"' in demo.operator_metrics()
    demo.kubectl("delete", "airollout", "reranker-v3")
    wait_for("reranker-v3's series to go", lambda: 'rollout="reranker-v3"' not in demo.operator_metrics())
    assert 'rollout="summarizer-v2"' in demo.operator_metrics()
