"""Gating a Python call (see `gating`): edits computed from the syntax tree, evaluation through FeatBit's SDK."""

from __future__ import annotations

import ast
import json

from airollout.instrument.gating import VARIANT_CANDIDATE, VARIANT_CONTROL, Edit, GateRefused, GateRequest
from airollout.instrument.python_scan import model_argument
from airollout.instrument.sites import Site

__all__ = ["python_edits"]

_IMPORTS = ("from fbclient import get as featbit_client\n", "from opentelemetry import trace\n")
_VARIANT = "airollout_variant"


_Function = ast.FunctionDef | ast.AsyncFunctionDef


class _Source:
    """The source as bytes, with offsets from (line, column) as `ast` reports them (UTF-8 byte columns)."""

    def __init__(self, source: str) -> None:
        self.raw = source.encode()
        self.starts = [0]
        for line in self.raw.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def at(self, line: int, column: int = 0) -> int:
        return self.starts[line - 1] + column

    def after_line(self, line: int) -> int:
        return self.starts[min(line, len(self.starts) - 1)]

    def span(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno or node.lineno, node.end_col_offset or 0)

    def text(self, node: ast.expr | ast.stmt) -> str:
        start, end = self.span(node)
        return self.raw[start:end].decode()


def python_edits(site: Site, source: str, request: GateRequest) -> list[Edit]:
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    call = next(
        (
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and node.lineno == site.line and node.col_offset + 1 == site.column
        ),
        None,
    )
    if call is None:
        raise GateRefused(f"{site.address}: no call starts at column {site.column}; scan the code again")
    code = _Source(source)
    statement, function = _enclosing(call, parents)
    user = request.user or _user_parameter(function, site)
    candidate = json.dumps(request.candidate)
    choose = f'{candidate} if {_VARIANT} == "{VARIANT_CANDIDATE}" else '

    edits: list[Edit] = []
    slot = _model_slot(call, site.provider)
    if slot is not None:
        edits.append(Edit(*code.span(slot), f"({choose}{code.text(slot)})"))
    else:
        edits.extend(_twin(call, tree, function, code, candidate, site))
    indent = " " * statement.col_offset
    flag = json.dumps(request.flag)
    evaluation = (
        f"{indent}{_VARIANT} = featbit_client().variation({flag}, "
        f'{{"key": str({user}), "name": str({user})}}, "{VARIANT_CONTROL}")\n'
        f"{indent}trace.get_current_span().set_attributes("
        f'{{"feature_flag.key": {flag}, "feature_flag.result.variant": {_VARIANT}}})\n'
    )
    edits.append(Edit(code.at(statement.lineno), code.at(statement.lineno), evaluation))
    missing = "".join(line for line in _IMPORTS if line not in source)
    if missing:
        position = code.after_line(_import_line(tree) - 1)
        edits.append(Edit(position, position, missing))
    return edits


def _enclosing(call: ast.Call, parents: dict[ast.AST, ast.AST]) -> tuple[ast.stmt, _Function | None]:
    node: ast.AST = call
    statement: ast.stmt | None = None
    while node in parents:
        node = parents[node]
        if statement is None and isinstance(node, ast.stmt):
            statement = node
        if isinstance(node, _Function):
            assert statement is not None
            return statement, node
    assert statement is not None
    return statement, None


def _user_parameter(function: _Function | None, site: Site) -> str:
    arguments = function.args if function is not None else None
    parameters = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)] if arguments else []
    named = next((p for p in parameters if "user" in p.lower()), None)
    if named is None:
        where = f"function {function.name}" if function else "module level"
        raise GateRefused(
            f"--user: nothing at {site.address} ({where}) names the user the call serves; give the expression "
            "that does, for example --user request.user.id"
        )
    return named


def _model_slot(call: ast.Call, provider: str) -> ast.expr | None:
    func = call.func
    callee = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return model_argument(call, provider, callee)


def _twin(
    call: ast.Call, tree: ast.Module, function: _Function | None, code: _Source, candidate: str, site: Site
) -> list[Edit]:
    """A candidate twin of the client the call is made on, built beside it, and the call made on either."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else call.func
    built = _built(receiver, [*([function.body] if function else []), tree.body], site.provider)
    if built is None:
        raise GateRefused(
            f"{site.address}: the model is neither at the call nor where {code.text(receiver)} is built in this "
            "file; pass the model at the call (model=...) and gate again"
        )
    assert isinstance(receiver, ast.Name)
    constructor = _unwrapped(built.value)
    assert isinstance(constructor, ast.Call)
    slot = _model_slot(constructor, site.provider)
    assert slot is not None
    value_start, value_end = code.span(built.value)
    slot_start, slot_end = code.span(slot)
    value = code.raw[value_start:slot_start] + candidate.encode() + code.raw[slot_end:value_end]
    twin = f"{receiver.id}_candidate"
    line_end = code.after_line(built.end_lineno or built.lineno)
    return [
        Edit(line_end, line_end, f"{' ' * built.col_offset}{twin} = {value.decode()}\n"),
        Edit(*code.span(receiver), f'({twin} if {_VARIANT} == "{VARIANT_CANDIDATE}" else {receiver.id})'),
    ]


def _built(receiver: ast.expr, bodies: list[list[ast.stmt]], provider: str) -> ast.Assign | None:
    """The assignment that builds ``receiver`` (a plain name) with a model, in the function or the module."""
    if not isinstance(receiver, ast.Name):
        return None
    for body in bodies:
        for statement in body:
            if (
                isinstance(statement, ast.Assign)
                and [t.id for t in statement.targets if isinstance(t, ast.Name)] == [receiver.id]
                and isinstance(value := _unwrapped(statement.value), ast.Call)
                and _model_slot(value, provider) is not None
            ):
                return statement
    return None


def _unwrapped(node: ast.expr) -> ast.expr:
    return node.value if isinstance(node, ast.Await) else node


def _import_line(tree: ast.Module) -> int:
    """The line before which imports go: after the docstring and ``from __future__`` imports."""
    line = 1
    for statement in tree.body:
        docstring = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
        future = isinstance(statement, ast.ImportFrom) and statement.module == "__future__"
        if not (docstring or future):
            break
        line = (statement.end_lineno or statement.lineno) + 1
    return line
