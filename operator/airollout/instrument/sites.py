"""A found AI model invocation point: what `scan` reports and what `gate` rewrites.

Both scanners (Python and TypeScript/JavaScript) return these, so the reports and the gate never know which
language a site came from beyond its ``language`` field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Site"]


@dataclass(frozen=True)
class Site:
    path: str
    """The file, relative to the scanned root, with forward slashes."""
    line: int
    column: int
    """1-based, as editors and SARIF count."""
    end_line: int
    end_column: int
    provider: str
    operation: str
    """The call as written from the client on (``chat.completions.create``, ``generateText``)."""
    kind: str
    """``generation`` or ``embedding``."""
    language: str
    """``python``, ``typescript`` or ``javascript``."""
    model: str | None = None
    """The model identifier, when it is a literal at the call or where its client was built."""
    prompt: str | None = None
    """The prompt identifier (or the start of the prompt text), when it is a literal."""
    guarded: bool = False
    """Whether a feature-flag evaluation already decides this call (a branch on it, or an argument from it)."""

    @property
    def address(self) -> str:
        """``PATH:LINE``, what `airollout gate` takes."""
        return f"{self.path}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"site": self.address, **asdict(self)}
