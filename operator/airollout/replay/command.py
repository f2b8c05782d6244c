"""`airollout replay`: the command, added to `airollout` by one line in the CLI and imported only when run.

It reads the manifest a team already keeps (the AIRollout's YAML), the range to replay and where Prometheus
is; everything it refuses is named by its flag or field with the fix. FeatBit, Kubernetes and the
manifest's Secrets are never touched: `--prometheus-url` and `--bearer-token-file` stand in for
``spec.prometheus`` where the operator's address or credentials are not the ones a laptop can use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airollout.model import AIRolloutSpec, parse_duration

__all__ = ["Manifest", "ReplayRefused", "add_command", "parse_time", "read_manifest"]

_FORMATS = ("table", "json")
# A value starting with "-" must follow an "=" (argparse reads `--from -2h` as two options).
_TIME_FORMS = "RFC 3339 (2026-11-30T12:00:00Z), now, or a duration back from now: now-2h (or --from=-2h, with the =)"


class ReplayRefused(Exception):
    """What the command cannot work with, naming the flag or field and the fix."""


@dataclass(frozen=True)
class Manifest:
    """The AIRollout to replay, as its manifest has it."""

    spec: AIRolloutSpec
    name: str
    namespace: str


def add_command(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="run a rollout's policy against past Prometheus data and print what it would have decided",
        description=(
            "Replay an AIRollout over a past time range: the operator's own analysis and planner, at the moments "
            "the operator would have decided, against Prometheus as it was then. Nothing is written to FeatBit "
            "or Kubernetes."
        ),
    )
    replay.add_argument("-f", "--filename", required=True, help="the AIRollout manifest (YAML or JSON; - for stdin)")
    replay.add_argument("--from", dest="start", required=True, metavar="T1", help=f"where to start: {_TIME_FORMS}")
    replay.add_argument("--to", dest="end", default="now", metavar="T2", help="where to stop (default: now)")
    replay.add_argument(
        "--prometheus-url", help="the Prometheus to ask (default: spec.prometheus.url); its API must be reachable"
    )
    replay.add_argument(
        "--bearer-token-file", type=Path, help="a file holding a bearer token for Prometheus (default: none)"
    )
    replay.add_argument(
        "-n", "--namespace", help="the namespace that fills {{namespace}} (default: the manifest's, else default)"
    )
    replay.add_argument("-o", "--output", choices=_FORMATS, default="table", help="output format (default: table)")
    replay.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        manifest = read_manifest(args.filename)
        start, end = parse_time(args.start, now, "--from"), parse_time(args.end, now, "--to")
        if start >= now:
            raise ReplayRefused(f"--from: {args.start!r} is not in the past; Prometheus has nothing there yet")
        if end <= start:
            raise ReplayRefused(f"--to: {args.end!r} is not after --from {args.start!r}")
        output = asyncio.run(_run(args, manifest, start, min(end, now)))
    except ReplayRefused as error:
        print(f"airollout replay: {error}", file=sys.stderr)
        return 2
    except _Unreachable as error:
        print(f"airollout replay: {error}", file=sys.stderr)
        return 1
    print(output)
    return 0


class _Unreachable(Exception):
    """Prometheus does not answer: every tick would be a query error, so nothing is replayed."""


async def _run(args: argparse.Namespace, manifest: Manifest, start: datetime, end: datetime) -> str:
    from airollout.guardrails.prometheus import PrometheusSource
    from airollout.guardrails.source import GuardrailQueryFailed
    from airollout.replay.replaying import replay
    from airollout.replay.report import table, to_json

    spec = manifest.spec
    url = args.prometheus_url or (spec.prometheus.url if spec.prometheus is not None else None)
    source: PrometheusSource | None = None
    if spec.guardrails:
        if url is None:
            raise ReplayRefused("the guardrails need Prometheus: give --prometheus-url (spec.prometheus.url is unset)")
        token = _read_token(args.bearer_token_file) if args.bearer_token_file else None
        timeout = parse_duration(spec.prometheus.timeout).total_seconds() if spec.prometheus else 10.0
        try:
            source = PrometheusSource(url, bearer_token=token, timeout=timeout)
        except ValueError as error:  # the message names the URL or the token
            flag = "--prometheus-url" if args.prometheus_url else "spec.prometheus.url"
            raise ReplayRefused(f"{flag}{' or --bearer-token-file' if token else ''}: {error}") from None
    namespace = args.namespace or manifest.namespace
    try:
        if source is not None:
            try:
                await source.query("vector(1)", start.timestamp())
            except GuardrailQueryFailed as error:
                fix = "give the address this machine reaches it at with --prometheus-url"
                raise _Unreachable(f"{error}; {fix}") from None
        result = await replay(spec, source, start, end, namespace)
    finally:
        if source is not None:
            await source.aclose()
    if args.output == "json":
        return to_json(result, rollout=manifest.name, namespace=namespace, start=start.isoformat(), end=end.isoformat())
    return table(result)


def parse_time(text: str, now: datetime, flag: str) -> datetime:
    """An RFC 3339 time with its zone, ``now``, or ``-DURATION``/``now-DURATION`` back from ``now``."""
    written = text.strip()
    if written == "now":
        return now
    back = written.removeprefix("now")
    if back.startswith("-"):
        try:
            return now - parse_duration(back[1:])
        except ValueError as error:
            raise ReplayRefused(f"{flag}: {error}; write {_TIME_FORMS}") from None
    try:
        moment = datetime.fromisoformat(written)
    except ValueError:
        raise ReplayRefused(f"{flag}: {text!r} is not a time; write {_TIME_FORMS}") from None
    if moment.tzinfo is None:
        raise ReplayRefused(f"{flag}: {text!r} has no time zone; end it with Z (UTC) or an offset like +02:00")
    return moment.astimezone(UTC)


def read_manifest(filename: str) -> Manifest:
    """The one AIRollout in ``filename`` (other documents, such as its Secret, are skipped), its spec checked
    as the operator checks it."""
    import yaml

    from airollout.reconciler import parse_spec

    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text(encoding="utf-8")
        documents = [d for d in yaml.safe_load_all(text) if isinstance(d, Mapping)]
    except OSError as error:
        raise ReplayRefused(f"-f: cannot read {filename}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ReplayRefused(f"-f: {filename} is not YAML: {' '.join(str(error).split())}") from None
    rollouts = [d for d in documents if d.get("kind") == "AIRollout"]
    if len(rollouts) != 1:
        found = f"{len(rollouts)} AIRollouts" if rollouts else "no AIRollout (a document with kind: AIRollout)"
        raise ReplayRefused(f"-f: {filename} holds {found}; give a file with exactly one")
    (rollout,) = rollouts
    raw = rollout.get("spec")
    if not isinstance(raw, Mapping):
        raise ReplayRefused(f"{filename}: spec: missing; an AIRollout needs its spec to replay")
    for index, entry in enumerate(raw.get("guardrails") or ()):
        if isinstance(entry, Mapping) and "templateRef" in entry:
            raise ReplayRefused(
                f"{filename}: spec.guardrails[{index}].templateRef: templates live in the cluster, which a replay "
                "does not read; write the template's guardrails into the manifest in its place"
            )
    spec, problem = parse_spec(raw)
    if spec is None:
        raise ReplayRefused(f"{filename}: {problem}")
    metadata = rollout.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return Manifest(spec, str(metadata.get("name") or ""), str(metadata.get("namespace") or "default"))


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ReplayRefused(f"--bearer-token-file: cannot read {path}: {error.strerror or error}") from None
