"""Reading a verb off an AIRollout's metadata: which verb, who set it, and whether it came from git.

A verb set with `kubectl annotate` is imperative: the operator runs it and removes the annotation, so the
same command can be given again. A verb kept in a manifest and applied by GitOps is declarative: removing
it would make Argo CD's self-heal apply it again, and run it again. Such a verb is recorded as handled in
status (with its `airollout.dev/action-id`, if any) and left in place; re-applying the same manifest then
changes nothing, and a new action id runs it once more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airollout.planner import ACTION_ANNOTATION, ACTION_ID_ANNOTATION

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_ACTOR_LIMIT = 128


@dataclass(frozen=True)
class VerbRequest:
    verb: str
    actor: str
    key: str | None
    """For a declarative verb, what status records once it is handled; None for an imperative one."""


def verb_request(meta: Mapping[str, Any], handled: str | None) -> VerbRequest | None:
    """The verb to act on now, or None (no verb, or a declarative one that was handled already)."""
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    verb = annotations.get(ACTION_ANNOTATION)
    if verb is None:
        return None
    actor = _manager_of(meta) or "unknown"
    if not _declared(meta):
        return VerbRequest(verb=verb, actor=actor, key=None)
    action_id = annotations.get(ACTION_ID_ANNOTATION)
    key = f"{verb.strip()}@{action_id.strip()}" if action_id else verb.strip()
    key = key[:400]
    if key == handled:
        return None
    return VerbRequest(verb=verb, actor=actor, key=key)


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


def _manager_of(meta: Mapping[str, Any]) -> str | None:
    """Who set the action annotation, as Kubernetes recorded it (the field manager, e.g. kubectl-annotate)."""
    for entry in _owners(meta):
        return str(entry.get("manager") or "unknown")[:_ACTOR_LIMIT]
    return None


def _owners(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    owners = []
    for entry in meta.get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{ACTION_ANNOTATION}" in annotations:
            owners.append(entry)
    return owners


__all__ = ["VerbRequest", "verb_request"]
