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
