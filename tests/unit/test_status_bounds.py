"""Whatever a verb, Prometheus or FeatBit said, status always fits etcd, and a hostile spec is refused by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from airollout.model import AIRolloutStatus, GuardrailStatus, HistoryEntry
from airollout.model.status import GUARDRAILS_LIMIT, TEXT_LIMIT
from airollout.planner import Observation, plan
from airollout.reconciler import parse_spec
from tests.unit.test_planner import IN_SYNC, T0, at_stage, make_spec

ETCD_REQUEST_LIMIT = 1_572_864  # bytes: etcd's default --max-request-bytes


def _huge_status() -> AIRolloutStatus:
    segments = tuple(
        GuardrailStatus(
            name="error-rate",
            segment="pod=" + "x" * 5000 + str(i),
            outcome="Breached" if i % 200 == 0 else "Passed",
            value=float("inf") if i % 2 else 0.5,
            control_value=float("nan"),
            message="m" * 20_000,
        )
        for i in range(4000)
    )
    history = tuple(
        HistoryEntry(time=datetime.now(UTC), reason="ActionRejected", message="v" * 100_000, guardrails=segments)
        for _ in range(50)
    )
    return AIRolloutStatus(guardrails=segments, history=history, message="q" * 1_000_000)


def test_a_status_built_from_4000_series_and_100_kb_verbs_still_fits_etcd() -> None:
    written = _huge_status().to_k8s()
    body = json.dumps({"status": written}, allow_nan=False)  # the apiserver refuses Infinity and NaN
    assert len(body) < ETCD_REQUEST_LIMIT / 3
    assert len(written["guardrails"]) == GUARDRAILS_LIMIT  # type: ignore[arg-type]
    assert len(str(written["message"])) == TEXT_LIMIT


def test_what_is_cut_is_what_passed_and_a_summary_says_how_much() -> None:
    guardrails: list[dict[str, Any]] = _huge_status().to_k8s()["guardrails"]  # type: ignore[assignment]
    breached = [g for g in guardrails[:-1] if g["outcome"] == "Breached"]
    assert len(breached) == len(range(0, 4000, 200))
    assert guardrails[-1]["message"].startswith(f"{4000 - GUARDRAILS_LIMIT + 1} more segments not shown")
    assert "sum by" in guardrails[-1]["message"]


def test_an_infinite_value_is_left_out_of_status_but_kept_in_words() -> None:
    status = AIRolloutStatus(
        guardrails=(GuardrailStatus(name="e", outcome="Breached", value=float("inf"), message="+Inf > max 0.05"),)
    )
    entry = status.to_k8s()["guardrails"][0]  # type: ignore[index]
    assert "value" not in entry
    assert entry["message"] == "+Inf > max 0.05"


def test_an_unknown_verb_carrying_100_kb_is_rejected_in_bounded_words() -> None:
    spec = make_spec()
    decision = plan(spec, at_stage(spec, 1), Observation(flag=IN_SYNC, verb="x" * 100_000, actor="kubectl"), T0, 1)
    written = decision.status.to_k8s()
    assert decision.consume_verb
    assert all(len(json.dumps(entry)) < 4 * TEXT_LIMIT for entry in written["history"])  # type: ignore[attr-defined]


def test_a_duration_nobody_means_is_refused_naming_the_field() -> None:
    raw = make_spec().model_dump(by_alias=True, exclude_none=True)
    raw["stages"][1]["duration"] = "99999999999999h"
    spec, invalid = parse_spec(raw)
    assert spec is None
    assert invalid is not None
    assert "spec.stages.1.duration" in invalid
    assert "too long" in invalid
    raw["stages"][1]["duration"] = "9000h"
    _spec, invalid = parse_spec(raw)
    assert invalid is not None
    assert "longer than a year" in invalid
