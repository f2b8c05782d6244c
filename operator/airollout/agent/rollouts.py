"""AIRollouts as the caller's kubeconfig sees them: list, read, create, and ask for a verb.

A verb is the same annotation `kubectl annotate` sets (``airollout.dev/action``, with
``airollout.dev/action-reason`` beside it), written under the field manager that names the asking client: the
operator records that field manager as the actor in the rollout's history. Nothing here decides; the
operator does, exactly as for a person with kubectl.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from airollout.model.spec import AIRolloutSpec
from airollout.planner import ACTION_ANNOTATION, ACTION_REASON_ANNOTATION, Verb

__all__ = ["RolloutRequestFailed", "Rollouts"]

_GROUP, _VERSION, _PLURAL = "airollout.dev", "v1alpha1", "airollouts"
_FIELD_MANAGER_LIMIT = 128


class RolloutRequestFailed(Exception):
    """The apiserver refused a request, or a manifest is not an AIRollout; the message says which and why."""


class Rollouts:
    def __init__(self, actor: str) -> None:
        try:
            config.load_kube_config()
        except config.ConfigException:
            config.load_incluster_config()
        self._api = client.CustomObjectsApi()
        self.actor = actor[:_FIELD_MANAGER_LIMIT]

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            listed = self._call(self._api.list_cluster_custom_object, _GROUP, _VERSION, _PLURAL)
        else:
            listed = self._call(self._api.list_namespaced_custom_object, _GROUP, _VERSION, namespace, _PLURAL)
        return [dict(item) for item in listed.get("items", [])]

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            self._api.get_namespaced_custom_object, _GROUP, _VERSION, namespace, _PLURAL, name
        )
        return found

    def create(self, manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
        if manifest.get("kind") != "AIRollout" or not str(manifest.get("apiVersion", "")).startswith(_GROUP):
            raise RolloutRequestFailed(
                "the manifest is not an AIRollout: set apiVersion airollout.dev/v1alpha1, kind AIRollout"
            )
        metadata = manifest.setdefault("metadata", {})
        if not metadata.get("name"):
            raise RolloutRequestFailed("metadata.name is missing: name the rollout")
        namespace = metadata.setdefault("namespace", namespace)
        try:
            AIRolloutSpec.model_validate(manifest.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(
                f"spec.{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in error.errors()
            )
            raise RolloutRequestFailed(f"the AIRollout spec is not valid: {problems}") from None
        created: dict[str, Any] = self._call(
            self._api.create_namespaced_custom_object,
            _GROUP, _VERSION, namespace, _PLURAL, manifest, field_manager=self.actor,
        )  # fmt: skip
        return created

    def request(self, namespace: str, name: str, verb: Verb, reason: str | None) -> dict[str, Any]:
        pending = ((self.get(namespace, name).get("metadata") or {}).get("annotations") or {}).get(ACTION_ANNOTATION)
        if pending is not None:
            # Setting the same verb again before the operator took the first would change nothing it can see.
            raise RolloutRequestFailed(
                f"{namespace}/{name} still carries {ACTION_ANNOTATION}={pending}, not yet handled by the operator: "
                "ask again once show_rollout's history records it"
            )
        annotations = {ACTION_ANNOTATION: verb.value}
        if reason:
            annotations[ACTION_REASON_ANNOTATION] = " ".join(reason.split())
        patch = {"metadata": {"annotations": annotations}}
        patched: dict[str, Any] = self._call(
            self._api.patch_namespaced_custom_object,
            _GROUP, _VERSION, namespace, _PLURAL, name, patch, field_manager=self.actor,
        )  # fmt: skip
        return patched

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise RolloutRequestFailed(f"the apiserver answered {error.status} {error.reason}: {error.body}") from None
