"""RFC 6902 JSON Patch over a flag document, as FeatBit's `PATCH /feature-flags/{key}` applies it.

FeatBit patches a C# object, not free-form JSON: an object has a fixed set of properties, so a
path to an unknown property fails and `remove` on a property resets it to null. A failure is
reported as a message, which FeatBit returns with HTTP 200 and `success: false` (§1.4).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = ["JsonPatchError", "apply_patch"]


class JsonPatchError(ValueError):
    """The patch cannot be applied; the message is what FeatBit puts in `errors`."""


def _tokens(path: object) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise JsonPatchError(f"The path '{path}' is not a valid JSON pointer.")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    limit = len(container) if allow_end else len(container) - 1
    if not token.isdigit() or int(token) > limit:
        raise JsonPatchError(f"The index value provided by path segment '{token}' is out of bounds of the array size.")
    return int(token)


def _parent(document: Any, tokens: list[str]) -> Any:
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise JsonPatchError(f"The target location specified by path segment '{token}' was not found.")
    return node


def _add(parent: Any, token: str, value: Any) -> None:
    if isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    elif isinstance(parent, dict) and token in parent:
        parent[token] = value
    else:
        raise JsonPatchError(f"The target location specified by path segment '{token}' was not found.")


def _replace(parent: Any, token: str, value: Any) -> None:
    if isinstance(parent, list):
        parent[_index(parent, token, allow_end=False)] = value
    else:
        _add(parent, token, value)


def _remove(parent: Any, token: str, _value: Any) -> None:
    if isinstance(parent, list):
        del parent[_index(parent, token, allow_end=False)]
    else:
        _add(parent, token, None)


def _current(parent: Any, token: str) -> Any:
    if isinstance(parent, list):
        return parent[_index(parent, token, allow_end=False)]
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    raise JsonPatchError(f"The target location specified by path segment '{token}' was not found.")


def _test(parent: Any, token: str, value: Any) -> None:
    current = _current(parent, token)
    if current != value:
        raise JsonPatchError(f"The current value '{current}' at path '{token}' is not equal to the test value.")


_OPERATIONS: dict[str, Callable[[Any, str, Any], None]] = {
    "add": _add,
    "replace": _replace,
    "remove": _remove,
    "test": _test,
}


def apply_patch(document: dict[str, Any], operations: object) -> dict[str, Any]:
    """Return a patched copy of `document`; the original is left untouched."""
    if not isinstance(operations, list):
        raise TypeError("a JSON Patch document is an array of operations")
    patched = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") not in _OPERATIONS:
            op = operation.get("op") if isinstance(operation, dict) else operation
            raise JsonPatchError(f"Invalid JsonPatch operation '{op}'.")
        tokens = _tokens(operation.get("path"))
        if not tokens:
            raise JsonPatchError("The root of the document cannot be patched.")
        _OPERATIONS[operation["op"]](_parent(patched, tokens), tokens[-1], operation.get("value"))
    return patched
