"""The real stack the benchmarks measure, started in a temporary directory and always torn down.

The same pieces a user runs: the sandbox of `airollout sandbox up` (or only its FeatBit double), kubectl,
the operator as `airollout run` in its own process (the rig's `OperatorProcess`), FeatBit's own SDK, and the
demo's synthetic AI service as a workload for Prometheus to scrape.
Anything that fails while setting up raises `SetupFailed`, or `TimedOut` when what it waited for never came,
so a broken stack ends a benchmark with a non-zero exit rather than a figure.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
from fbclient import FBClient
from fbclient.config import Config, WebSocketConfig
from fbclient.event_processor import NullEventProcessor

from airollout.featbit import FeatBitClient
from airollout_testbed.harness import OperatorProcess, install_crd, rollout_manifest
from airollout_testbed.sandbox import environment, processes
from airollout_testbed.sandbox.prometheus import add_scrape_target
from airollout_testbed.sandbox.tools import missing_tools, tool
from airollout_testbed.waiting import wait_for, wait_for_async

__all__ = [
    "AUDIT_POLL_SECONDS",
    "SetupFailed",
    "Stack",
    "all_served",
    "connect_sdk",
    "epoch",
    "featbit_double_only",
    "sandbox",
    "stop_sdk",
    "users",
]

AUDIT_POLL_SECONDS = 0.02


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
        install_crd(self.kubectl)

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

    def operator(self, *args: str, name: str = "operator") -> OperatorProcess:
        """`airollout run ARGS` against this stack's apiserver, recorded with the sandbox as ``name`` so its
        teardown stops it."""
        return OperatorProcess(self.dir, self.env["KUBECONFIG"], *args, name=name)

    def custom_objects(self) -> kubernetes.client.CustomObjectsApi:
        """The Kubernetes client's API for AIRollouts, on this stack's apiserver with the sandbox's admin
        credentials: for what a benchmark writes or lists in bulk, where one kubectl per call would cost more
        than what is measured."""
        return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(self.env["KUBECONFIG"]))

    def ai_service(self, job: str, flag: str, *, rps: float) -> str:
        """The demo's synthetic AI service as a sandbox process (stopped with the sandbox), its variants decided
        by FeatBit's SDK on ``flag``, scraped by the sandbox Prometheus as ``job``; returns its URL."""
        port = processes.free_port()
        started = processes.start(
            self.dir,
            job,
            [
                sys.executable, "-m", "airollout_testbed.demo.ai_service", "--port", str(port), "--flag", flag,
                f"--env-secret={self.env['FEATBIT_ENV_SECRET']}", "--eval-url", self.env["FEATBIT_EVAL_URL"],
                "--streaming-url", self.streaming_url, "--websocket-timeout", "1", "--rps", f"{rps:g}",
            ],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for(
            f"the AI service {job} to answer /healthz",
            lambda: _answers(f"{url}/healthz"),
            timeout=60,
            interval=0.1,
            running=lambda: processes.is_running(started),
            log=started.log,
        )
        add_scrape_target(self.dir, job, f"127.0.0.1:{port}")
        return url

    def featbit_requests(self) -> dict[str, Any]:
        """The requests the FeatBit double has answered since it started, by method and by route."""
        request = urllib.request.Request(
            f"{self.env['FEATBIT_API_URL']}/_double/requests", headers={"Authorization": self.env["FEATBIT_TOKEN"]}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            counts: dict[str, Any] = json.loads(response.read())
            return counts

    def rollout(self, namespace: str, name: str, flag: str, **spec: Any) -> dict[str, Any]:
        """An AIRollout of ``flag`` (made by `create_flag`) on this stack's FeatBit, with the given spec fields."""
        return rollout_manifest(
            namespace, name, flag=flag, env_id=self.env["FEATBIT_ENV_ID"], api_url=self.env["FEATBIT_API_URL"], **spec
        )

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

        async def first_switch_off() -> dict[str, Any] | None:
            entries = await client.audit_log(self.env["FEATBIT_ENV_ID"], flag_id, page_size=50)
            off = [entry for entry in entries if _switches_off(entry) and epoch(entry["createdAt"]) >= since]
            return min(off, key=lambda entry: epoch(entry["createdAt"])) if off else None

        entry: dict[str, Any] = await wait_for_async(
            f"FeatBit to record flag {flag_id} being switched off", first_switch_off, 30, AUDIT_POLL_SECONDS
        )
        return entry


def _switches_off(entry: Mapping[str, Any]) -> bool:
    change = entry.get("dataChange") or {}
    before, after = (json.loads(change.get(side) or "{}") for side in ("previous", "current"))
    return before.get("isEnabled") is True and after.get("isEnabled") is False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


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
