"""The real stack the benchmarks measure, started in a temporary directory and always torn down.

The same pieces a user runs: the sandbox of `airollout sandbox up` (or only its FeatBit double), kubectl,
the operator as `airollout run` in its own process, and FeatBit's own SDK. Anything that fails while setting
up raises `SetupFailed`, so a broken stack ends a benchmark with a non-zero exit rather than a figure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from fbclient import FBClient
from fbclient.config import Config, WebSocketConfig
from fbclient.event_processor import NullEventProcessor

from airollout.featbit import FeatBitClient
from airollout_testbed.sandbox import environment, processes
from airollout_testbed.sandbox.tools import missing_tools, tool

__all__ = [
    "AUDIT_POLL_SECONDS",
    "CRD",
    "OperatorProcess",
    "SetupFailed",
    "Stack",
    "all_served",
    "connect_sdk",
    "epoch",
    "featbit_double_only",
    "rollout_manifest",
    "sandbox",
    "stop_sdk",
    "users",
    "wait_for",
]

AUDIT_POLL_SECONDS = 0.02
CRD = Path(__file__).resolve().parents[2] / "crds" / "airollout.dev_airollouts.yaml"
T = TypeVar("T")


class SetupFailed(RuntimeError):
    """The stack could not be brought to the state a trial needs; the message says what was awaited."""


@dataclass(frozen=True)
class Stack:
    """A running stack: its directory and the values of its sandbox.env."""

    dir: Path
    env: Mapping[str, str]

    @property
    def streaming_url(self) -> str:
        return self.env["FEATBIT_EVAL_URL"].replace("http://", "ws://", 1)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run the real kubectl against the sandbox apiserver; returns its stdout."""
        result = subprocess.run(
            [str(tool("kubectl")), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": self.env["KUBECONFIG"]},
            timeout=60,
        )
        if result.returncode != 0:
            raise SetupFailed(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def install_crd(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(CRD))
        self.kubectl("wait", "--for=condition=Established", "crd/airollouts.airollout.dev", "--timeout=60s")

    def namespace_with_token(self, namespace: str) -> None:
        """Create ``namespace`` holding the Secret `featbit` (key `token`) that rollout manifests name."""
        self.kubectl("create", "namespace", namespace)
        token = f"--from-literal=token={self.env['FEATBIT_TOKEN']}"
        self.kubectl("-n", namespace, "create", "secret", "generic", "featbit", token)

    def phase(self, namespace: str, name: str) -> str | None:
        """The AIRollout's status.phase, as kubectl reads it."""
        rollout = json.loads(self.kubectl("-n", namespace, "get", "airollout", name, "-o", "json"))
        phase: str | None = (rollout.get("status") or {}).get("phase")
        return phase

    def featbit_client(self) -> FeatBitClient:
        return FeatBitClient(self.env["FEATBIT_API_URL"], self.env["FEATBIT_TOKEN"])

    async def create_flag(self, client: FeatBitClient, key: str, *, enabled: bool = False) -> dict[str, Any]:
        """A boolean flag with variations `canary` (served when on) and `stable` (when off)."""
        return await client.create_flag(
            self.env["FEATBIT_ENV_ID"],
            key=key,
            variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary",
            disabled_variation_id="stable",
            is_enabled=enabled,
        )

    async def switched_off(self, client: FeatBitClient, flag_id: str, *, since: float = 0.0) -> dict[str, Any]:
        """FeatBit's first audit entry that switched the flag off at or after ``since`` (wall clock; by default
        ever), polled until it appears.

        Its ``createdAt`` (ms, the double's wall clock) is when the toggle landed, which the benchmarks compare with
        their own wall clock: both run on one machine.
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entries = await client.audit_log(self.env["FEATBIT_ENV_ID"], flag_id, page_size=50)
            off = [entry for entry in entries if _switches_off(entry) and epoch(entry["createdAt"]) >= since]
            if off:
                return min(off, key=lambda entry: epoch(entry["createdAt"]))
            await asyncio.sleep(AUDIT_POLL_SECONDS)
        raise SetupFailed(f"FeatBit never recorded flag {flag_id} being switched off")


def _switches_off(entry: Mapping[str, Any]) -> bool:
    change = entry.get("dataChange") or {}
    before, after = (json.loads(change.get(side) or "{}") for side in ("previous", "current"))
    return before.get("isEnabled") is True and after.get("isEnabled") is False


def epoch(iso: str) -> float:
    """An ISO 8601 timestamp from FeatBit (``...Z``) as seconds since the epoch."""
    return datetime.fromisoformat(iso).timestamp()


def _require_tools(names: tuple[str, ...]) -> None:
    missing = missing_tools(names)
    if missing:
        raise SetupFailed(f"tools missing ({', '.join(missing)}): run `make bootstrap`")


@contextmanager
def sandbox() -> Iterator[Stack]:
    """`airollout sandbox up` in a temporary directory: apiserver, etcd, Prometheus, FeatBit double."""
    _require_tools(("etcd", "kube-apiserver", "prometheus", "kubectl"))
    with tempfile.TemporaryDirectory(prefix="airollout-bench-") as name:
        directory = Path(name)
        try:
            yield Stack(directory, environment.up(directory))
        finally:
            environment.down(directory)


@contextmanager
def featbit_double_only() -> Iterator[Stack]:
    """Only the sandbox's FeatBit double, as its own process (so it never shares a GIL with what measures)."""
    with tempfile.TemporaryDirectory(prefix="airollout-bench-") as name:
        directory = Path(name)
        try:
            yield Stack(directory, environment.start_featbit_double(directory))
        finally:
            processes.stop_all(directory)


def connect_sdk(stack: Stack, start_wait: float = 15.0) -> FBClient:
    """FeatBit's Python SDK on the stack's environment, streaming from the double.

    Insight events are not sent: a benchmark evaluates flags millions of times, and shipping those
    evaluations would load the double and measure something else.
    """
    config = Config(
        stack.env["FEATBIT_ENV_SECRET"],
        event_url=stack.env["FEATBIT_EVAL_URL"],
        streaming_url=stack.streaming_url,
        event_processor_imp=NullEventProcessor,
        websocket=WebSocketConfig(timeout=1.0),
    )
    client = FBClient(config, start_wait=start_wait)
    if not client.initialize:
        client.stop()
        raise SetupFailed("the FeatBit SDK did not initialise against the double")
    return client


def stop_sdk(sdk: FBClient) -> None:
    """Stop the SDK without its warning that the streaming thread was slow to stop.

    websocket-client sometimes misses its own close and the SDK then waits out its timeout and warns; that
    says nothing about what a benchmark measured, so only the stop is quieted, never the measurement.
    """
    sdk_log = logging.getLogger("fbclient")
    level = sdk_log.level
    sdk_log.setLevel(logging.ERROR)
    try:
        sdk.stop()
    finally:
        sdk_log.setLevel(level)


def users(count: int) -> list[dict[str, str]]:
    """``count`` distinct SDK users, keyed ``user-0`` ... ``user-(count-1)``."""
    return [{"key": f"user-{index}", "name": f"user-{index}"} for index in range(count)]


def all_served(sdk: FBClient, flag: str, audience: Sequence[Mapping[str, str]], variation: str) -> bool:
    """Whether the SDK serves ``variation`` to every user of ``audience`` (stops at the first who differs)."""
    return all(sdk.variation_detail(flag, dict(user), None).variation_id == variation for user in audience)


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy and return it; `SetupFailed` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SetupFailed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class OperatorProcess:
    """`airollout run` against the stack's apiserver, in its own process, as a user runs it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.log = stack.dir / "logs" / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise SetupFailed("the operator is not running")
        return self.proc.pid

    def start(self) -> None:
        port = processes.free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airollout", "run", "--liveness", f"http://127.0.0.1:{port}/healthz"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": self.stack.env["KUBECONFIG"]},
            )
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SetupFailed(f"the operator did not start; its log ends:\n{processes.tail(str(self.log))}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def rollout_manifest(stack: Stack, namespace: str, name: str, flag: str, **spec: Any) -> dict[str, Any]:
    """An AIRollout of ``flag`` (made by `Stack.create_flag`) with the given spec fields."""
    return {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "AIRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "flag": {"key": flag, "envId": stack.env["FEATBIT_ENV_ID"], "candidate": "canary", "control": "stable"},
            "featbit": {"url": stack.env["FEATBIT_API_URL"], "tokenSecretRef": {"name": "featbit", "key": "token"}},
            **spec,
        },
    }
