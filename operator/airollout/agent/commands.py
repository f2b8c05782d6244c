"""The `mcp` command, added to `airollout` by one line in the CLI; the MCP SDK is imported only when it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_commands"]


def add_commands(commands: Any) -> None:
    mcp = commands.add_parser("mcp", help="serve the Model Context Protocol over stdio (agents drive rollouts)")
    mcp.add_argument("-n", "--namespace", help="the namespace tools use when a call names none (default: default)")
    mcp.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from airollout.agent.server import serve
    except ImportError as error:
        print(f"airollout mcp: needs the MCP SDK ({error.name}): pip install 'airollout[mcp]'", file=sys.stderr)
        return 2
    serve(default_namespace=args.namespace or "default")
    return 0
