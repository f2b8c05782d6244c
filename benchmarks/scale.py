"""What the operator costs as AIRollouts grow, and whether it keeps its promises under that load.

For each N of ``--counts`` (default 100,1000,3000) a fresh sandbox runs on this machine (kube-apiserver + etcd,
Prometheus, the FeatBit double) with the demo's synthetic AI service as the workload Prometheus scrapes, and
one `airollout run` (or ``--replicas 3`` sharing ``--shards 3``). N flags are created in the double and N
AIRollouts applied in batches (server-side apply of a List) across a few namespaces. Every rollout has the
same three guardrails (error rate, p95 latency, quality of the AI service; their texts identical across
rollouts, so the operator can share the queries), an analysis interval of 30 s, a first stage that bakes
``--bake`` seconds and a second of an hour.

One JSON line per N on stdout (progress goes to stderr):
- ``apply_to_all_progressing_s``: from the start of the apply to the last rollout's ``Started`` decision
  (and ``..._seen_s``: to the first listing that showed every rollout Progressing);
- over a steady window of ``--steady`` seconds, once every rollout took its first advance: the operator's CPU
  in cores (utime + stime from /proc) and peak RSS (VmHWM, reset at the window's start); FeatBit requests/s by
  method and route (the double's own count); Prometheus instant queries/s (its own /metrics); apiserver
  writes/s by verb and resource (its own /metrics; the sandbox's own background writes included);
- ``first_advance_lateness_s``: StageAdvanced time - the first stage's start - the bake, from status history;
- ``kill_switch_ms``: ``--kill-trials`` rollouts in turn, from the merge PATCH of ``spec.killSwitch: true``
  returning to the ``createdAt`` of FeatBit's audit entry that switched the flag off;
- ``takeover`` (with ``--replicas``): one replica SIGKILLed; at once every rollout it served is asked to
  `promote` and one of them gets the kill switch; seconds from the kill to the kill switch landing and to
  each of those rollouts advancing.
Figures are printed, never judged. The run is bounded by timeouts at every wait and tears down everything
it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
from harness.figures import percentile
from harness.meters import (
    Histogram,
    apiserver_writes,
    cpu_seconds,
    histogram,
    peak_rss_mib,
    prometheus_instant_queries,
    reset_peak_rss,
    samples,
    scrape,
)
from harness.stack import SetupFailed, Stack, epoch, sandbox

from airollout.featbit import FeatBitClient
from airollout.featbit.targeting import Exposure, build_targeting
from airollout.guardrails import PrometheusSource, QueryVariables
from airollout.guardrails.templating import render_query
from airollout.model import GROUP, PLURAL, VERSION
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import wait_for_async

SERVICE = "scale-ai-service"
"""The AI service's flag key and its Prometheus job."""
SERVICE_RPS = 100.0
ANALYSIS_INTERVAL_S = 30
BATCH = 250
"""AIRollouts per `kubectl apply`: one List per call, several namespaces at once."""
LEASE_NAMESPACE = "airollout-system"
LEASE_DURATION_S = 15.0
FLAG_CREATION_CONCURRENCY = 16
KILL_POLL_S = 0.01
FLAG_ROUTE = "/api/v1/envs/{env_id}/feature-flags/{key}"
"""The route of a flag read, as the double counts it."""
LIST_POLL_S = 2.0
CANDIDATE, CONTROL = "canary", "stable"
_SELECTOR = f'job="{SERVICE}",variant="{{{{variant}}}}"'
_WINDOW = "1m"
GUARDRAILS: list[dict[str, Any]] = [
    {
        "name": "error-rate",
        "query": f"sum by (locale) (rate(ai_errors_total{{{_SELECTOR}}}[{_WINDOW}]))"
        f" / sum by (locale) (rate(ai_requests_total{{{_SELECTOR}}}[{_WINDOW}]))",
        "max": 0.2,
    },
    {
        "name": "p95-latency",
        "query": "histogram_quantile(0.95, sum by (le, locale) "
        f"(rate(ai_request_duration_seconds_bucket{{{_SELECTOR}}}[{_WINDOW}])))",
        "max": 2.0,
    },
    {
        "name": "quality",
        "query": f"sum by (locale) (rate(ai_quality_score_sum{{{_SELECTOR}}}[{_WINDOW}]))"
        f" / sum by (locale) (rate(ai_quality_score_count{{{_SELECTOR}}}[{_WINDOW}]))",
        "min": 0.5,
    },
]
"""Three guardrails on the AI service; ``{{variant}}`` is the only placeholder, so every rollout (candidate
`canary`, control `stable`) renders the same texts."""


