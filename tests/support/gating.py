"""Which call of an example service `airollout gate` is tried on, as `airollout gate` takes it."""

from __future__ import annotations

import re

from airollout_testbed.ai_corpus import Example, expected_sites

__all__ = ["gated_site"]


def gated_site(example: Example) -> tuple[str, str]:
    """``PATH:LINE`` of the first unguarded call after the entry function's definition, and its model."""
    path, function = example.entry.split(":")
    lines = example.files[path].splitlines()
    start = next(
        number
        for number, line in enumerate(lines, start=1)
        if re.search(rf"\b(def|function) {function}\(|^\s*(async )?{function}\(", line)
    )
    site = min(
        (s for s in expected_sites(example) if s.path == path and s.line > start and not s.guarded),
        key=lambda s: s.line,
    )
    return f"{site.path}:{site.line}", site.model or ""
