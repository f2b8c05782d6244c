"""Least privilege, proven: the operator runs on nothing but its chart's ServiceAccount, and needs all of it.

With every rule the chart grants, rollouts judged on a GuardrailTemplate and a ClusterGuardrailTemplate go to
Promoted, one notifies a webhook, and a kill switch lands, while the apiserver's audit log shows no request
refused. Then each rule (one verb on one resource) is taken away in turn, and a behaviour a
user relies on is named that stops: no rule is spare. Both install modes, cluster-wide and namespaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from tests.support.sandbox import Testbed
from tests.support.service_account import Rule, denials, grant, rules_of, token_kubeconfig
from tests.support.short_run import prepare, run

pytestmark = pytest.mark.integration

_NEEDED = {
    Rule("airollout.dev", "airollouts", "list"): "starts a rollout",
    Rule("airollout.dev", "airollouts", "watch"): "starts a rollout",
    Rule("airollout.dev", "airollouts", "patch"): "clears a handled verb",
    Rule("airollout.dev", "airollouts/status", "patch"): "starts a rollout",
    Rule("", "events", "create"): "records Events",
    Rule("", "secrets", "get"): "promotes a rollout",
    Rule("airollout.dev", "guardrailtemplates", "get"): "judges a rollout on a GuardrailTemplate",
    Rule("airollout.dev", "clusterguardrailtemplates", "get"): "judges a rollout on a ClusterGuardrailTemplate",
}
MODES = {"cluster-wide": _NEEDED, "namespaced": _NEEDED}
"""Per install mode, every rule the chart grants and the behaviour that stops without it."""


def _values(mode: str) -> tuple[str, ...]:
    return (f"rbac.clusterWide={mode == 'cluster-wide'}",)


def _operator_args(mode: str, namespace: str) -> tuple[str, ...]:
    # As the chart's Deployment passes them: the watched namespaces only when not cluster-wide.
    return () if mode == "cluster-wide" else ("--namespace", namespace)


@pytest.mark.parametrize("mode", MODES)
def test_the_chart_grants_exactly_the_rules_this_test_takes_away(testbed: Testbed, namespace: str, mode: str) -> None:
    granted = grant(testbed, namespace, *_values(mode))
    assert set(rules_of(granted.objects)) == set(MODES[mode])


@pytest.mark.parametrize("mode", MODES)
def test_with_the_chart_rights_a_rollout_is_promoted_and_a_kill_switch_lands_with_nothing_refused(
    testbed: Testbed, airollout_crd: Path, namespace: str, featbit_double: FeatBitDouble, tmp_path: Path, mode: str
) -> None:
    granted = grant(testbed, namespace, *_values(mode))
    kubeconfig = token_kubeconfig(testbed, granted, tmp_path / "kubeconfig")
    prepare(testbed, featbit_double, namespace)
    with OperatorProcess(tmp_path, kubeconfig, *_operator_args(mode, namespace)) as operator:
        missing = run(testbed, featbit_double, namespace, deadline=60)
    assert missing == [], operator.log.read_text()[-4000:]
    assert denials(testbed, granted) == []


@pytest.mark.parametrize(
    ("mode", "removed", "stops"),
    [
        pytest.param(mode, rule, stops, id=f"{mode}-{rule}")
        for mode, needed in MODES.items()
        for rule, stops in needed.items()
    ],
)
def test_each_rule_taken_away_stops_a_named_behaviour(
    testbed: Testbed, airollout_crd: Path, namespace: str, featbit_double: FeatBitDouble, tmp_path: Path,
    mode: str, removed: Rule, stops: str,
) -> None:  # fmt: skip
    granted = grant(testbed, namespace, *_values(mode), removed=removed)
    kubeconfig = token_kubeconfig(testbed, granted, tmp_path / "kubeconfig")
    prepare(testbed, featbit_double, namespace)
    with OperatorProcess(tmp_path, kubeconfig, *_operator_args(mode, namespace)):
        missing = run(testbed, featbit_double, namespace, deadline=12)
    assert stops in missing, f"without {removed} the operator still {stops}"
    assert removed in denials(testbed, granted)
