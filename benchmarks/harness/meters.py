"""What a run costs, read from outside the processes that pay for it: counters read at both ends of a window.

A process's CPU comes from the kernel (``/proc/PID/stat``), its peak memory from ``/proc/PID/status``; the
load it puts on its neighbours comes from each neighbour's own count: the FeatBit double's request counter,
Prometheus's and the apiserver's ``/metrics``. Nothing here asks the measured process how much it thinks
it costs, and every counter only grows, so a window's figure is the difference between two readings.
"""

from __future__ import annotations

import math
import os
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "WRITE_VERBS",
    "Histogram",
    "apiserver_writes",
    "cpu_seconds",
    "histogram",
    "peak_rss_mib",
    "prometheus_instant_queries",
    "reset_peak_rss",
    "samples",
    "scrape",
]

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
"""The apiserver's verbs that change what etcd stores (APPLY is a server-side apply)."""

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far, user and system (utime + stime in ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15, counted after the command name


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) since it started or since `reset_peak_rss`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Start a new peak: VmHWM becomes the current resident set (Linux's ``clear_refs`` value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def scrape(url: str, headers: Mapping[str, str] | None = None) -> str:
    """The text of a ``/metrics`` page (or any page), fetched with ``headers``."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=10) as response:
        text: str = response.read().decode()
        return text


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """Every sample called ``name`` in a Prometheus text page: its labels and value."""
    # An apiserver's page runs to megabytes; parsing only the lines of one metric keeps a reading cheap.
    lines = "\n".join(line for line in text.splitlines() if line.startswith(name))
    for family in text_string_to_metric_families(lines + "\n"):
        for sample in family.samples:
            if sample.name == name:
                yield dict(sample.labels), float(sample.value)


def prometheus_instant_queries(text: str) -> float:
    """Instant queries Prometheus has answered (``prometheus_http_requests_total{handler="/api/v1/query"}``)."""
    return sum(
        value
        for labels, value in samples(text, "prometheus_http_requests_total")
        if labels.get("handler") == "/api/v1/query"
    )


def apiserver_writes(text: str) -> dict[str, float]:
    """Write requests the apiserver has answered, keyed ``VERB resource[/subresource]``."""
    writes: dict[str, float] = {}
    for labels, value in samples(text, "apiserver_request_total"):
        if labels.get("verb") in WRITE_VERBS:
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            key = f"{labels['verb']} {resource}"
            writes[key] = writes.get(key, 0.0) + value
    return writes


@dataclass(frozen=True)
class Histogram:
    """One Prometheus histogram at one moment: cumulative bucket counts by upper bound, count and sum."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def minus(self, earlier: Histogram) -> Histogram:
        """What was observed between ``earlier`` and this reading."""
        before = dict(earlier.buckets)
        return Histogram(
            tuple((bound, count - before.get(bound, 0.0)) for bound, count in self.buckets),
            self.count - earlier.count,
            self.sum - earlier.sum,
        )

    def quantile_bound(self, fraction: float) -> float | None:
        """The upper bound of the bucket that holds the ``fraction`` quantile (None when nothing was observed)."""
        if self.count <= 0:
            return None
        wanted = fraction * self.count
        return next((bound for bound, count in self.buckets if count >= wanted), None)

    def summary(self) -> dict[str, Any]:
        """Count, mean and the bucket bounds of p50 and p99, for a JSON report."""
        mean = self.sum / self.count if self.count else None
        return {
            "count": self.count,
            "mean_s": mean,
            "p50_at_most_s": _json_bound(self.quantile_bound(0.5)),
            "p99_at_most_s": _json_bound(self.quantile_bound(0.99)),
        }


def _json_bound(bound: float | None) -> float | str | None:
    # JSON has no infinity: the last bucket's bound is written as Prometheus writes it.
    return "+Inf" if bound == math.inf else bound


def histogram(text: str, name: str, matching: Callable[[Mapping[str, str]], bool] = lambda labels: True) -> Histogram:
    """The histogram ``name`` in a Prometheus text page, its series that satisfy ``matching`` added up."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for labels, value in samples(text, f"{name}_bucket"):
        if matching(labels):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    for labels, value in samples(text, f"{name}_count"):
        if matching(labels):
            count += value
    for labels, value in samples(text, f"{name}_sum"):
        if matching(labels):
            total += value
    return Histogram(tuple(sorted(buckets.items())), count, total)
