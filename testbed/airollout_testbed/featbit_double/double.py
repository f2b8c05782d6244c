"""`FeatBitDouble`: FeatBit's API server and evaluation server for one environment, in process.

FeatBit itself cannot run in tests or the local sandbox, so this stands in for it: the operator
talks to its management API over HTTP, and FeatBit's own SDK connects to its evaluation server.
It runs on whichever event loop calls `start()`; the synchronous helpers (`create_flag`, `reset`,
...) are safe to call from any thread, which lets synchronous SDK code and async tests share it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from airollout_testbed.featbit_double.access_tokens import AccessTokens
from airollout_testbed.featbit_double.faults import Faults
from airollout_testbed.featbit_double.management import ManagementApi
from airollout_testbed.featbit_double.model import CREATE_FLAG, CREATE_SEGMENT, SEGMENT_TARGETING, JsonObject
from airollout_testbed.featbit_double.permissions import ALL_ACTIONS, Policy
from airollout_testbed.featbit_double.request_counts import RequestCounts
from airollout_testbed.featbit_double.store import Environment, Kind, Store
from airollout_testbed.featbit_double.streaming import EvaluationServer
from airollout_testbed.featbit_double.token import env_id_of_secret, new_access_token, new_env_secret

__all__ = ["DoubleConfig", "FeatBitDouble"]

_CROSS_THREAD_TIMEOUT = 30.0
Variation = tuple[str, str] | Mapping[str, Any]


@dataclass(frozen=True)
class DoubleConfig:
    """Where the double listens and which credentials it accepts."""

    host: str = "127.0.0.1"
    """Interface for both servers; the URLs use it too, so it must be an address clients can reach."""

    api_port: int = 0
    """Management API port (FeatBit's api-server uses 5000); 0 picks a free port."""

    eval_port: int = 0
    """Evaluation server port (FeatBit uses 5100); 0 picks a free port."""

    token: str | None = None
    """The double's own management API access token, allowed everything; generated (`api-...`) when
    None. More tokens, with narrower policies, come from `FeatBitDouble.mint_token`."""

    token_name: str = "airollout"
    """The own token's name, which audit entries show as `creatorName`."""

    env_secret: str | None = None
    """The environment's server SDK secret; generated when None. The environment id is the one the
    secret encodes, so a given secret must decode to a GUID."""

    timeout_hold: float = 30.0
    """How long a timeout fault holds a request before answering 504."""


class FeatBitDouble:
    """A FeatBit server double: management API, SDK streaming, insight events, access tokens with
    policies, and fault knobs."""

    def __init__(self, config: DoubleConfig | None = None) -> None:
        self.config = config or DoubleConfig()
        self.token = self.config.token or new_access_token()
        if self.config.env_secret is None:
            env_id = uuid.uuid4()
            self.env_secret = new_env_secret(env_id)
        else:
            env_id = env_id_of_secret(self.config.env_secret)
            self.env_secret = self.config.env_secret
        self.env_id = str(env_id)
        self.faults = Faults()
        environment = Environment(id=self.env_id, server_secret=self.env_secret, client_secret=new_env_secret(env_id))
        self._tokens = AccessTokens(self.token, self.config.token_name)
        self._actor = self._tokens.own.actor
        self._store = Store(
            environment, notify=self._publish, audit_insert_fails=lambda: self.faults.take("audit_failures")
        )
        self._evaluation = EvaluationServer(self._store, environment)
        self._management = ManagementApi(
            self._store,
            tokens=self._tokens,
            faults=self.faults,
            timeout_hold=self.config.timeout_hold,
            reset=self._reset_on_loop,
            drop_streaming=self._evaluation.drop_connections,
        )
        self.requests = RequestCounts()
        """The management requests answered so far, by method and route (also `GET /_double/requests`)."""
        self.requests.attach(self._management.app)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._runners: list[web.AppRunner] = []
        self._ports: tuple[int, int] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start both servers on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._evaluation.attach(self._loop)
        ports = []
        for app, port in ((self._management.app, self.config.api_port), (self._evaluation.app, self.config.eval_port)):
            # No access log: the streaming URL carries the connection token, an encoded env secret.
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.config.host, port).start()
            self._runners.append(runner)
            ports.append(runner.addresses[0][1])
        self._ports = (ports[0], ports[1])

    async def stop(self) -> None:
        """Answer held requests, close SDK connections and stop both servers."""
        await self._release_and_drop()
        self._evaluation.attach(None)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self._ports = None
        self._loop = None

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise RuntimeError("the FeatBit double is not running")
        return self._ports[index]

    @property
    def api_url(self) -> str:
        """Management API base; routes are under `/api/v1/`."""
        return f"http://{self.config.host}:{self._port(0)}"

    @property
    def eval_url(self) -> str:
        """Evaluation server base: the SDK's `event_url`."""
        return f"http://{self.config.host}:{self._port(1)}"

    @property
    def streaming_url(self) -> str:
        """Evaluation server base for WebSockets: the SDK's `streaming_url`."""
        return f"ws://{self.config.host}:{self._port(1)}"

    @property
    def env_resource_name(self) -> str:
        """The environment's RN, the scope a segment needs to reach this environment's SDKs."""
        return self._store.environment.resource_name

    # ---- running code on the server's loop ---------------------------------------------------

    def _publish(self, kind: Kind, item: JsonObject, updated_ms: int) -> None:
        self._evaluation.publish(kind, item, updated_ms)

    def _on_loop(self, action: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run `action` on the server's loop: waited for from other threads, scheduled on the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Code on the loop itself cannot block on the loop; keep the task alive until done.
            task = loop.create_task(action())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            asyncio.run_coroutine_threadsafe(action(), loop).result(_CROSS_THREAD_TIMEOUT)

    async def _release_and_drop(self) -> None:
        await self._management.release_held_requests()
        await self._evaluation.drop_connections()

    async def _reset_on_loop(self) -> None:
        self._clear_state()
        await self._release_and_drop()

    def _clear_state(self) -> None:
        self._store.reset()
        self._tokens.reset()
        self.faults.clear()
        self._evaluation.clear_records()

    def reset(self) -> None:
        """Forget flags, segments, audit log, insights, faults and minted tokens; keep the own token
        (allowed everything again), the environment and the ports.

        Held requests are answered and SDK connections dropped, so nothing from before leaks in.
        """
        self._clear_state()
        self._on_loop(self._release_and_drop)

    def drop_streaming_connections(self) -> None:
        """Close every SDK connection as a restarting server would; the SDKs reconnect and resync."""
        self._on_loop(self._evaluation.drop_connections)

    # ---- access tokens -----------------------------------------------------------------------

    def mint_token(self, name: str, *, allow: Iterable[str] = (ALL_ACTIONS,), deny: Iterable[str] = ()) -> str:
        """A new access token whose policy allows `allow` but not `deny` (FeatBit permission names, or
        `"*"` for all); a permission neither names is refused, as in FeatBit. Its writes are audited
        under `name`. Minted tokens last until `reset()`."""
        return self._tokens.mint(name, allow=allow, deny=deny).value

    def set_token_policy(self, token: str, *, allow: Iterable[str] = (ALL_ACTIONS,), deny: Iterable[str] = ()) -> None:
        """Replace a token's policy (the own token's too); requests from then on are checked against it."""
        self._tokens.set_policy(token, allow=allow, deny=deny)

    # ---- synchronous helpers (same rules as the HTTP routes) ----------------------------------

    def create_flag(
        self,
        *,
        key: str,
        variations: Sequence[Variation] = (("canary", "true"), ("stable", "false")),
        enabled_variation_id: str | None = None,
        disabled_variation_id: str | None = None,
        is_enabled: bool = False,
        name: str | None = None,
        variation_type: str = "boolean",
        description: str = "",
        tags: Sequence[str] = (),
    ) -> JsonObject:
        """Create a flag as `POST .../feature-flags` does and return the full flag.

        A variation is `(id, value)` (its name is its id) or a `{id, name, value}` dict. The
        enabled variation defaults to the first one and the disabled variation to the last one.
        """
        items = [{"id": v[0], "name": v[0], "value": v[1]} if isinstance(v, tuple) else dict(v) for v in variations]
        body = {
            "name": key if name is None else name,
            "key": key,
            "isEnabled": is_enabled,
            "description": description,
            "variationType": variation_type,
            "variations": items,
            "enabledVariationId": enabled_variation_id or (items[0]["id"] if items else None),
            "disabledVariationId": disabled_variation_id or (items[-1]["id"] if items else None),
            "tags": list(tags),
        }
        return self._store.create_flag(CREATE_FLAG(body, "$"), self._actor)

    def create_segment(
        self,
        *,
        key: str,
        name: str | None = None,
        included: Sequence[str] = (),
        excluded: Sequence[str] = (),
        rules: Sequence[JsonObject] = (),
        description: str = "",
    ) -> JsonObject:
        """Create an environment-specific segment (`POST .../segments`) and, when any targeting is
        given, set it (`PUT .../segments/{id}/targeting`) as the UI does; return the segment."""
        body = {
            "type": "environment-specific",
            "name": key if name is None else name,
            "key": key,
            "description": description,
            "scopes": [self.env_resource_name],
        }
        segment = self._store.create_segment(CREATE_SEGMENT(body, "$"), self._actor)
        if included or excluded or rules:
            targeting = {"included": list(included), "excluded": list(excluded), "rules": list(rules)}
            self._store.update_segment_targeting(
                segment["id"], SEGMENT_TARGETING(targeting, "$"), self._actor, Policy()
            )
            segment = self._store.get_segment(segment["id"])
        return segment

    def get_flag(self, key: str) -> JsonObject:
        """The full flag (with `revision`), as `GET .../feature-flags/{key}` returns it."""
        return self._store.get_flag(key)

    @property
    def insight_events(self) -> list[JsonObject]:
        """Every insight item SDKs have posted to `/api/public/insight/track` since the last reset."""
        return self._evaluation.insights

    @property
    def data_sync_timestamps(self) -> list[int]:
        """The `timestamp` of each `data-sync` request since the last reset (0 asks for everything)."""
        return self._evaluation.sync_timestamps
