"""`airollout demo`: two AI releases on a local sandbox, one healthy and promoted, one regressing and rolled back.

Everything is real but FeatBit (the server double stands in for it): an apiserver, Prometheus scraping two
synthetic AI services whose traffic FeatBit's own SDK splits, and the operator process, whose own metrics the
sandbox Prometheus scrapes too. The demo prints each step as it happens, then the audit trail `kubectl describe`
shows, and ends by drawing each rollout (`report.py`) into DIR/report/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airollout.featbit.client import FeatBitClient
from airollout.featbit.errors import FeatBitRejected
from airollout_testbed.demo.report import write_reports
from airollout_testbed.harness import OperatorProcess, install_crd, rollout_manifest
from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.environment import down, read_env, up
from airollout_testbed.sandbox.processes import SandboxError
from airollout_testbed.sandbox.prometheus import add_scrape_target
from airollout_testbed.sandbox.tools import ToolMissing, tool
from airollout_testbed.waiting import TimedOut, wait_for

NAMESPACE = "demo"
TIMEOUT_SECONDS = 420
OPERATOR_JOB = "airollout-operator"
_LAST_SCRAPE_SECONDS = 2.0
"""Prometheus scrapes every second: waiting this long puts the final state in the picture."""

# Two releases of the same shape; only the candidate's behaviour differs.
RELEASES = {
    "summarizer-v2": {"canary": {"error_rate": 0.01, "latency_seconds": 0.25}},
    "reranker-v3": {"canary": {"error_rate": 0.09, "latency_seconds": 0.3}},
}
EXPECTED = {"summarizer-v2": "Promoted", "reranker-v3": "RolledBack"}
INTERNAL_USERS = [f"user-{n}" for n in range(0, 100, 7)]


def run_demo(directory: Path, keep: bool = False) -> int:
    try:
        return _run(directory.resolve(), keep)
    except (SandboxError, TimedOut, ToolMissing, subprocess.CalledProcessError) as error:
        print(f"airollout demo: {error}", file=sys.stderr)
        return 1


def _run(directory: Path, keep: bool) -> int:
    _say(f"starting the sandbox in {directory} (etcd, kube-apiserver, Prometheus, FeatBit double)")
    env = up(directory) if not (directory / "sandbox.env").exists() else read_env(directory)
    kubectl = _Kubectl(env["KUBECONFIG"])
    try:
        install_crd(kubectl)
        if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
            kubectl("create", "namespace", NAMESPACE)
            kubectl(
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                "featbit",
                f"--from-literal=token={env['FEATBIT_TOKEN']}",
            )
        asyncio.run(_create_flags(env, directory))
        for index, flag in enumerate(RELEASES):
            _start_ai_service(directory, env, flag, port=processes.free_port(), seed=index)
        _say("starting the operator: airollout run, its metrics scraped by the sandbox Prometheus")
        metrics_port = processes.free_port()
        # Not stopped here: `down` (or `airollout sandbox down` after --keep) stops it with the sandbox.
        OperatorProcess(directory, env["KUBECONFIG"], "--metrics-port", str(metrics_port)).start()
        add_scrape_target(directory, OPERATOR_JOB, f"127.0.0.1:{metrics_port}")
        applied_at = time.time()
        for flag in RELEASES:
            kubectl("apply", "-f", "-", input=json.dumps(_rollout(flag, env)))
            _say(f"applied AIRollout {NAMESPACE}/{flag}")
        phases = _watch(kubectl)
        time.sleep(_LAST_SCRAPE_SECONDS)
        listed = json.loads(kubectl("-n", NAMESPACE, "get", "airollouts", "-o", "json").stdout)["items"]
        for report in write_reports(directory / "report", env["PROMETHEUS_URL"], listed, applied_at, time.time()):
            _say(f"the picture of {report.rollout}: {report.html} (and {report.png.name})")
        _say("the audit trail, as `kubectl describe airollout` shows it:")
        for flag in RELEASES:
            events = kubectl("-n", NAMESPACE, "describe", "airollout", flag).stdout.split("Events:")[-1]
            print(f"\n--- {flag} ---{events}")
        print(kubectl("-n", NAMESPACE, "get", "airollouts").stdout)
    finally:
        if keep:
            _say(f"sandbox left running: `set -a; . {directory}/sandbox.env; set +a`, then kubectl -n {NAMESPACE} ...")
            _say(f"stop it with: airollout sandbox down --dir {directory}")
        else:
            down(directory)
    ok = phases == EXPECTED
    _say("demo complete: " + ("as expected" if ok else f"unexpected end states {phases}, expected {EXPECTED}"))
    return 0 if ok else 1


async def _create_flags(env: dict[str, str], directory: Path) -> None:
    scope = _env_scope(directory)
    async with FeatBitClient(env["FEATBIT_API_URL"], env["FEATBIT_TOKEN"]) as featbit:
        try:
            await featbit.create_segment(
                env["FEATBIT_ENV_ID"], key="internal-users", scopes=[scope], included=INTERNAL_USERS
            )
        except FeatBitRejected as error:  # already there from an earlier run with --keep
            if "KeyHasBeenUsed" not in error.codes:
                raise
        for flag in RELEASES:
            try:
                await featbit.create_flag(
                    env["FEATBIT_ENV_ID"],
                    key=flag,
                    variations=[("canary", "true"), ("stable", "false")],
                    enabled_variation_id="canary",
                    disabled_variation_id="stable",
                )
                _say(f"created FeatBit flag {flag} (variations canary / stable, off)")
            except FeatBitRejected as error:
                if "KeyHasBeenUsed" not in error.codes:
                    raise


def _env_scope(directory: Path) -> str:
    ready = json.loads((directory / "featbit-double.json").read_text())
    return str(ready["env_resource_name"])


def _start_ai_service(directory: Path, env: dict[str, str], flag: str, port: int, seed: int) -> None:
    # Enough traffic that a 5% canary collects the sample its comparison plans for in about a minute.
    knobs = {"rps": 1000, "variants": RELEASES[flag]}
    processes.start(
        directory,
        f"ai-service-{flag}",
        [
            sys.executable, "-m", "airollout_testbed.demo.ai_service", "--port", str(port), "--flag", flag,
            # The secret may start with "-": glued to its option, argparse never reads it as one.
            f"--env-secret={env['FEATBIT_ENV_SECRET']}", "--eval-url", env["FEATBIT_EVAL_URL"],
            "--streaming-url", env["FEATBIT_EVAL_URL"].replace("http", "ws", 1),
            "--seed", str(seed), "--knobs", json.dumps(knobs),
        ],
    )  # fmt: skip
    add_scrape_target(directory, f"ai-service-{flag}", f"127.0.0.1:{port}", labels={"service": flag})
    _say(f"started a synthetic AI service for {flag} on :{port} (candidate behaves: {RELEASES[flag]['canary']})")


def _rollout(flag: str, env: dict[str, str]) -> dict[str, Any]:
    window = "30s"
    selector = f'service="{flag}",variant="{{{{variant}}}}"'
    return rollout_manifest(
        NAMESPACE,
        flag,
        flag=flag,
        env_id=env["FEATBIT_ENV_ID"],
        api_url=env["FEATBIT_API_URL"],
        stages=[
            {"name": "internal", "segments": ["internal-users"], "duration": "5s"},
            {"name": "canary", "percentage": 5, "duration": "20s"},
            {"name": "ramp-25", "percentage": 25, "duration": "15s"},
            {"name": "ramp-50", "percentage": 50, "duration": "15s"},
            {"name": "full", "percentage": 100, "duration": "10s"},
        ],
        prometheus={"url": env["PROMETHEUS_URL"]},
        analysis={"interval": "2s", "warmup": "5s"},
        guardrails=[
            {
                # Harm shown against the control, stage by stage: a doubled error rate at the most.
                "name": "error-rate",
                "compare": {
                    "statistic": "proportion",
                    "count": f"sum(increase(ai_requests_total{{{selector}}}[{{{{window}}}}]))",
                    "events": f"sum(increase(ai_errors_total{{{selector}}}[{{{{window}}}}]))",
                },
            },
            {
                "name": "latency-p95",
                "query": "histogram_quantile(0.95, sum by (le) "
                f"(rate(ai_request_duration_seconds_bucket{{{selector}}}[{window}])))",
                "max": 1.5,
            },
        ],
        onBreach="rollback",
    )


def _watch(kubectl: _Kubectl) -> dict[str, str]:
    """Print every change of phase, stage or guardrail summary until both rollouts have finished (or time is up:
    the phases reached so far are returned either way)."""
    seen: dict[str, tuple[Any, ...]] = {}
    phases: dict[str, str] = {}

    def all_finished() -> bool:
        listed = json.loads(kubectl("-n", NAMESPACE, "get", "airollouts", "-o", "json").stdout)
        for item in listed["items"]:
            name, status = item["metadata"]["name"], item.get("status") or {}
            line = (
                status.get("phase"),
                status.get("stageName"),
                status.get("percentage"),
                status.get("guardrailSummary"),
            )
            if seen.get(name) != line:
                seen[name] = line
                phase, stage, percentage, summary = line
                shown = f"{percentage:g}%" if isinstance(percentage, (int, float)) else "-"
                clock = time.strftime("%H:%M:%S")
                print(f"  {clock}  {name:<14} {phase or 'Pending':<12} {stage or '-':<9} {shown:>5}  {summary or ''}")
            if status.get("phase") in ("Promoted", "RolledBack", "Failed"):
                phases[name] = status["phase"]
        return len(phases) == len(RELEASES)

    with contextlib.suppress(TimedOut):
        wait_for("both rollouts to finish", all_finished, timeout=TIMEOUT_SECONDS, interval=1)
    return phases


class _Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.binary = str(tool("kubectl"))

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], input=input, capture_output=True, text=True, env=self.env, check=check
        )


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)