@dataclass(frozen=True)
class Options:
    counts: tuple[int, ...]
    steady: float
    bake: int
    kill_trials: int
    replicas: int
    namespaces: int


@dataclass(frozen=True)
class Target:
    """One AIRollout of the run and the flag it rolls out."""

    namespace: str
    name: str
    flag: str
    flag_id: str = ""


@dataclass
class Reading:
    """Every counter at one moment: the start or the end of a window."""

    at: float
    operator_cpu: list[float]
    featbit: dict[str, Any]
    prometheus_queries: float
    apiserver_writes: dict[str, float]
    operator_metrics: list[str]
    neighbours_cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000,3000", help="AIRollout counts, comma-separated")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady window (at least 60)")
    parser.add_argument("--bake", type=int, default=45, help="seconds the first stage bakes")
    parser.add_argument("--kill-trials", type=int, default=20, help="kill-switch trials per N")
    parser.add_argument("--replicas", type=int, default=1, help="operator processes; more than 1 shards")
    parser.add_argument("--namespaces", type=int, default=5, help="namespaces the rollouts are spread over")
    arguments = parser.parse_args()
    try:
        counts = tuple(int(part) for part in arguments.counts.split(",") if part.strip())
    except ValueError:
        parser.error(f"--counts must be integers separated by commas, got {arguments.counts!r}")
    if not counts or min(counts) < 1:
        parser.error("--counts needs at least one positive count")
    if arguments.steady < 60:
        parser.error("--steady must be at least 60 seconds")
    if arguments.replicas < 1 or arguments.namespaces < 1 or arguments.bake < 1:
        parser.error("--replicas, --namespaces and --bake must be at least 1")
    if not 0 <= arguments.kill_trials <= min(counts):
        parser.error("--kill-trials must be between 0 and the smallest count")
    return Options(
        counts, arguments.steady, arguments.bake, arguments.kill_trials, arguments.replicas, arguments.namespaces
    )


def _stages(bake: int) -> list[dict[str, Any]]:
    return [
        {"name": "first", "percentage": 10, "duration": f"{bake}s"},
        {"name": "hold", "percentage": 20, "duration": "1h"},
        {"name": "after", "percentage": 50, "duration": "1h"},
    ]


def _distinct_queries() -> set[str]:
    """The query texts every rollout asks: each guardrail rendered for the candidate and for the control."""
    variables = QueryVariables(flag="any", namespace="any", stage="any")
    return {render_query(g["query"], variables, variant) for g in GUARDRAILS for variant in (CANDIDATE, CONTROL)}


def _shards_supported() -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "airollout", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--shards" in result.stdout


# -- setting up ----------------------------------------------------------------------------------------------------


async def _start_service_flag(stack: Stack) -> None:
    """The AI service's own flag: on, half of its users on the candidate, so both variants have traffic."""
    env_id = stack.env["FEATBIT_ENV_ID"]
    async with stack.featbit_client() as client:
        await stack.create_flag(client, SERVICE)
        split = Exposure(percentage=50)
        await client.write_targeting(
            env_id,
            SERVICE,
            lambda flag: build_targeting(flag, split, candidate=CANDIDATE, control=CONTROL),
            comment="scale benchmark: half of the AI service's users on the candidate",
        )
        await client.toggle(env_id, SERVICE, True, comment="scale benchmark: AI service traffic")


