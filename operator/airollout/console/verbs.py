"""The plugin's verbs as the annotations `kubectl annotate` would set: the operator has one way in.

`kubectl airollout pause NAME --reason TEXT` and
`kubectl annotate --overwrite airollout NAME airollout.dev/action=pause airollout.dev/action-reason=TEXT`
send the same request, so the operator runs, records and removes both the same way.
"""

from __future__ import annotations

from airollout.kube.verbs import REASON_LIMIT
from airollout.planner import ACTION_ANNOTATION, ACTION_REASON_ANNOTATION, Verb

__all__ = ["ReasonInvalid", "verb_annotations"]


class ReasonInvalid(ValueError):
    """--reason cannot be recorded as given."""


def verb_annotations(verb: Verb, reason: str | None) -> dict[str, str]:
    annotations = {ACTION_ANNOTATION: verb.value}
    if reason is not None:
        text = " ".join(reason.split())
        if not text:
            raise ReasonInvalid("--reason is empty: say why, or leave --reason out")
        if len(text) > REASON_LIMIT:
            raise ReasonInvalid(
                f"--reason is {len(text)} characters; keep it to {REASON_LIMIT} (link to a ticket for the rest)"
            )
        annotations[ACTION_REASON_ANNOTATION] = text
    return annotations
