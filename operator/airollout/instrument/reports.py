"""What `scan` prints: a table for people, JSON for programs, SARIF 2.1.0 for code scanning in CI."""

from __future__ import annotations

import json
from collections.abc import Sequence

from airollout import __version__
from airollout.instrument.sites import Site

__all__ = ["sarif", "table", "to_json"]

_UNGUARDED = "ungated-ai-call"
_GUARDED = "gated-ai-call"
_RULES = [
    {
        "id": _UNGUARDED,
        "name": "UngatedAiModelCall",
        "shortDescription": {"text": "An AI model call no feature flag decides"},
        "fullDescription": {
            "text": "Changing this call's model or prompt reaches every user at once. Put it behind a flag "
            "with `airollout gate PATH:LINE` and roll the change out in stages."
        },
        "defaultConfiguration": {"level": "warning"},
    },
    {
        "id": _GUARDED,
        "name": "GatedAiModelCall",
        "shortDescription": {"text": "An AI model call a feature flag decides"},
        "fullDescription": {"text": "A flag evaluation chooses what this call runs; a rollout can drive it."},
        "defaultConfiguration": {"level": "note"},
    },
]


def table(sites: Sequence[Site]) -> str:
    rows = [("SITE", "PROVIDER", "OPERATION", "MODEL/PROMPT", "GUARDED")]
    rows += [
        (s.address, s.provider, s.operation, s.model or s.prompt or "-", "yes" if s.guarded else "no") for s in sites
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    guarded = sum(s.guarded for s in sites)
    lines.append(f"{len(sites)} AI model call sites, {guarded} guarded by a feature flag, {len(sites) - guarded} not")
    return "\n".join(lines)


def to_json(sites: Sequence[Site]) -> str:
    return json.dumps({"sites": [site.to_json() for site in sites]}, indent=2)


def sarif(sites: Sequence[Site]) -> str:
    results = [
        {
            "ruleId": _GUARDED if site.guarded else _UNGUARDED,
            "level": "note" if site.guarded else "warning",
            "message": {
                "text": f"{site.provider} {site.operation}"
                + (f" (model {site.model})" if site.model else "")
                + (" is gated by a feature flag" if site.guarded else " is not gated by a feature flag")
            },
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": site.path, "uriBaseId": "%SRCROOT%"},
                        "region": {
                            "startLine": site.line,
                            "startColumn": site.column,
                            "endLine": site.end_line,
                            "endColumn": site.end_column,
                        },
                    }
                }
            ],
            "properties": {"provider": site.provider, "kind": site.kind, "model": site.model, "prompt": site.prompt},
        }
        for site in sites
    ]
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "airollout", "version": __version__, "rules": _RULES}},
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2)
