"""The `scan` and `gate` commands, added to `airollout` by one line in the CLI and imported only when run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]

_FORMATS = ("table", "json", "sarif")


def add_commands(commands: Any) -> None:
    scan = commands.add_parser("scan", help="find the AI model calls in a code base (Python, TypeScript, JavaScript)")
    scan.add_argument("path", metavar="PATH", type=Path, help="the code base's directory (or one file)")
    scan.add_argument("--format", choices=_FORMATS, default="table", help="output format (default: %(default)s)")
    scan.add_argument("-o", "--output", type=Path, help="write the report here instead of standard output")
    scan.set_defaults(handler=_scan)
    _add_gate(commands)


def _scan(args: argparse.Namespace) -> int:
    from airollout.instrument.reports import sarif, table, to_json
    from airollout.instrument.scanning import scan
    from airollout.instrument.script_scan import ScannerMissing

    try:
        result = scan(args.path)
    except (FileNotFoundError, ScannerMissing) as error:
        print(f"airollout scan: {error}", file=sys.stderr)
        return 2
    for problem in result.problems:
        print(f"airollout scan: {problem}", file=sys.stderr)
    report = {"table": table, "json": to_json, "sarif": sarif}[args.format](result.sites)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    else:
        print(report)
    return 0


def _add_gate(commands: Any) -> None:
    gate = commands.add_parser(
        "gate", help="put an AI model call behind a FeatBit flag: a diff, the flag, and the AIRollout manifest"
    )
    gate.add_argument("site", metavar="SITE", help="PATH:LINE[:COLUMN] as `airollout scan` prints it")
    gate.add_argument("--root", type=Path, default=Path("."), help="the code base SITE is in (default: .)")
    gate.add_argument("--flag", required=True, help="the FeatBit flag key that decides the call")
    gate.add_argument("--candidate", required=True, help="the candidate's model (or prompt) identifier")
    gate.add_argument(
        "--user", help="the expression that identifies the user at the call (default: the parameter naming one)"
    )
    gate.add_argument("--write", action="store_true", help="apply the change instead of printing it")
    featbit = gate.add_argument_group("the flag in FeatBit (created when --featbit-url and --env-id are given)")
    featbit.add_argument("--featbit-url", help="FeatBit's API server, e.g. http://featbit-api:5000")
    featbit.add_argument("--env-id", help="the FeatBit environment id (a GUID)")
    featbit.add_argument(
        "--token-env", default="FEATBIT_TOKEN", help="the variable holding the access token (default: %(default)s)"
    )
    rollout = gate.add_argument_group(
        "the AIRollout manifest (written with --manifest; needs --featbit-url and --env-id)"
    )
    rollout.add_argument("--manifest", type=Path, help="write the AIRollout here (YAML)")
    rollout.add_argument("--name", help="the AIRollout's name (default: the flag key)")
    rollout.add_argument("--namespace", default="default", help="its namespace (default: %(default)s)")
    rollout.add_argument(
        "--token-secret", default="featbit", help="the Secret with FeatBit's token (default: %(default)s)"
    )
    rollout.add_argument(
        "--internal-segment", default="internal-users", help="the first stage's segment (default: %(default)s)"
    )
    rollout.add_argument("--prometheus-url", help="with it, default error-rate and latency guardrails")
    gate.set_defaults(handler=_gate)


def _gate(args: argparse.Namespace) -> int:
    from airollout.instrument.gating import GateRefused, GateRequest, gate_source, unified_diff

    try:
        site = _site(args.root, args.site)
        path = args.root / site.path
        before = path.read_text(encoding="utf-8")
        after = gate_source(site, before, GateRequest(flag=args.flag, candidate=args.candidate, user=args.user))
        if (args.manifest or args.featbit_url or args.env_id) and not (args.featbit_url and args.env_id):
            raise GateRefused("--featbit-url and --env-id: give both to create the flag and write the manifest")
        manifest = _manifest(args, site) if args.manifest else None
    except (GateRefused, LookupError, ValueError, OSError) as error:
        print(f"airollout gate: {error}", file=sys.stderr)
        return 2
    if args.write:
        path.write_text(after, encoding="utf-8")
        print(f"gated {site.address} behind flag {args.flag} ({site.provider} {site.operation})")
    else:
        print(unified_diff(site.path, before, after), end="")
    if args.featbit_url:
        created = _create_flag(args)
        if created != 0:
            return created
    if manifest is not None:
        import yaml

        args.manifest.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        print(f"wrote the AIRollout {args.namespace}/{manifest['metadata']['name']} to {args.manifest}")
    return 0


def _site(root: Path, address: str) -> Any:
    from airollout.instrument.scanning import scan

    path, _, position = address.partition(":")
    line, _, column = position.partition(":")
    if not line.isdigit() or (column and not column.isdigit()):
        raise LookupError(f"SITE {address!r}: write it as PATH:LINE or PATH:LINE:COLUMN, as `airollout scan` prints")
    found = [s for s in scan(root).sites if s.path == Path(path).as_posix() and s.line == int(line)]
    if column:
        found = [s for s in found if s.column == int(column)]
    if not found:
        raise LookupError(
            f"SITE {address}: no AI model call there under {root}; run `airollout scan {root}` for the sites"
        )
    return found[0]


def _manifest(args: argparse.Namespace, site: Any) -> dict[str, Any]:
    from airollout.instrument.manifests import rollout_manifest
    from airollout.instrument.providers import provider_named

    return rollout_manifest(
        name=args.name or args.flag,
        namespace=args.namespace,
        flag=args.flag,
        env_id=args.env_id,
        featbit_url=args.featbit_url,
        provider=provider_named(site.provider),
        kind=site.kind,
        token_secret=args.token_secret,
        internal_segment=args.internal_segment,
        prometheus_url=args.prometheus_url,
    )


def _create_flag(args: argparse.Namespace) -> int:
    """The flag with variations candidate and control, off, serving control whether on or off until a rollout."""
    import asyncio
    import os

    from airollout.featbit import FeatBitClient, FeatBitError
    from airollout.instrument.manifests import CANDIDATE, CONTROL

    token = os.environ.get(args.token_env, "")
    if not token.strip():
        print(
            f"airollout gate: --token-env: ${args.token_env} holds no FeatBit access token; export it", file=sys.stderr
        )
        return 2

    async def create() -> None:
        async with FeatBitClient(args.featbit_url, token) as featbit:
            await featbit.create_flag(
                args.env_id,
                key=args.flag,
                variations=[(CANDIDATE, CANDIDATE), (CONTROL, CONTROL)],
                enabled_variation_id=CONTROL,
                disabled_variation_id=CONTROL,
                variation_type="string",
                description="created by `airollout gate`; an AIRollout moves users from control to candidate",
            )

    try:
        asyncio.run(create())
    except (FeatBitError, ValueError) as error:
        print(f"airollout gate: the flag {args.flag} was not created: {error}", file=sys.stderr)
        return 1
    print(f"created flag {args.flag} in FeatBit (variations candidate and control; off, serving control)")
    return 0