async def _service_measurable(stack: Stack) -> None:
    """Wait until every guardrail query has a finite value for both variants, so no rollout holds on NoData."""
    source = PrometheusSource(stack.env["PROMETHEUS_URL"])
    try:

        async def every_query_answers() -> bool:
            for promql in _distinct_queries():
                values = [sample.value for sample in await source.query(promql)]
                if not values or not all(math.isfinite(value) for value in values):
                    return False
            return True

        await wait_for_async("Prometheus to answer every guardrail query", every_query_answers, 120, 1.0)
    finally:
        source.close()


async def _create_flags(stack: Stack, targets: Sequence[Target]) -> list[Target]:
    slots = asyncio.Semaphore(FLAG_CREATION_CONCURRENCY)
    async with stack.featbit_client() as client:

        async def create(target: Target) -> Target:
            async with slots:
                flag = await stack.create_flag(client, target.flag)
            return Target(target.namespace, target.name, target.flag, str(flag["id"]))

        return list(await asyncio.gather(*(create(target) for target in targets)))


def _targets(count: int, namespaces: Sequence[str]) -> list[Target]:
    return [
        Target(namespaces[index % len(namespaces)], f"r-{index:05d}", f"scale-{index:05d}") for index in range(count)
    ]


def _apply(stack: Stack, targets: Sequence[Target], bake: int) -> None:
    """Server-side apply, one List of up to `BATCH` per kubectl, one kubectl per namespace at a time."""
    spec = {
        "stages": _stages(bake),
        "prometheus": {"url": stack.env["PROMETHEUS_URL"]},
        "analysis": {"interval": f"{ANALYSIS_INTERVAL_S}s"},
        "guardrails": GUARDRAILS,
    }
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        manifest = stack.rollout(target.namespace, target.name, target.flag, **spec)
        by_namespace.setdefault(target.namespace, []).append(manifest)

    def apply_namespace(manifests: list[dict[str, Any]]) -> None:
        for start in range(0, len(manifests), BATCH):
            items = manifests[start : start + BATCH]
            stack.kubectl(
                "apply",
                "--server-side",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
            )

    with ThreadPoolExecutor(max_workers=len(by_namespace)) as pool:
        for done in [pool.submit(apply_namespace, manifests) for manifests in by_namespace.values()]:
            done.result()


# -- reading what happened -----------------------------------------------------------------------------------------


def _statuses(api: kubernetes.client.CustomObjectsApi) -> dict[tuple[str, str], dict[str, Any]]:
    """Every AIRollout's status, keyed (namespace, name)."""
    response = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
    listed = json.loads(response.data)
    return {
        (item["metadata"]["namespace"], item["metadata"]["name"]): item.get("status") or {}
        for item in listed.get("items") or []
    }


def _entries(status: Mapping[str, Any], reason: str) -> Iterator[float]:
    """The times (epoch seconds) of the history entries with ``reason``, oldest first."""
    for entry in status.get("history") or []:
        if entry.get("reason") == reason:
            yield datetime.fromisoformat(entry["time"]).timestamp()


Statuses = Mapping[tuple[str, str], Mapping[str, Any]]


def _poll_until(
    api: kubernetes.client.CustomObjectsApi, what: str, done: Callable[[Statuses], bool], timeout: float
) -> tuple[float | None, dict[tuple[str, str], dict[str, Any]]]:
    """List every LIST_POLL_S until ``done(statuses)``; the wall clock of the listing that satisfied it (None
    at the deadline) and the last statuses listed. A deadline is reported, not raised: a figure that says
    "not all in time" is a finding."""
    deadline = time.monotonic() + timeout
    while True:
        listed_at = time.time()
        statuses = _statuses(api)
        if done(statuses):
            return listed_at, statuses
        if time.monotonic() > deadline:
            _say(f"gave up waiting for {what} after {timeout:g}s")
            return None, statuses
        time.sleep(LIST_POLL_S)


