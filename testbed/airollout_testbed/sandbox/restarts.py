"""Stopping the sandbox's control plane and starting it again in place: same command lines, ports, certificates
and data.

An operator must ride out its control plane restarting (an upgrade, a crashed etcd), so reliability tests stop
the apiserver and etcd under it and bring them back. Each is started again from the command line it runs now
(read from /proc before it is stopped), so nothing that picked its ports or wrote its certificates has to run
again, and etcd finds its data where it left it.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.processes import SandboxError
from airollout_testbed.waiting import wait_for

__all__ = ["Stopped", "restart_control_plane", "start_again", "stop_for_restart"]

READY_TIMEOUT = 120.0
_RESTARTABLE = ("etcd", "kube-apiserver")


@dataclass(frozen=True)
class Stopped:
    """A stopped control-plane process and the command line that starts it again."""

    name: str
    argv: tuple[str, ...]


def stop_for_restart(directory: Path, name: str, *, kill: bool = False) -> Stopped:
    """Stop the sandbox's ``name`` (etcd or kube-apiserver): SIGTERM, or SIGKILL when ``kill``."""
    if name not in _RESTARTABLE:
        raise SandboxError(f"only {' and '.join(_RESTARTABLE)} can be restarted in place, not {name}")
    record = processes.find(directory, name)
    if record is None or not processes.is_running(record):
        raise SandboxError(f"{name} is not running in {directory}")
    argv = tuple(Path(f"/proc/{record.pid}/cmdline").read_bytes().decode().split("\0")[:-1])
    if kill:
        processes.kill(directory, name)
    else:
        processes.stop(directory, name)
    return Stopped(name, argv)


def start_again(directory: Path, stopped: Stopped) -> None:
    """Start a stopped process as it ran before; return once it answers its health endpoint."""
    started = processes.start(directory, stopped.name, stopped.argv)
    wait_for(
        f"{stopped.name} to be ready again",
        _ready_probe(stopped),
        timeout=READY_TIMEOUT,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )


def restart_control_plane(directory: Path, *, down_for: float = 0.0, kill: bool = False) -> None:
    """Stop kube-apiserver, then etcd; ``down_for`` seconds later start etcd, then kube-apiserver, both ready."""
    apiserver = stop_for_restart(directory, "kube-apiserver", kill=kill)
    etcd = stop_for_restart(directory, "etcd", kill=kill)
    time.sleep(down_for)
    start_again(directory, etcd)
    start_again(directory, apiserver)


def _flag(argv: tuple[str, ...], name: str) -> str:
    prefix = f"--{name}="
    value = next((arg[len(prefix) :] for arg in argv if arg.startswith(prefix)), None)
    if value is None:
        raise SandboxError(f"no {prefix}... in {' '.join(argv)}")
    return value


def _ready_probe(stopped: Stopped) -> Callable[[], bool]:
    if stopped.name == "etcd":
        url = _flag(stopped.argv, "listen-client-urls").split(",")[0]
        return lambda: _http_ok(f"{url}/health")
    # The sandbox's admin client certificate lives beside the apiserver's own (control_plane.start_apiserver).
    certs = Path(_flag(stopped.argv, "cert-dir"))
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    url = f"https://127.0.0.1:{_flag(stopped.argv, 'secure-port')}/readyz"
    return lambda: _http_ok(url, context)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False
