"""The synthetic AI service as fixtures: in process (cheap, the default) or as the process the demo runs.

`PercentageSplit` stands in for FeatBit where a test is about metrics rather than flags; tests about the
variant split use the real SDK against the FeatBit double instead.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airollout_testbed.demo.ai_service import AIService, Knobs
from airollout_testbed.sandbox.processes import free_port
from airollout_testbed.waiting import wait_for


@dataclass
class PercentageSplit:
    """Serves ``candidate`` to a fixed percentage of users (bucketed by key, stable across calls)."""

    candidate: str = "canary"
    control: str = "stable"
    percent: float = 50.0
    initialize: bool = True

    def variation_detail(self, key: str, user: dict[str, Any], default: Any = None) -> Any:
        bucket = zlib.crc32(f"{key}:{user['key']}".encode()) % 10_000 / 100
        return SimpleNamespace(variation_id=self.candidate if bucket < self.percent else self.control)


StartAIService = Callable[..., AIService]


@pytest.fixture
def start_ai_service() -> Iterator[StartAIService]:
    """Start in-process AI services (``start_ai_service(flags, knobs=..., traffic=...)``); stopped after the test."""
    started: list[AIService] = []

    def start(
        flags: Any = None,
        *,
        flag_key: str = "ai-summary",
        extra_flags: tuple[str, ...] = (),
        knobs: Knobs | None = None,
        seed: int = 0,
        traffic: bool = True,
    ) -> AIService:
        service = AIService(flags or PercentageSplit(), flag_key, *extra_flags, knobs=knobs, seed=seed)
        service.start(traffic=traffic)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture
def run_ai_service(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], str]]:
    """Run ``python -m airollout_testbed.demo.ai_service ARGS --port P`` and return its URL once it answers."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(args: Sequence[str]) -> str:
        port = free_port()
        log = tmp_path / f"ai-service-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "airollout_testbed.demo.ai_service", *args, "--port", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(
            "the AI service to answer /healthz",
            lambda: _healthy(url),
            timeout=60,
            interval=0.1,
            running=lambda: process.poll() is None,
            log=log,
        )
        return url

    yield run
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = ["PercentageSplit", "StartAIService", "run_ai_service", "start_ai_service"]
