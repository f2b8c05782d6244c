"""Argo CD's resource customization tests, run here: the Lua executed for real, the test YAML read as Argo CD's.

Argo CD runs health checks and actions in gopher-lua, a Lua 5.1; lupa's Lua 5.1 runtime (LuaJIT, also 5.1,
where that is all the wheel has) runs the same scripts. Each script sees the object as the global `obj`,
as Argo CD passes it; tables come back as dicts and lists, as Argo CD turns them back into JSON.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["AIROLLOUT_CUSTOMIZATION", "discover_actions", "health_of", "load_yaml", "run_action"]

AIROLLOUT_CUSTOMIZATION = (
    Path(__file__).resolve().parents[2] / "argocd" / "resource_customizations" / "airollout.dev" / "AIRollout"
)


def health_of(obj: Mapping[str, Any], folder: Path = AIROLLOUT_CUSTOMIZATION) -> dict[str, Any]:
    """What health.lua says of ``obj``: {"status": ..., "message": ...}."""
    return _run(folder / "health.lua", obj)  # type: ignore[no-any-return]


def discover_actions(obj: Mapping[str, Any], folder: Path = AIROLLOUT_CUSTOMIZATION) -> dict[str, dict[str, Any]]:
    """What actions/discovery.lua offers for ``obj``: name -> {"disabled": ..., "displayName": ...}."""
    return _run(folder / "actions" / "discovery.lua", obj)  # type: ignore[no-any-return]


def run_action(action: str, obj: Mapping[str, Any], folder: Path = AIROLLOUT_CUSTOMIZATION) -> dict[str, Any]:
    """The object actions/ACTION/action.lua returns for ``obj``.

    Lua has one kind of table, so an empty list comes back as an empty map; Argo CD restores each empty
    table to what the input held at the same place before it diffs and patches, and so does this.
    """
    return _restore_empty(_run(folder / "actions" / action / "action.lua", obj), obj)  # type: ignore[no-any-return]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _run(script: Path, obj: Mapping[str, Any]) -> Any:
    lua = _lua51().LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1", "Argo CD's Lua is 5.1"
    lua.globals().obj = _to_lua(lua, obj)
    return _from_lua(lua.execute(script.read_text()))


def _lua51() -> Any:
    for name in ("lupa.lua51", "lupa.luajit21", "lupa.luajit20"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeError("lupa has no Lua 5.1 runtime here: pip install 'lupa>=2.4' (the test extra)")


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return lua.table_from({key: _to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, item) for item in value])
    return value


def _restore_empty(returned: Any, original: Any) -> Any:
    if returned == {} and isinstance(original, list):
        return []
    if isinstance(returned, dict) and isinstance(original, Mapping):
        return {key: _restore_empty(value, original.get(key)) for key, value in returned.items()}
    if isinstance(returned, list) and isinstance(original, list):
        return [_restore_empty(value, original[i] if i < len(original) else None) for i, value in enumerate(returned)]
    return returned


def _from_lua(value: Any) -> Any:
    if type(value).__name__ != "_LuaTable":
        return value
    items = dict(value.items())
    if items and all(isinstance(key, int) for key in items) and sorted(items) == list(range(1, len(items) + 1)):
        return [_from_lua(items[index]) for index in range(1, len(items) + 1)]
    return {key: _from_lua(item) for key, item in items.items()}
