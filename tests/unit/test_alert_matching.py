"""Which AIRollouts an Alertmanager alert names, by the label contract the README documents."""

from __future__ import annotations

from typing import Any

from airollout.kube.alerts import Match, matches
from airollout.model import AlertAction


def rollout(namespace: str, name: str, flag: str, on_firing: str | None = None, phase: str = "Progressing") -> Any:
    spec: dict[str, Any] = {"flag": {"key": flag}}
    if on_firing:
        spec["alerts"] = {"onFiring": on_firing}
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec, "status": {"phase": phase}}


FLEET = [
    rollout("team-a", "summary-v2", "ai-summary"),
    rollout("team-b", "summary-v2", "ai-summary", "abort"),
    rollout("team-a", "search-v3", "ai-search", phase="Paused"),
]


def test_airollout_namespace_and_name_name_one_rollout() -> None:
    labels = {"alertname": "QualityDrift", "airollout_namespace": "team-a", "airollout_name": "summary-v2"}
    assert matches(labels, FLEET) == [Match("team-a", "summary-v2", AlertAction.PAUSE, "Progressing")]


def test_namespace_and_rollout_name_one_rollout_with_the_action_its_spec_chooses() -> None:
    labels = {"namespace": "team-b", "rollout": "summary-v2"}
    assert matches(labels, FLEET) == [Match("team-b", "summary-v2", AlertAction.ABORT, "Progressing")]


def test_a_flag_key_names_every_rollout_of_the_flag_or_only_those_of_the_alerts_namespace() -> None:
    assert [(m.namespace, m.name) for m in matches({"flag_key": "ai-summary"}, FLEET)] == [
        ("team-a", "summary-v2"),
        ("team-b", "summary-v2"),
    ]
    scoped = matches({"airollout_flag": "ai-summary", "namespace": "team-b"}, FLEET)
    assert [(m.namespace, m.name) for m in scoped] == [("team-b", "summary-v2")]


def test_an_alert_without_the_labels_names_nothing() -> None:
    assert matches({"alertname": "HighLatency", "namespace": "team-a"}, FLEET) == []
    assert matches({"rollout": "summary-v2"}, FLEET) == []  # a rollout name means nothing without its namespace
