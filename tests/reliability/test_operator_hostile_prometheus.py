"""`airollout run` against a hostile Prometheus: garbage never moves a rollout, and nothing it sends wedges one.

The guardrail-level tests (test_hostile_prometheus.py) hold the Prometheus client and the judge to never
judging garbage. These hold the whole operator to what a user sees: for every way the server misbehaves, two
rollouts on it, through the real apiserver, the FeatBit double and its SDK. One must hold its first stage
(status never claims more than FeatBit serves, and no breach is invented), say why in its GuardrailsPassing
condition within two analysis intervals (plus the time one query may take), and advance by itself once
Prometheus behaves again. The other gets its kill switch while Prometheus misbehaves: it must land in
FeatBit and be recorded in status all the same. Infinities are values, not garbage: +Inf breaches a max
guardrail and -Inf a min one, and both roll back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fbclient.client import FBClient

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.waiting import wait_for
from tests.reliability.hostile_prometheus import GARBAGE, Behaviour, HostilePrometheus
from tests.reliability.rollouts import (
    ETCD_REQUEST_LIMIT,
    ExposureWatch,
    Kube,
    assert_featbit_serves_what_status_says,
    condition,
    create_flag,
    entered_stages,
    manifest,
    operator_in,
    tracebacks,
    wait_seconds,
)
from tests.support.featbit import count_variations, synthetic_users
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

INTERVAL = 1.0
"""Seconds between two analyses (spec.analysis.interval)."""
TIMEOUT = 1.0
"""spec.prometheus.timeout; a query may take one second more before it is an Error."""
QUERY_DEADLINE = TIMEOUT + 1
SLACK = 4.0
"""Seconds for the operator to write what it decided and for the apiserver to serve it, on a busy 2-core box."""
OUTCOME_BOUND = 2 * INTERVAL + QUERY_DEADLINE + SLACK
SHARED_ANSWER_AGE = 1.0
"""Seconds an answer to a query may be reused for another rollout asking the same (the operator's default)."""
CANARY_SECONDS = 2
STAGES = [
    {"name": "canary", "percentage": 10, "duration": f"{CANARY_SECONDS}s"},
    {"name": "ramp", "percentage": 50, "duration": "2s"},
    {"name": "full", "percentage": 100},
]
GUARDRAILS = [
    {"name": "error-rate", "query": 'sum by (locale) (rate(ai_errors_total{variant="{{variant}}"}[1m]))', "max": 0.05},
    {"name": "quality", "query": 'avg by (locale) (ai_quality_score{variant="{{variant}}"})', "min": 0.001},
]
USERS = synthetic_users(1000)

# What each behaviour must come to: (GuardrailsPassing reason, the guardrail a breach names).
NO_DATA = {Behaviour.EMPTY, Behaviour.NAN}
BREACHES = {Behaviour.PLUS_INF: "error-rate", Behaviour.MINUS_INF: "quality"}
CASES = sorted(GARBAGE | NO_DATA | set(BREACHES))


def expected_reason(behaviour: Behaviour) -> str:
    if behaviour in BREACHES:
        return "GuardrailBreached"
    return "GuardrailNoData" if behaviour in NO_DATA else "GuardrailQueryFailed"


@pytest.fixture
def operator(testbed: Testbed, namespace: str, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    # Every analysis written (not only changes): a test can see that one was taken after the bake time.
    with operator_in(testbed, tmp_path, namespace, "--status-refresh-interval=1") as process:
        yield process


def guarded(double: FeatBitDouble, namespace: str, name: str, prometheus_url: str) -> dict[str, Any]:
    return manifest(
        double,
        namespace,
        name,
        name,
        stages=STAGES,
        prometheus={"url": prometheus_url, "timeout": f"{TIMEOUT:g}s"},
        analysis={"interval": f"{INTERVAL:g}s", "consecutiveErrorLimit": 3},
        guardrails=GUARDRAILS,
    )


def apply_all(testbed: Testbed, *bodies: dict[str, Any]) -> None:
    testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies}))


def kill_switch(testbed: Testbed, namespace: str, name: str) -> None:
    patch = '{"spec": {"killSwitch": true}}'
    testbed.kubectl("-n", namespace, "patch", "airollout", name, "--type=merge", "-p", patch)


def annotate(testbed: Testbed, namespace: str, name: str, verb: str) -> None:
    testbed.kubectl("-n", namespace, "annotate", "--overwrite", "airollout", name, f"airollout.dev/action={verb}")


def reasons(status: dict[str, Any]) -> list[str]:
    return [entry["reason"] for entry in status.get("history") or []]


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_for_outcome(kube: Kube, namespace: str, name: str, reason: str, log: Path) -> dict[str, Any]:
    """The rollout's GuardrailsPassing condition, once it gives ``reason``; the bound is the test's point."""

    def judged() -> dict[str, Any] | None:
        status = kube.status(namespace, name)
        passing = condition(status, "GuardrailsPassing")
        return status if passing is not None and passing["reason"] == reason else None

    status: dict[str, Any] = wait_for(
        f"{namespace}/{name}'s GuardrailsPassing condition to say {reason}", judged, timeout=OUTCOME_BOUND, log=log
    )
    return status


