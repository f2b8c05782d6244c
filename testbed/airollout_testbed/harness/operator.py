"""The operator as a user runs it: `airollout run` in a process of its own, against a given kubeconfig.

Tests SIGKILL it mid-rollout and start another, benchmarks read its memory, the demo leaves it running for
`airollout sandbox down` to stop. All of them start it here, as a process the sandbox records in its
directory, so a teardown that goes wrong still leaves a record to stop it by.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import TimedOut, wait_for

__all__ = ["OperatorProcess"]

START_TIMEOUT = 60.0


class OperatorProcess:
    """`airollout run ARGS` with ``KUBECONFIG=kubeconfig``, recorded as process ``name`` of ``directory``.

    ``command`` is how `airollout` is called: this Python's by default; the image test calls the one in the image.
    """

    def __init__(
        self,
        directory: Path,
        kubeconfig: str | Path,
        *args: str,
        name: str = "operator",
        command: Sequence[str] = (sys.executable, "-m", "airollout"),
    ) -> None:
        self.directory = directory
        self.kubeconfig = kubeconfig
        self.args = args
        self.name = name
        self.command = tuple(command)

    @property
    def log(self) -> Path:
        """Its output, every start appended."""
        return processes.log_of(self.directory, self.name)

    @property
    def pid(self) -> int:
        record = processes.find(self.directory, self.name)
        if record is None:
            raise RuntimeError(f"the operator {self.name} is not running")
        return record.pid

    def start(self) -> None:
        """Start it and return once its liveness endpoint answers; `TimedOut` (quoting its log) otherwise."""
        liveness = f"http://127.0.0.1:{processes.free_port()}/healthz"
        started = processes.start(
            self.directory,
            self.name,
            [*self.command, "run", "--liveness", liveness, *self.args],
            env={"KUBECONFIG": str(self.kubeconfig)},
        )
        try:
            wait_for(
                "the operator's liveness endpoint to answer",
                lambda: _answers(liveness),
                timeout=START_TIMEOUT,
                running=lambda: processes.is_running(started),
                log=self.log,
            )
        except TimedOut:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patch, as when a node dies."""
        processes.kill(self.directory, self.name)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not stopped after 20 s."""
        processes.stop(self.directory, self.name, timeout=20)

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False
