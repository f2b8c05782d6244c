"""The test bed's `airollout` subcommands, `sandbox` and `demo`, plugged in through an entry point.

The operator's command line never imports the test bed: it loads whatever the ``airollout.commands``
entry-point group names (see testbed/pyproject.toml), so the same `airollout sandbox up` works where the
test bed is installed and the operator image, which holds only the operator, has no such command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeAlias

__all__ = ["add_demo", "add_sandbox"]

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_sandbox(commands: Subcommands) -> None:
    """`airollout sandbox up|down --dir DIR`."""
    sandbox = commands.add_parser("sandbox", help="a local control plane, Prometheus and FeatBit double")
    actions = sandbox.add_subparsers(metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _sandbox_up, "start the sandbox in the background and write DIR/sandbox.env"),
        ("down", _sandbox_down, "stop everything the sandbox in DIR started"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", type=Path, default=Path(".sandbox"), help="sandbox directory")
        action.set_defaults(handler=handler)


def add_demo(commands: Subcommands) -> None:
    """`airollout demo [--dir DIR] [--keep]`."""
    demo = commands.add_parser("demo", help="the local demo: one rollout that advances, one that rolls back")
    demo.add_argument("--dir", type=Path, default=Path(".sandbox/demo"), help="sandbox directory")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    demo.set_defaults(handler=_demo)


# The handlers import what they run only when they run: every `airollout` command, `run` included, loads this
# module to build its parser.


def _sandbox_up(args: argparse.Namespace) -> int:
    from airollout_testbed.sandbox.environment import up
    from airollout_testbed.sandbox.processes import SandboxError
    from airollout_testbed.sandbox.tools import ToolMissing
    from airollout_testbed.waiting import TimedOut

    try:
        values = up(args.dir)
    except (SandboxError, TimedOut, ToolMissing) as error:
        print(f"airollout sandbox up: {error}", file=sys.stderr)
        return 1
    env_file = Path(values["SANDBOX_DIR"]) / "sandbox.env"
    print(f"sandbox running in {env_file.parent}; use it with:\n  set -a; . {env_file}; set +a")
    for key, value in values.items():
        shown = "(secret)" if key in {"FEATBIT_TOKEN", "FEATBIT_ENV_SECRET"} else value
        print(f"  {key}={shown}")
    return 0


def _sandbox_down(args: argparse.Namespace) -> int:
    from airollout_testbed.sandbox.environment import down

    stopped = down(args.dir)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from airollout_testbed.demo.scenario import run_demo

    return run_demo(args.dir, keep=args.keep)
