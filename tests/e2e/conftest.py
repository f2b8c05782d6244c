"""kind-based end-to-end fixtures: the chart and the image on a real cluster, where a Docker engine answers.

kind runs Kubernetes nodes as containers, so these tests need a Docker engine (and network to pull the node
image); where none answers, every test here is skipped with that reason rather than failing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        answer = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20s"
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()
        return f"no Docker engine answers ({said[-1] if said else 'docker info failed'})"
    return None


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[Any]:
    """A kind cluster with the operator image loaded (pytest-kind's KindCluster)."""
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(f"kind e2e needs a Docker engine: {problem}")
    from pytest_kind import KindCluster  # imported late: it is only usable where Docker runs

    subprocess.run(["docker", "build", "-t", "airollout:e2e", "."], check=True)
    cluster = KindCluster("airollout-e2e")
    cluster.create()
    cluster.load_docker_image("airollout:e2e")
    try:
        yield cluster
    finally:
        cluster.delete()
