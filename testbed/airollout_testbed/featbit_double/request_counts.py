"""How many requests the double has answered, by method and route: how hard a client leans on FeatBit.

A benchmark that asks "how many flag reads does the operator make per rollout per interval?" needs the
server's own count; counting on the client side would only count what the client believes it sent. Every
request to the management API is counted as it arrives, whatever its answer (an unknown route counts as
``unmatched``); the double's own `/_double/...` admin routes are not. The counts only grow:
`GET /_double/requests` returns them, and a reader takes the difference between two reads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from airollout_testbed.featbit_double.model import JsonObject

__all__ = ["RequestCounts"]

_ADMIN_PREFIX = "/_double/"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestCounts:
    """Counters of the requests an aiohttp application answered; `attach` makes it count and serve them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # read from test threads while the server's loop counts
        self._routes: Counter[tuple[str, str]] = Counter()

    def attach(self, app: web.Application, path: str = "/_double/requests") -> None:
        """Count every request ``app`` receives (outermost, before faults or authentication act) and serve the
        counts on ``GET path``; call before the application starts."""
        app.middlewares.insert(0, self._count)
        app.router.add_get(path, self._serve)

    def snapshot(self) -> JsonObject:
        """``{"total": n, "byMethod": {"GET": n, ...}, "byRoute": {"GET /api/v1/...": n, ...}}``, counted since
        the double started."""
        with self._lock:
            routes = dict(self._routes)
        by_method: Counter[str] = Counter()
        for (method, _route), count in routes.items():
            by_method[method] += count
        return {
            "total": sum(routes.values()),
            "byMethod": dict(sorted(by_method.items())),
            "byRoute": {f"{method} {route}": count for (method, route), count in sorted(routes.items())},
        }

    @web.middleware
    async def _count(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith(_ADMIN_PREFIX):
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            with self._lock:
                self._routes[request.method, route] += 1
        return await handler(request)

    async def _serve(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())
