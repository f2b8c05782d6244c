"""The operator image, built and run: buildah builds the Dockerfile, and the operator starts from the image.

No Docker engine or registry is needed: `scripts/image.sh build` installs buildah and debootstrap from Debian, makes
the base from a debootstrap root file system and builds on it (docs/packaging.md). The operator then runs from the
image with `buildah run --isolation chroot` (which shares the host's network, so the sandbox's apiserver and the
FeatBit double are on loopback as for any other test), as the image's numeric user, on nothing but its chart's
ServiceAccount token, through a rollout to Promoted and a kill switch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from tests.support.sandbox import Testbed
from tests.support.service_account import denials, grant, token_kubeconfig
from tests.support.short_run import prepare, run

pytestmark = [pytest.mark.integration, pytest.mark.image]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/airollout:test"
USER = "65532:65532"
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "x86_64-linux-gnu-gcc")
KUBECONFIG = "/etc/airollout/kubeconfig"
# buildah writes these into the container before what it runs starts (the last as the mount point of the
# kubeconfig): they are no write of the operator's.
WRITTEN_BY_BUILDAH = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv", KUBECONFIG}
# The chart mounts an emptyDir here, the only place the operator may write (the kubernetes client puts the
# kubeconfig's inline CA in a temporary file).
SCRATCH = "/tmp/"
BUILD_TIMEOUT = 45 * 60  # cold: debootstrap, every dependency from PyPI, vfs copies of each layer


def _buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image.sh"), "buildah", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout.strip()


@pytest.fixture(scope="session")
def operator_image(request: pytest.FixtureRequest) -> str:
    """The image built from the working tree; the build's figures (times, size) go to the terminal."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        reason = "building the image needs root and Debian's apt-get (for buildah and debootstrap)"
        if os.environ.get("AIROLLOUT_REQUIRE_TESTBED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image.sh"), "build"],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        env={**os.environ, "AIROLLOUT_IMAGE": IMAGE},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    # The figures are the point of a CI run's image step: shown past pytest's capture, passing or not.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{build.stdout.strip()} ({time.monotonic() - started:.0f}s in all)")
    return IMAGE


@pytest.fixture
def container(operator_image: str) -> Iterator[str]:
    name = _buildah("from", operator_image)
    try:
        yield name
    finally:
        _buildah("rm", name)


def test_the_image_holds_the_operator_alone_and_no_compiler_and_runs_as_a_numeric_user(container: str) -> None:
    config = json.loads(_buildah("inspect", "--type", "container", container))["OCIv1"]["config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["airollout", "run"]
    root = Path(_buildah("mount", container))
    try:
        (site,) = root.glob("opt/airollout/lib/python3*/site-packages")
        installed = {path.name for path in site.iterdir()}
        assert "airollout" in installed
        assert not {"airollout_testbed", "fbclient", "pytest", "tests"} & installed
        found = [
            f"{directory}/{name}"
            for directory in ("usr/bin", "usr/local/bin", "bin", "usr/sbin", "opt/airollout/bin")
            for name in COMPILERS
            if (root / directory / name).exists()
        ]
        assert found == [], f"compilers in the image: {found}"
    finally:
        _buildah("umount", container)


def test_the_operator_from_the_image_promotes_a_rollout_and_lands_a_kill_switch_writing_nothing(
    testbed: Testbed, airollout_crd: Path, namespace: str, featbit_double: FeatBitDouble, container: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    granted = grant(testbed, namespace, "rbac.clusterWide=false")
    kubeconfig = token_kubeconfig(testbed, granted, tmp_path / "kubeconfig")
    prepare(testbed, featbit_double, namespace)
    in_the_image = (
        "bash", str(ROOT / "scripts" / "image.sh"), "buildah", "run", "--isolation", "chroot", "--user", USER,
        "--volume", f"{kubeconfig}:{KUBECONFIG}:ro", "--env", f"KUBECONFIG={KUBECONFIG}",
        container, "--", "airollout",
    )  # fmt: skip
    before = tmp_path / "before-the-run"
    before.touch()
    time.sleep(1)  # file times in whole seconds on some file systems: nothing of the run shares the marker's
    operator = OperatorProcess(tmp_path, kubeconfig, "--namespace", namespace, command=in_the_image)
    with operator:
        missing = run(testbed, featbit_double, namespace, deadline=60)
    assert missing == [], operator.log.read_text()[-4000:]
    assert denials(testbed, granted) == []
    root = Path(_buildah("mount", container))
    try:
        written = subprocess.run(
            ["find", str(root), "-newer", str(before), "-not", "-type", "d"], capture_output=True, text=True, check=True
        ).stdout.split()
    finally:
        _buildah("umount", container)
    paths = {"/" + str(Path(path).relative_to(root)) for path in written} - WRITTEN_BY_BUILDAH
    assert {path for path in paths if not path.startswith(SCRATCH)} == set()
