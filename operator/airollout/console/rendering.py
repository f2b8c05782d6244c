"""How the plugin draws a rollout with rich: the table of `get`, the trail of `history`, the `status` view.

rich works out what the terminal can do (colours, width, whether it is a terminal at all), so the same
renderables serve a person at a terminal and a pipe into a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from airollout.console.reading import GuardrailLine, RolloutView, format_duration, parse_time
from airollout.model import Phase

__all__ = ["history_table", "rollouts_table", "status_view"]

_EVENTS_SHOWN = 6
_PHASE_STYLE: dict[str, str] = {
    Phase.PROGRESSING: "cyan",
    Phase.PAUSED: "yellow",
    Phase.PROMOTED: "green",
    Phase.COMPLETED: "green",
    Phase.ROLLED_BACK: "red",
    Phase.FAILED: "red",
}
_OUTCOME_STYLE = {"Passed": "green", "Warning": "yellow", "Breached": "red", "Error": "red", "NoData": "dim"}


def rollouts_table(views: Sequence[RolloutView], now: datetime, *, all_namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    if all_namespaces:
        table.add_column("NAMESPACE")
    for column in ("NAME", "PHASE", "STAGE", "EXPOSURE", "BAKE LEFT", "GUARDRAILS", "AGE"):
        table.add_column(column)
    for view in views:
        left = view.bake_left(now)
        stage = f"{(view.stage_index or 0) + 1}/{len(view.stages)} {view.stage.name}" if view.stage else "-"
        row: list[RenderableType] = [
            view.name,
            _phase(view.phase),
            stage,
            f"{view.percentage:g}%" if view.percentage is not None else "-",
            format_duration(left) if left is not None else "-",
            view.guardrail_summary or "-",
            format_duration(now - view.created) if view.created else "-",
        ]
        table.add_row(*([view.namespace] if all_namespaces else []), *row)
    return table


def history_table(view: RolloutView) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"{view.namespace}/{view.name}")
    for column in ("TIME", "REASON", "STAGE", "%", "ACTOR", "GUARDRAILS", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for entry in view.history:
        percentage = entry.get("percentage")
        table.add_row(
            str(entry.get("time") or ""),
            str(entry.get("reason") or ""),
            str(entry.get("stage") or "-"),
            f"{percentage:g}" if isinstance(percentage, int | float) else "-",
            str(entry.get("actor") or ""),
            "\n".join(_guardrail_value(g) for g in entry.get("guardrails") or []) or "-",
            str(entry.get("message") or ""),
        )
    return table


def status_view(view: RolloutView, events: Sequence[Mapping[str, Any]], now: datetime) -> RenderableType:
    """Stages with the current one marked, exposure, bake time left, guardrails per segment, last Events."""
    heading = Text.assemble((f"{view.namespace}/{view.name}", "bold"), "  ", _phase(view.phase), "  flag ", view.flag)
    exposure = Text(f"exposure {view.percentage or 0:g}%")
    left = view.bake_left(now)
    if left is not None:
        exposure.append(f"   bake {format_duration(left)} left")
    if view.pause_reason and view.phase == Phase.PAUSED:
        exposure.append(f"   paused: {view.pause_reason}", style="yellow")
    parts: list[RenderableType] = [heading, _stages(view), exposure]
    if view.message:
        parts.append(Text(view.message, style="dim"))
    if view.guardrails:
        parts.append(_guardrails(view.guardrails))
    if events:
        parts.append(_events(events[-_EVENTS_SHOWN:], now))
    return Group(*parts)


def _stages(view: RolloutView) -> Text:
    line = Text("stages ")
    for position, stage in enumerate(view.stages):
        if position:
            line.append(" → ", style="dim")
        label = f"{stage.name} {stage.percentage:g}%" + (f"+{len(stage.segments)}seg" if stage.segments else "")
        if stage.state == "done":
            line.append(f"✓ {label}", style="green")
        elif stage.state == "current":
            line.append(f"▶ {label}", style="bold reverse")
        else:
            line.append(label, style="dim")
    return line


def _guardrails(lines: Sequence[GuardrailLine]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title="guardrails", title_justify="left")
    for column in ("GUARDRAIL", "SEGMENT", "OUTCOME", "VALUE", "THRESHOLD", "CONTROL"):
        table.add_column(column)
    for line in lines:
        table.add_row(
            line.name,
            line.segment or "-",
            Text(line.outcome, style=_OUTCOME_STYLE.get(line.outcome, "")),
            _number(line.value),
            _number(line.threshold),
            _number(line.control_value),
        )
    return table


def _events(events: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title="events", title_justify="left")
    for column in ("AGE", "TYPE", "REASON", "MESSAGE"):
        table.add_column(column, overflow="fold" if column == "MESSAGE" else "ellipsis")
    for event in events:
        at = parse_time(event.get("eventTime") or event.get("lastTimestamp") or event.get("firstTimestamp"))
        kind = str(event.get("type") or "")
        table.add_row(
            format_duration(now - at) if at else "-",
            Text(kind, style="yellow" if kind == "Warning" else ""),
            str(event.get("reason") or ""),
            str(event.get("message") or ""),
        )
    return table


def _phase(phase: str) -> Text:
    return Text(phase, style=f"bold {_PHASE_STYLE.get(phase, '')}".strip())


def _guardrail_value(entry: Mapping[str, Any]) -> str:
    segment = f"[{entry['segment']}]" if entry.get("segment") else ""
    return f"{entry.get('name')}{segment}={_number(entry.get('value'))} {entry.get('outcome', '')}".strip()


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"
