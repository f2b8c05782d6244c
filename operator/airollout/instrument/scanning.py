"""`airollout scan PATH`: every file of a code base handed to the scanner of its language, sites in order.

Python is read with the standard library; TypeScript and JavaScript only when such files exist, so a Python
code base needs nothing from the ``scan`` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from airollout.instrument.python_scan import scan_python
from airollout.instrument.sites import Site

__all__ = ["Scan", "scan"]

# Directories that hold someone else's code or generated files, never the application's own calls.
_SKIPPED = frozenset(
    {".git", ".hg", "node_modules", ".venv", "venv", "__pycache__", "dist", "build", ".next", ".tox", "site-packages"}
)
_SCRIPT_SUFFIXES = (".ts", ".tsx", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")
_DECLARATIONS = (".d.ts", ".d.mts", ".d.cts")


@dataclass(frozen=True)
class Scan:
    root: Path
    sites: tuple[Site, ...]
    problems: tuple[str, ...]
    """Files that could not be read whole, each with why."""


def scan(path: Path) -> Scan:
    """The AI model invocations under ``path`` (a directory or one file)."""
    if not path.exists():
        raise FileNotFoundError(f"PATH {path}: no such file or directory; give the code base's directory")
    root = path if path.is_dir() else path.parent
    python: dict[str, str] = {}
    scripts: dict[str, str] = {}
    problems: list[str] = []
    for file in _files(path):
        relative = file.relative_to(root).as_posix()
        try:
            source = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as error:
            problems.append(f"{relative}: cannot be read ({error}); skipped")
            continue
        if file.suffix == ".py":
            python[relative] = source
        elif not file.name.endswith(_DECLARATIONS):
            scripts[relative] = source
    sites, python_problems = scan_python(python)
    problems.extend(python_problems)
    if scripts:
        from airollout.instrument.script_scan import scan_scripts

        script_sites, script_problems = scan_scripts(scripts)
        sites.extend(script_sites)
        problems.extend(script_problems)
    ordered = sorted(sites, key=lambda s: (s.path, s.line, s.column))
    return Scan(root=root, sites=tuple(ordered), problems=tuple(sorted(problems)))


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".py" or path.suffix in _SCRIPT_SUFFIXES else []
    found: list[Path] = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _SKIPPED and not d.startswith("."))
        found.extend(Path(directory, name) for name in sorted(names) if name.endswith((".py", *_SCRIPT_SUFFIXES)))
    return found
