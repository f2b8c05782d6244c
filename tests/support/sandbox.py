"""The real test bed as pytest fixtures: one control plane and Prometheus per session, a namespace per test.

Integration tests skip with the reason and the fix when the tools are not installed; under CI
(``AIROLLOUT_REQUIRE_TESTBED=1``) a missing tool is an error instead, so a green run always ran them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airollout_testbed.sandbox.control_plane import start_apiserver, start_etcd
from airollout_testbed.sandbox.environment import down
from airollout_testbed.sandbox.prometheus import add_scrape_target, start_prometheus, stop_prometheus
from airollout_testbed.sandbox.tools import INSTALL_HINT, missing_tools, tool


@dataclass
class Testbed:
    __test__ = False  # a fixture's value, not a test class

    dir: Path
    kubeconfig: Path
    prometheus_url: str
    _prometheus_port: int = field(init=False)

    def __post_init__(self) -> None:
        self._prometheus_port = int(self.prometheus_url.rsplit(":", 1)[1])

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the test apiserver; on failure the error shows its stderr."""
        return self._run(str(tool("kubectl")), args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(str(tool("helm")), args, input=input, check=check, timeout=120)

    def add_scrape_target(self, name: str, address: str) -> None:
        add_scrape_target(self.dir, name, address)

    def stop_prometheus(self) -> None:
        stop_prometheus(self.dir)

    def start_prometheus(self) -> None:
        """Restart Prometheus on the same port and storage, as after an outage."""
        start_prometheus(self.dir, port=self._prometheus_port)

    def _run(
        self, binary: str, args: tuple[str, ...], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{Path(binary).name} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result


TESTBED_TOOLS = ("etcd", "kube-apiserver", "prometheus", "kubectl", "helm")


def require_tools(names: tuple[str, ...] = TESTBED_TOOLS) -> None:
    """Skip the test when a tool is missing, saying how to install it; fail instead under CI."""
    missing = missing_tools(names)
    if missing:
        message = f"test bed tools missing ({', '.join(missing)}): {INSTALL_HINT}"
        if os.environ.get("AIROLLOUT_REQUIRE_TESTBED") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    require_tools()
    directory = tmp_path_factory.mktemp("testbed")
    try:
        kubeconfig = Path(start_apiserver(directory, start_etcd(directory)))
        bed = Testbed(dir=directory, kubeconfig=kubeconfig, prometheus_url=start_prometheus(directory))
        yield bed
    finally:
        down(directory)


@pytest.fixture
def namespace(testbed: Testbed) -> str:
    """A fresh namespace per test (without a controller-manager, namespaces are never really deleted)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    testbed.kubectl("create", "namespace", name)
    return name
