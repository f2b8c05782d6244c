"""The operator's long-lived connections: FeatBit clients and Prometheus sources, built from Secrets, cached.

Each AIRollout names a Secret for its FeatBit token (and optionally its Prometheus credentials). Reading a
Secret and opening a client per tick would be waste, and the kill switch must not wait on either, so both
are cached for a short while; a rejected token drops its client so a rotated Secret is picked up at once.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from airollout.featbit.client import FeatBitClient
from airollout.guardrails.prometheus import PrometheusSource
from airollout.model import AIRolloutSpec, SecretKeyRef, parse_duration
from airollout.planner import Problem
from airollout.reasons import Reason
from airollout.reconciler import Connections

SECRET_TTL_SECONDS = 30.0


class SecretUnavailable(Exception):
    """A Secret (or its key) an AIRollout names cannot be read; the message says which and how to fix it."""


@dataclass
class ConnectionCache:
    _secrets: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)
    _featbit: dict[tuple[str, str], FeatBitClient] = field(default_factory=dict)
    _prometheus: dict[tuple[str, str, tuple[tuple[str, str], ...], float], PrometheusSource] = field(
        default_factory=dict
    )
    _core: Any = None

    async def connections(self, namespace: str, spec: AIRolloutSpec) -> Connections:
        try:
            flags = await self.featbit(namespace, spec)
        except SecretUnavailable as error:
            return Connections(flags=None, problem=Problem(Reason.SECRET_NOT_FOUND, str(error)))
        try:
            metrics = await self.prometheus(namespace, spec)
        except SecretUnavailable as error:
            return Connections(flags=flags, problem=Problem(Reason.SECRET_NOT_FOUND, str(error)))
        return Connections(flags=flags, metrics=metrics)

    async def featbit(self, namespace: str, spec: AIRolloutSpec) -> FeatBitClient:
        token = await self.secret(namespace, spec.featbit.token_secret_ref, "spec.featbit.tokenSecretRef")
        key = (spec.featbit.url, token)
        client = self._featbit.get(key)
        if client is None:
            try:
                client = FeatBitClient(spec.featbit.url, token)
            except ValueError as error:  # e.g. a token with a newline, written by `echo` into the Secret
                ref = spec.featbit.token_secret_ref
                raise SecretUnavailable(f"Secret {namespace}/{ref.name} key {ref.key!r}: {error}") from None
            self._featbit[key] = client
        return client

    async def prometheus(self, namespace: str, spec: AIRolloutSpec) -> PrometheusSource | None:
        ref = spec.prometheus
        if ref is None or not spec.guardrails:
            return None
        bearer = ""
        if ref.bearer_token_secret_ref is not None:
            bearer = await self.secret(namespace, ref.bearer_token_secret_ref, "spec.prometheus.bearerTokenSecretRef")
        headers = []
        for index, header in enumerate(ref.headers):
            value = await self.secret(namespace, header.value_from, f"spec.prometheus.headers[{index}].valueFrom")
            headers.append((header.name, value))
        timeout = parse_duration(ref.timeout).total_seconds()
        key = (ref.url, bearer, tuple(headers), timeout)
        source = self._prometheus.get(key)
        if source is None:
            source = self._prometheus[key] = PrometheusSource(
                ref.url, headers=dict(headers), bearer_token=bearer or None, timeout=timeout
            )
        return source

    def forget_token(self, namespace: str, spec: AIRolloutSpec) -> None:
        """After FeatBit rejected a token: read the Secret again next time (it may have been rotated)."""
        ref = spec.featbit.token_secret_ref
        self._secrets.pop((namespace, ref.name, ref.key), None)

    async def secret(self, namespace: str, ref: SecretKeyRef, field_path: str) -> str:
        cache_key = (namespace, ref.name, ref.key)
        cached = self._secrets.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL_SECONDS:
            return cached[1]
        value = await asyncio.to_thread(self._read_secret, namespace, ref, field_path)
        self._secrets[cache_key] = (time.monotonic(), value)
        return value

    async def aclose(self) -> None:
        for client in self._featbit.values():
            await client.aclose()
        for source in self._prometheus.values():
            source.close()

    def _read_secret(self, namespace: str, ref: SecretKeyRef, field_path: str) -> str:
        if self._core is None:
            self._core = kubernetes.client.CoreV1Api()
        try:
            secret = self._core.read_namespaced_secret(ref.name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                raise SecretUnavailable(
                    f"Secret {namespace}/{ref.name} named by {field_path} does not exist: create it with "
                    f"`kubectl -n {namespace} create secret generic {ref.name} --from-literal={ref.key}=...`"
                ) from None
            if error.status == 403:
                raise SecretUnavailable(
                    f"the operator may not read Secret {namespace}/{ref.name} ({field_path}): grant its "
                    "ServiceAccount `get` on secrets in this namespace (the Helm chart does)"
                ) from None
            raise SecretUnavailable(f"reading Secret {namespace}/{ref.name} failed: {error.reason}") from None
        data = secret.data or {}
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} has no key {ref.key!r} ({field_path}.key); its keys: {keys}"
            )
        return base64.b64decode(data[ref.key]).decode().strip()
