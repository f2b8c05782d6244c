"""The `airollout` command: run the operator, or a local sandbox to try it without a cluster."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


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
    parser = argparse.ArgumentParser(prog="airollout", description=__doc__)
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
    run.set_defaults(handler=_run)

    sandbox = commands.add_parser("sandbox", help="a local control plane, Prometheus and FeatBit double")
    sandbox_commands = sandbox.add_subparsers(metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _sandbox_up, "start the sandbox in the background and write DIR/sandbox.env"),
        ("down", _sandbox_down, "stop everything the sandbox in DIR started"),
    ):
        action = sandbox_commands.add_parser(name, help=text)
        action.add_argument("--dir", type=Path, default=Path(".sandbox"), help="sandbox directory")
        action.set_defaults(handler=handler)

    demo = commands.add_parser("demo", help="the local demo: one rollout that advances, one that rolls back")
    demo.add_argument("--dir", type=Path, default=Path(".sandbox/demo"), help="sandbox directory")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    demo.set_defaults(handler=_demo)
    return parser


def _run(args: argparse.Namespace) -> int:
    from airollout.kube.runner import run_operator

    liveness = None if args.liveness == "off" else args.liveness
    return run_operator(
        namespaces=args.namespace, liveness=liveness, verbose=args.verbose, metrics_port=args.metrics_port
    )


def _sandbox_up(args: argparse.Namespace) -> int:
    from airollout.sandbox.environment import up
    from airollout.sandbox.processes import SandboxError
    from airollout.sandbox.tools import ToolMissing

    try:
        values = up(args.dir)
    except (SandboxError, ToolMissing) as error:
        print(f"airollout sandbox up: {error}", file=sys.stderr)
        return 1
    env_file = Path(values["SANDBOX_DIR"]) / "sandbox.env"
    print(f"sandbox running in {env_file.parent}; use it with:\n  set -a; . {env_file}; set +a")
    for key, value in values.items():
        shown = "(secret)" if key in {"FEATBIT_TOKEN", "FEATBIT_ENV_SECRET"} else value
        print(f"  {key}={shown}")
    return 0


def _sandbox_down(args: argparse.Namespace) -> int:
    from airollout.sandbox.environment import down

    stopped = down(args.dir)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from airollout.demo.scenario import run_demo

    return run_demo(args.dir, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
