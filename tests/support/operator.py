"""The operator against the test bed: the CRD installed once per session, `airollout run` per test, and how
tests read what a user would see (status, Events).

Starting the operator, writing an AIRollout and waiting are the rig's own (`airollout_testbed.harness` and
`airollout_testbed.waiting`), shared with the benchmarks and the demo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.harness import CRD, OperatorProcess, install_crd
from airollout_testbed.waiting import wait_for
from tests.support.sandbox import Testbed


@pytest.fixture(scope="session")
def airollout_crd(testbed: Testbed) -> Path:
    install_crd(testbed.kubectl)
    return CRD


@pytest.fixture
def operator(testbed: Testbed, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(tmp_path, testbed.kubeconfig) as process:
        yield process


def create_token_secret(testbed: Testbed, namespace: str, token: str, name: str = "featbit") -> None:
    testbed.kubectl("-n", namespace, "create", "secret", "generic", name, f"--from-literal=token={token}")


def apply(testbed: Testbed, manifest: dict[str, Any]) -> None:
    testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def get_rollout(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(testbed.kubectl("-n", namespace, "get", "airollout", name, "-o", "json").stdout)
    return data


def status_of(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_rollout(testbed, namespace, name).get("status") or {}
    return status


def wait_for_phase(
    testbed: Testbed, namespace: str, name: str, phase: str, timeout: float = 60.0, log: Path | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        f"{namespace}/{name} to reach {phase}",
        lambda: (s := status_of(testbed, namespace, name)).get("phase") == phase and s,
        timeout=timeout,
        log=log,
    )
    return status


def events(testbed: Testbed, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = json.loads(
        testbed.kubectl(
            "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )
    items: list[dict[str, Any]] = sorted(
        listed["items"],
        key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or e["metadata"]["creationTimestamp"],
    )
    return items


def event_reasons(testbed: Testbed, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(testbed, namespace, name)]
