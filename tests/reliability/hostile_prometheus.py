"""A Prometheus that misbehaves on demand, over real HTTP: every answer a guardrail must survive without acting.

Each `Behaviour` is something met in production or in a reproduction of an issue: an error status beside
healthy-looking data, a proxy's HTML, a query that forgot its ``sum by``, a server that hangs or dribbles.
The server runs aiohttp on an event loop in a thread of its own, so a test's event loop, the operator's or
another process's all reach it as any Prometheus, and a test switches its behaviour between two queries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

__all__ = ["Behaviour", "HostilePrometheus", "Request", "hostile_prometheus"]

LOCALES = ("en", "de")


class Behaviour(StrEnum):
    HEALTHY = "healthy"
    """A vector with one series per locale, each at `HostilePrometheus.value`."""
    MALFORMED_JSON = "malformed-json"
    """HTTP 200 with JSON cut off halfway."""
    HTML = "html"
    """HTTP 200 with a login page, as a proxy in front of Prometheus answers."""
    STATUS_ERROR_WITH_DATA = "status-error-with-data"
    """HTTP 200, ``"status": "error"``, and beside it a ``data`` holding a healthy vector."""
    MATRIX = "matrix"
    """A range vector: the query selects ``[5m]`` without a function around it."""
    EMPTY = "empty"
    """A vector without series."""
    NAN = "nan"
    """Every series at NaN (0/0 over an idle window)."""
    PLUS_INF = "+inf"
    """Every series at +Inf."""
    MINUS_INF = "-inf"
    """Every series at -Inf."""
    DELAY = "delay"
    """No answer for `HostilePrometheus.delay` seconds, then a healthy one."""
    SLOW_BODY = "slow-body"
    """Headers at once, then one byte of a healthy answer every 0.2 s: no read ever waits long."""
    REDIRECT_LOOP = "redirect-loop"
    """HTTP 302 to the same address, for ever."""
    HUGE_BODY = "huge-body"
    """50 MB of a vector, streamed without a Content-Length."""
    MANY_SERIES = "many-series"
    """20,000 series: a query missing its ``sum by``."""
    ECHO_HEADERS = "echo-headers"
    """HTTP 400 whose body repeats every request header, credentials included, as some proxies do."""
    DISCONNECT = "disconnect"
    """The connection closes without an answer, as when Prometheus is killed mid-query."""


GARBAGE = frozenset(Behaviour) - {
    Behaviour.HEALTHY,
    Behaviour.EMPTY,
    Behaviour.NAN,
    Behaviour.PLUS_INF,
    Behaviour.MINUS_INF,
}
"""Behaviours that are no answer at all: a guardrail must report each as an Error, never judge it."""


@dataclass(frozen=True)
class Request:
    """A request as the server saw it."""

    method: str
    headers: dict[str, str]
    form: dict[str, str]


class HostilePrometheus:
    """The server; `behave` chooses how it answers from the next request on."""

    def __init__(self) -> None:
        self.behaviour = Behaviour.HEALTHY
        self.value = "0.01"
        self.delay = 30.0
        self.requests: list[Request] = []
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-prometheus", daemon=True)
        self._runner: web.AppRunner | None = None

    def behave(self, behaviour: Behaviour, *, value: str = "0.01", delay: float = 30.0) -> None:
        self.behaviour, self.value, self.delay = behaviour, value, delay

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _shut_down(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else dict(request.query)
        self.requests.append(Request(request.method, dict(request.headers), {k: str(v) for k, v in form.items()}))
        behaviour = self.behaviour
        if behaviour is Behaviour.DELAY:
            await self._sleep(self.delay)
            return web.json_response(_vector(self.value))
        if behaviour is Behaviour.SLOW_BODY:
            return await self._dribble(request, json.dumps(_vector(self.value)).encode())
        if behaviour is Behaviour.HUGE_BODY:
            return await self._flood(request, 50 * 2**20)
        if behaviour is Behaviour.REDIRECT_LOOP:
            raise web.HTTPFound(request.path_qs)
        if behaviour is Behaviour.DISCONNECT:
            assert request.transport is not None
            request.transport.abort()
            await self._sleep(1)
            return web.Response()
        if behaviour is Behaviour.ECHO_HEADERS:
            echoed = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
            return web.Response(status=400, text=f"400 Bad Request\nYour request carried:\n{echoed}\n")
        if behaviour is Behaviour.HTML:
            page = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><form>...</form></body></html>"
            return web.Response(text=page, content_type="text/html")
        if behaviour is Behaviour.MALFORMED_JSON:
            return web.Response(text=json.dumps(_vector(self.value))[:40], content_type="application/json")
        return web.json_response(self._payload(behaviour))

    def _payload(self, behaviour: Behaviour) -> dict[str, Any]:
        if behaviour is Behaviour.STATUS_ERROR_WITH_DATA:
            return {**_vector("0"), "status": "error", "errorType": "execution", "error": "query processing failed"}
        if behaviour is Behaviour.MATRIX:
            series = [{"metric": {"locale": locale}, "values": [[1.0, "0.01"]]} for locale in LOCALES]
            return {"status": "success", "data": {"resultType": "matrix", "result": series}}
        if behaviour is Behaviour.MANY_SERIES:
            series = [{"metric": {"pod": f"ai-{i}"}, "value": [1.0, "0.01"]} for i in range(20_000)]
            return {"status": "success", "data": {"resultType": "vector", "result": series}}
        value = {Behaviour.NAN: "NaN", Behaviour.PLUS_INF: "+Inf", Behaviour.MINUS_INF: "-Inf"}.get(
            behaviour, self.value
        )
        return _vector(value, locales=() if behaviour is Behaviour.EMPTY else LOCALES)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _dribble(self, request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for index in range(len(body)):
            if self._stopping.is_set():
                break
            await response.write(body[index : index + 1])
            await self._sleep(0.2)
        return response

    async def _flood(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"status":"success","data":{"resultType":"vector","result":[')
        series = b'{"metric":{"locale":"en"},"value":[1,"0.01"]},' * 1000
        try:
            for _ in range(size // len(series)):
                await response.write(series)
        except ConnectionError:
            pass  # the client stopped reading, as it should
        return response


def _vector(value: str, locales: tuple[str, ...] = LOCALES) -> dict[str, Any]:
    series = [{"metric": {"locale": locale}, "value": [1.0, value]} for locale in locales]
    return {"status": "success", "data": {"resultType": "vector", "result": series}}


@contextmanager
def hostile_prometheus() -> Iterator[HostilePrometheus]:
    server = HostilePrometheus()
    server.start()
    try:
        yield server
    finally:
        server.stop()
