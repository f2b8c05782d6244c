"""What measuring needs from a metrics backend: one method, and one exception for every way it can fail.

The judge and the reconciler only ever see this seam, so a Prometheus adapter, the layer that shares its
queries between rollouts and a table in a test are interchangeable.
"""

from __future__ import annotations

from typing import Protocol

from airollout.guardrails.judging import Sample

__all__ = ["GuardrailQueryFailed", "MetricsSource"]


class GuardrailQueryFailed(Exception):
    """A guardrail query could not be answered; the message says why, in Prometheus's words when it has some."""

    def __init__(self, message: str, query: str) -> None:
        super().__init__(message)
        self.query = query


class MetricsSource(Protocol):
    """Where guardrail queries are answered: Prometheus in production, anything with this method in tests."""

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Run an instant query at Unix time ``at`` (now when None); raise `GuardrailQueryFailed` when it
        cannot be answered."""
        ...
