"""The evaluation server's SDK side: the `/streaming` WebSocket, insight events and polling.

This is what FeatBit's own server SDKs talk to (featbit-api.md §4), reproduced closely enough
that the real `fb-python-sdk` connects, syncs and evaluates against the double. A connection
receives pushes only after its first `data-sync`, and only for writes newer than the snapshot it
was sent: the SDK drops a full snapshot that is not newer than data it already holds, so a push
racing ahead of the snapshot would leave it with a partial view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from airollout_testbed.featbit_double.model import JsonObject
from airollout_testbed.featbit_double.responses import problem
from airollout_testbed.featbit_double.store import Environment, Kind, Store
from airollout_testbed.featbit_double.token import InvalidToken, decode_connection_token, env_id_of_secret

__all__ = ["EvaluationServer"]

log = logging.getLogger(__name__)

_TOKEN_EXPIRY_MS = 30_000  # FeatBit's Streaming__TokenExpirySeconds default
_SUPPORTED_VERSIONS = ("", "1", "2")
_INVALID_REQUEST = 4003  # FeatBit: this request will never be accepted, so do not retry
_SERVICE_RESTART = 1012  # a transient close: the SDK reconnects and resyncs
_CLOSE_TIMEOUT = 2.0  # how long a close waits for the client's reply; keeps drops and stop() prompt
_PONG = json.dumps({"messageType": "pong", "data": {}})


@dataclass(eq=False)
class _Connection:
    socket: web.WebSocketResponse
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    cursor: int | None = None
    """Newest write covered by the last data-sync reply; None until the SDK has asked."""


def _data_sync(data: JsonObject) -> str:
    return json.dumps({"messageType": "data-sync", "data": data})


class EvaluationServer:
    """Routes of FeatBit's evaluation server (default port 5100), for server-side SDKs."""

    def __init__(self, store: Store, environment: Environment) -> None:
        self._store = store
        self._environment = environment
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[_Connection] = set()
        self._records_lock = threading.Lock()
        self._insights: list[JsonObject] = []
        self._sync_timestamps: list[int] = []
        self.app = web.Application()
        self.app.router.add_get("/streaming", self._streaming)
        self.app.router.add_post("/api/public/insight/track", self._track)
        self.app.router.add_get("/api/public/sdk/server/latest-all", self._latest_all)

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Bind pushes to the server's event loop (None once the server has stopped)."""
        self._loop = loop

    @property
    def insights(self) -> list[JsonObject]:
        """Every item of every `insight/track` body received, in arrival order."""
        with self._records_lock:
            return list(self._insights)

    @property
    def sync_timestamps(self) -> list[int]:
        """The `timestamp` of every `data-sync` request received, in arrival order."""
        with self._records_lock:
            return list(self._sync_timestamps)

    def clear_records(self) -> None:
        with self._records_lock:
            self._insights.clear()
            self._sync_timestamps.clear()

    # ---- pushes ------------------------------------------------------------------------------

    def publish(self, kind: Kind, item: JsonObject, updated_ms: int) -> None:
        """Push one changed flag or segment to every synced SDK; callable from any thread."""
        loop = self._loop
        if loop is None:
            return
        data = {
            "eventType": "patch",
            "featureFlags": [item] if kind == "flag" else [],
            "segments": [item] if kind == "segment" else [],
        }
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody to tell
            loop.call_soon_threadsafe(self._fan_out, _data_sync(data), updated_ms)

    def _fan_out(self, message: str, updated_ms: int) -> None:
        for connection in self._connections:
            if connection.cursor is not None and updated_ms > connection.cursor:
                connection.outbox.put_nowait(message)

    async def drop_connections(self) -> int:
        """Close every SDK connection the way a restarting server would; returns how many."""
        connections = list(self._connections)
        await asyncio.gather(
            *(connection.socket.close(code=_SERVICE_RESTART, message=b"service restart") for connection in connections)
        )
        return len(connections)

    # ---- /streaming --------------------------------------------------------------------------

    def _rejection(self, request: web.Request) -> str | None:
        """Why FeatBit's `RequestValidator` would refuse the connection, or None."""
        query = request.query
        if query.get("type") != "server":
            return "only server SDK connections are supported"
        if query.get("version", "") not in _SUPPORTED_VERSIONS:
            return "invalid version"
        try:
            token = decode_connection_token(query.get("token", ""))
        except InvalidToken as error:
            return f"invalid token: {error}"
        if abs(time.time_ns() // 1_000_000 - token.timestamp_ms) > _TOKEN_EXPIRY_MS:
            return "token is expired"
        if token.secret != self._environment.server_secret:
            return "not this environment's server secret"
        return None

    async def _streaming(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(timeout=_CLOSE_TIMEOUT)
        if not socket.can_prepare(request).ok:
            raise web.HTTPNotFound()
        await socket.prepare(request)
        reason = self._rejection(request)
        if reason is not None:
            log.info("streaming connection refused: %s", reason)
            # As FeatBit does: accept the upgrade, then close with 4003.
            await socket.close(code=_INVALID_REQUEST, message=b"invalid request, close by server")
            return socket
        connection = _Connection(socket)
        self._connections.add(connection)
        writer = asyncio.create_task(self._write(connection))
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._on_message(connection, message.data)
        finally:
            self._connections.discard(connection)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return socket

    @staticmethod
    async def _write(connection: _Connection) -> None:
        # One writer per connection keeps replies and pushes in the order they were queued.
        with contextlib.suppress(ConnectionError):
            while True:
                await connection.socket.send_str(await connection.outbox.get())

    def _on_message(self, connection: _Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("messageType") == "ping":
            connection.outbox.put_nowait(_PONG)
        elif message.get("messageType") == "data-sync":
            data = message.get("data")
            timestamp = data.get("timestamp") if isinstance(data, dict) else None
            # FeatBit reads the timestamp with TryGetInt64: anything else counts as 0.
            if not isinstance(timestamp, int) or isinstance(timestamp, bool):
                timestamp = 0
            with self._records_lock:
                self._sync_timestamps.append(timestamp)
            payload, connection.cursor = self._store.sync_payload(timestamp)
            connection.outbox.put_nowait(_data_sync(payload))

    # ---- HTTP endpoints ----------------------------------------------------------------------

    @staticmethod
    def _secret_env_id(request: web.Request) -> str | None:
        """FeatBit authenticates these routes by decoding the raw secret, without looking it up."""
        try:
            return str(env_id_of_secret(request.headers.get("Authorization", "")))
        except InvalidToken:
            return None

    async def _track(self, request: web.Request) -> web.Response:
        if self._secret_env_id(request) is None:
            return web.Response(status=401)
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError as error:
            return problem("$", f"invalid JSON: {error.msg}")
        if not isinstance(body, list):
            return problem("$", "The JSON value could not be converted to a collection.")
        with self._records_lock:
            self._insights.extend(body)
        return web.Response(status=200)

    async def _latest_all(self, request: web.Request) -> web.Response:
        env_id = self._secret_env_id(request)
        if env_id is None:
            return web.Response(status=401)
        try:
            timestamp = int(request.query.get("timestamp", "0"))
        except ValueError:
            return problem("timestamp", f"The value '{request.query['timestamp']}' is not valid.")
        if env_id != self._environment.id:
            return web.Response(status=200)
        payload, _ = self._store.sync_payload(timestamp)
        if not payload["featureFlags"] and not payload["segments"]:
            return web.Response(status=200)
        return web.json_response({"messageType": "data-sync", "data": payload})