def _summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "p50": round(statistics.median(values), digits),
        "p99": round(percentile(values, 0.99), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def _per_second(later: float, earlier: float, seconds: float) -> float:
    return round((later - earlier) / seconds, 3)


def _machine_busy_seconds() -> float:
    """CPU seconds every process on this machine has used (the first line of /proc/stat, idle and iowait out)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / 100.0  # USER_HZ is 100 on Linux


_NEIGHBOURS = ("kube-apiserver", "etcd", "prometheus", "featbit-double", SERVICE)


def _read(stack: Stack, operators: Sequence[OperatorProcess], metrics_ports: Sequence[int]) -> Reading:
    neighbours = {}
    for name in _NEIGHBOURS:
        record = processes.find(stack.dir, name)
        if record is not None:
            neighbours[name] = cpu_seconds(record.pid)
    return Reading(
        at=time.monotonic(),
        operator_cpu=[cpu_seconds(operator.pid) for operator in operators],
        featbit=stack.featbit_requests(),
        prometheus_queries=prometheus_instant_queries(scrape(f"{stack.env['PROMETHEUS_URL']}/metrics")),
        apiserver_writes=apiserver_writes(stack.kubectl("get", "--raw", "/metrics")),
        operator_metrics=[scrape(f"http://127.0.0.1:{port}/metrics") for port in metrics_ports],
        neighbours_cpu=neighbours,
        machine_busy=_machine_busy_seconds(),
    )


def _operator_histogram(reading: Reading, name: str) -> Histogram:
    parts = [histogram(text, name) for text in reading.operator_metrics]
    buckets: dict[float, float] = {}
    for part in parts:
        for bound, count in part.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
    return Histogram(tuple(sorted(buckets.items())), sum(p.count for p in parts), sum(p.sum for p in parts))


def _window(first: Reading, last: Reading, rollouts: int) -> dict[str, Any]:
    seconds = last.at - first.at
    cores = [(b - a) / seconds for a, b in zip(first.operator_cpu, last.operator_cpu, strict=True)]
    methods = {
        method: _per_second(count, first.featbit["byMethod"].get(method, 0), seconds)
        for method, count in last.featbit["byMethod"].items()
    }
    routes = {
        route: _per_second(count, first.featbit["byRoute"].get(route, 0), seconds)
        for route, count in last.featbit["byRoute"].items()
        if count != first.featbit["byRoute"].get(route, 0)
    }
    flag_reads = routes.get("GET " + FLAG_ROUTE, 0.0)
    queries = _per_second(last.prometheus_queries, first.prometheus_queries, seconds)
    writes = {
        key: _per_second(count, first.apiserver_writes.get(key, 0.0), seconds)
        for key, count in last.apiserver_writes.items()
        if count != first.apiserver_writes.get(key, 0.0)
    }
    reconciles = _operator_histogram(last, "airollout_reconcile_seconds").minus(
        _operator_histogram(first, "airollout_reconcile_seconds")
    )
    lateness = _operator_histogram(last, "airollout_scheduler_lateness_seconds").minus(
        _operator_histogram(first, "airollout_scheduler_lateness_seconds")
    )
    return {
        "steady_window_s": round(seconds, 1),
        "operator_cpu_cores": round(sum(cores), 4),
        "operator_cpu_cores_per_replica": [round(core, 4) for core in cores],
        "featbit_requests_per_s": methods,
        "featbit_requests_per_s_by_route": routes,
        "featbit_flag_reads_per_rollout_per_interval": round(flag_reads * ANALYSIS_INTERVAL_S / rollouts, 3),
        "prometheus_queries_per_s": queries,
        "prometheus_queries_per_interval": round(queries * ANALYSIS_INTERVAL_S, 1),
        "apiserver_writes_per_s": round(sum(writes.values()), 3),
        "apiserver_writes_per_s_by_request": dict(sorted(writes.items())),
        "operator_reconciles": reconciles.summary(),
        "operator_scheduler_lateness": lateness.summary(),
        "neighbours_cpu_cores": {
            name: round((last.neighbours_cpu[name] - before) / seconds, 3)
            for name, before in first.neighbours_cpu.items()
            if name in last.neighbours_cpu
        },
        "machine_busy_cores": round((last.machine_busy - first.machine_busy) / seconds, 3),
    }


# -- the kill switch -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landing:
    returned: float
    """Wall clock when the PATCH returned."""
    landed: float
    """FeatBit's createdAt of the switch-off."""
    fast_path: bool


def _pull(api: kubernetes.client.CustomObjectsApi, target: Target) -> tuple[float, float]:
    invoked = time.time()
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        target.namespace,
        PLURAL,
        target.name,
        {"spec": {"killSwitch": True}},
        _content_type="application/merge-patch+json",
    )
    return invoked, time.time()


