"""How fast a guardrail breach takes users back to control: from Prometheus showing it to the SDK serving control.

Everything real and local: the synthetic AI service (its requests' variants decided by FeatBit's SDK), the
sandbox's Prometheus scraping it every second, the FeatBit double, and `airollout run` judging an error-rate
guardrail every second. Each trial starts a fresh AIRollout at 50 %, waits until Prometheus shows the candidate
healthy, then raises the candidate's error rate through the service's knobs. The clock starts when this
benchmark's own poll of Prometheus (the guardrail's query, as the operator renders it) first shows the error
rate above its max, and stops when FeatBit's SDK serves control to every one of 1,000 users.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from fbclient import FBClient
from harness.figures import header, report, trials
from harness.stack import SetupFailed, Stack, all_served, connect_sdk, epoch, sandbox, stop_sdk, users

from airollout.featbit import FeatBitClient
from airollout.guardrails import PrometheusSource, QueryVariables
from airollout.guardrails.templating import render_query
from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.prometheus import add_scrape_target
from airollout_testbed.waiting import wait_for, wait_for_async

NAMESPACE = "bench"
FLAG = "breach-bench"
JOB = "ai-service"
MAX_ERROR_RATE = 0.05
WINDOW = "5s"
SELECTOR = f'job="{JOB}",variant="{{{{variant}}}}"'
QUERY = f"sum(rate(ai_errors_total{{{SELECTOR}}}[{WINDOW}])) / sum(rate(ai_requests_total{{{SELECTOR}}}[{WINDOW}]))"
HEALTHY: dict[str, Any] = {"variants": {}}
BROKEN = {"variants": {"canary": {"error_rate": 0.5}}}
USERS = users(1000)
PROMETHEUS_POLL_SECONDS = 0.05
SDK_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class _Trial:
    visible_to_control: float
    visible_to_toggle: float
    injected_to_visible: float


def _start_ai_service(stack: Stack) -> str:
    """The synthetic AI service as a sandbox process (stopped with the sandbox), scraped as job ai-service."""
    port = processes.free_port()
    started = processes.start(
        stack.dir,
        JOB,
        [
            sys.executable, "-m", "airollout_testbed.demo.ai_service", "--port", str(port), "--flag", FLAG,
            f"--env-secret={stack.env['FEATBIT_ENV_SECRET']}", "--eval-url", stack.env["FEATBIT_EVAL_URL"],
            "--streaming-url", stack.streaming_url, "--websocket-timeout", "1", "--rps", "200",
        ],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(
        "the AI service to answer /healthz",
        lambda: _get(f"{url}/healthz") is not None,
        timeout=60,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )
    add_scrape_target(stack.dir, JOB, f"127.0.0.1:{port}")
    return url


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def _set_knobs(service: str, knobs: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{service}/knobs", data=json.dumps(knobs).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


async def _candidate_error_rate(source: PrometheusSource, stage: str) -> float | None:
    """The guardrail's value for the candidate right now, as the operator would read it; None when no data."""
    promql = render_query(QUERY, QueryVariables(flag=FLAG, namespace=NAMESPACE, stage=stage), "canary")
    values = [sample.value for sample in await source.query(promql) if math.isfinite(sample.value)]
    return max(values) if values else None


