"""Background processes the sandbox owns: started detached, recorded on disk, stopped by record.

`airollout sandbox up` returns while its processes keep running, and `down` runs in another process, so
what was started is written to ``DIR/processes.json`` and checked against ``/proc`` before any signal is
sent: a recycled pid must never be killed by mistake.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_RECORD = "processes.json"


class SandboxError(RuntimeError):
    """A sandbox component could not start or stop; the message says which and where its log is."""


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    start_time: str  # /proc/PID/stat field 22: tells a live process from a recycled pid
    log: str


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after the command name (which may hold spaces); index 0 is the state."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    # Field 22 of stat: the start time tells a live process from a recycled pid.
    fields = _stat(pid)
    return fields[19] if fields else None


def start(directory: Path, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Started:
    """Start ``argv`` in its own session (it outlives the caller), logging to ``DIR/logs/NAME.log``."""
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    started = Started(name=name, pid=proc.pid, start_time=_start_time(proc.pid) or "", log=str(log_path))
    records = [r for r in _read(directory) if r.name != name] + [started]
    _write(directory, records)
    return started


def is_running(started: Started) -> bool:
    return _start_time(started.pid) == started.start_time and not _is_zombie(started.pid)


def _is_zombie(pid: int) -> bool:
    fields = _stat(pid)
    return fields is None or fields[0] == "Z"


def stop(directory: Path, name: str, timeout: float = 15.0) -> None:
    """Stop one recorded process: SIGTERM, then SIGKILL after ``timeout``; forget its record."""
    records = _read(directory)
    for record in records:
        if record.name == name:
            _terminate(record, timeout)
    _write(directory, [r for r in records if r.name != name])


def stop_all(directory: Path, timeout: float = 15.0) -> list[str]:
    """Stop every recorded process, newest first (dependants before what they depend on)."""
    records = _read(directory)
    for record in reversed(records):
        _terminate(record, timeout)
    _write(directory, [])
    return [r.name for r in records]


def find(directory: Path, name: str) -> Started | None:
    return next((r for r in _read(directory) if r.name == name), None)


def running(directory: Path) -> list[str]:
    """The names of the recorded processes that are still alive."""
    return [r.name for r in _read(directory) if is_running(r)]


def _terminate(record: Started, timeout: float) -> None:
    if not is_running(record):
        _reap(record.pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(record.pid)
        if not is_running(record):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # A child of this very process stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(ready: Callable[[], bool], *, what: str, process: Started, timeout: float) -> None:
    """Poll ``ready`` until true; fail early, quoting the log, if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not is_running(process):
            raise SandboxError(f"{what} exited during start-up; last log lines:\n{tail(process.log)}")
        time.sleep(0.1)
    raise SandboxError(f"{what} was not ready after {timeout:.0f}s; last log lines:\n{tail(process.log)}")


def tail(path: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read(directory: Path) -> list[Started]:
    try:
        raw = json.loads((directory / _RECORD).read_text())
    except (OSError, ValueError):
        return []
    return [Started(**item) for item in raw]


def _write(directory: Path, records: list[Started]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{_RECORD}.tmp"
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=2))
    tmp.replace(directory / _RECORD)
