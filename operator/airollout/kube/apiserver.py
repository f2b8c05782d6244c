"""Status patches and Events, written by the operator itself on connection pools of their own.

Kopf watches; writing is done here so that a rollout's status can be written whenever its work finishes
(not only inside a Kopf handler), and so that a rollback's status never queues behind routine writes: each
`ApiServer` has its own pool, and the engine keeps one for routine work and one for the urgent lane.
Events are posted as `airollout`, so `kubectl describe` names the operator in its From column.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import kubernetes

from airollout.model import GROUP, KIND, PLURAL, VERSION

COMPONENT = "airollout"


class ApiServerError(Exception):
    """A write the apiserver refused or could not take; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def too_large(self) -> bool:
        """etcd refused the object's size (the apiserver answers 413, or 500/422 quoting etcd)."""
        return self.status == 413 or "too large" in str(self).lower()


class ApiServer:
    """The few apiserver writes the engine makes, over an async HTTP pool built from the kubeconfig."""

    def __init__(self, configuration: Any, *, connections: int, timeout: float = 30.0) -> None:
        self._configuration = configuration
        verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:  # the kubeconfig says insecure-skip-tls-verify
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            verify.load_cert_chain(configuration.cert_file, configuration.key_file)
        self._ssl = verify
        self._base = str(configuration.host).rstrip("/")
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._instance = socket.gethostname()

    @classmethod
    def from_environment(cls, *, connections: int) -> ApiServer:
        """In a pod, the ServiceAccount; elsewhere ``$KUBECONFIG`` or ``~/.kube/config``."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        return cls(configuration, connections=connections)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        await self._send("PATCH", path, {"status": dict(status)}, content_type="application/merge-patch+json")

    async def remove_annotations(self, namespace: str, name: str, expected: Mapping[str, str]) -> None:
        """Remove the annotations only if each still holds its ``expected`` value (a newer verb is not lost)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        patch: list[dict[str, str]] = []
        for key, value in expected.items():
            pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            patch += [{"op": "test", "path": pointer, "value": value}, {"op": "remove", "path": pointer}]
        try:
            await self._send("PATCH", path, patch, content_type="application/json-patch+json")
        except ApiServerError as error:
            if error.status not in (404, 409, 422):  # gone, or the annotation changed meanwhile: leave it
                raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values, as stored), or None when it does not exist."""
        try:
            secret = await self._send("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", None)
        except ApiServerError as error:
            if error.status == 404:
                return None
            raise
        return dict(secret.get("data") or {})

    async def read_template(self, plural: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        """A GuardrailTemplate (in ``namespace``) or ClusterGuardrailTemplate (None), or None when it does not exist."""
        where = f"namespaces/{namespace}/" if namespace else ""
        try:
            template: dict[str, Any] = await self._send("GET", f"/apis/{GROUP}/{VERSION}/{where}{plural}/{name}", None)
        except ApiServerError as error:
            if error.status == 404:
                return None
            raise
        return template

    async def annotate(self, namespace: str, name: str, annotations: Mapping[str, str], *, manager: str) -> None:
        """Set annotations on an AIRollout as field manager ``manager``, which verbs read as their actor."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}?fieldManager={quote(manager)}"
        body = {"metadata": {"annotations": dict(annotations)}}
        await self._send("PATCH", path, body, content_type="application/merge-patch+json")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A coordination.k8s.io/v1 Lease, or None when it does not exist."""
        try:
            lease: dict[str, Any] = await self._send("GET", _lease_path(namespace, name), None)
        except ApiServerError as error:
            if error.status == 404:
                return None
            raise
        return lease

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = await self._send("GET", f"{_lease_path(namespace)}?labelSelector={quote(selector)}", None)
        return list(listed.get("items") or [])

    async def write_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease, or replace it if it carries a resourceVersion (a 409 means someone was first)."""
        meta = lease["metadata"]
        if meta.get("resourceVersion"):
            written: dict[str, Any] = await self._send("PUT", _lease_path(meta["namespace"], meta["name"]), lease)
        else:
            written = await self._send("POST", _lease_path(meta["namespace"]), lease)
        return written

    async def delete_lease(self, namespace: str, name: str) -> None:
        try:
            await self._send("DELETE", _lease_path(namespace, name), None)
        except ApiServerError as error:
            if error.status != 404:
                raise

    async def post_event(self, involved: Mapping[str, Any], *, kind: str, reason: str, message: str) -> None:
        """One core/v1 Event about ``involved`` (an AIRollout's metadata)."""
        namespace = str(involved["namespace"])
        at = datetime.now(UTC)
        now = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": involved["name"],
                "namespace": namespace,
                "uid": involved.get("uid"),
            },
            "type": kind,
            "action": reason,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            # Microseconds: two Events of one reconcile (StageAdvanced, Promoted) keep their order.
            "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "count": 1,
        }
        await self._send("POST", f"/api/v1/namespaces/{namespace}/events", body)

    async def _send(self, method: str, path: str, body: Any, *, content_type: str = "application/json") -> Any:
        headers = {"Content-Type": content_type, **self._credentials()}
        if self._session is None:
            # Made on first use, inside the event loop; aiohttp is Kopf's client too, and lighter than httpx.
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"User-Agent": COMPONENT}
            )
        try:
            async with self._session.request(method, self._base + path, json=body, headers=headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiServerError(f"{method} {path}: {type(error).__name__}: {error}", 0) from None
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = None
        if status >= 400:
            detail = str(answer.get("message") or text) if isinstance(answer, dict) else text
            raise ApiServerError(f"{method} {path}: HTTP {status}: {detail[:500]}", status)
        return answer

    def _credentials(self) -> dict[str, str]:
        """The headers the kubeconfig's credentials call for (a bearer token: ServiceAccount, OIDC, exec)."""
        configuration = self._configuration
        # In a pod the ServiceAccount token rotates; the kubernetes client's hook reads the current one.
        if configuration.refresh_api_key_hook is not None:
            configuration.refresh_api_key_hook(configuration)
        settings: dict[str, dict[str, Any]] = configuration.auth_settings()
        return {
            str(setting["key"]): str(setting["value"])
            for setting in settings.values()
            if setting.get("in") == "header" and setting.get("value")
        }


def _lease_path(namespace: str, name: str = "") -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


__all__ = ["ApiServer", "ApiServerError"]
