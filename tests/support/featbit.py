"""Pytest plugin: a running FeatBit double, FeatBit's own SDK pointed at it, and counting helpers.

The double runs on an event loop in a background thread, so synchronous code (the SDK, httpx's
sync client) and async tests on their own loops can all reach it. One server serves the whole
session; `featbit_double` resets it before each test, so every test starts with no flags,
segments, audit entries, insights or faults, and with the same token, environment and ports.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest
from fbclient import FBClient
from fbclient.config import Config, WebSocketConfig

from airollout_testbed.featbit_double import DoubleConfig, FeatBitDouble

__all__ = [
    "connect_sdk",
    "count_variations",
    "featbit_client",
    "featbit_double",
    "featbit_double_session",
    "synthetic_users",
]

User = Mapping[str, Any]
_START_TIMEOUT = 10.0


def connect_sdk(double: FeatBitDouble, *, start_wait: float = 15.0, **config: Any) -> FBClient:
    """A FeatBit SDK client for the double's environment; extra keywords go to `fbclient.Config`.

    The WebSocket timeout defaults to 1 s (FeatBit's is 5 s): `FBClient.stop()` waits that long
    plus 1 s for the streaming thread, and websocket-client sometimes misses its own close and
    uses the whole wait, against any server. On loopback 1 s is ample for connecting.
    """
    config.setdefault("websocket", WebSocketConfig(timeout=1.0))
    return FBClient(
        Config(double.env_secret, event_url=double.eval_url, streaming_url=double.streaming_url, **config),
        start_wait=start_wait,
    )


def synthetic_users(count: int, prefix: str = "user-") -> list[dict[str, str]]:
    """`count` distinct SDK users, keyed `user-0`, `user-1`, ..."""
    return [{"key": f"{prefix}{index}", "name": f"{prefix}{index}"} for index in range(count)]


def count_variations(
    client: FBClient, flag_key: str, users: Iterable[User], default: Any = None
) -> Counter[str | None]:
    """How many of `users` the SDK serves each variation id (None: evaluation failed)."""
    return Counter(client.variation_detail(flag_key, dict(user), default).variation_id for user in users)


@pytest.fixture(scope="session")
def featbit_double_session() -> Iterator[FeatBitDouble]:
    """The session's double, not reset between tests; most tests want `featbit_double`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="featbit-double", daemon=True)
    thread.start()
    double = FeatBitDouble(DoubleConfig())
    asyncio.run_coroutine_threadsafe(double.start(), loop).result(_START_TIMEOUT)
    try:
        yield double
    finally:
        asyncio.run_coroutine_threadsafe(double.stop(), loop).result(_START_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        loop.close()


@pytest.fixture
def featbit_double(featbit_double_session: FeatBitDouble) -> FeatBitDouble:
    """A running FeatBit double with a fresh environment: no flags, segments or faults."""
    featbit_double_session.reset()
    return featbit_double_session


@pytest.fixture
def featbit_client(featbit_double: FeatBitDouble) -> Iterator[Callable[..., FBClient]]:
    """A factory for SDK clients connected to `featbit_double` (see `connect_sdk`); all are
    stopped, concurrently, when the test ends."""
    clients: list[FBClient] = []

    def connect(**config: Any) -> FBClient:
        client = connect_sdk(featbit_double, **config)
        clients.append(client)
        return client

    yield connect
    stoppers = [threading.Thread(target=client.stop) for client in clients]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()
