"""The operator's metrics as a dashboard reads them: guardrail values and outcomes, calls by outcome, cleanup."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from prometheus_client import REGISTRY

from airollout import __version__
from airollout.kube import metrics
from airollout.model import AIRolloutStatus, GuardrailStatus, Phase


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def status(*guardrails: GuardrailStatus, phase: Phase = Phase.PROGRESSING) -> AIRolloutStatus:
    return AIRolloutStatus(phase=phase, percentage=25.0, guardrails=guardrails)


def error_rate(segment: str, value: float | None, control: float | None, outcome: str) -> GuardrailStatus:
    return GuardrailStatus(name="error-rate", segment=segment, outcome=outcome, value=value, control_value=control)


def test_the_build_info_names_the_running_version() -> None:
    assert sample("airollout_build_info", version=__version__) == 1.0


def test_candidate_and_control_values_and_the_outcome_are_recorded_per_segment() -> None:
    metrics.record("ns-a", "r1", status(error_rate("en", 0.09, 0.01, "Breached")), ["GuardrailBreached"])

    labels = {"namespace": "ns-a", "rollout": "r1", "guardrail": "error-rate", "segment": "en"}
    assert sample("airollout_guardrail_value", **labels, variant="candidate") == 0.09
    assert sample("airollout_guardrail_value", **labels, variant="control") == 0.01
    assert sample("airollout_guardrail_outcome", **labels, outcome="Breached") == 1.0
    assert sample("airollout_guardrail_outcome", **labels, outcome="Passed") is None  # one series per segment
    assert sample("airollout_rollout_percentage", namespace="ns-a", rollout="r1") == 25.0
    assert sample("airollout_rollout_phase", namespace="ns-a", rollout="r1", phase="Progressing") == 1.0
    assert sample("airollout_decisions_total", namespace="ns-a", rollout="r1", reason="GuardrailBreached") == 1.0
    # Alerts and the dashboard count rollbacks with increase(): the series is there at 0 before the first one.
    assert sample("airollout_decisions_total", namespace="ns-a", rollout="r1", reason="RolledBack") == 0.0
    metrics.forget("ns-a", "r1")


def test_a_segment_gone_from_status_and_a_value_no_longer_measured_leave_the_metrics() -> None:
    metrics.record(
        "ns-b", "r1", status(error_rate("en", 0.01, 0.01, "Passed"), error_rate("de", 0.02, None, "Passed")), []
    )
    metrics.record("ns-b", "r1", status(error_rate("en", None, None, "NoData")), [])

    en = {"namespace": "ns-b", "rollout": "r1", "guardrail": "error-rate", "segment": "en"}
    assert sample("airollout_guardrail_value", **en, variant="candidate") is None
    assert sample("airollout_guardrail_outcome", **en, outcome="NoData") == 1.0
    assert sample("airollout_guardrail_outcome", **en, outcome="Passed") is None
    de = {**en, "segment": "de"}
    assert sample("airollout_guardrail_value", **de, variant="candidate") is None
    assert sample("airollout_guardrail_outcome", **de, outcome="Passed") is None
    metrics.forget("ns-b", "r1")


def test_forgetting_a_deleted_rollout_removes_every_series_of_it_and_only_of_it() -> None:
    for name in ("gone", "kept"):
        metrics.record("ns-c", name, status(error_rate("", 0.01, 0.02, "Passed")), ["Started"])
    with metrics.kill_switch_waiting("ns-c", "gone", 0.0):
        metrics.forget("ns-c", "gone")

    exposition = "\n".join(
        f"{s.name}{s.labels}"
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("namespace") == "ns-c"
    )
    assert "'gone'" not in exposition
    assert "'kept'" in exposition
    metrics.forget("ns-c", "kept")


def test_a_kill_switch_counts_as_unacknowledged_while_it_waits_and_for_how_long() -> None:
    labels = {"namespace": "ns-d", "rollout": "r1"}
    with metrics.kill_switch_waiting("ns-d", "r1", seen_at=0.0):
        waited = sample("airollout_kill_switch_unacknowledged_seconds", **labels)
        assert waited is not None
        assert waited > 0
    assert sample("airollout_kill_switch_unacknowledged_seconds", **labels) is None


def _answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/slow":
        raise httpx.ReadTimeout("no answer", request=request)
    if path == "/refused":
        raise httpx.ConnectError("connection refused", request=request)
    return httpx.Response(int(path.strip("/")))


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/200", "ok"),
        ("/409", "client_error"),
        ("/503", "server_error"),
        ("/slow", "timeout"),
        ("/refused", "network_error"),
    ],
)
def test_each_call_is_timed_under_its_outcome(path: str, outcome: str) -> None:
    def count() -> float:
        return sample("airollout_featbit_request_seconds_count", outcome=outcome) or 0.0

    before = count()

    async def call() -> None:
        transport = metrics.TimedTransport(httpx.MockTransport(_answer), metrics.FEATBIT_SECONDS)
        async with httpx.AsyncClient(transport=transport, base_url="http://featbit") as client:
            with contextlib.suppress(httpx.TransportError):
                await client.get(path)

    asyncio.run(call())
    assert count() == before + 1
