"""One hostile Prometheus for the whole session, back to healthy before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.hostile_prometheus import Behaviour, HostilePrometheus, hostile_prometheus


@pytest.fixture(scope="session")
def _hostile_server() -> Iterator[HostilePrometheus]:
    with hostile_prometheus() as server:
        yield server


@pytest.fixture
def hostile(_hostile_server: HostilePrometheus) -> HostilePrometheus:
    _hostile_server.behave(Behaviour.HEALTHY)
    _hostile_server.requests.clear()
    return _hostile_server
