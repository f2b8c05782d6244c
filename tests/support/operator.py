"""The operator as a user runs it: `airollout run` in its own process, against the test bed's apiserver.

A real process, so tests can SIGKILL it mid-rollout and start another, and see what a user would see:
status, Events and FeatBit's state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.sandbox import processes
from tests.support.sandbox import Testbed

CRD = Path(__file__).resolve().parents[2] / "crds" / "airollout.dev_airollouts.yaml"


class OperatorProcess:
    def __init__(self, testbed: Testbed, log_dir: Path, *args: str) -> None:
        self.testbed = testbed
        self.log_dir = log_dir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        port = processes.free_port()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "airollout",
                    "run",
                    "--liveness",
                    f"http://127.0.0.1:{port}/healthz",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.testbed.kubeconfig)},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited at start-up:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"operator liveness never answered:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patch, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def airollout_crd(testbed: Testbed) -> Path:
    testbed.kubectl("apply", "--server-side", "-f", str(CRD))
    testbed.kubectl("wait", "--for=condition=Established", "crd/airollouts.airollout.dev", "--timeout=60s")
    return CRD


@pytest.fixture
def operator(testbed: Testbed, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(testbed, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def rollout_manifest(namespace: str, name: str, *, api_url: str, env_id: str, flag: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flag": {"key": flag, "envId": env_id, "candidate": "canary", "control": "stable"},
        "featbit": {"url": api_url, "tokenSecretRef": {"name": "featbit", "key": "token"}},
        "stages": [
            {"name": "internal", "segments": ["internal-users"], "duration": "2s"},
            {"name": "canary", "percentage": 5, "duration": "2s"},
            {"name": "ramp-25", "percentage": 25, "duration": "2s"},
            {"name": "full", "percentage": 100},
        ],
    }
    body.update(spec)
    return {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "AIRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


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


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, log: Path | None = None
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` (and the operator log) otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    tail = f"\noperator log:\n{log.read_text()[-4000:]}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){tail}")


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
        listed["items"], key=lambda e: e.get("firstTimestamp") or e["metadata"]["creationTimestamp"]
    )
    return items


def event_reasons(testbed: Testbed, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(testbed, namespace, name)]