async def _landed(stack: Stack, client: FeatBitClient, target: Target, since: float, patience: float) -> Landing:
    """Poll the flag (a cheap read) until it is off, then read the audit entry that says when it went off.

    Polling the flag rather than the audit log keeps the double's loop free: its audit search walks every
    entry, and a double busy searching would delay the very toggle being timed."""
    env_id = stack.env["FEATBIT_ENV_ID"]

    async def off() -> bool:
        return not (await client.get_flag(env_id, target.flag)).get("isEnabled")

    await wait_for_async(f"the flag of {target.name} to be switched off", off, patience, KILL_POLL_S)
    entry = await stack.switched_off(client, target.flag_id, since=since - 1.0)
    return Landing(since, epoch(entry["createdAt"]), ", kill switch: " in (entry.get("comment") or ""))


async def _kill_trials(
    stack: Stack, api: kubernetes.client.CustomObjectsApi, targets: Sequence[Target]
) -> list[Landing]:
    landings = []
    async with stack.featbit_client() as client:
        for target in targets:
            _invoked, returned = await asyncio.to_thread(_pull, api, target)
            landing = await _landed(stack, client, target, returned, 30)
            landings.append(landing)
            await asyncio.sleep(0.5)  # one switch at a time: each is timed against the rollouts' load alone
    return landings


# -- losing a replica ----------------------------------------------------------------------------------------------


def _served(metrics_text: str) -> set[tuple[str, str]]:
    """The rollouts an operator process reports in its metrics as Progressing: the ones it works on."""
    return {
        (labels["namespace"], labels["rollout"])
        for labels, value in samples(metrics_text, "airollout_rollout_phase")
        if labels.get("phase") == "Progressing" and value == 1.0
    }


def _takeover(
    stack: Stack,
    api: kubernetes.client.CustomObjectsApi,
    operators: Sequence[OperatorProcess],
    metrics_ports: Sequence[int],
    targets: Sequence[Target],
    excluded: set[tuple[str, str]],
) -> dict[str, Any]:
    """SIGKILL the first replica, then time how long its rollouts wait for another replica."""
    served = [_served(scrape(f"http://127.0.0.1:{port}/metrics")) for port in metrics_ports]
    others = set().union(*served[1:])
    victims = sorted(served[0] - others - excluded)
    if not victims:
        return {"error": f"{operators[0].name} reported no rollout of its own in its metrics"}
    by_name = {(t.namespace, t.name): t for t in targets}
    switched, promoted = by_name[victims[0]], victims[1:]
    killed_at = time.time()
    operators[0].kill()
    _say(f"SIGKILLed {operators[0].name}, which served {len(victims)} rollouts")
    _pull(api, switched)
    names: dict[str, list[str]] = {}
    for namespace, name in promoted:
        names.setdefault(namespace, []).append(name)
    for namespace, batch in names.items():
        stack.kubectl("-n", namespace, "annotate", "--overwrite", "airollout", *batch, "airollout.dev/action=promote")

    async def land() -> Landing:
        async with stack.featbit_client() as client:
            return await _landed(stack, client, switched, killed_at, 4 * LEASE_DURATION_S + 120)

    landing = asyncio.run(land())

    def advanced_after_kill(status: Mapping[str, Any]) -> float | None:
        return next((t for t in _entries(status, "StageAdvanced") if t > killed_at), None)

    def all_advanced(statuses: Statuses) -> bool:
        return all(advanced_after_kill(statuses.get(key) or {}) is not None for key in promoted)

    patience = 4 * LEASE_DURATION_S + 180
    _seen, statuses = _poll_until(api, "the killed replica's rollouts to advance", all_advanced, patience)
    delays = [t - killed_at for key in promoted if (t := advanced_after_kill(statuses.get(key) or {})) is not None]
    return {
        "victim_rollouts": len(victims),
        "lease_duration_s": LEASE_DURATION_S,
        "kill_switch_landed_after_kill_s": round(landing.landed - killed_at, 3),
        "promoted_advanced_after_kill_s": _summary(delays),
        "promoted_not_advanced": len(promoted) - len(delays),
    }


