"""Reading a verb off an AIRollout's metadata: which verb, who set it, and whether it came from git.

A verb set with `kubectl annotate` is imperative: the operator runs it and removes the annotation, so the
same command can be given again. It is recorded as handled too (who set it, and when, as managedFields
says), so an operator killed between running it and removing the annotation does not run it twice.

A verb kept in a manifest and applied by GitOps is declarative: removing it would make Argo CD's self-heal
apply it again, and run it again. Such a verb is recorded as handled in status (with its
`airollout.dev/action-id`, if any) and left in place; re-applying the same manifest then changes nothing,
and a new action id runs it once more.

Either way an `airollout.dev/action-reason` beside the verb says why it was asked for; it goes into the
history the verb produces, and is removed with an imperative verb so it never explains the next one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airollout.planner import ACTION_ANNOTATION, ACTION_ID_ANNOTATION, ACTION_REASON_ANNOTATION

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_ACTOR_LIMIT = 128
REASON_LIMIT = 256
"""Characters kept of `airollout.dev/action-reason`: a sentence, not a document."""


@dataclass(frozen=True)
class VerbRequest:
    verb: str
    actor: str
    key: str
    """What status records once it is handled (`status.handledAction`), so that it runs once."""
    declarative: bool
    """Applied from a manifest: left in place once handled (removing it would make GitOps apply it again)."""
    handled: bool = False
    """Handled already: an imperative verb whose annotation outlived its handling is only to be removed."""
    reason: str | None = None
    """Why it was asked for (`airollout.dev/action-reason`), one line of at most `REASON_LIMIT` characters."""


def verb_request(meta: Mapping[str, Any], handled: str | None) -> VerbRequest | None:
    """The verb on the resource, or None (no verb, or a declarative one that was handled already)."""
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    verb = annotations.get(ACTION_ANNOTATION)
    if verb is None:
        return None
    owner = next(iter(_owners(meta)), None)
    actor = str((owner or {}).get("manager") or "unknown")[:_ACTOR_LIMIT]
    reason = " ".join(annotations.get(ACTION_REASON_ANNOTATION, "").split())[:REASON_LIMIT] or None
    if _declared(meta):
        action_id = annotations.get(ACTION_ID_ANNOTATION)
        key = (f"{verb.strip()}@{action_id.strip()}" if action_id else verb.strip())[:400]
        if key == handled:
            return None
        return VerbRequest(verb=verb, actor=actor, key=key, declarative=True, reason=reason)
    # kubectl annotate: its field manager and the time it set the annotation tell one request from the next.
    key = f"{verb.strip()}@{actor}@{(owner or {}).get('time') or ''}"[:400]
    return VerbRequest(verb=verb, actor=actor, key=key, declarative=False, handled=key == handled, reason=reason)


def _declared(meta: Mapping[str, Any]) -> bool:
    """Whether the verb came with an applied manifest (client-side or server-side apply)."""
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    last_applied = annotations.get(_LAST_APPLIED)
    if last_applied:
        try:
            applied = json.loads(last_applied)
        except ValueError:
            applied = {}
        if ACTION_ANNOTATION in (((applied.get("metadata") or {}).get("annotations")) or {}):
            return True
    return any(entry.get("operation") == "Apply" for entry in _owners(meta))


def _owners(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    owners = []
    for entry in meta.get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{ACTION_ANNOTATION}" in annotations:
            owners.append(entry)
    return owners


__all__ = ["REASON_LIMIT", "VerbRequest", "verb_request"]
