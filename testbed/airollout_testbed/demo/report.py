"""The demo's picture: each rollout's exposure over time beside its guardrails, drawn from what was recorded.

The numbers are the operator's own metrics as the sandbox Prometheus scraped them (`airollout_rollout_percentage`,
`airollout_guardrail_value`), so the picture shows what a dashboard would; stage boundaries and the breach come
from the rollout's status history, the audit trail `kubectl describe` shows. Each rollout gets an HTML page (the
figure as inline SVG, then its history as a table) and a PNG of the same figure, drawn with matplotlib, which
needs no browser. Every drawn series carries an SVG id (`exposure`, `guardrail-NAME-SEGMENT-VARIANT`,
`stage-NAME`, `breach`, `promoted`), so a reader, or a test, can tell what was drawn.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # files only: no display, no browser

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

__all__ = ["Report", "write_reports"]

_STEP_SECONDS = 1.0
_ENTERED = ("Started", "StageAdvanced", "Recovered")
_BREACH = ("GuardrailBreached", "RolledBack", "KillSwitchEngaged")
_VARIANT_STYLE = {"candidate": "-", "control": "--"}
_AFTER_THE_END_SECONDS = 15.0
_LAST_SCRAPE_SLACK = 2.0
"""Seconds a final value takes to be scraped (every second) after the decision it led to."""


@dataclass(frozen=True)
class Series:
    """One line of the figure: Unix times and values."""

    times: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Report:
    """What was written for one rollout."""

    rollout: str
    html: Path
    png: Path


def write_reports(
    directory: Path, prometheus_url: str, rollouts: Sequence[Mapping[str, Any]], start: float, end: float
) -> list[Report]:
    """Write ``directory``/NAME.html and NAME.png for each AIRollout object in ``rollouts`` over [start, end]."""
    directory.mkdir(parents=True, exist_ok=True)
    reports = []
    with httpx.Client(base_url=prometheus_url, timeout=30) as prometheus:
        for rollout in rollouts:
            namespace, name = rollout["metadata"]["namespace"], rollout["metadata"]["name"]
            selector = f'namespace="{namespace}",rollout="{name}"'
            history = (rollout.get("status") or {}).get("history") or []
            # A rollout that ended early is drawn up to a little after its end, not stretched over the whole run.
            until = min(end, _ended(history) + _AFTER_THE_END_SECONDS)
            exposure = _range(prometheus, f"airollout_rollout_percentage{{{selector}}}", start, until)
            guardrails = _range(prometheus, f"airollout_guardrail_value{{{selector}}}", start, until)
            figure = _figure(name, exposure, guardrails, history, start)
            png, svg = directory / f"{name}.png", io.StringIO()
            figure.savefig(png, dpi=80)
            figure.savefig(svg, format="svg")
            plt.close(figure)
            page = directory / f"{name}.html"
            page.write_text(_page(namespace, name, (rollout.get("status") or {}).get("phase"), svg.getvalue(), history))
            reports.append(Report(name, page, png))
    return reports


def _range(prometheus: httpx.Client, query: str, start: float, end: float) -> dict[tuple[tuple[str, str], ...], Series]:
    """Every series ``query`` returns over the range, keyed by its labels."""
    answer = prometheus.get(
        "/api/v1/query_range", params={"query": query, "start": start, "end": end, "step": _STEP_SECONDS}
    )
    answer.raise_for_status()
    found = {}
    for result in answer.json()["data"]["result"]:
        points = [(float(t), float(v)) for t, v in result["values"]]
        found[tuple(sorted(result["metric"].items()))] = Series(
            tuple(t for t, _ in points), tuple(v for _, v in points)
        )
    return found


def _figure(
    name: str,
    exposure: Mapping[tuple[tuple[str, str], ...], Series],
    guardrails: Mapping[tuple[tuple[str, str], ...], Series],
    history: Sequence[Mapping[str, Any]],
    start: float,
) -> Any:
    by_guardrail: dict[str, list[tuple[Mapping[str, str], Series]]] = {}
    for labels, series in sorted(guardrails.items()):
        named = dict(labels)
        by_guardrail.setdefault(named["guardrail"], []).append((named, series))
    # Guardrails are measured until the rollout ends; the gauges keep the last value after, which is no news.
    until = _ended(history) + _LAST_SCRAPE_SLACK
    rows = 1 + len(by_guardrail)
    figure, axes = plt.subplots(rows, 1, sharex=True, figsize=(9, 2.2 + 1.9 * rows), squeeze=False)
    top = axes[0][0]
    for series in exposure.values():
        top.step(_since(series.times, start), series.values, where="post", color="tab:blue", gid="exposure")
    top.set_ylabel("candidate exposure (%)")
    top.set_ylim(-5, 105)
    top.set_title(f"AIRollout {name}: exposure and guardrails over time")
    for row, (guardrail, lines) in enumerate(sorted(by_guardrail.items()), start=1):
        axis = axes[row][0]
        for metric, series in lines:
            segment, variant = metric.get("segment", ""), metric.get("variant", "")
            measured = [(t, v) for t, v in zip(series.times, series.values, strict=True) if t <= until]
            axis.plot(
                _since([t for t, _ in measured], start),
                [v for _, v in measured],
                _VARIANT_STYLE.get(variant, ":"),
                label=f"{variant} {segment}".strip(),
                gid=f"guardrail-{guardrail}-{segment}-{variant}",
            )
        threshold = _threshold(history, guardrail)
        if threshold is not None:
            axis.axhline(threshold, color="tab:red", linewidth=0.8, linestyle=":", label=f"threshold {threshold:.3g}")
        axis.set_ylabel(guardrail)
        axis.legend(loc="upper left", fontsize="small")
    _mark_history([row[0] for row in axes], history, start)
    axes[-1][0].set_xlabel("seconds since the demo applied its rollouts")
    figure.tight_layout()
    return figure


def _mark_history(axes: Sequence[Axes], history: Sequence[Mapping[str, Any]], start: float) -> None:
    """A dotted line where each stage began, named on the top panel; a red line where the breach was acted on."""
    breached = False
    for entry in history:
        at = _since((_time(entry["time"]),), start)[0]
        reason = entry.get("reason")
        if reason in _ENTERED:
            stage = entry.get("stage") or ""
            for index, axis in enumerate(axes):
                gid = f"stage-{stage}" if index == 0 else None  # ids are unique in a page
                axis.axvline(at, color="grey", linewidth=0.7, linestyle="--", gid=gid)
            axes[0].annotate(stage, (at, 102), fontsize="small", rotation=90, va="top", ha="left", color="grey")
        elif reason in _BREACH and not breached:
            breached = True  # the first one: the rollback that follows a breach is the same moment
            for index, axis in enumerate(axes):
                axis.axvline(at, color="tab:red", linewidth=1.5, gid="breach" if index == 0 else None)
            axes[0].annotate(f"{reason}", (at, 50), fontsize="small", color="tab:red", ha="left")
        elif reason == "Promoted":
            for index, axis in enumerate(axes):
                axis.axvline(at, color="tab:green", linewidth=1.5, gid="promoted" if index == 0 else None)
            axes[0].annotate("Promoted", (at, 50), fontsize="small", color="tab:green", ha="right")


def _ended(history: Sequence[Mapping[str, Any]]) -> float:
    """When the rollout reached a final phase (infinity while it runs)."""
    ends = [_time(e["time"]) for e in history if e.get("reason") in (*_BREACH, "Promoted")]
    return min(ends, default=math.inf)


def _threshold(history: Sequence[Mapping[str, Any]], guardrail: str) -> float | None:
    for entry in reversed(history):
        for judged in entry.get("guardrails") or []:
            if judged.get("name") == guardrail and judged.get("threshold") is not None:
                return float(judged["threshold"])
    return None


def _since(times: Sequence[float], start: float) -> list[float]:
    return [t - start for t in times]


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _page(namespace: str, name: str, phase: object, svg: str, history: Sequence[Mapping[str, Any]]) -> str:
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(entry.get(key) if entry.get(key) is not None else ''))}</td>"
            for key in ("time", "reason", "stage", "percentage", "message")
        )
        + "</tr>"
        for entry in history
    )
    svg_body = svg[svg.index("<svg") :]  # drop the XML prologue: the SVG sits inside HTML
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>AIRollout {html.escape(namespace)}/{html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%;text-align:left}}</style></head>
<body><h1>AIRollout {html.escape(namespace)}/{html.escape(name)}: {html.escape(str(phase))}</h1>
{svg_body}
<h2>History</h2>
<table><tr><th>time</th><th>reason</th><th>stage</th><th>%</th><th>message</th></tr>
{rows}
</table></body></html>
"""
