"""The operator's long-lived connections: FeatBit clients and Prometheus sources, built from Secrets, cached.

Each AIRollout names a Secret for its FeatBit token (and optionally its Prometheus credentials). Reading a
Secret and opening a client per reconcile would be waste, so both are cached for a short while; a rejected
token drops its Secret so a rotated one is picked up at once.

Two of these exist in a running operator, on separate pools: one for routine work, one for the kill-switch
lane. The lane's Secret reads and FeatBit calls therefore never wait behind routine reads, and its FeatBit
clients wait longer per attempt (a slow FeatBit must acknowledge on the first try, not time out forever).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field

import httpx

from airollout.featbit.client import FeatBitClient
from airollout.guardrails.prometheus import PrometheusSource
from airollout.kube.apiserver import ApiServer, ApiServerError
from airollout.kube.metrics import FEATBIT_SECONDS, PROMETHEUS_SECONDS, TimedTransport
from airollout.model import AIRolloutSpec, FeatBitRef, SecretKeyRef, parse_duration
from airollout.planner import Problem
from airollout.reasons import Reason
from airollout.reconciler import Connections


class SecretUnavailable(Exception):
    """A Secret (or its key) an AIRollout names cannot be read; the message says which and how to fix it."""


class EndpointInvalid(Exception):
    """A URL in the spec that no client can use (a bad host or port); the message names the field."""


@dataclass(frozen=True)
class ClientOptions:
    """How this cache's FeatBit clients behave: the routine pool and the kill-switch lane differ."""

    connections: int
    timeout: float
    max_attempts: int


@dataclass
class ConnectionCache:
    apiserver: ApiServer
    options: ClientOptions
    secret_ttl: float = 30.0
    prometheus_concurrency: int = 8
    _secrets: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)
    _featbit: dict[tuple[str, str], FeatBitClient] = field(default_factory=dict)
    _prometheus: dict[tuple[str, str, tuple[tuple[str, str], ...], float], PrometheusSource] = field(
        default_factory=dict
    )

    async def connections(self, namespace: str, spec: AIRolloutSpec) -> Connections:
        try:
            flags = await self.featbit(namespace, spec.featbit)
        except SecretUnavailable as error:
            return Connections(flags=None, problem=Problem(Reason.SECRET_NOT_FOUND, str(error)))
        except EndpointInvalid as error:
            return Connections(flags=None, problem=Problem(Reason.FEATBIT_UNAVAILABLE, str(error)))
        try:
            metrics = await self.prometheus(namespace, spec)
        except SecretUnavailable as error:
            return Connections(flags=flags, problem=Problem(Reason.SECRET_NOT_FOUND, str(error)))
        except EndpointInvalid as error:
            return Connections(flags=flags, problem=Problem(Reason.INVALID_SPEC, str(error)))
        return Connections(flags=flags, metrics=metrics)

    async def featbit(self, namespace: str, ref: FeatBitRef) -> FeatBitClient:
        _usable_url(ref.url, "spec.featbit.url")
        token = await self.secret(namespace, ref.token_secret_ref, "spec.featbit.tokenSecretRef")
        key = (ref.url, token)
        client = self._featbit.get(key)
        if client is None:
            try:
                client = FeatBitClient(
                    ref.url,
                    token,
                    timeout=self.options.timeout,
                    max_attempts=self.options.max_attempts,
                    transport=TimedTransport(_network(self.options.connections), FEATBIT_SECONDS),
                )
            except ValueError as error:  # e.g. a token with a newline, written by `echo` into the Secret
                secret = ref.token_secret_ref
                raise SecretUnavailable(f"Secret {namespace}/{secret.name} key {secret.key!r}: {error}") from None
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
        _usable_url(ref.url, "spec.prometheus.url")
        try:
            timeout = parse_duration(ref.timeout).total_seconds()
        except (ValueError, OverflowError) as error:
            raise EndpointInvalid(f"spec.prometheus.timeout: {error}") from None
        key = (ref.url, bearer, tuple(headers), timeout)
        source = self._prometheus.get(key)
        if source is None:
            try:
                source = PrometheusSource(
                    ref.url,
                    headers=dict(headers),
                    bearer_token=bearer or None,
                    timeout=timeout,
                    concurrency=self.prometheus_concurrency,
                    network=TimedTransport(_network(self.prometheus_concurrency), PROMETHEUS_SECONDS),
                )
            except ValueError as error:
                raise EndpointInvalid(f"spec.prometheus: {error}") from None
            self._prometheus[key] = source
        return source

    def forget_token(self, namespace: str, ref: FeatBitRef) -> None:
        """After FeatBit rejected a token: read the Secret again next time (it may have been rotated)."""
        secret = ref.token_secret_ref
        self._secrets.pop((namespace, secret.name, secret.key), None)

    async def secret(self, namespace: str, ref: SecretKeyRef, field_path: str) -> str:
        cache_key = (namespace, ref.name, ref.key)
        cached = self._secrets.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < self.secret_ttl:
            return cached[1]
        value = await self._read_secret(namespace, ref, field_path)
        self._secrets[cache_key] = (time.monotonic(), value)
        return value

    async def aclose(self) -> None:
        for client in self._featbit.values():
            await client.aclose()
        for source in self._prometheus.values():
            await source.aclose()

    async def _read_secret(self, namespace: str, ref: SecretKeyRef, field_path: str) -> str:
        try:
            data = await self.apiserver.read_secret(namespace, ref.name)
        except ApiServerError as error:
            if error.status == 403:
                raise SecretUnavailable(
                    f"the operator may not read Secret {namespace}/{ref.name} ({field_path}): grant its "
                    "ServiceAccount `get` on secrets in this namespace (the Helm chart does)"
                ) from None
            raise SecretUnavailable(f"reading Secret {namespace}/{ref.name} failed: HTTP {error.status}") from None
        if data is None:
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} named by {field_path} does not exist: create it with "
                f"`kubectl -n {namespace} create secret generic {ref.name} --from-literal={ref.key}=...`"
            )
        if ref.key not in data:
            keys = ", ".join(sorted(data)[:20]) or "none"
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} has no key {ref.key[:100]!r} ({field_path}.key); its keys: {keys}"
            )
        try:
            return base64.b64decode(data[ref.key]).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} key {ref.key!r} ({field_path}) is not UTF-8 text: store the "
                "credential itself, e.g. with --from-literal"
            ) from None


def _network(connections: int) -> httpx.AsyncHTTPTransport:
    """Up to ``connections`` open at once, all kept alive between calls."""
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    )


def _usable_url(url: str, field_path: str) -> None:
    """Refuse, naming the field, a URL the CRD's pattern lets through but no client can use."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as error:
        raise EndpointInvalid(f"{field_path} {url[:200]!r} cannot be used: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EndpointInvalid(f"{field_path} {url[:200]!r} cannot be used: write it as http(s)://HOST[:PORT]")
    if "%" in parsed.host:  # httpx percent-encodes what no host name may hold: "[bad", spaces
        raise EndpointInvalid(f"{field_path} {url[:200]!r} cannot be used: {parsed.host!r} is not a host name")
    try:
        parsed.host.encode("idna")  # what the resolver does: a label over 63 characters fails here
    except UnicodeError:
        raise EndpointInvalid(
            f"{field_path} {url[:200]!r} cannot be used: {parsed.host[:100]!r} is not a host name (each dot-separated "
            "part at most 63 characters)"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise EndpointInvalid(f"{field_path} {url[:200]!r} cannot be used: port {port} is not between 1 and 65535")


__all__ = ["ClientOptions", "ConnectionCache", "EndpointInvalid", "SecretUnavailable"]
