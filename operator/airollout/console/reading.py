"""What an AIRollout says, read off the object as kubectl returns it: the one reading every view shares.

The plugin reads the raw object rather than the operator's models, so it shows a rollout whose spec the
operator would refuse (that is when a person looks) and stays readable across operator versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airollout.model import POST_RELEASE_STAGE, Phase, parse_duration

__all__ = ["GuardrailLine", "RolloutView", "StageLine", "format_duration", "parse_time", "read_rollout"]


@dataclass(frozen=True)
class StageLine:
    name: str
    percentage: float
    segments: tuple[str, ...]
    duration: str | None
    state: str
    """``done``, ``current`` or ``next``."""


@dataclass(frozen=True)
class GuardrailLine:
    name: str
    segment: str
    outcome: str
    value: float | None
    threshold: float | None
    control_value: float | None
    message: str


@dataclass(frozen=True)
class RolloutView:
    namespace: str
    name: str
    phase: str
    flag: str
    stages: tuple[StageLine, ...]
    stage_index: int | None
    percentage: float | None
    bake_ends_at: datetime | None
    message: str
    pause_reason: str | None
    guardrails: tuple[GuardrailLine, ...]
    guardrail_summary: str
    history: tuple[Mapping[str, Any], ...]
    created: datetime | None

    @property
    def stage(self) -> StageLine | None:
        return self.stages[self.stage_index] if self.stage_index is not None else None

    @property
    def terminal(self) -> bool:
        return self.phase in (Phase.PROMOTED, Phase.COMPLETED, Phase.ROLLED_BACK, Phase.FAILED)

    def bake_left(self, now: datetime) -> timedelta | None:
        """Time left in this stage's bake while the rollout progresses; None when nothing is baking."""
        if self.bake_ends_at is None or self.phase != Phase.PROGRESSING:
            return None
        return max(timedelta(0), self.bake_ends_at - now)

    def summary(self) -> str:
        """One line for logs and CI: phase, stage, exposure and what the operator last said."""
        where = ""
        if self.stage is not None:
            where = f" stage {self.stage_index + 1 if self.stage_index is not None else 0}/{len(self.stages)}"
            where += f" {self.stage.name} {self.percentage or 0:g}%"
        said = f": {self.message}" if self.message else ""
        return f"{self.namespace}/{self.name} {self.phase}{where}{said}"


def read_rollout(rollout: Mapping[str, Any]) -> RolloutView:
    meta: Mapping[str, Any] = rollout.get("metadata") or {}
    spec: Mapping[str, Any] = rollout.get("spec") or {}
    status: Mapping[str, Any] = rollout.get("status") or {}
    phase = str(status.get("phase") or Phase.PENDING)
    index = status.get("stageIndex")
    index = index if isinstance(index, int) else None
    stages = tuple(_stage(raw, position, index, phase) for position, raw in enumerate(_path(spec)))
    if index is not None and index >= len(stages):
        index = None  # the spec lost stages since: show none as current rather than a wrong one
    flag: Mapping[str, Any] = spec.get("flag") or {}
    return RolloutView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        phase=phase,
        flag=f"{flag.get('key', '?')} ({flag.get('candidate', '?')} over {flag.get('control', '?')})",
        stages=stages,
        stage_index=index,
        percentage=_number(status.get("percentage")),
        bake_ends_at=_bake_end(stages[index] if index is not None else None, status.get("stageStartedAt")),
        message=str(status.get("message") or ""),
        pause_reason=status.get("pauseReason"),
        guardrails=tuple(_guardrail(entry) for entry in status.get("guardrails") or []),
        guardrail_summary=str(status.get("guardrailSummary") or ""),
        history=tuple(status.get("history") or []),
        created=parse_time(meta.get("creationTimestamp")),
    )


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time as the apiserver writes it, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_duration(span: timedelta) -> str:
    """``1h02m``, ``4m05s``, ``12s``: as kubectl shows ages."""
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _stage(raw: Mapping[str, Any], position: int, current: int | None, phase: str) -> StageLine:
    if phase == Phase.COMPLETED:
        state = "done"  # the post-release watch too, though the status points back at the last stage
    elif current is None:
        state = "next"
    elif position < current or (position == current and phase == Phase.PROMOTED):
        state = "done"
    else:
        state = "current" if position == current else "next"
    return StageLine(
        name=str(raw.get("name") or f"stage-{position + 1}"),
        percentage=_number(raw.get("percentage")) or 0.0,
        segments=tuple(str(s) for s in raw.get("segments") or []),
        duration=raw.get("duration"),
        state=state,
    )


def _path(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The stages, then the post-release watch when the spec asks for one: the operator walks it as a stage."""
    stages = list(spec.get("stages") or [])
    watch = spec.get("postRelease")
    if isinstance(watch, Mapping) and stages:
        holdback = _number(watch.get("holdback"))
        percentage = 100 - (2.0 if holdback is None else holdback)
        stages.append({"name": POST_RELEASE_STAGE, "percentage": percentage, "duration": watch.get("duration")})
    return stages


def _bake_end(stage: StageLine | None, started: object) -> datetime | None:
    start = parse_time(started)
    if stage is None or start is None or not stage.duration:
        return None
    try:
        return start + parse_duration(stage.duration)
    except ValueError:
        return None


def _guardrail(entry: Mapping[str, Any]) -> GuardrailLine:
    return GuardrailLine(
        name=str(entry.get("name") or ""),
        segment=str(entry.get("segment") or ""),
        outcome=str(entry.get("outcome") or ""),
        value=_number(entry.get("value")),
        threshold=_number(entry.get("threshold")),
        control_value=_number(entry.get("controlValue")),
        message=str(entry.get("message") or ""),
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
