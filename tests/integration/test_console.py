"""`kubectl airollout` as a platform engineer uses it: through the real kubectl, against the test bed.

kubectl finds `kubectl-airollout` on PATH (the environment's bin, where pip put it), as it would for a user;
the live view runs inside a real terminal (tmux), the CI wait in a pipe, completion through kubectl's own.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.sandbox.tools import tool
from airollout_testbed.waiting import wait_for
from tests.support.operator import apply, create_token_secret, get_rollout, status_of
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "new-embedding-model"
SLOW_STAGES = [
    {"name": "canary", "percentage": 5, "duration": "1h"},
    {"name": "ramp-25", "percentage": 25, "duration": "1h"},
    {"name": "full", "percentage": 100, "duration": "1h"},
]


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(key=FLAG, enabled_variation_id="canary", disabled_variation_id="stable")
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


@pytest.fixture
def env(testbed: Testbed) -> dict[str, str]:
    """A user's shell: kubectl and the plugin on PATH, the test bed's kubeconfig."""
    return {**testbed.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def plugin(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kubectl airollout ARGS`, found by kubectl on PATH."""
    return subprocess.run(
        [str(tool("kubectl")), "airollout", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def rollout(testbed: Testbed, double: FeatBitDouble, namespace: str, name: str, stages: list[Any]) -> None:
    apply(
        testbed,
        rollout_manifest(namespace, name, api_url=double.api_url, env_id=double.env_id, flag=FLAG, stages=stages),
    )


def until(testbed: Testbed, namespace: str, name: str, check: Callable[[dict[str, Any]], bool], log: Path) -> None:
    wait_for(f"{namespace}/{name}", lambda: check(status_of(testbed, namespace, name)), timeout=60, log=log)


def test_plugin_verbs_are_what_kubectl_annotate_sets_and_the_reason_is_recorded(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess, env: dict[str, str]
) -> None:
    for name in ("by-plugin", "by-annotate"):
        rollout(testbed, flag_env, namespace, name, SLOW_STAGES)
        until(testbed, namespace, name, lambda s: s.get("stageName") == "canary", operator.log)

    steps: list[tuple[list[str], str, Callable[[dict[str, Any]], bool]]] = [
        (["pause"], "pause", lambda s: s["phase"] == "Paused"),
        (["resume"], "resume", lambda s: s["phase"] == "Progressing"),
        (["promote"], "promote", lambda s: s.get("stageName") == "ramp-25"),
        (["promote", "--full"], "promote-full", lambda s: s["phase"] == "Promoted"),
    ]
    for number, (words, verb, done) in enumerate(steps):
        reason = f"change {number}: load test   passed"
        said = plugin(env, *words, "by-plugin", "-n", namespace, "--reason", reason)
        assert said.returncode == 0, said.stderr
        assert "annotated" in said.stdout
        testbed.kubectl(
            "-n", namespace, "annotate", "--overwrite", "airollout", "by-annotate",
            f"airollout.dev/action={verb}", f"airollout.dev/action-reason={reason}",
        )  # fmt: skip
        for name in ("by-plugin", "by-annotate"):
            until(testbed, namespace, name, done, operator.log)

    def trail(name: str) -> list[tuple[Any, ...]]:
        history = status_of(testbed, namespace, name)["history"]
        return [(e["reason"], e.get("stage"), e.get("percentage"), e["actor"], e.get("message")) for e in history]

    wait_for("both trails complete", lambda: len(trail("by-plugin")) == len(trail("by-annotate")), timeout=10)
    assert trail("by-plugin") == trail("by-annotate")
    paused = next(entry for entry in trail("by-plugin") if entry[0] == "Paused")
    assert paused[3] == "kubectl-annotate"
    assert paused[4].endswith("(reason: change 0: load test passed)")
    for name in ("by-plugin", "by-annotate"):
        annotations = get_rollout(testbed, namespace, name)["metadata"].get("annotations") or {}
        assert not {"airollout.dev/action", "airollout.dev/action-reason"} & set(annotations)

    listed = plugin(env, "get", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["by-plugin"][1:3] == ["Promoted", "3/3"]
    assert rows["by-plugin"][4] == "100%"
    everywhere = plugin(env, "get", "-A")
    assert any(line.split()[:2] == [namespace, "by-plugin"] for line in everywhere.stdout.splitlines())

    history = plugin(env, "history", "by-plugin", "-n", namespace)
    assert history.returncode == 0, history.stderr
    assert "change 1: load test passed" in history.stdout.replace("\n", " ")
    for column in ("TIME", "REASON", "STAGE", "ACTOR", "GUARDRAILS"):
        assert column in history.stdout

    shown = plugin(env, "status", "by-plugin", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert "✓ canary 5%" in shown.stdout
    assert "✓ full 100%" in shown.stdout
    assert "Promoted" in shown.stdout

    missing = plugin(env, "pause", "no-such-rollout", "-n", namespace)
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    too_long = plugin(env, "pause", "by-plugin", "-n", namespace, "--reason", "x" * 300)
    assert too_long.returncode == 2
    assert "--reason is 300 characters" in too_long.stderr


def test_status_timeout_exits_by_outcome_for_ci_and_kubectl_wait_agrees(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess, env: dict[str, str]
) -> None:
    quick = [{"name": "canary", "percentage": 10, "duration": "2s"}, {"name": "full", "percentage": 100}]
    rollout(testbed, flag_env, namespace, "quick", quick)
    ci = plugin(env, "status", "quick", "-n", namespace, "--timeout", "60s", "--interval", "1s")
    assert ci.returncode == 0, ci.stderr + ci.stdout
    lines = ci.stdout.splitlines()
    assert "\x1b[" not in ci.stdout
    assert any(f"{namespace}/quick Progressing stage 1/2 canary 10%" in line for line in lines), lines
    assert lines[-1] == f"{namespace}/quick is Promoted"
    assert len(lines) == len(set(lines))  # one line per change, never a repeat
    waited = testbed.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Promoted", "airollout/quick", "--timeout=10s"
    )
    assert "condition met" in waited.stdout

    rollout(testbed, flag_env, namespace, "held", SLOW_STAGES)
    until(testbed, namespace, "held", lambda s: s.get("stageName") == "canary", operator.log)
    out_of_time = plugin(env, "status", "held", "-n", namespace, "--timeout", "3s", "--interval", "1s")
    assert out_of_time.returncode == 2
    assert "within --timeout 3s" in out_of_time.stderr

    assert plugin(env, "pause", "held", "-n", namespace).returncode == 0
    until(testbed, namespace, "held", lambda s: s["phase"] == "Paused", operator.log)
    stuck = plugin(env, "status", "held", "-n", namespace, "--timeout", "60s", "--paused-timeout", "2s")
    assert stuck.returncode == 3
    assert "longer than --paused-timeout 2s" in stuck.stderr

    assert plugin(env, "abort", "held", "-n", namespace, "--reason", "pager").returncode == 0
    aborted = plugin(env, "status", "held", "-n", namespace, "--timeout", "60s", "--interval", "1s")
    assert aborted.returncode == 1
    assert aborted.stdout.splitlines()[-1].startswith(f"{namespace}/held is RolledBack")


@pytest.fixture
def tmux(env: dict[str, str]) -> Iterator[Callable[[str], str]]:
    """A terminal of our own (its own tmux server socket): start a command in it, read its screen."""
    socket = f"airollout-{uuid.uuid4().hex[:8]}"
    base = ["tmux", "-L", socket]

    def run(command: str) -> str:
        pane = [f"-e{key}={env[key]}" for key in ("PATH", "KUBECONFIG")]
        subprocess.run([*base, "new-session", "-d", "-x", "140", "-y", "50", *pane, command], check=True, env=env)
        return socket

    yield run
    subprocess.run([*base, "kill-server"], capture_output=True, check=False)


def screen(socket: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p"], capture_output=True, text=True, check=True
    ).stdout


def test_watch_redraws_in_place_in_a_terminal_and_prints_lines_in_a_pipe(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess, env: dict[str, str],
    tmux: Callable[[str], str],
) -> None:  # fmt: skip
    rollout(testbed, flag_env, namespace, "watched", SLOW_STAGES)
    until(testbed, namespace, "watched", lambda s: s.get("stageName") == "canary", operator.log)
    command = f"kubectl airollout status watched -n {shlex.quote(namespace)} --watch --interval 1s"
    socket = tmux(command)
    first = wait_for("the live view", lambda: "▶ canary 5%" in (s := screen(socket)) and s, timeout=30)
    assert "exposure 5%" in first
    assert "bake 59m" in first  # a 1h stage that just started
    assert "Started" in first  # the last Events

    piped = subprocess.Popen(
        [str(tool("kubectl")), "airollout", "status", "watched", "-n", namespace, "--watch", "--interval", "1s"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert piped.stdout is not None
        assert "Progressing stage 1/3 canary 5%" in piped.stdout.readline()
        assert plugin(env, "promote", "watched", "-n", namespace).returncode == 0
        second = wait_for("the redraw", lambda: "▶ ramp-25 25%" in (s := screen(socket)) and s, timeout=30)
        assert "✓ canary 5%" in second
        assert second.count(f"{namespace}/watched") == 1  # redrawn in place, not appended below
        changed = piped.stdout.readline()
        assert "Progressing stage 2/3 ramp-25 25%" in changed
        assert "\x1b[" not in changed
    finally:
        piped.terminate()
        piped.wait(timeout=10)


def test_completion_through_kubectl_and_the_bash_script(
    testbed: Testbed, airollout_crd: Path, namespace: str, flag_env: FeatBitDouble, env: dict[str, str]
) -> None:
    rollout(testbed, flag_env, namespace, "embedding-v2", SLOW_STAGES)
    kubectl = str(tool("kubectl"))
    verbs = subprocess.run(
        [kubectl, "__complete", "airollout", "pro"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "promote" in verbs
    names = subprocess.run(
        [kubectl, "__complete", "airollout", "status", "-n", namespace, "emb"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert "embedding-v2" in names
    script = (
        'source <(kubectl-airollout completion bash); COMP_WORDS=(kubectl-airollout pause -n "$NS" "");'
        ' COMP_CWORD=4; _airollout_complete; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    offered = subprocess.run(
        ["bash", "-c", script], env={**env, "NS": namespace}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert offered == ["embedding-v2"]


def test_events_name_airollout_as_their_source(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, operator: OperatorProcess
) -> None:
    rollout(testbed, flag_env, namespace, "embedding-v2", SLOW_STAGES)
    until(testbed, namespace, "embedding-v2", lambda s: s.get("stageName") == "canary", operator.log)
    listed = json.loads(testbed.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    assert listed
    assert {(e["source"].get("component"), e.get("reportingComponent")) for e in listed} == {("airollout", "airollout")}
    described = testbed.kubectl("-n", namespace, "describe", "airollout", "embedding-v2").stdout
    assert "airollout  " in described.split("Events:")[1]  # the From column