# -- one N ---------------------------------------------------------------------------------------------------------


def _ramp(api: kubernetes.client.CustomObjectsApi, count: int, applied_at: float, bake: int) -> dict[str, Any]:
    """From the apply to every rollout Progressing, then to every rollout's first advance."""
    result: dict[str, Any] = {}

    def all_progressing(statuses: Statuses) -> bool:
        return len(statuses) == count and all(s.get("phase") == "Progressing" for s in statuses.values())

    seen, statuses = _poll_until(api, "every AIRollout to be Progressing", all_progressing, 120 + count / 10)
    starts = {key: next(_entries(status, "Started"), None) for key, status in statuses.items()}
    known = [t for t in starts.values() if t is not None]
    result["apply_to_all_progressing_s"] = round(max(known) - applied_at, 2) if seen and known else None
    result["apply_to_all_progressing_seen_s"] = round(seen - applied_at, 2) if seen else None
    result["progressing"] = sum(s.get("phase") == "Progressing" for s in statuses.values())
    _say(f"N={count}: {result['progressing']} Progressing; last Started {result['apply_to_all_progressing_s']}s")

    def all_advanced(statuses: Statuses) -> bool:
        return all(next(_entries(s, "StageAdvanced"), None) is not None for s in statuses.values())

    _seen, statuses = _poll_until(api, "every AIRollout's first advance", all_advanced, bake + 240)
    lateness = []
    for key, status in statuses.items():
        start = starts.get(key) or next(_entries(status, "Started"), None)
        advance = next(_entries(status, "StageAdvanced"), None)
        if start is not None and advance is not None:
            lateness.append(advance - start - bake)
    result["first_advance_lateness_s"] = _summary(lateness)
    result["not_advanced"] = count - len(lateness)
    _say(f"N={count}: first advances {result['first_advance_lateness_s']}")
    return result


def _steady(
    stack: Stack, operators: Sequence[OperatorProcess], ports: Sequence[int], count: int, seconds: float
) -> dict[str, Any]:
    """Every counter read at both ends of a window in which nothing but the rollouts themselves happens."""
    time.sleep(5)  # the last advances' writes and Events settle before the window opens
    pids = [operator.pid for operator in operators]
    result: dict[str, Any] = {"operator_peak_rss_mib_since_start": [round(peak_rss_mib(pid), 1) for pid in pids]}
    for pid in pids:
        reset_peak_rss(pid)
    first = _read(stack, operators, ports)
    result["operator_cpu_s_before_window"] = [round(cpu, 1) for cpu in first.operator_cpu]
    _say(f"N={count}: steady window of {seconds:g}s")
    time.sleep(seconds)
    last = _read(stack, operators, ports)
    result["operator_peak_rss_mib"] = [round(peak_rss_mib(pid), 1) for pid in pids]
    return {**result, **_window(first, last, count)}


