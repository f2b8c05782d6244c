"""The one way every benchmark reads its arguments and prints its figures.

Figures are printed, never asserted: a timing depends on the machine, and a benchmark that fails on a slow
machine teaches nothing a printed number does not.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence

__all__ = ["header", "percentile", "report", "trials"]


def trials(description: str, default: int) -> int:
    """The number of trials from ``--trials N`` (``default`` when absent)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--trials", type=int, default=default, help="how many trials (default: %(default)s)")
    count: int = parser.parse_args().trials
    if count < 1:
        parser.error("--trials must be at least 1")
    return count


def header(title: str, *how: str) -> None:
    """What is measured (the title) and how (one line each), printed before any figure."""
    print(f"== {title}")
    for line in how:
        print(f"   {line}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: a value that was observed, never an interpolation between two."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def report(label: str, seconds: Sequence[float], unit: str = "ms") -> None:
    """Print ``label: median / p99 / max`` of ``seconds`` in ``unit`` (ms or s), with N."""
    scale, digits = {"ms": (1000.0, 1), "s": (1.0, 2)}[unit]
    figures = [statistics.median(seconds), percentile(seconds, 0.99), max(seconds)]
    median, p99, worst = (f"{value * scale:.{digits}f} {unit}" for value in figures)
    print(f"{label}: median {median}, p99 {p99}, max {worst} (N={len(seconds)})")
