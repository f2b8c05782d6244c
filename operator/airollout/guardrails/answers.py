"""Reading Prometheus's answers to instant queries as its HTTP API specifies them, and nothing more.

An HTTP 200 is not yet an answer. Prometheus, and the proxies that imitate it, can say 200 with
``"status": "error"`` next to a ``data`` that looks healthy; a proxy can answer with a login page; a query
that forgot its ``sum by`` returns thousands of series. Only ``"status": "success"`` with an instant vector
or a scalar of numbers is read as data: anything else raises `AnswerUnusable`, whose message says what came
back and, when the query is at fault, how to fix it. A rollout must never advance, nor roll back, on
something that only resembles an answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from airollout.guardrails.judging import Sample

__all__ = ["AnswerUnusable", "read_answer"]


class AnswerUnusable(Exception):
    """What came back is not a usable answer; the message continues ``Prometheus at URL ...``."""


def read_answer(
    status_code: int, content_type: str, body: bytes, *, max_series: int, quote: Callable[[str], str]
) -> list[Sample]:
    """The samples of an instant query's answer, or `AnswerUnusable` saying why there are none.

    ``quote`` makes text from the answer fit to show (credentials removed, one line, bounded); every word
    taken from the answer goes through it.
    """
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        payload = None
    if not 200 <= status_code < 300:
        if _is_error(payload):
            raise AnswerUnusable(f"answered HTTP {status_code} {_error(payload, quote)}")
        raise AnswerUnusable(f"answered HTTP {status_code}: {quote(text) or '(empty body)'}")
    if not isinstance(payload, dict):
        kind = quote(content_type) or "no content type"
        raise AnswerUnusable(f"answered HTTP {status_code} with {kind}, not Prometheus's JSON: {quote(text)}")
    if payload.get("status") != "success":
        if _is_error(payload):
            # The data beside an error is never read: it may be a stale or partial result.
            raise AnswerUnusable(f"answered HTTP {status_code} with status error {_error(payload, quote)}")
        status = quote(json.dumps(payload.get("status")))
        raise AnswerUnusable(f"answered HTTP {status_code} without status success (status {status})")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise AnswerUnusable("answered status success without a data object")
    return _samples(data, max_series, quote)


def _is_error(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("status") == "error"


def _error(payload: dict[str, Any], quote: Callable[[str], str]) -> str:
    """``(errorType): error``, in Prometheus's words."""
    return f"({quote(str(payload.get('errorType', 'unknown')))}): {quote(str(payload.get('error', '')))}"


def _samples(data: dict[str, Any], max_series: int, quote: Callable[[str], str]) -> list[Sample]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [Sample({}, _value(result, "the scalar"))]
    if kind == "matrix":
        raise AnswerUnusable(
            "returned a range vector; a guardrail needs an instant vector or a scalar "
            "(wrap the range selector in a function such as rate())"
        )
    if kind == "string":
        raise AnswerUnusable("returned a string; a guardrail needs a number")
    if kind != "vector" or not isinstance(result, list):
        raise AnswerUnusable(f"answered with a result of type {quote(json.dumps(kind))}, not a vector or a scalar")
    if len(result) > max_series:
        raise AnswerUnusable(
            f"returned {len(result)} series; a guardrail judges at most {max_series}: aggregate them with "
            "sum by (...) over the labels that name a segment, such as locale"
        )
    samples = []
    for index, series in enumerate(result):
        what = f"series {index + 1}"
        if not isinstance(series, dict):
            raise AnswerUnusable(f"answered a vector whose {what} is not an object")
        labels = series.get("metric", {})
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise AnswerUnusable(f"answered a vector whose {what} has labels that are not strings")
        samples.append(Sample(labels, _value(series.get("value"), what)))
    return samples


def _value(pair: Any, what: str) -> float:
    """The number of a ``[time, "value"]`` pair; Prometheus writes NaN and infinities as strings too."""
    if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
        try:
            return float(pair[1])
        except ValueError:
            pass
    raise AnswerUnusable(f'answered a value for {what} that is not [time, "number"]')