async def _trial(
    stack: Stack, client: FeatBitClient, source: PrometheusSource, sdk: FBClient, service: str, index: int
) -> _Trial:
    name, stage = f"breach-{index}", "half"

    async def window_clear() -> bool:
        value = await _candidate_error_rate(source, stage)
        return value is None or value <= MAX_ERROR_RATE

    async def healthy_and_progressing() -> bool:
        value = await _candidate_error_rate(source, stage)
        phase = await asyncio.to_thread(stack.phase, NAMESPACE, name)
        return phase == "Progressing" and value is not None and value <= MAX_ERROR_RATE

    await asyncio.to_thread(_set_knobs, service, HEALTHY)
    await wait_for_async("the previous breach to leave the query's window", window_clear)
    manifest = stack.rollout(
        NAMESPACE,
        name,
        FLAG,
        stages=[{"name": stage, "percentage": 50, "duration": "1h"}],
        prometheus={"url": stack.env["PROMETHEUS_URL"]},
        analysis={"interval": "1s"},
        guardrails=[{"name": "error-rate", "query": QUERY, "max": MAX_ERROR_RATE}],
    )
    await asyncio.to_thread(stack.apply, manifest)
    await wait_for_async("the rollout to progress with a healthy candidate in Prometheus", healthy_and_progressing)
    sentinel = next((user for user in USERS if sdk.variation_detail(FLAG, user, None).variation_id == "canary"), None)
    if sentinel is None:
        raise SetupFailed("the SDK serves the candidate to none of the users at 50 %")

    injected, injected_wall = time.perf_counter(), time.time()
    await asyncio.to_thread(_set_knobs, service, BROKEN)
    visible: tuple[float, float] | None = None  # (perf_counter, wall clock)
    control: float | None = None
    next_query = time.perf_counter()

    async def breach_seen_and_control_served() -> tuple[tuple[float, float], float] | None:
        nonlocal visible, control, next_query
        if visible is None and time.perf_counter() >= next_query:
            next_query = time.perf_counter() + PROMETHEUS_POLL_SECONDS
            value = await _candidate_error_rate(source, stage)
            if value is not None and value > MAX_ERROR_RATE:
                visible = (time.perf_counter(), time.time())
        # One candidate user is cheap to ask every poll; everyone is asked once that one has control.
        if control is None and all_served(sdk, FLAG, [sentinel], "stable") and all_served(sdk, FLAG, USERS, "stable"):
            control = time.perf_counter()
        return (visible, control) if visible is not None and control is not None else None

    visible, control = await wait_for_async(
        f"{name}: the breach to be visible and to lead to control",
        breach_seen_and_control_served,
        timeout=60,
        interval=SDK_POLL_SECONDS,
    )
    flag_id = (await client.get_flag(stack.env["FEATBIT_ENV_ID"], FLAG))["id"]
    toggled = epoch((await stack.switched_off(client, flag_id, since=injected_wall))["createdAt"])
    await wait_for_async("the rollback to be recorded", lambda: _phase_is(stack, name, "RolledBack"))
    await asyncio.to_thread(stack.kubectl, "-n", NAMESPACE, "delete", "airollout", name, "--timeout=60s")
    return _Trial(control - visible[0], toggled - visible[1], visible[0] - injected)


async def _phase_is(stack: Stack, name: str, phase: str) -> bool:
    return await asyncio.to_thread(stack.phase, NAMESPACE, name) == phase


async def _measure(stack: Stack, service: str, count: int) -> list[_Trial]:
    source = PrometheusSource(stack.env["PROMETHEUS_URL"])
    sdk = connect_sdk(stack)
    try:
        async with stack.featbit_client() as client:
            return [await _trial(stack, client, source, sdk, service, index) for index in range(count)]
    finally:
        stop_sdk(sdk)
        source.close()


async def _create_flag(stack: Stack) -> None:
    async with stack.featbit_client() as client:
        await stack.create_flag(client, FLAG)


def main() -> int:
    count = trials(__doc__ or "", default=10)
    header(
        f"Guardrail breach visible in Prometheus -> FeatBit SDK serves control to all {len(USERS)} users "
        f"({count} trials)",
        "AI service (200 req/s, variants from FeatBit's SDK) + Prometheus (1 s scrapes) + FeatBit double +",
        "`airollout run`; one stage at 50%, analysis every 1 s, onBreach rollback, guardrail error-rate max "
        f"{MAX_ERROR_RATE:g}:",
        f"  {QUERY}",
        "The candidate's error rate is raised from 1% to 50% through the service's knobs. Prometheus is polled every",
        f"{PROMETHEUS_POLL_SECONDS * 1e3:g} ms for the first value above the max (the clock starts); this process's "
        f"SDK is asked every {SDK_POLL_SECONDS * 1e3:g} ms",
        f"for one candidate user, then for all {len(USERS)} (the clock stops).",
    )
    with sandbox() as stack:
        stack.install_crd()
        stack.namespace_with_token(NAMESPACE)
        asyncio.run(_create_flag(stack))
        service = _start_ai_service(stack)
        wait_for("Prometheus to scrape the AI service", lambda: _scraped(stack), timeout=60, interval=0.5)
        with stack.operator():
            results = asyncio.run(_measure(stack, service, count))
    report(f"breach visible -> SDK serves control to all {len(USERS)} users", [r.visible_to_control for r in results])
    report(
        "breach visible -> operator's toggle landed in FeatBit (audit createdAt)",
        [r.visible_to_toggle for r in results],
    )
    report(
        "error rate raised -> breach visible in Prometheus (scrape + window)", [r.injected_to_visible for r in results]
    )
    return 0


def _scraped(stack: Stack) -> bool:
    body = _get(f"{stack.env['PROMETHEUS_URL']}/api/v1/query?query=up%7Bjob%3D%22{JOB}%22%7D")
    return body is not None and '"1"]' in body.decode()


if __name__ == "__main__":
    raise SystemExit(main())
