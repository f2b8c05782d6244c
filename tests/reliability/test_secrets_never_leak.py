"""Credentials the operator holds never leave it: not in its log (debug included), Events, status, metrics or
FeatBit's audit comments, whatever comes back from the servers it sends them to.

A rollout carries a FeatBit token of its own and three Prometheus credentials: a bearer token (stored with a
trailing newline, as `echo` writes it), a tenant header and a password in spec.prometheus.url. It advances,
meets a Prometheus that echoes every request header into its error body, meets FeatBit 5xx, breaches and
rolls back; a second rollout holds a wrong token that FeatBit rejects. Then everything a user or a log
pipeline can read is searched for each secret, raw, base64-encoded (as HTTP basic auth sends it) and as a
fragment long enough to identify it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import wait_for
from tests.reliability.hostile_prometheus import Behaviour, HostilePrometheus
from tests.reliability.rollouts import Kube, audit_comments, condition, create_flag, manifest, operator_in
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

BEARER = "prom-bearer-7Hq2ZxW9vTnR4kLp"
TENANT = "tenant-Qm4vX8sJ2cDy"
USER, PASSWORD = "reliability", "PaSS-w0rd-Zk3uY7"
WRONG_TOKEN = "api-WRONG-9fKd2LmQ7xRt3VbN"
NAME, REJECTED = "leaky", "rejected"
STAGES = [
    {"name": "canary", "percentage": 10, "duration": "1s"},
    {"name": "ramp", "percentage": 50, "duration": "1h"},
    {"name": "full", "percentage": 100},
]


def forms(secret: str) -> list[str]:
    """The secret, and what would give it away: its base64, and a fragment of 12 characters from its middle."""
    middle = len(secret) // 2
    return [secret, base64.b64encode(secret.encode()).decode().rstrip("="), secret[middle - 6 : middle + 6]]


@pytest.fixture(params=["info", "debug"])
def operator(
    request: pytest.FixtureRequest, testbed: Testbed, namespace: str, airollout_crd: Path, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, int]]:
    port = processes.free_port()
    verbose = ("--verbose",) if request.param == "debug" else ()
    with operator_in(testbed, tmp_path, namespace, f"--metrics-port={port}", *verbose) as process:
        yield process, port


def status_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.status(namespace, name)


def test_no_credential_reaches_logs_events_status_metrics_or_featbit_comments(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, hostile: HostilePrometheus, kube: Kube,
    operator: tuple[OperatorProcess, int],
) -> None:  # fmt: skip
    process, metrics_port = operator
    token = featbit_double.mint_token("reliability-secrets")
    for flag in (NAME, REJECTED):
        create_flag(featbit_double, flag)
    kube.create_secret(namespace, "featbit", {"token": token.encode()})
    kube.create_secret(namespace, "wrong", {"token": WRONG_TOKEN.encode()})
    kube.create_secret(namespace, "prom", {"token": f"{BEARER}\n".encode(), "tenant": TENANT.encode()})
    url = hostile.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    guarded = manifest(
        featbit_double, namespace, NAME, NAME, stages=STAGES,
        prometheus={
            "url": url, "timeout": "1s",
            "bearerTokenSecretRef": {"name": "prom", "key": "token"},
            "headers": [{"name": "X-Scope-OrgID", "valueFrom": {"name": "prom", "key": "tenant"}}],
        },
        analysis={"interval": "1s", "consecutiveErrorLimit": 2},
        guardrails=[{"name": "error-rate", "query": 'sum(rate(errors{variant="{{variant}}"}[1m]))', "max": 0.05}],
    )  # fmt: skip
    rejected = manifest(featbit_double, namespace, REJECTED, REJECTED, stages=STAGES)
    rejected["spec"]["featbit"]["tokenSecretRef"]["name"] = "wrong"
    testbed.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [guarded, rejected]})
    )

    def reached(name: str, test: Any, what: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            what, lambda: (s := status_of(kube, namespace, name)) and test(s) and s, timeout=60, log=process.log
        )
        return found

    reached(REJECTED, lambda s: (condition(s, "FeatBitSynced") or {}).get("reason") == "InvalidToken", "InvalidToken")
    reached(NAME, lambda s: s.get("stageName") == "ramp", "the rollout to advance on healthy answers")

    hostile.behave(Behaviour.ECHO_HEADERS)
    reached(NAME, lambda s: s.get("phase") == "Paused", "a pause on answers that echo the credentials")
    echoed = hostile.requests[-1].headers
    assert echoed["X-Scope-OrgID"] == TENANT, "the credentials must really have been sent"
    assert (
        BEARER in echoed["Authorization"]
        or base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() in echoed["Authorization"]
    )

    featbit_double.faults.update(errors=4, error_status=500)  # the rollback meets FeatBit errors first
    hostile.behave(Behaviour.PLUS_INF)
    reached(NAME, lambda s: s.get("phase") == "RolledBack", "the breach to roll back")
    featbit_double.faults.clear()

    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'airollout_decisions_total{namespace="' in metrics
    comments = [c for flag in (NAME, REJECTED) for c in audit_comments(featbit_double, flag)]
    described = testbed.kubectl("-n", namespace, "describe", "airollouts").stdout
    readable = {
        "the operator's log": process.log.read_text(errors="replace"),
        "Events": testbed.kubectl("-n", namespace, "get", "events", "-o", "json").stdout,
        # The spec holds what the user wrote (a URL with a password among it): only what the operator wrote counts.
        "status": json.dumps([item.get("status") for item in kube.rollouts(namespace)]),
        "`kubectl describe`": described.partition("\nStatus:")[2],
        "the metrics endpoint": metrics,
        "FeatBit's audit comments": "\n".join(comments),
    }
    assert "X-Scope-OrgID: ***" in readable["status"], "the echoed headers were recorded, masked"
    secrets = {"FeatBit token": token, "wrong FeatBit token": WRONG_TOKEN, "bearer token": BEARER,
               "tenant": TENANT, "URL password": PASSWORD, "basic auth": f"{USER}:{PASSWORD}"}  # fmt: skip
    leaks = [
        f"{what} ({form!r}) in {where}: ...{_around(text, form)}..."
        for what, secret in secrets.items()
        for form in forms(secret)
        for where, text in readable.items()
        if form in text
    ]
    assert not leaks, "\n".join(leaks)
    scanned = ", ".join(f"{where} {len(text)} chars" for where, text in readable.items())
    print(f"{len(secrets)} secrets x {len(forms(BEARER))} forms, none found in: {scanned}")  # docs figure


def _around(text: str, needle: str) -> str:
    index = text.index(needle)
    return re.sub(r"\s+", " ", text[max(0, index - 80) : index + len(needle) + 80])
