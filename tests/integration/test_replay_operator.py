"""`airollout replay` beside a live rollout: the same manifest, the same Prometheus, the same decisions.

A rollout runs live first (`airollout run`, comparisons on the synthetic AI service split by FeatBit's SDK,
scraped every second); then `airollout replay` runs the same manifest over the same range, starting at the
live rollout's `Started`, so its analyses fall on the same wall-clock ticks. What a team reads off a replay
of a past release is what the operator did (or would do) with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from airollout_testbed.demo.ai_service import Behaviour, Knobs
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.waiting import wait_for
from tests.integration.test_comparisons_operator import FLAG, HEALTHY, NAME, compared
from tests.support.guardrails import ScrapedService, StartScrapedService
from tests.support.operator import apply, create_token_secret, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

DECIDING = ("StageAdvanced", "Promoted", "GuardrailBreached", "RolledBack", "SampleRatioMismatch")
INTERVAL = timedelta(seconds=2)  # the manifest's analysis.interval


@pytest.fixture
def flag(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


def live_then_replayed(
    testbed: Testbed, flag: FeatBitDouble, namespace: str, workload: ScrapedService, phase: str, tmp_path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The live rollout's history and the replay's entries, decision by decision, over the same range."""
    manifest = compared(testbed, flag, namespace, workload)
    apply(testbed, manifest)
    history: list[dict[str, Any]] = wait_for_phase(testbed, namespace, NAME, phase, timeout=300)["history"]
    started = next(e["time"] for e in history if e["reason"] == "Started")
    ended = _time(history[-1]["time"]) + 3 * INTERVAL
    _wait_for_scrapes_after(testbed.prometheus_url, workload.job, ended)

    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    replay = subprocess.run(
        [
            sys.executable, "-m", "airollout", "replay", "-f", str(path), "--from", started, "--to", ended.isoformat(),
            "--prometheus-url", testbed.prometheus_url, "--output", "json",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    document = json.loads(replay.stdout)
    assert document["stopped"] == f"the rollout is {phase}"
    return history, [entry for decision in document["decisions"] for entry in decision["entries"]]


def deciding(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["reason"], e.get("stage")) for e in entries if e["reason"] in DECIDING]


def test_replay_of_a_promoted_release_advances_and_promotes_as_the_operator_did(
    testbed: Testbed, namespace: str, flag: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, tmp_path: Path,
) -> None:  # fmt: skip
    workload = scraped_ai_service(FLAG, Knobs(default=HEALTHY))

    live, replayed = live_then_replayed(testbed, flag, namespace, workload, "Promoted", tmp_path)

    assert (
        deciding(replayed)
        == deciding(live)
        == [("StageAdvanced", "ramp-25"), ("StageAdvanced", "full"), ("Promoted", "full")]
    )
    # On the same ticks: each stage is left within a tick or two of when the operator left it.
    for mine, theirs in zip(_times(replayed), _times(live), strict=True):
        assert abs(mine - theirs) <= 2 * INTERVAL, (mine, theirs)
    (advanced, *_) = [e for e in replayed if e["reason"] == "StageAdvanced"]
    (verdict,) = [g for g in advanced["guardrails"] if g["name"] == "error-rate"]
    assert verdict["outcome"] == "Passed"
    assert verdict["evidence"]["samplesNeeded"] == 0


def test_replay_of_a_rolled_back_release_breaches_at_the_same_stage(
    testbed: Testbed, namespace: str, flag: FeatBitDouble, operator: OperatorProcess,
    scraped_ai_service: StartScrapedService, tmp_path: Path,
) -> None:  # fmt: skip
    doubled = Knobs(default=HEALTHY, variants={"canary": Behaviour(error_rate=0.02)})
    workload = scraped_ai_service(FLAG, doubled)

    live, replayed = live_then_replayed(testbed, flag, namespace, workload, "RolledBack", tmp_path)

    assert deciding(replayed) == deciding(live)
    (breach,) = [e for e in replayed if e["reason"] == "GuardrailBreached"]
    assert "harm shown" in breach["message"]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _times(entries: list[dict[str, Any]]) -> list[datetime]:
    return [_time(e["time"]) for e in entries if e["reason"] in DECIDING]


def _wait_for_scrapes_after(prometheus_url: str, job: str, moment: datetime) -> None:
    """Until Prometheus holds a scrape of ``job`` later than ``moment``: the replay's range is then all there."""

    def scraped_since() -> bool:
        answer = httpx.get(
            f"{prometheus_url}/api/v1/query", params={"query": f'timestamp(up{{job="{job}"}})'}, timeout=5
        )
        result = answer.json()["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > moment.timestamp()

    wait_for(f"Prometheus to scrape {job} after {moment.isoformat()}", scraped_since, timeout=30, interval=0.5)