def _kill_switch(
    stack: Stack,
    api: kubernetes.client.CustomObjectsApi,
    operators: Sequence[OperatorProcess],
    ports: Sequence[int],
    targets: Sequence[Target],
) -> dict[str, Any]:
    """The kill switch on ``targets`` one at a time, timed from outside and by the operator's own histogram."""
    _say(f"{len(targets)} kill-switch trials")
    before = _read(stack, operators, ports)
    landings = asyncio.run(_kill_trials(stack, api, targets))
    after = _read(stack, operators, ports)
    return {
        "kill_switch_ms": {
            **_summary([(landing.landed - landing.returned) * 1000 for landing in landings], 1),
            "fast_path": sum(landing.fast_path for landing in landings),
        },
        "operator_kill_switch_histogram": _operator_histogram(after, "airollout_kill_switch_seconds")
        .minus(_operator_histogram(before, "airollout_kill_switch_seconds"))
        .summary(),
    }


def _operators(stack: Stack, replicas: int) -> tuple[list[OperatorProcess], list[int]]:
    ports = [processes.free_port() for _ in range(replicas)]
    operators = []
    for index, port in enumerate(ports):
        args = ["--metrics-port", str(port)]
        if replicas > 1:
            args += [
                "--shards", str(replicas), "--lease-duration", f"{LEASE_DURATION_S:g}",
                "--lease-namespace", LEASE_NAMESPACE, "--identity", f"replica-{index}",
            ]  # fmt: skip
        operators.append(stack.operator(*args, name=f"operator-{index}" if replicas > 1 else "operator"))
    return operators, ports


def _run(count: int, options: Options) -> dict[str, Any]:
    result: dict[str, Any] = {
        "rollouts": count,
        "replicas": options.replicas,
        "namespaces": options.namespaces,
        "guardrails_per_rollout": len(GUARDRAILS),
        "distinct_query_texts": len(_distinct_queries()),
        "analysis_interval_s": ANALYSIS_INTERVAL_S,
        "first_stage_bake_s": options.bake,
    }
    with sandbox() as stack, ExitStack() as running:
        _say(f"N={count}: sandbox up in {stack.dir}")
        stack.install_crd()
        namespaces = [f"scale-{index}" for index in range(options.namespaces)]
        for namespace in namespaces:
            stack.namespace_with_token(namespace)
        stack.kubectl("create", "namespace", LEASE_NAMESPACE)
        asyncio.run(_start_service_flag(stack))
        stack.ai_service(SERVICE, SERVICE, rps=SERVICE_RPS)
        asyncio.run(_service_measurable(stack))
        started = time.monotonic()
        targets = asyncio.run(_create_flags(stack, _targets(count, namespaces)))
        _say(f"N={count}: {count} flags created in {time.monotonic() - started:.1f}s")
        api = stack.custom_objects()

        operators, ports = _operators(stack, options.replicas)
        for operator in operators:
            running.enter_context(operator)
        _say(f"N={count}: {len(operators)} operator process(es) running")

        applied_at = time.time()
        _apply(stack, targets, options.bake)
        result["apply_s"] = round(time.time() - applied_at, 2)
        _say(f"N={count}: applied in {result['apply_s']}s")
        result.update(_ramp(api, count, applied_at, options.bake))
        result.update(_steady(stack, operators, ports, count, options.steady))
        trial_targets = [targets[index * count // options.kill_trials] for index in range(options.kill_trials)]
        result.update(_kill_switch(stack, api, operators, ports, trial_targets))
        if options.replicas > 1:
            excluded = {(t.namespace, t.name) for t in trial_targets}
            result["takeover"] = _takeover(stack, api, operators, ports, targets, excluded)
    return result


def main() -> int:
    options = _options()
    if options.replicas > 1 and not _shards_supported():
        _say(
            f"--replicas {options.replicas} skipped: this `airollout run` has no --shards option, so replicas "
            "would all serve every rollout"
        )
        return 0
    for count in options.counts:
        try:
            print(json.dumps(_run(count, options)), flush=True)
        except SetupFailed as error:
            _say(f"N={count}: the stack could not be set up: {error}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
