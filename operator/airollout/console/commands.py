"""The plugin's commands, defined once and offered twice: as `kubectl airollout ...` and `airollout ...`.

`kubectl` runs `kubectl-airollout` from PATH with the words after `kubectl airollout`; kubectl's own global
flags are not passed to plugins, so each command takes `--kubeconfig`, `--context` and `-n` itself.
rich (the `console` extra) is imported only by the commands that draw: the verbs and `status --timeout`
work without it, and the operator's image does without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias

from airollout.console.cluster import Cluster, ClusterError
from airollout.console.completion import SHELLS, candidates, shell_script
from airollout.console.following import Limits, Outcome, follow
from airollout.console.reading import RolloutView, read_rollout
from airollout.console.verbs import ReasonInvalid, verb_annotations
from airollout.model import parse_duration
from airollout.planner import Verb

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_console_commands", "complete_for_kubectl", "main"]

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_COMMAND_NAMES = ("get", "status", "history", "promote", "pause", "resume", "abort", "retry", "completion")
_VERB_HELP = {
    Verb.PAUSE: "hold the rollout at its stage (guardrails keep being measured)",
    Verb.RESUME: "continue a paused rollout",
    Verb.ABORT: "turn the candidate off for everyone now (the kill switch)",
    Verb.RETRY: "start a RolledBack or Failed rollout again from its first stage",
}


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-airollout`: the plugin kubectl finds on PATH."""
    parser = argparse.ArgumentParser(
        prog="kubectl airollout", description="Watch, wait for and steer AIRollouts with your kubeconfig."
    )
    add_console_commands(parser.add_subparsers(metavar="COMMAND"))
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def complete_for_kubectl() -> int:
    """`kubectl_complete-airollout`: what kubectl runs to complete `kubectl airollout ...`."""
    return main(["__complete", *sys.argv[1:]])


def add_console_commands(commands: Subcommands) -> None:
    """Add get, status, history, the verbs and completion to ``commands``."""
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--kubeconfig", help="the kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)")
    cluster.add_argument("--context", help="the kubeconfig context to use (default: its current context)")
    cluster.add_argument("-n", "--namespace", help="the namespace (default: the context's namespace)")

    get = commands.add_parser("get", parents=[cluster], help="list AIRollouts: phase, stage, exposure, bake left")
    get.add_argument("name", nargs="?", metavar="NAME", help="only this rollout")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="AIRollouts of every namespace")
    get.set_defaults(handler=_get)

    status = commands.add_parser(
        "status",
        parents=[cluster],
        help="show one rollout; --watch to follow it, --timeout to wait for it in CI",
        description=(
            "Show one rollout. With --timeout (and/or --paused-timeout), wait until it ends and exit 0 when "
            "Promoted or Completed, 1 when RolledBack or Failed, 2 on timeout, 3 when Paused longer than "
            "--paused-timeout; one line per change."
        ),
    )
    status.add_argument("name", metavar="NAME")
    status.add_argument("-w", "--watch", action="store_true", help="redraw in place as it changes (Ctrl-C ends)")
    status.add_argument("--timeout", type=_seconds, metavar="DURATION", help="wait at most this long, e.g. 30m")
    status.add_argument(
        "--paused-timeout", type=_seconds, metavar="DURATION", help="give up once Paused for longer than this"
    )
    status.add_argument("--interval", type=_seconds, default=2.0, metavar="DURATION", help="poll every (default 2s)")
    status.set_defaults(handler=_status)

    history = commands.add_parser("history", parents=[cluster], help="the rollout's audit trail as a table")
    history.add_argument("name", metavar="NAME")
    history.set_defaults(handler=_history)

    promote = commands.add_parser("promote", parents=[cluster], help="skip the rest of the current stage")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("--full", action="store_true", help="go straight to the last stage and promote")
    promote.add_argument("--reason", help="why, recorded in the rollout's history and Events")
    promote.set_defaults(handler=_verb, verb=Verb.PROMOTE)
    for verb, text in _VERB_HELP.items():
        command = commands.add_parser(verb.value, parents=[cluster], help=text)
        command.add_argument("name", metavar="NAME")
        command.add_argument("--reason", help="why, recorded in the rollout's history and Events")
        command.set_defaults(handler=_verb, verb=verb, full=False)

    completion = commands.add_parser("completion", help="print a shell completion script: source <(... bash)")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=_completion)

    mine = {name: commands.choices[name] for name in _COMMAND_NAMES}
    complete = commands.add_parser("__complete")  # no help: kept out of --help, as cobra keeps its own
    complete.add_argument("words", nargs=argparse.REMAINDER)
    complete.set_defaults(handler=_complete, commands=mine)


