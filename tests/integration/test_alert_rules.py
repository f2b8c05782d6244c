"""The chart's alert rules under `promtool test rules`: each fires when it should, and not before.

The cases live in tests/alerts/airollout-alerts.test.yaml; the rules are rendered from the chart with its
default thresholds, so a changed threshold or expression is tested as it ships.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from airollout_testbed.sandbox.tools import tool
from tests.support.observability import alert_rules
from tests.support.sandbox import require_tools

pytestmark = pytest.mark.integration

CASES = Path(__file__).resolve().parents[1] / "alerts" / "airollout-alerts.test.yaml"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The rendered rules beside a copy of the cases, where the cases' `rule_files` finds them."""
    require_tools(("helm", "promtool"))
    (tmp_path / "airollout-rules.yaml").write_text(yaml.safe_dump({"groups": alert_rules()}))
    shutil.copy(CASES, tmp_path / CASES.name)
    return tmp_path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("promtool")), *args], capture_output=True, text=True, timeout=60)


def test_the_rendered_rules_are_valid_prometheus_rules(rules_dir: Path) -> None:
    checked = promtool("check", "rules", str(rules_dir / "airollout-rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


def test_each_alert_fires_when_it_should_and_not_before(rules_dir: Path) -> None:
    tested = promtool("test", "rules", str(rules_dir / CASES.name))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_the_chart_ships_has_cases() -> None:
    require_tools(("helm",))
    shipped = {rule["alert"] for group in alert_rules() for rule in group["rules"]}
    cases = yaml.safe_load(CASES.read_text())["tests"]
    covered = {check["alertname"] for case in cases for check in case.get("alert_rule_test", [])}
    assert shipped == covered
