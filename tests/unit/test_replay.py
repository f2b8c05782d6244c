"""`airollout replay`: a rollout's policy run over past data, decision by decision, with nothing written.

Prometheus is a table of steady rates here (each counter grows at its rate, so ``increase(x[540s])`` is the
rate times 540); the same replay runs against the test bed's real Prometheus, beside a live rollout, in
tests/integration/test_replay_operator.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from airollout.cli import main
from airollout.guardrails.judging import Sample
from airollout.model import AIRolloutSpec, Phase
from airollout.replay.command import ReplayRefused, parse_time, read_manifest
from airollout.replay.replaying import Replay, replay
from airollout.replay.report import HOLD, table, to_json

T1 = datetime(2026, 11, 30, 12, 0, 7, tzinfo=UTC)  # off the grid, as a rollout's start is
INTERVAL = 30
ERRORS = {
    "name": "error-rate",
    "compare": {
        "statistic": "proportion",
        "count": 'sum(increase(requests_total{variant="{{variant}}"}[{{window}}]))',
        "events": 'sum(increase(errors_total{variant="{{variant}}"}[{{window}}]))',
    },
}
LATENCY = {"name": "latency-p95", "query": 'p95_seconds{variant="{{variant}}"}', "max": 2.0}


def manifest(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flag": {
            "key": "summarizer",
            "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b",
            "candidate": "v2",
            "control": "v1",
        },
        "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
        "prometheus": {"url": "http://prometheus:9090"},
        "analysis": {"interval": f"{INTERVAL}s", "warmup": "60s"},
        "stages": [
            {"name": "canary", "percentage": 5, "duration": "10m"},
            {"name": "ramp-25", "percentage": 25, "duration": "10m"},
            {"name": "full", "percentage": 100},
        ],
        "guardrails": [ERRORS, LATENCY],
        **spec,
    }
    return {"apiVersion": "airollout.dev/v1alpha1", "kind": "AIRollout", "metadata": {"name": "s"}, "spec": body}


def spec_of(**spec: Any) -> AIRolloutSpec:
    return AIRolloutSpec.model_validate(manifest(**spec)["spec"])


class SteadyService:
    """Counters that grow at fixed rates, and gauges; records the evaluation time of every query."""

    def __init__(self, rates: Mapping[tuple[str, str], float]) -> None:
        self.rates = rates
        self.asked_at: list[float] = []

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        assert at is not None, "a replay always says when"
        self.asked_at.append(at)
        found = re.search(r'(\w+)\{variant="([^"]+)"\}(?:\[(\d+)s\])?', promql)
        assert found is not None, promql
        metric, variant, window = found.groups()
        value = self.rates[(metric, variant)] * (int(window) if window else 1)
        return [Sample({"variant": variant}, value)]


def service(candidate_errors: float, *, candidate_share: float = 0.05, p95: float = 0.4) -> SteadyService:
    """200 requests a second, 1% of the control's failing; the candidate's share of users as given."""
    rps = 200.0
    b, a = rps * 0.05, rps * 0.95
    return SteadyService(
        {
            ("requests_total", "v2"): b,
            ("errors_total", "v2"): b * candidate_errors,
            ("requests_total", "v1"): a,
            ("errors_total", "v1"): a * 0.01,
            ("p95_seconds", "v2"): p95,
            ("p95_seconds", "v1"): 0.4,
            ("users", "v2"): 5000 * candidate_share,
            ("users", "v1"): 5000 * (1 - candidate_share),
        }
    )


def replayed(spec: AIRolloutSpec, source: SteadyService, hours: float = 3) -> Replay:
    return asyncio.run(replay(spec, source, T1, T1 + timedelta(hours=hours), "shop"))


def decided(result: Replay, *reasons: str) -> list[tuple[str | None, tuple[str, ...]]]:
    """(stage, reasons) of the decisions that recorded any of ``reasons``."""
    return [(d.stage, d.reasons) for d in result.decisions if set(d.reasons) & set(reasons)]


def test_a_healthy_release_replays_to_promoted_stage_by_stage_on_evidence() -> None:
    source = service(candidate_errors=0.01)

    result = replayed(spec_of(), source)

    assert result.status.phase is Phase.PROMOTED
    assert result.stopped == "the rollout is Promoted"
    moves = decided(result, "Started", "StageAdvanced", "Promoted")
    assert moves == [
        ("canary", ("Started",)),
        ("ramp-25", ("StageAdvanced",)),
        ("full", ("StageAdvanced",)),
        ("full", ("Promoted",)),
    ]
    advanced = [d for d in result.decisions if "StageAdvanced" in d.reasons]
    # A stage is left no earlier than its duration, and only on an analysis that passed there and then.
    assert advanced[0].time >= T1 + timedelta(minutes=10)
    for decision in advanced:
        assert decision.summary == "2/2 Passed"
        (comparison,) = [g for g in decision.guardrails if g.name == "error-rate"]
        assert comparison.evidence is not None
        assert comparison.evidence.samples_needed == 0
        assert comparison.evidence.candidate_samples > 0


def test_analyses_fall_where_the_operator_makes_them_each_asked_at_its_own_past_time() -> None:
    source = service(candidate_errors=0.01)

    result = replayed(spec_of(), source)

    starts = [d.time for d in result.decisions if set(d.reasons) & {"Started", "StageAdvanced"}]
    bake_ends = {start + timedelta(minutes=10) for start in starts}
    measured = [d.measured_at for d in result.decisions if d.measured_at is not None]
    # The first analysis is taken as the rollout starts and a stage's last at its bake end; every other one on
    # the interval's wall-clock grid, where the operator takes them.
    assert measured[0] - T1 < timedelta(seconds=1)
    for moment in (m for m in measured if m.timestamp() % INTERVAL):
        assert any(timedelta(0) <= moment - due < timedelta(seconds=1) for due in {T1} | bake_ends), moment
    assert len(measured) > 40
    assert set(source.asked_at) == {m.timestamp() for m in measured}


def test_a_doubled_error_rate_replays_to_a_rollback_at_the_canary() -> None:
    result = replayed(spec_of(), service(candidate_errors=0.03))

    assert result.status.phase is Phase.ROLLED_BACK
    assert decided(result, "GuardrailBreached", "RolledBack") == [("canary", ("GuardrailBreached", "RolledBack"))]
    (breach,) = [d for d in result.decisions if "GuardrailBreached" in d.reasons]
    (comparison,) = [g for g in breach.guardrails if g.name == "error-rate"]
    assert comparison.outcome == "Breached"
    assert comparison.evidence is not None
    assert comparison.evidence.lower_bound is not None
    assert comparison.evidence.lower_bound > 0
    assert breach.time < T1 + timedelta(minutes=10)


def test_a_threshold_breach_rolls_back_with_its_value_and_limit_shown() -> None:
    result = replayed(spec_of(), service(candidate_errors=0.01, p95=2.5))

    assert result.status.phase is Phase.ROLLED_BACK
    first = result.decisions[1]
    assert first.reasons == ("GuardrailBreached", "RolledBack")
    assert first.time - T1 < timedelta(seconds=1)  # measured as the stage starts, as the operator does
    line = table(result).splitlines()[2]
    assert "GuardrailBreached,RolledBack" in line
    assert "latency-p95 Breached: 2.5 (limit 2, control 0.4)" in line


def test_a_broken_split_pauses_and_the_replay_stops_there_waiting_for_a_person() -> None:
    users = 'sum(users{variant="{{variant}}"})'
    spec = spec_of(analysis={"interval": f"{INTERVAL}s", "warmup": "60s", "sampleRatio": {"query": users}})

    result = replayed(spec, service(candidate_errors=0.01, candidate_share=0.03))

    assert result.status.phase is Phase.PAUSED
    assert result.decisions[-1].reasons == ("SampleRatioMismatch",)
    assert "only a person moves it on" in result.stopped
    split = result.decisions[-1].sample_ratio
    assert split is not None
    assert split.mismatch
    assert split.expected == 0.05


def test_a_range_that_ends_mid_stage_stops_there_and_says_where() -> None:
    end = T1 + timedelta(minutes=5)

    result = asyncio.run(replay(spec_of(), service(candidate_errors=0.01), T1, end, "shop"))

    assert result.status.phase is Phase.PROGRESSING
    assert result.stopped == "the range ended with the rollout Progressing at stage canary"
    assert result.decisions[-1].time <= end
    assert not decided(result, "StageAdvanced", "Promoted", "RolledBack")


def test_the_table_has_one_line_per_decision_and_the_json_every_number() -> None:
    result = replayed(spec_of(), service(candidate_errors=0.01))

    lines = table(result).splitlines()
    assert lines[0].split() == ["TIME", "DECISION", "STAGE", "%", "GUARDRAILS"]
    assert len(lines) == len(result.decisions) + 2
    assert lines[1].split()[:4] == ["2026-11-30T12:00:07Z", "Started", "canary", "5"]
    assert lines[-1] == "stopped: the rollout is Promoted"
    assert any(line.split()[1] == HOLD for line in lines[1:-1])
    document = json.loads(to_json(result, rollout="s"))
    assert document["rollout"] == "s"
    assert len(document["decisions"]) == len(result.decisions)
    advanced = next(d for d in document["decisions"] if d["decided"] == ["StageAdvanced"])
    evidence = next(g["evidence"] for g in advanced["guardrails"] if g["name"] == "error-rate")
    assert {"estimate", "lowerBound", "candidateSamples", "controlSamples"} <= set(evidence)


def test_times_are_rfc_3339_or_back_from_now() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    assert parse_time("now", now, "--to") == now
    assert parse_time("-2h", now, "--from") == now - timedelta(hours=2)
    assert parse_time("now-1h30m", now, "--from") == now - timedelta(minutes=90)
    assert parse_time("2026-11-30T10:00:00Z", now, "--from") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_time("2026-11-30T12:00:00+02:00", now, "--from") == datetime(2026, 11, 30, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("yesterday", "--from: 'yesterday' is not a time; write RFC 3339"),
        ("2026-11-30T10:00:00", "has no time zone; end it with Z (UTC) or an offset"),
        ("-2 hours", "is not a duration: write it like 30s, 10m or 1h30m"),
    ],
)
def test_a_time_that_cannot_be_read_is_refused_naming_the_flag_and_the_forms(text: str, said: str) -> None:
    with pytest.raises(ReplayRefused, match=re.escape(said)) as refused:
        parse_time(text, datetime(2026, 11, 30, tzinfo=UTC), "--from")
    assert str(refused.value).startswith("--from: ")


def write(tmp_path: Path, *documents: Any) -> str:
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return str(path)


def test_the_manifest_is_the_one_airollout_in_the_file_beside_its_secret(tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "featbit"}, "stringData": {"token": "x"}}
    rollout = manifest()
    rollout["metadata"]["namespace"] = "search"

    read = read_manifest(write(tmp_path, secret, rollout))

    assert (read.name, read.namespace, read.spec.flag.key) == ("s", "search", "summarizer")


@pytest.mark.parametrize(
    ("documents", "said"),
    [
        ([{"kind": "Secret"}], "holds no AIRollout (a document with kind: AIRollout); give a file with exactly one"),
        ([manifest(), manifest()], "holds 2 AIRollouts"),
        ([manifest(stages=[{"name": "a", "percentage": 150}])], "invalid spec: spec.stages.0.percentage"),
        (
            [manifest(guardrails=[{"templateRef": {"name": "ai-errors"}}])],
            "spec.guardrails[0].templateRef: templates live in the cluster",
        ),
    ],
)
def test_a_manifest_that_cannot_be_replayed_is_refused_naming_the_field(
    tmp_path: Path, documents: list[Any], said: str
) -> None:
    with pytest.raises(ReplayRefused, match=re.escape(said)):
        read_manifest(write(tmp_path, *documents))


def test_the_command_refuses_bad_input_with_exit_2_and_the_flag_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, manifest())

    assert main(["replay", "-f", path, "--from", "2026-01-01T10:00:00Z", "--to", "2026-01-01T09:00:00Z"]) == 2
    assert "--to: '2026-01-01T09:00:00Z' is not after --from" in capsys.readouterr().err
    assert main(["replay", "-f", path, "--from", "now"]) == 2
    assert "--from: 'now' is not in the past" in capsys.readouterr().err
    assert main(["replay", "-f", str(tmp_path / "missing.yaml"), "--from=-1h"]) == 2
    assert "-f: cannot read" in capsys.readouterr().err


def test_an_unreachable_prometheus_stops_the_command_before_any_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, manifest())

    # Port 9 (discard) on the loopback: nothing listens there, so the connection is refused at once.
    assert main(["replay", "-f", path, "--from=-1h", "--prometheus-url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "Prometheus at http://127.0.0.1:9 is unreachable" in err
    assert "--prometheus-url" in err
