"""Measuring guardrails in Prometheus: render, query, judge.

Queries go over HTTP with httpx on the operator's event loop: no thread is held while Prometheus thinks,
so a hung Prometheus costs open sockets, never the default executor the kill switch's calls depend on. For
the same reason the host name is resolved in a thread of each source's own (asyncio would use the default
executor). Every query is shared between rollouts asking the same thing (`SharedQueries`), bounded in
time, in concurrency and in size, and its answer is read strictly (`read_answer`).

Whatever goes wrong while measuring (Prometheus unreachable or slow, an HTTP error, a query Prometheus
cannot parse, an answer that is not Prometheus's, a template that cannot be rendered) becomes
`GuardrailQueryFailed` and then an Error verdict that quotes the cause in Prometheus's own words. An Error
is never a breach: a typo in a query must not roll back a healthy release; it pauses the rollout after
``analysis.consecutiveErrorLimit`` errors instead. For the same reason a query is tried once: the analysis
interval is the retry loop, and errors are counted there.

Every credential the source sends (the bearer token, every header value, all read from Secrets) is
replaced by ``***`` in any text that comes back before it leaves this module: a proxy that echoes request
headers into its error page must not put a token into status, Events and logs.
"""

from __future__ import annotations

import asyncio
import base64
import html
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import quote, quote_plus

import httpx

from airollout.guardrails.answers import AnswerUnusable, read_answer
from airollout.guardrails.judging import GuardrailVerdict, Sample, judge, judge_error
from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits, bounded_text
from airollout.guardrails.sharing import QueryCounters, SharedQueries
from airollout.guardrails.source import GuardrailQueryFailed, MetricsSource
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query
from airollout.model.spec import Guardrail

__all__ = ["GuardrailQueryFailed", "MetricsSource", "PrometheusSource", "measure", "without_variant_labels"]

# Extra time given to the HTTP request beyond Prometheus's own query timeout, so that a slow query is
# reported by Prometheus ("query timed out in expression evaluation") rather than by our deadline.
_TIMEOUT_GRACE_SECONDS = 1.0
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_SCRUBBED = "***"


class PrometheusSource:
    """A Prometheus server's instant-query API, shared by every rollout that uses it with the same credentials."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        share_seconds: float = 1.0,
        limits: GuardrailLimits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        network: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Raise ValueError naming the culprit when ``url``, a header or the token cannot be sent.

        ``timeout`` (seconds) bounds Prometheus's evaluation of a query; a query's wait for one of the
        ``concurrency`` slots and its answer together get one second more. Queries are evaluated at the
        start of the current window of ``share_seconds`` and shared within it (`SharedQueries`): an answer
        is up to that old, so the window must stay short beside the shortest stage, or a stage could be
        judged on numbers from before it began. ``transport`` replaces the network, for tests; ``network``
        sends each request once its host name is resolved (the operator's times every call for its metrics).
        """
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"the Prometheus URL must be an http(s) URL with a host, got {url!r}")
        # Prometheus compresses when asked; an answer is counted as it arrives and must not inflate later.
        sent = {"Accept-Encoding": "identity"}
        secrets = []
        if parsed.password:
            # httpx sends a password in the URL as basic authentication: as such it may come back too.
            basic = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode()
            secrets += [parsed.password, basic]
        if bearer_token is not None:
            secrets.append(_header_value(bearer_token, "the Prometheus bearer token", spaces=False))
            sent["Authorization"] = f"Bearer {secrets[-1]}"
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            secrets.append(_header_value(value, f"the value of header {name}", spaces=True))
            sent[name] = secrets[-1]
        shown = parsed.copy_with(username=parsed.username, password=_SCRUBBED) if parsed.password else parsed
        self.url = str(shown).rstrip("/")
        """Where Prometheus is, as messages name it: without the password a URL may hold."""
        if (parsed.username or parsed.password) and "Authorization" not in sent:
            # Sent as a Basic header rather than in the URL, which clients write into their request logs.
            pair = f"{parsed.username}:{parsed.password}".encode()
            sent["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        self._endpoint = f"{str(parsed.copy_with(username=None, password=None)).rstrip('/')}/api/v1/query"
        self._timeout = timeout
        self._limits = limits
        self._secrets = _variants(secrets)
        self._client = httpx.AsyncClient(
            headers=sent,
            timeout=None,  # SharedQueries' deadline bounds every query, queueing included
            follow_redirects=False,  # a redirect would carry the credentials to wherever it points
            transport=transport
            or _OwnResolver(network or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency))),
        )
        self._shared = SharedQueries(
            self._fetch,
            name=f"Prometheus at {self.url}",
            deadline=timeout + _TIMEOUT_GRACE_SECONDS,
            concurrency=concurrency,
            share_seconds=share_seconds,
        )

    @property
    def counters(self) -> QueryCounters:
        """Queries issued, served from a shared answer, waiting for a slot and in flight: for metrics."""
        return self._shared.counters

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        return await self._shared.query(promql, at)

    async def aclose(self) -> None:
        self._shared.close()
        await self._client.aclose()

    def close(self) -> None:
        """Close from synchronous code running on the event loop; the connections close in the background."""
        task = asyncio.get_running_loop().create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _fetch(self, promql: str, at: float) -> list[Sample]:
        form = {"query": promql, "time": f"{at:.3f}", "timeout": f"{self._timeout:g}"}
        try:
            async with self._client.stream("POST", self._endpoint, data=form) as response:
                if response.is_redirect:
                    location = self._quote(response.headers.get("location", ""))
                    raise self._failed(
                        f"answered HTTP {response.status_code}, a redirect to {location}; redirects are not "
                        "followed (the credentials would go along): set spec.prometheus.url to where it points",
                        promql,
                    )
                body = await self._body(response, promql)
                content_type = response.headers.get("content-type", "")
            return read_answer(
                response.status_code, content_type, body, max_series=self._limits.max_series, quote=self._quote
            )
        except AnswerUnusable as exc:
            raise self._failed(str(exc), promql) from None
        except httpx.ConnectError as exc:
            raise self._failed(f"is unreachable: {self._quote(_cause(exc))}", promql) from None
        except httpx.HTTPError as exc:
            raise self._failed(f"failed to answer: {self._quote(_cause(exc))}", promql) from None

    async def _body(self, response: httpx.Response, promql: str) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise self._failed(f"answered with Content-Encoding {self._quote(encoding)}, though asked for none", promql)
        limit = self._limits.max_answer_bytes
        too_large = self._failed(
            f"answered more than {_size(limit)}; a guardrail query returns a few series: aggregate with sum by (...)",
            promql,
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in response.aiter_bytes():  # identity: the bytes as they come
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def _quote(self, text: str) -> str:
        """Text from Prometheus, fit to show: credentials replaced, on one line, bounded."""
        for secret in self._secrets:
            text = text.replace(secret, _SCRUBBED)
        return bounded_text(text, self._limits.max_quote_chars)

    def _failed(self, what: str, promql: str) -> GuardrailQueryFailed:
        return GuardrailQueryFailed(f"Prometheus at {self.url} {what}", promql)


_closing: set[asyncio.Task[None]] = set()


def _header_value(value: str, what: str, *, spaces: bool) -> str:
    """``value`` without surrounding blanks (Secrets written with ``echo`` end in a newline), checked sendable."""
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty")
    for position, char in enumerate(value, start=1):
        if char == " ":
            if spaces:
                continue
            problem = "a space"
        elif not char.isascii():
            problem = f"a non-ASCII character (U+{ord(char):04X})"
        elif not char.isprintable():
            problem = f"a control character (U+{ord(char):04X})"
        else:
            continue
        raise ValueError(f"{what} contains {problem} at position {position}, which an HTTP header cannot carry")
    return value


def _variants(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it may come back: as sent, JSON-escaped, URL-encoded, HTML-escaped. Longest first, so a
    secret containing another is replaced whole."""
    found = set()
    for secret in filter(None, secrets):
        found |= {
            secret,
            json.dumps(secret)[1:-1],
            secret.replace("/", "\\/"),
            quote(secret, safe=""),
            quote_plus(secret),
            html.escape(secret),
        }
    return tuple(sorted(found, key=len, reverse=True))


def _cause(exc: BaseException) -> str:
    """What an httpx error says, with the operating system's reasons beneath it ("Connection refused")."""
    text = str(exc) or type(exc).__name__
    reasons = [r for r in dict.fromkeys(_os_reasons(exc, set())) if r not in text]
    return f"{text}: {'; '.join(reasons)}" if reasons else text


def _os_reasons(exc: BaseException, seen: set[int]) -> Iterator[str]:
    """The reason of every OSError that caused ``exc``, through chains and exception groups."""
    if id(exc) in seen:
        return
    seen.add(id(exc))
    if isinstance(exc, OSError):
        # asyncio words a refusal "Connect call failed ('10.0.0.1', 9090)"; the errno says what happened.
        if isinstance(exc.errno, int) and exc.errno > 0:
            yield os.strerror(exc.errno)
        elif exc.strerror:
            yield exc.strerror
    for inner in (exc.__cause__, exc.__context__, *getattr(exc, "exceptions", ())):
        if isinstance(inner, BaseException):
            yield from _os_reasons(inner, seen)


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class _OwnResolver(httpx.AsyncBaseTransport):
    """Resolves Prometheus's host name in a thread of its own, then sends the request to the address found.

    asyncio resolves names in the loop's default executor, whose few threads the kill switch's calls and
    Secret reads share; a DNS server that hangs on Prometheus's name must not hold them. The name stays in
    the Host header and in TLS (SNI and the certificate check).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-dns")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return await self._inner.handle_async_request(request)
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        lookup = partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            found = await asyncio.get_running_loop().run_in_executor(self._executor, lookup)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        failure: httpx.ConnectError | None = None
        for address in dict.fromkeys(str(info[4][0]) for info in found):
            routed = httpx.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return await self._inner.handle_async_request(routed)
            except httpx.ConnectError as exc:
                failure = exc
        raise failure or httpx.ConnectError(f"{host} resolves to no address", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _variant_labels(samples: list[Sample], variant: str) -> set[str]:
    """The label names that carry ``variant`` as their value on every series."""
    names = [{k for k, v in s.labels.items() if v == variant} for s in samples]
    return set.intersection(*names) if names else set()


def without_variant_labels(
    candidate: tuple[list[Sample], str], control: tuple[list[Sample], str] | None
) -> tuple[list[Sample], list[Sample] | None]:
    """Drop the labels that carry the variant itself, so candidate and control series pair up by segment.

    ``rate(ai_errors_total{variant="{{variant}}"}[5m])`` keeps ``variant="canary"`` on every candidate series
    and ``variant="stable"`` on every control one; left in, no candidate segment would match its control. A
    label is dropped only when it holds the variant on every series of both results (of the one that has
    series, if the other is empty), so a label that merely happens to share the value elsewhere stays.
    """
    names = _variant_labels(*candidate)
    if control is not None and control[0]:
        names = names & _variant_labels(*control) if candidate[0] else _variant_labels(*control)

    def strip(samples: list[Sample]) -> list[Sample]:
        return [Sample({k: v for k, v in s.labels.items() if k not in names}, s.value) for s in samples]

    return strip(candidate[0]), None if control is None else strip(control[0])


async def measure(
    guardrail: Guardrail,
    variables: QueryVariables,
    source: MetricsSource,
    candidate: str,
    control: str | None,
    limits: GuardrailLimits = DEFAULT_LIMITS,
    at: float | None = None,
) -> GuardrailVerdict:
    """Measure one guardrail for the candidate (and the control, when given) and judge it.

    ``at`` is the Unix time to evaluate at (an analysis tick, shared by every rollout measured on it);
    None means now. Both queries run concurrently. If either fails, or the template cannot be rendered,
    the verdict is an Error that quotes the cause and the rendered query: never a breach.
    """
    template = guardrail.query or ""  # a guardrail without a query is a comparison, measured by `count`
    try:
        queries = [render_query(template, variables, candidate)]
        if control is not None:
            queries.append(render_query(template, variables, control))
    except QueryTemplateInvalid as exc:
        return judge_error(guardrail, f"the query template is invalid: {exc}", limits)

    variants = [candidate] if control is None else [candidate, control]
    results = await asyncio.gather(*(source.query(q, at) for q in queries), return_exceptions=True)
    measured: list[tuple[list[Sample], str]] = []
    errors: list[str] = []
    for role, variant, query, result in zip(("candidate", "control"), variants, queries, results, strict=False):
        if isinstance(result, GuardrailQueryFailed):
            errors.append(f"{role} query failed: {result} (query: {bounded_text(query, limits.max_quote_chars)})")
        elif isinstance(result, BaseException):
            raise result  # a bug, not a measurement problem: let it surface
        else:
            measured.append((result, variant))
    if errors:
        return judge_error(guardrail, "; ".join(errors), limits)
    candidate_samples, control_samples = without_variant_labels(
        measured[0], measured[1] if control is not None else None
    )
    return judge(guardrail, candidate_samples, control_samples, limits)
