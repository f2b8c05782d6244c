"""FeatBit's two response shapes: the `{success, errors, data}` envelope and ASP.NET ProblemDetails.

Every handled outcome of a management route is an envelope (§1.3); a request that ASP.NET cannot
bind (malformed JSON, wrong types, `toggle/notabool`) never reaches FeatBit's code and is
answered with RFC 7807 ProblemDetails instead (§1.4, shape inferred from ASP.NET defaults).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["envelope", "failure", "problem"]


def envelope(data: Any) -> web.Response:
    return web.json_response({"success": True, "errors": [], "data": data})


def failure(status: int, codes: list[str], data: Any = None) -> web.Response:
    return web.json_response({"success": False, "errors": codes, "data": data}, status=status)


def problem(field: str, message: str) -> web.Response:
    """The 400 ASP.NET gives when binding fails; `field` is a JSON path or a parameter name."""
    body = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {field: [message]},
    }
    return web.json_response(body, status=400, content_type="application/problem+json")
