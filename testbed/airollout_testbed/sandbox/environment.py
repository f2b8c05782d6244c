"""`airollout sandbox up/down`: the whole local stack in one directory, described by ``DIR/sandbox.env``.

A sandbox is a real etcd + kube-apiserver (RBAC on), a real Prometheus scraping whatever is dropped into
``DIR/scrape-targets/``, and the FeatBit server double. Ports are picked free, so sandboxes in different
directories run side by side; everything started is recorded, so ``down`` leaves no process behind.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.control_plane import start_apiserver, start_etcd
from airollout_testbed.sandbox.processes import SandboxError
from airollout_testbed.sandbox.prometheus import start_prometheus
from airollout_testbed.waiting import wait_for

ENV_FILE = "sandbox.env"
FEATBIT_DOUBLE = "featbit-double"


def up(directory: Path) -> dict[str, str]:
    """Start the stack in ``directory``, wait until every part is ready, write and return sandbox.env."""
    directory = directory.resolve()
    live = processes.running(directory)
    if live:
        raise SandboxError(
            f"a sandbox already runs in {directory} ({', '.join(live)}): "
            f"stop it with `airollout sandbox down --dir {directory}` or choose another --dir"
        )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        values = {"SANDBOX_DIR": str(directory)}
        values["KUBECONFIG"] = start_apiserver(directory, start_etcd(directory))
        values["PROMETHEUS_URL"] = start_prometheus(directory)
        values.update(start_featbit_double(directory))
    except BaseException:
        down(directory)
        raise
    write_env(directory, values)
    return values


def down(directory: Path) -> list[str]:
    """Stop everything the sandbox in ``directory`` started; returns the names of what was stopped."""
    directory = directory.resolve()
    stopped = processes.stop_all(directory)
    etcd_data = directory / "etcd-data-dir"
    if etcd_data.exists():
        shutil.rmtree(etcd_data.read_text().strip(), ignore_errors=True)
        etcd_data.unlink()
    (directory / ENV_FILE).unlink(missing_ok=True)
    return stopped


def start_featbit_double(directory: Path) -> dict[str, str]:
    """Start the FeatBit server double as a process; returns its sandbox.env entries."""
    ready_file = directory / "featbit-double.json"
    ready_file.unlink(missing_ok=True)
    started = processes.start(
        directory,
        FEATBIT_DOUBLE,
        [
            sys.executable, "-m", "airollout_testbed.featbit_double",
            "--host", "127.0.0.1",
            "--api-port", str(processes.free_port()), "--eval-port", str(processes.free_port()),
            "--ready-file", str(ready_file),
        ],
    )  # fmt: skip
    wait_for(
        "the FeatBit double's ready file",
        ready_file.exists,
        timeout=30,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )
    info = json.loads(ready_file.read_text())  # complete once it exists: the double renames it into place
    return {
        "FEATBIT_API_URL": info["api_url"],
        "FEATBIT_EVAL_URL": info["eval_url"],
        "FEATBIT_TOKEN": info["token"],
        "FEATBIT_ENV_ID": info["env_id"],
        "FEATBIT_ENV_SECRET": info["env_secret"],
    }


def write_env(directory: Path, values: dict[str, str]) -> Path:
    path = directory / ENV_FILE
    path.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items()))
    path.chmod(0o600)  # it holds the FeatBit token and the env secret
    return path


def read_env(directory: Path) -> dict[str, str]:
    """The KEY=value pairs of ``DIR/sandbox.env``, or a SandboxError saying how to start one."""
    path = directory.resolve() / ENV_FILE
    if not path.exists():
        raise SandboxError(f"no sandbox in {directory}: start one with `airollout sandbox up --dir {directory}`")
    values = {}
    for line in path.read_text().splitlines():
        key, _, raw = line.partition("=")
        values[key] = shlex.split(raw)[0] if raw else ""
    return values