def wait_for_an_analysis_after_the_bake_time(kube: Kube, namespace: str, name: str, log: Path) -> dict[str, Any]:
    """Status once an analysis taken two intervals after the first stage's bake time is recorded: by then a
    rollout that wrongly took the answer for a pass would have advanced."""

    def late_enough() -> dict[str, Any] | None:
        status = kube.status(namespace, name)
        started, last = status.get("stageStartedAt"), status.get("lastAnalysisAt")
        if not started or not last:
            return None
        bake_end = timestamp(started) + timedelta(seconds=CANARY_SECONDS)
        return status if timestamp(last) >= bake_end + timedelta(seconds=2 * INTERVAL) else None

    status: dict[str, Any] = wait_for(
        f"an analysis of {namespace}/{name} after its bake time", late_enough, timeout=30, log=log
    )
    return status


@pytest.mark.parametrize("behaviour", CASES)
def test_a_misbehaving_prometheus_never_moves_a_rollout_wrongly_and_never_wedges_one(
    behaviour: Behaviour, testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, hostile: HostilePrometheus,
    kube: Kube, operator: OperatorProcess, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    held, killed = "held", "killed"
    for flag in (held, killed):
        create_flag(featbit_double, flag)
    testbed.kubectl(
        "-n", namespace, "create", "secret", "generic", "featbit", f"--from-literal=token={featbit_double.token}"
    )
    hostile.behave(behaviour)  # a 30 s delay under a 1 s timeout, where the behaviour is a delay
    watch = ExposureWatch(kube, featbit_double)
    for name in (held, killed):
        watch.add(namespace, name, name)

    with watch.running():
        apply_all(testbed, *(guarded(featbit_double, namespace, name, hostile.url) for name in (held, killed)))
        applied = time.monotonic()
        reason = expected_reason(behaviour)
        for name in (held, killed):
            status = wait_for_outcome(kube, namespace, name, reason, operator.log)
            assert condition(status, "GuardrailsPassing")["status"] == "False"  # type: ignore[index]
        judged_after = time.monotonic() - applied

        if behaviour in BREACHES:
            assert_breach_rolls_back_and_retry_recovers(
                behaviour, testbed, namespace, featbit_double, hostile, kube, operator
            )
        else:
            assert_held_and_killable(testbed, namespace, featbit_double, kube, operator, held, killed)
            hostile.behave(Behaviour.HEALTHY)
            status = wait_for(
                f"{held} to advance once Prometheus behaves",
                lambda: (s := kube.status(namespace, held)).get("stageIndex", 0) >= 1 and s,
                timeout=30,
                log=operator.log,
            )
            assert "GuardrailBreached" not in reasons(status)
            assert entered_stages(status["history"])[-1][:2] == ["canary", "ramp"]
            assert_featbit_serves_what_status_says(featbit_double, kube.status(namespace, held), held)

    watch.assert_held()
    assert watch.largest_object < ETCD_REQUEST_LIMIT
    sdk = featbit_client()
    assert count_variations(sdk, killed, USERS)["stable"] == len(USERS)
    assert not tracebacks(operator.log)
    print(  # the figure docs/reliability.md quotes; shown with `pytest -s`
        f"{behaviour}: {reason} in both rollouts {judged_after:.1f}s after apply; largest object "
        f"{watch.largest_object} bytes; {watch.comparisons} status/FeatBit comparisons, {len(hostile.requests)} queries"
    )


def assert_held_and_killable(
    testbed: Testbed,
    namespace: str,
    double: FeatBitDouble,
    kube: Kube,
    operator: OperatorProcess,
    held: str,
    killed: str,
) -> None:
    kill_switch(testbed, namespace, killed)
    wait_for(f"FeatBit to turn {killed} off", lambda: not double.get_flag(killed)["isEnabled"], timeout=10)
    status = wait_for(
        f"{killed}'s kill switch recorded",
        lambda: (s := kube.status(namespace, killed)).get("phase") == "RolledBack" and s,
        timeout=15,
        log=operator.log,
    )
    assert reasons(status).count("KillSwitchEngaged") == 1
    assert status["percentage"] == 0

    status = wait_for_an_analysis_after_the_bake_time(kube, namespace, held, operator.log)
    assert status["stageName"] == "canary", status
    assert status["phase"] in ("Progressing", "Paused")
    assert not {"GuardrailBreached", "RolledBack", "StageAdvanced"} & set(reasons(status)), status["history"]
    assert double.get_flag(held)["isEnabled"] is True
    assert_featbit_serves_what_status_says(double, status, held)


def assert_breach_rolls_back_and_retry_recovers(
    behaviour: Behaviour, testbed: Testbed, namespace: str, double: FeatBitDouble, hostile: HostilePrometheus,
    kube: Kube, operator: OperatorProcess,
) -> None:  # fmt: skip
    for name in ("held", "killed"):
        status = wait_for(
            f"{name} to roll back on {behaviour}",
            lambda n=name: (s := kube.status(namespace, n)).get("phase") == "RolledBack" and s,
            timeout=15,
            log=operator.log,
        )
        breach = next(e for e in status["history"] if e["reason"] == "GuardrailBreached")
        assert f"{BREACHES[behaviour]} breached" in breach["message"], breach
        assert double.get_flag(name)["isEnabled"] is False
    hostile.behave(Behaviour.HEALTHY)
    # Rollouts asking the same query within a second share its answer: let the last infinite one age out first.
    wait_seconds(SHARED_ANSWER_AGE + 0.5)
    annotate(testbed, namespace, "held", "retry")
    status = wait_for(
        "the retried rollout to advance on healthy answers",
        lambda: (s := kube.status(namespace, "held")).get("stageName") == "ramp" and s,
        timeout=30,
        log=operator.log,
    )
    assert entered_stages(status["history"])[-1][:2] == ["canary", "ramp"]
