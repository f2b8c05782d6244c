"""Bounds on what a guardrail reads from Prometheus and on every text it writes back.

A guardrail's words end up in the AIRollout's status (one etcd object, 1.5 MiB at most), in Events and in
logs, and its answers come from a server the operator does not control: a query missing its ``sum by``, a
proxy that answers with a page of HTML or a label value holding a whole stack trace. Each such input is cut
to a known size here, so no answer can stall a rollout or make its status too large to write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "GuardrailLimits", "bounded_text"]

_ELLIPSIS = "…"


@dataclass(frozen=True)
class GuardrailLimits:
    """How much a guardrail reads and writes; the defaults keep 20 guardrails' status well inside etcd's limit."""

    max_series: int = 500
    """Series one answer may hold. More is an Error asking to aggregate with ``sum by (...)``: a guardrail
    judges segments such as locales, and thousands of them are a query that forgot to aggregate."""

    max_answer_bytes: int = 5 * 1024 * 1024
    """Bytes of one answer's body, read as it streams in; reading stops and the query is an Error beyond it."""

    max_message_chars: int = 1000
    """Characters of a verdict's error and of each segment's message, the texts status and Events carry."""

    max_segment_chars: int = 200
    """Characters of a segment's label string as shown; a clipped one ends with a digest of the whole, so two
    long label sets never show as the same segment."""

    max_quote_chars: int = 300
    """Characters quoted from outside: Prometheus's error text, a proxy's body, the query in an error."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"GuardrailLimits.{name} must be at least 1, got {value}")


DEFAULT_LIMITS = GuardrailLimits()


def bounded_text(text: str, limit: int, *, digest: bool = False) -> str:
    """``text`` on one line (control characters and line breaks become spaces) and at most ``limit`` long.

    Cut text ends with an ellipsis, and with ``#`` and a digest of the whole text when ``digest`` is set.
    """
    # Cut before cleaning, so a 50 MB body is never walked character by character. Twice the limit fills
    # the result unless the text is mostly blanks, and such a text is shown as cut all the same.
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text[: 2 * limit + 1]).split())
    if len(cleaned) <= limit and len(text) <= 2 * limit:
        return cleaned
    tail = _ELLIPSIS
    if digest:
        tail += "#" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cleaned[: max(limit - len(tail), 0)].rstrip() + tail[:limit]
