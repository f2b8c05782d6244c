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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from airollout_testbed.waiting import TimedOut, wait_for

_RECORD = "processes.json"
_KILL_PATIENCE = 5.0  # seconds for the kernel to take a SIGKILLed process down


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


def log_of(directory: Path, name: str) -> Path:
    """Where the process ``name`` started in ``directory`` writes its output."""
    return directory / "logs" / f"{name}.log"


def start(directory: Path, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Started:
    """Start ``argv`` in its own session (it outlives the caller), logging to ``DIR/logs/NAME.log``."""
    log_path = log_of(directory, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
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
    _end(directory, name, _gently(timeout))


def kill(directory: Path, name: str) -> None:
    """SIGKILL one recorded process, with no SIGTERM first: no cleanup, as when a node dies; forget its record."""
    _end(directory, name, ((signal.SIGKILL, _KILL_PATIENCE),))


def stop_all(directory: Path, timeout: float = 15.0) -> list[str]:
    """Stop every recorded process, newest first (dependants before what they depend on)."""
    records = _read(directory)
    for record in reversed(records):
        _terminate(record, _gently(timeout))
    _write(directory, [])
    return [r.name for r in records]


def find(directory: Path, name: str) -> Started | None:
    return next((r for r in _read(directory) if r.name == name), None)


def running(directory: Path) -> list[str]:
    """The names of the recorded processes that are still alive."""
    return [r.name for r in _read(directory) if is_running(r)]


_Signals = Sequence[tuple[signal.Signals, float]]
"""_Signals to send in turn, each with how long to wait for the process to stop before sending the next."""


def _gently(timeout: float) -> _Signals:
    return ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_PATIENCE))


def _end(directory: Path, name: str, signals: _Signals) -> None:
    records = _read(directory)
    for record in records:
        if record.name == name:
            _terminate(record, signals)
    _write(directory, [r for r in records if r.name != name])


def _terminate(record: Started, signals: _Signals) -> None:
    for signum, patience in signals:
        if _stopped(record):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signum)
        with contextlib.suppress(TimedOut):
            wait_for(f"{record.name} to stop", lambda: _stopped(record), timeout=patience, interval=0.05)


def _stopped(record: Started) -> bool:
    _reap(record.pid)
    return not is_running(record)


def _reap(pid: int) -> None:
    # A child of this very process stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


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
