"""`airollout gate SITE`: the change that puts one call behind a flag, as a unified diff, for either language.

The flag is evaluated just before the statement that makes the call, for the user the enclosing function
serves; the call then gets the candidate's model when the flag says ``candidate`` and keeps its own otherwise
(the flag's off-variation is ``control``, so an unknown flag, FeatBit down or a kill switch all mean the
current model). The variant served is set on the current OpenTelemetry span as ``feature_flag.key`` and
``feature_flag.result.variant``, so the call's telemetry can be split by it. When the model is not at the
call but where its client is built in the same file, a candidate twin of that client is built beside it.
Python evaluates through FeatBit's SDK (``fbclient``); TypeScript and JavaScript through OpenFeature, whose
FeatBit provider the service registers once at start-up.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from airollout.instrument.sites import Site

__all__ = ["Edit", "GateRefused", "GateRequest", "apply_edits", "gate_source", "unified_diff"]

VARIANT_CANDIDATE = "candidate"
VARIANT_CONTROL = "control"


class GateRefused(ValueError):
    """The site cannot be gated as asked; the message names what to change."""


@dataclass(frozen=True)
class GateRequest:
    flag: str
    candidate: str
    """The candidate's model (or prompt) identifier, written as a string literal."""
    user: str | None = None
    """The expression that identifies the user at the call; by default the parameter that names one."""


@dataclass(frozen=True)
class Edit:
    start: int
    """Byte offsets in the UTF-8 source; an insertion has ``end == start``."""
    end: int
    text: str


def apply_edits(source: str, edits: list[Edit]) -> str:
    data = source.encode()
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        data = data[: edit.start] + edit.text.encode() + data[edit.end :]
    return data.decode()


def gate_source(site: Site, source: str, request: GateRequest) -> str:
    """``source`` (the file of ``site``) with the site gated by ``request.flag``."""
    if site.guarded:
        raise GateRefused(f"{site.address}: a feature flag already decides this call; nothing to gate")
    if site.language == "python":
        import ast

        from airollout.instrument.python_gate import python_edits

        gated = apply_edits(source, python_edits(site, source, request))
        try:
            ast.parse(gated)
        except SyntaxError as error:
            raise GateRefused(
                f"{site.address}: the gated code would not parse ({error.msg}); gate it by hand"
            ) from None
        return gated
    from airollout.instrument.script_gate import script_edits
    from airollout.instrument.script_scan import parse_script

    gated = apply_edits(source, script_edits(site, source, request))
    if parse_script(site.path, gated).root_node.has_error and not parse_script(site.path, source).root_node.has_error:
        raise GateRefused(f"{site.address}: the gated code would not parse; gate it by hand")
    return gated


def unified_diff(path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )
