"""Measuring guardrails in Prometheus: render, query, judge.

prometheus-api-client is synchronous (requests), and the operator runs on Kopf's event loop, so every query
runs in a worker thread; a slow Prometheus delays one guardrail, never every rollout.

Whatever goes wrong while measuring (Prometheus unreachable or slow, an HTTP error, a query Prometheus
cannot parse, a template that cannot be rendered) becomes `GuardrailQueryFailed` and then an Error verdict
that quotes the cause in Prometheus's own words. An Error is never a breach: a typo in a query must not roll
back a healthy release; it pauses the rollout after ``analysis.consecutiveErrorLimit`` errors instead. For
the same reason a query is tried once: the analysis interval is the retry loop, and errors are counted there.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from airollout.guardrails.judging import GuardrailVerdict, Sample, judge, judge_error
from airollout.guardrails.templating import QueryTemplateInvalid, QueryVariables, render_query
from airollout.model.spec import Guardrail

__all__ = ["GuardrailQueryFailed", "MetricsSource", "PrometheusSource", "measure"]

# How prometheus-api-client words a non-200 answer: "HTTP Status Code 400 (b'{...}')".
_HTTP_ERROR = re.compile(r"HTTP Status Code (\d+) \((b(['\"]).*\3)\)\Z", re.DOTALL)
# Extra time given to the HTTP request beyond Prometheus's own query timeout, so that a slow query is
# reported by Prometheus ("query timed out in expression evaluation") rather than by a bare socket timeout.
_TIMEOUT_GRACE_SECONDS = 1.0


class GuardrailQueryFailed(Exception):
    """A guardrail query could not be answered; the message says why, in Prometheus's words when it has some."""

    def __init__(self, message: str, query: str) -> None:
        super().__init__(message)
        self.query = query


class MetricsSource(Protocol):
    """Where guardrail queries are answered: Prometheus in production, anything with this method in tests."""

    async def query(self, promql: str) -> list[Sample]:
        """Run an instant query; raise `GuardrailQueryFailed` when it cannot be answered."""
        ...


class PrometheusSource:
    """A Prometheus server's instant-query API, through prometheus-api-client, off the event loop."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """``timeout`` (seconds) bounds both Prometheus's evaluation of a query and the HTTP request."""
        all_headers = dict(headers or {})
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._client = PrometheusConnect(
            url=self.url,
            headers=all_headers,
            # No retries (see above); read=False lets a read timeout surface as one, not as "max retries".
            retry=Retry(total=0, read=False, raise_on_status=False),
            timeout=timeout + _TIMEOUT_GRACE_SECONDS,
        )

    async def query(self, promql: str) -> list[Sample]:
        return await asyncio.to_thread(self._query, promql)

    def close(self) -> None:
        self._client.close()

    def _query(self, promql: str) -> list[Sample]:
        try:
            result = self._client.custom_query(promql, params={"timeout": f"{self._timeout:g}"})
            return _samples(result, promql)
        except PrometheusApiClientException as exc:
            raise GuardrailQueryFailed(f"Prometheus at {self.url} {_http_error(str(exc))}", promql) from exc
        except requests.Timeout as exc:
            raise GuardrailQueryFailed(
                f"Prometheus at {self.url} did not answer within {self._timeout + _TIMEOUT_GRACE_SECONDS:g}s",
                promql,
            ) from exc
        except requests.ConnectionError as exc:
            raise GuardrailQueryFailed(f"Prometheus at {self.url} is unreachable: {_cause(exc)}", promql) from exc
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            # A 200 that is not Prometheus's JSON, e.g. a login page from a proxy in front of it.
            raise GuardrailQueryFailed(f"Prometheus at {self.url} gave an unusable answer: {exc}", promql) from exc


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the wrapper's repetition."""
    reason = exc.args[0] if exc.args else exc
    return str(getattr(reason, "reason", reason))


def _http_error(text: str) -> str:
    """Turn the client's "HTTP Status Code 400 (b'<json>')" into Prometheus's own errorType and error."""
    match = _HTTP_ERROR.match(text)
    if match is None:
        return f"answered: {text}"
    status = match[1]
    body = ast.literal_eval(match[2]).decode("utf-8", "replace")
    try:
        payload = json.loads(body)
        return f"answered HTTP {status} ({payload['errorType']}): {payload['error']}"
    except (ValueError, KeyError, TypeError):
        return f"answered HTTP {status}: {body.strip()[:500] or '(empty body)'}"


def _samples(result: Any, promql: str) -> list[Sample]:
    """Read an instant query's result: a vector (a list of series) or a scalar (``[time, "value"]``)."""
    if not isinstance(result, list):
        raise GuardrailQueryFailed(f"unexpected result from Prometheus: {result!r:.200}", promql)
    if len(result) == 2 and isinstance(result[0], int | float):
        if isinstance(result[1], str) and _is_number(result[1]):
            return [Sample({}, float(result[1]))]
        raise GuardrailQueryFailed("the query returned a string; a guardrail needs a number", promql)
    samples = []
    for series in result:
        if "value" not in series:
            raise GuardrailQueryFailed(
                "the query returned a range vector; a guardrail needs an instant vector or a scalar "
                "(wrap the range selector in a function such as rate())",
                promql,
            )
        samples.append(Sample(dict(series["metric"]), float(series["value"][1])))
    return samples


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _variant_labels(samples: list[Sample], variant: str) -> set[str]:
    """The label names that carry ``variant`` as their value on every series."""
    names = [{k for k, v in s.labels.items() if v == variant} for s in samples]
    return set.intersection(*names) if names else set()


def _without_variant_labels(
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
) -> GuardrailVerdict:
    """Measure one guardrail for the candidate (and the control, when given) and judge it.

    Both queries run concurrently. If either fails, or the template cannot be rendered, the verdict is an
    Error that quotes the cause and the rendered query: never a breach.
    """
    try:
        queries = [render_query(guardrail.query, variables, candidate)]
        if control is not None:
            queries.append(render_query(guardrail.query, variables, control))
    except QueryTemplateInvalid as exc:
        return judge_error(guardrail, f"the query template is invalid: {exc}")

    variants = [candidate] if control is None else [candidate, control]
    results = await asyncio.gather(*(source.query(q) for q in queries), return_exceptions=True)
    measured: list[tuple[list[Sample], str]] = []
    errors: list[str] = []
    for role, variant, query, result in zip(("candidate", "control"), variants, queries, results, strict=False):
        if isinstance(result, GuardrailQueryFailed):
            errors.append(f"{role} query failed: {result} (query: {query})")
        elif isinstance(result, BaseException):
            raise result  # a bug, not a measurement problem: let it surface
        else:
            measured.append((result, variant))
    if errors:
        return judge_error(guardrail, "; ".join(errors))
    candidate_samples, control_samples = _without_variant_labels(
        measured[0], measured[1] if control is not None else None
    )
    return judge(guardrail, candidate_samples, control_samples)