def _completion(args: argparse.Namespace) -> int:
    print(shell_script(args.shell), end="")
    return 0


def _complete(args: argparse.Namespace) -> int:
    print("\n".join(candidates(args.commands, args.words)))
    return 0


def _get(args: argparse.Namespace) -> int:
    if _rich_missing("get"):
        return 2
    from airollout.console.rendering import rollouts_table

    cluster = _cluster(args)
    try:
        items = [cluster.rollout(args.name)] if args.name else cluster.rollouts(all_namespaces=args.all_namespaces)
    except ClusterError as error:
        return _fail(error)
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {args.namespace or 'of the context'}"
        print(f"No AIRollouts found in {where}.", file=sys.stderr)
        return 0
    views = [read_rollout(item) for item in items]
    _console().print(rollouts_table(views, _now(), all_namespaces=args.all_namespaces))
    return 0


def _history(args: argparse.Namespace) -> int:
    if _rich_missing("history"):
        return 2
    from airollout.console.rendering import history_table

    try:
        view = read_rollout(_cluster(args).rollout(args.name))
    except ClusterError as error:
        return _fail(error)
    _console().print(history_table(view))
    return 0


def _verb(args: argparse.Namespace) -> int:
    verb = Verb.PROMOTE_FULL if args.verb is Verb.PROMOTE and args.full else args.verb
    try:
        annotations = verb_annotations(verb, args.reason)
        said = _cluster(args).annotate(args.name, annotations)
    except ReasonInvalid as error:
        print(f"airollout {args.verb.value}: {error}", file=sys.stderr)
        return 2
    except ClusterError as error:
        return _fail(error)
    print(f"{said}: {verb.value} requested; follow it with: kubectl airollout status {args.name} --watch")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    limits = Limits(timeout=args.timeout, paused_timeout=args.paused_timeout)
    if args.watch or limits.any:
        if args.watch and sys.stdout.isatty():
            return 2 if _rich_missing("status --watch") else _watch_live(cluster, args.name, limits, args.interval)
        return _watch_lines(cluster, args.name, limits, args.interval)
    if _rich_missing("status"):
        return 2
    from airollout.console.rendering import status_view

    try:
        rollout = cluster.rollout(args.name)
        events = cluster.events(rollout)
    except ClusterError as error:
        return _fail(error)
    _console().print(status_view(read_rollout(rollout), events, _now()))
    return 0


def _watch_live(cluster: Cluster, name: str, limits: Limits, interval: float) -> int:
    from rich.live import Live
    from rich.text import Text

    from airollout.console.rendering import status_view

    events: list[dict[str, object]] = []

    def read() -> RolloutView:
        rollout = cluster.rollout(name)
        events[:] = cluster.events(rollout)
        return read_rollout(rollout)

    console = _console()
    with Live(console=console, auto_refresh=False, transient=False) as live:

        def show(view: RolloutView | None, error: str | None) -> None:
            if view is not None:
                live.update(status_view(view, events, _now()), refresh=True)
            else:
                live.update(Text(f"cannot read {name}: {error}", style="red"), refresh=True)

        try:
            outcome, said = follow(read, show, limits, interval=interval)
        except KeyboardInterrupt:
            return 0
    console.print(said)
    return int(outcome)


def _watch_lines(cluster: Cluster, name: str, limits: Limits, interval: float) -> int:
    last: list[str] = []

    def show(view: RolloutView | None, error: str | None) -> None:
        line = view.summary() if view is not None else f"cannot read {name}: {error}"
        if not last or last[-1] != line:
            last[:] = [line]
            print(f"{_now():%Y-%m-%dT%H:%M:%SZ} {line}", flush=True)

    try:
        outcome, said = follow(lambda: read_rollout(cluster.rollout(name)), show, limits, interval=interval)
    except KeyboardInterrupt:
        return 0
    print(said, file=sys.stderr if outcome in (Outcome.TIMED_OUT, Outcome.PAUSED_TOO_LONG) else sys.stdout)
    return int(outcome)


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)


def _console() -> Console:
    from rich.console import Console

    console = Console()
    # Piped into a file or a CI log, lines are not cut to an 80-column terminal that is not there.
    return console if console.is_terminal else Console(width=200)


def _rich_missing(command: str) -> bool:
    if importlib.util.find_spec("rich") is None:
        print(f"airollout {command}: this command draws with rich: pip install 'airollout[console]'", file=sys.stderr)
        return True
    return False


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _fail(error: ClusterError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


def _now() -> datetime:
    return datetime.now(UTC)
