"""A replay as people and programs read it: one line per decision, or JSON with every number.

The table is for tuning by eye: when each decision fell, what it was, where the rollout stood and the
guardrails' numbers behind it. The JSON keeps everything (history entries, evidence, the split's check)
in the CRD's camelCase, so a script can compare a replay with a rollout's own status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airollout.model import GuardrailStatus
from airollout.replay.replaying import Replay, ReplayedDecision

__all__ = ["HOLD", "table", "to_json"]

HOLD = "hold"
"""The decision column of a tick that changed nothing (not an Event reason: nothing was recorded)."""
_HEADER = ("TIME", "DECISION", "STAGE", "%", "GUARDRAILS")


def table(result: Replay) -> str:
    rows = [_HEADER, *(_row(decision) for decision in result.decisions)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER) - 1)]
    cells = [[*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]] for row in rows]
    lines = ["  ".join(row) for row in cells]
    return "\n".join([*lines, f"stopped: {result.stopped}"])


def to_json(result: Replay, **context: Any) -> str:
    """The replay as JSON; ``context`` (the rollout's name, the range) goes first, as given."""
    return json.dumps(
        {**context, "stopped": result.stopped, "decisions": [_decision(d) for d in result.decisions]}, indent=2
    )


def _row(decision: ReplayedDecision) -> tuple[str, str, str, str, str]:
    percentage = f"{decision.percentage:g}" if decision.percentage is not None else "-"
    return (
        _time(decision.time),
        ",".join(decision.reasons) or HOLD,
        decision.stage or "-",
        percentage,
        _guardrails(decision),
    )


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _guardrails(decision: ReplayedDecision) -> str:
    if decision.measured_at is None:
        return "-"
    parts = [decision.summary or "", *(_numbers(g) for g in decision.guardrails)]
    split = decision.sample_ratio
    if split is not None:
        mismatch = " MISMATCH" if split.mismatch else ""
        parts.append(f"split {split.observed:.2%} of {split.expected:.0%} (p {split.p_value:.3g}){mismatch}")
    return "; ".join(part for part in parts if part)


def _numbers(guardrail: GuardrailStatus) -> str:
    """One guardrail's segment in a few numbers: a comparison's estimate, bound and samples, or a threshold's."""
    name = f"{guardrail.name}{{{guardrail.segment}}}" if guardrail.segment else guardrail.name
    evidence = guardrail.evidence
    if evidence is not None:
        bound = f", lower bound {evidence.lower_bound:+.4g}" if evidence.lower_bound is not None else ""
        more = ""
        if evidence.samples_needed > 0:
            more = f", needs {evidence.samples_needed:.0f} more" + (
                f" (~{evidence.time_needed})" if evidence.time_needed else ""
            )
        samples = f"n {evidence.candidate_samples:.0f}/{evidence.control_samples:.0f}"
        return f"{name} {guardrail.outcome}: harm {evidence.estimate:+.4g}{bound}, {samples}{more}"
    if guardrail.value is None:
        return f"{name} {guardrail.outcome}"
    against = [f"limit {guardrail.threshold:.4g}"] if guardrail.threshold is not None else []
    if guardrail.control_value is not None:
        against.append(f"control {guardrail.control_value:.4g}")
    return f"{name} {guardrail.outcome}: {guardrail.value:.4g}" + (f" ({', '.join(against)})" if against else "")


def _decision(decision: ReplayedDecision) -> dict[str, Any]:
    def dumped(models: Sequence[Any]) -> list[Any]:
        return [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in models]

    return {
        "time": decision.time.isoformat(),
        "decided": list(decision.reasons),
        "phase": decision.phase.value,
        "stage": decision.stage,
        "percentage": decision.percentage,
        "measuredAt": decision.measured_at.isoformat() if decision.measured_at is not None else None,
        "summary": decision.summary,
        "guardrails": dumped(decision.guardrails),
        "sampleRatio": dumped([decision.sample_ratio])[0] if decision.sample_ratio is not None else None,
        "entries": dumped(decision.entries),
    }
