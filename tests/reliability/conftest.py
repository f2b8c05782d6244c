"""What the reliability tests share: one hostile Prometheus for the session, back to healthy before each test,
and a REST client for the test bed's apiserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.hostile_prometheus import Behaviour, HostilePrometheus, hostile_prometheus
from tests.reliability.rollouts import Kube
from tests.support.sandbox import Testbed


@pytest.fixture(scope="session")
def _hostile_server() -> Iterator[HostilePrometheus]:
    with hostile_prometheus() as server:
        yield server


@pytest.fixture
def hostile(_hostile_server: HostilePrometheus) -> HostilePrometheus:
    _hostile_server.behave(Behaviour.HEALTHY)
    _hostile_server.requests.clear()
    return _hostile_server


@pytest.fixture
def kube(testbed: Testbed) -> Iterator[Kube]:
    client = Kube(testbed.kubeconfig)
    yield client
    client.close()
