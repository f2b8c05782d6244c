"""What the local stack costs: how long `airollout sandbox up` takes, and how much memory each part holds.

`up` starts etcd, kube-apiserver, Prometheus and the FeatBit double one after another and returns once each
answers its readiness check, so its wall time is what `make demo` and the integration tests wait for. Memory is
each process's resident set (VmRSS in /proc/PID/status) once started, and the operator's with one AIRollout
progressing, since that is what a laptop running the demo has to hold.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar
from unittest import mock

from harness.figures import header, report, trials
from harness.stack import SetupFailed, Stack, sandbox

from airollout_testbed.sandbox import environment, processes
from airollout_testbed.waiting import wait_for

T = TypeVar("T")
PARTS = ("start_etcd", "start_apiserver", "start_prometheus", "start_featbit_double")
SETTLE_SECONDS = 5.0
ROLLOUT_SECONDS = 10.0


@contextmanager
def _timing_parts(spent: dict[str, list[float]]) -> Iterator[None]:
    """Time each start-up step `up` calls, by wrapping the functions it looks up in its module."""

    def timed(name: str, start: Callable[..., T]) -> Callable[..., T]:
        def run(*args: object) -> T:
            began = time.perf_counter()
            try:
                return start(*args)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - began)

        return run

    with ExitStack() as patches:
        for name in PARTS:
            patches.enter_context(mock.patch.object(environment, name, timed(name, getattr(environment, name))))
        yield


def _start_once(spent: dict[str, list[float]]) -> tuple[float, float]:
    """One `up` and `down` in a fresh directory; returns both wall times."""
    with tempfile.TemporaryDirectory(prefix="airollout-bench-") as name:
        directory = Path(name)
        began = time.perf_counter()
        try:
            with _timing_parts(spent):
                environment.up(directory)
            ready = time.perf_counter()
        finally:
            stopping = time.perf_counter()
            environment.down(directory)
        return ready - began, time.perf_counter() - stopping


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _print_memory(name: str, pid: int) -> None:
    rss, peak = _memory_kib(pid)
    print(f"{name:<44} VmRSS {rss / 1024:7.1f} MiB   (peak VmHWM {peak / 1024:7.1f} MiB)")


def _measure_memory(stack: Stack) -> None:
    time.sleep(SETTLE_SECONDS)
    for name in ("etcd", "kube-apiserver", "prometheus", environment.FEATBIT_DOUBLE):
        record = processes.find(stack.dir, name)
        if record is None:
            raise SetupFailed(f"the sandbox has no record of {name}")
        _print_memory(name, record.pid)
    stack.install_crd()
    stack.namespace_with_token("bench")
    with stack.operator() as operator:
        time.sleep(SETTLE_SECONDS)
        _print_memory("operator, idle", operator.pid)
        asyncio.run(_create_flag(stack, "memory-bench"))
        stages = [{"name": "canary", "percentage": 10, "duration": "1h"}]
        stack.apply(stack.rollout("bench", "memory-bench", "memory-bench", stages=stages))
        wait_for(
            "the AIRollout to progress", lambda: "Progressing" in stack.kubectl("-n", "bench", "get", "airollouts")
        )
        time.sleep(ROLLOUT_SECONDS)
        _print_memory(f"operator, one AIRollout progressing {ROLLOUT_SECONDS:g} s", operator.pid)


async def _create_flag(stack: Stack, key: str) -> None:
    async with stack.featbit_client() as client:
        await stack.create_flag(client, key)


def main() -> int:
    count = trials(__doc__ or "", default=3)
    header(
        f"Sandbox start: `airollout sandbox up` -> every part ready ({count} warm runs), and memory per process",
        "environment.up() in a fresh temporary directory each run (new etcd data, certificates, ports), timed",
        "until it returns, i.e. every readiness check passed; one unmeasured run first warms the page cache.",
        f"Memory: VmRSS (and peak VmHWM) from /proc/PID/status, {SETTLE_SECONDS:g} s after the sandbox is up;",
        "then of `airollout run` idle, and with one AIRollout progressing.",
    )
    _start_once({})
    spent: dict[str, list[float]] = {}
    runs = [_start_once(spent) for _ in range(count)]
    report("up -> ready", [up for up, _ in runs], unit="s")
    for name in PARTS:
        report(f"   of which {name}", spent[name], unit="s")
    report("down", [down for _, down in runs], unit="s")
    with sandbox() as stack:
        _measure_memory(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
