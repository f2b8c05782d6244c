"""Gating a TypeScript or JavaScript call (see `gating`): edits from tree-sitter's tree, evaluation through
OpenFeature (the service registers FeatBit's OpenFeature provider once at start-up)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from airollout.instrument.gating import VARIANT_CANDIDATE, VARIANT_CONTROL, Edit, GateRefused, GateRequest
from airollout.instrument.script_scan import (
    FUNCTION_NODES,
    descendants,
    model_argument,
    node_text,
    parse_script,
)
from airollout.instrument.sites import Site

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["script_edits"]

_VARIANT = "airolloutVariant"
_IMPORTS = {
    "module": (
        'import { OpenFeature } from "@openfeature/server-sdk";\n',
        'import { trace } from "@opentelemetry/api";\n',
    ),
    "commonjs": (
        'const { OpenFeature } = require("@openfeature/server-sdk");\n',
        'const { trace } = require("@opentelemetry/api");\n',
    ),
}


def script_edits(site: Site, source: str, request: GateRequest) -> list[Edit]:
    tree = parse_script(site.path, source)
    call = next((n for n in [tree.root_node, *descendants(tree.root_node)] if n.type == "call_expression"
                 and n.start_point == (site.line - 1, site.column - 1)), None)  # fmt: skip
    if call is None:
        raise GateRefused(f"{site.address}: no call starts at column {site.column}; scan the code again")
    statement, function = _enclosing(call)
    if function is None or not any(child.type == "async" for child in function.children):
        raise GateRefused(
            f"{site.address}: the call is not in an async function; OpenFeature evaluates with await, so make "
            "the enclosing function async (or gate a call that is)"
        )
    user = request.user or _user_parameter(function, site)
    candidate = json.dumps(request.candidate)
    choose = f'{_VARIANT} === "{VARIANT_CANDIDATE}" ? {candidate} : '
    edits: list[Edit] = []
    slot = _model_slot(call, site.provider)
    if slot is not None:
        # An argument needs no parentheses of its own; an object's value reads better with them.
        wrapped = (
            f"{choose}{node_text(slot)}"
            if slot.parent and slot.parent.type == "arguments"
            else f"({choose}{node_text(slot)})"
        )
        edits.append(Edit(slot.start_byte, slot.end_byte, wrapped))
    else:
        edits.extend(_twin(call, tree.root_node, function, candidate, site))
    line_start = source.encode().rfind(b"\n", 0, statement.start_byte) + 1
    indent = " " * statement.start_point[1]
    flag = json.dumps(request.flag)
    evaluation = (
        f"{indent}const {_VARIANT} = await OpenFeature.getClient().getStringValue({flag}, "
        f'"{VARIANT_CONTROL}", {{ targetingKey: String({user}) }});\n'
        f"{indent}trace.getActiveSpan()?.setAttributes({{ "
        f'"feature_flag.key": {flag}, "feature_flag.result.variant": {_VARIANT} }});\n'
    )
    edits.append(Edit(line_start, line_start, evaluation))
    style = "module" if any(n.type == "import_statement" for n in tree.root_node.named_children) else "commonjs"
    missing = "".join(line for line in _IMPORTS[style] if line not in source)
    if missing:
        edits.append(Edit(0, 0, missing))
    return edits


def _enclosing(call: Node) -> tuple[Node, Node | None]:
    statement: Node | None = None
    node = call
    while node.parent is not None:
        parent = node.parent
        if statement is None and parent.type in ("statement_block", "program"):
            statement = node
        if parent.type in FUNCTION_NODES:
            if statement is None:
                raise GateRefused("the call is an arrow function's expression body: give the function a block body")
            return statement, parent
        node = parent
    assert statement is not None
    return statement, None


def _user_parameter(function: Node, site: Site) -> str:
    parameters = function.child_by_field_name("parameters")
    names = []
    for parameter in parameters.named_children if parameters is not None else []:
        pattern = parameter.child_by_field_name("pattern") or parameter
        if pattern.type == "identifier":
            names.append(node_text(pattern))
    named = next((n for n in names if "user" in n.lower()), None)
    if named is None:
        raise GateRefused(
            f"--user: no parameter at {site.address} names the user the call serves; give the expression that "
            "does, for example --user req.user.id"
        )
    return named


def _twin(call: Node, root: Node, function: Node, candidate: str, site: Site) -> list[Edit]:
    """A candidate twin of the client the call is made on, declared beside it, and the call made on either."""
    callee = call.child_by_field_name("function")
    receiver = (
        callee.child_by_field_name("object") if callee is not None and callee.type == "member_expression" else callee
    )
    if receiver is None or receiver.type != "identifier":
        raise GateRefused(
            f"{site.address}: the model is neither at the call nor where its client is built in this file; pass "
            "the model at the call ({ model: ... }) and gate again"
        )
    name = node_text(receiver)
    declarator = next(
        (
            node
            for scope in (function, root)
            for node in [scope, *descendants(scope)]
            if node.type == "variable_declarator"
            and (declared := node.child_by_field_name("name")) is not None
            and node_text(declared) == name
        ),
        None,
    )
    value = declarator.child_by_field_name("value") if declarator is not None else None
    constructor = value.named_children[0] if value is not None and value.type == "await_expression" else value
    slot = (
        _model_slot(constructor, site.provider)
        if constructor is not None and constructor.type in ("call_expression", "new_expression")
        else None
    )
    if declarator is None or value is None or slot is None or declarator.parent is None:
        raise GateRefused(
            f"{site.address}: the model of {name} is not set where it is built in this file; pass the model at the "
            "call ({ model: ... }) and gate again"
        )
    twin = f"{name}Candidate"
    built = value.text or b""
    twin_value = (
        built[: slot.start_byte - value.start_byte] + candidate.encode() + built[slot.end_byte - value.start_byte :]
    )
    declaration = declarator.parent
    keyword = "const" if node_text(declaration).startswith("const") else "let"
    indent = " " * declaration.start_point[1]
    return [
        Edit(declaration.end_byte, declaration.end_byte, f"\n{indent}{keyword} {twin} = {twin_value.decode()};"),
        Edit(receiver.start_byte, receiver.end_byte, f'({_VARIANT} === "{VARIANT_CANDIDATE}" ? {twin} : {name})'),
    ]


def _model_slot(call: Node, provider: str) -> Node | None:
    function = call.child_by_field_name("function") or call.child_by_field_name("constructor")
    callee = node_text(function).rsplit(".", 1)[-1] if function is not None else ""
    return model_argument(call, provider, callee)
