"""The cluster as the caller's kubectl sees it: the plugin reads and annotates AIRollouts through kubectl.

Going through kubectl (on PATH whenever `kubectl airollout` runs) gives the plugin the caller's kubeconfig,
context, credential plugins and namespace exactly as kubectl resolves them, and makes a verb the very
request `kubectl annotate` sends, so the operator cannot tell the two apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airollout.model import GROUP, PLURAL

__all__ = ["Cluster", "ClusterError"]

_RESOURCE = f"{PLURAL}.{GROUP}"
_TIMEOUT_SECONDS = 60.0


class ClusterError(Exception):
    """kubectl could not do it; the message is kubectl's own."""


@dataclass(frozen=True)
class Cluster:
    """kubectl with the caller's ``--kubeconfig``, ``--context`` and ``-n`` (each None: kubectl's default)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def rollouts(self, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        scope = ["--all-namespaces"] if all_namespaces else []
        items: list[dict[str, Any]] = self._json("get", _RESOURCE, *scope, "-o", "json")["items"]
        return items

    def rollout(self, name: str) -> dict[str, Any]:
        rollout: dict[str, Any] = self._json("get", _RESOURCE, name, "-o", "json")
        return rollout

    def names(self) -> list[str]:
        """The AIRollouts' names in the namespace, for shell completion."""
        return self._run("get", _RESOURCE, "-o", "jsonpath={.items[*].metadata.name}").split()

    def events(self, rollout: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rollout's Events, oldest first."""
        meta = rollout["metadata"]
        selector = f"involvedObject.uid={meta['uid']}"
        listed = self._json("get", "events", "-n", meta["namespace"], "--field-selector", selector, "-o", "json")
        items: list[dict[str, Any]] = listed["items"]
        return sorted(items, key=_event_time)

    def annotate(self, name: str, annotations: Mapping[str, str]) -> str:
        """`kubectl annotate --overwrite airollout NAME KEY=VALUE...`: what it prints."""
        pairs = [f"{key}={value}" for key, value in annotations.items()]
        return self._run("annotate", "--overwrite", _RESOURCE, name, *pairs).strip()

    def _json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._run(*args))
        return data

    def _run(self, *args: str) -> str:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ClusterError("kubectl is not on PATH: install it, or put its directory on PATH")
        try:
            result = subprocess.run(
                [kubectl, *self._flags(args), *args],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"kubectl {' '.join(args[:2])} took longer than {_TIMEOUT_SECONDS:g}s") from None
        if result.returncode != 0:
            raise ClusterError(result.stderr.strip() or f"kubectl {' '.join(args[:2])} failed")
        return result.stdout

    def _flags(self, args: Sequence[str]) -> list[str]:
        flags = []
        if self.kubeconfig:
            flags += ["--kubeconfig", self.kubeconfig]
        if self.context:
            flags += ["--context", self.context]
        if self.namespace and "-n" not in args and "--all-namespaces" not in args:
            flags += ["--namespace", self.namespace]
        return flags


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("eventTime")
        or event.get("lastTimestamp")
        or event.get("firstTimestamp")
        or event["metadata"]["creationTimestamp"]
    )
