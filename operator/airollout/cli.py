"""The `airollout` command: `run` the operator, plus the commands other installed distributions plug in.

The test bed (testbed/ in the repository, never in the image) adds `sandbox` and `demo` through the
``airollout.commands`` entry-point group: each entry point is a function that takes the subparsers and adds
its command, with a ``handler`` default that runs it. The operator itself never imports the test bed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from pydantic import ValidationError

from airollout.agent.commands import add_commands as add_agent_commands
from airollout.console import add_console_commands
from airollout.instrument.commands import add_commands as add_instrument_commands
from airollout.replay.command import add_command as add_replay_command
from airollout.settings import Settings

_DESCRIPTION = "Run the AIRollout operator; where the test bed is installed, also a local sandbox and the demo."
COMMANDS_GROUP = "airollout.commands"
# The commands the test bed adds, named here only to say how to get them where it is not installed.
_TESTBED_COMMANDS = ("sandbox", "demo")
_TESTBED_FIX = "from the AIRollout checkout, `pip install ./testbed` (or `bash scripts/bootstrap.sh`)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airollout", description=_DESCRIPTION)
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "-n", "--namespace", action="append", default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )  # fmt: skip
    run.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (default: %(default)s); 'off' to disable",
    )  # fmt: skip
    run.add_argument("--metrics-port", type=int, help="serve the operator's Prometheus metrics on this port")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    tunables = run.add_argument_group("tunables (the defaults suit one process and 1,000 rollouts)")
    for name, setting in Settings.model_fields.items():
        kind: type = int if setting.annotation is int else str if setting.annotation is str else float
        tunables.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,  # argparse refuses a number it cannot read, naming the flag
            default=setting.default,
            metavar={int: "INT", str: "TEXT"}.get(kind, "SECONDS"),
            help=f"{' '.join((setting.description or '').split())} (default: %(default)r)",
        )
    run.set_defaults(handler=_run)
    add_console_commands(commands)
    add_instrument_commands(commands)
    add_agent_commands(commands)
    add_replay_command(commands)

    plugged_in = entry_points(group=COMMANDS_GROUP)
    for command in plugged_in:
        command.load()(commands)
    for name in sorted(set(_TESTBED_COMMANDS) - set(plugged_in.names)):
        # No prefix character ever starts an argument here, so `--dir X` or `-h` after the name still gets the fix.
        missing = commands.add_parser(name, help="needs the test bed: pip install ./testbed", prefix_chars="\0")
        missing.add_argument("arguments", nargs="*")
        missing.set_defaults(handler=_not_installed, command=name)
    return parser


def _run(args: argparse.Namespace) -> int:
    from airollout.kube.runner import run_operator

    liveness = None if args.liveness == "off" else args.liveness
    try:
        settings = Settings.model_validate({name: getattr(args, name) for name in Settings.model_fields})
    except ValidationError as error:
        for problem in error.errors():
            flag = "--" + str(problem["loc"][0]).replace("_", "-")
            print(f"airollout run: {flag}: {problem['msg']}", file=sys.stderr)
        return 2
    return run_operator(
        namespaces=args.namespace,
        liveness=liveness,
        verbose=args.verbose,
        metrics_port=args.metrics_port,
        settings=settings,
    )


def _not_installed(args: argparse.Namespace) -> int:
    print(f"airollout {args.command}: the test bed is not installed; {_TESTBED_FIX}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
