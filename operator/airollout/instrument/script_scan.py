"""Finding AI model invocations in TypeScript and JavaScript with a real parser (tree-sitter's grammars).

The same following as for Python (see `python_scan`): names from their import or ``require`` through
declarations, class fields and ``this.x = ...``, functions that return a client, ``prompt.pipe(llm)``, and
imports of the code base's own files (``./clients``), so a client made in one file is found where it is called.
The grammars come from the optional ``scan`` extra and are imported only when a script file is scanned.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from airollout.instrument.providers import (
    FLAG_EVALUATIONS,
    MODEL_KEYS,
    embedding_operation,
    model_position,
    provider_for_module,
)
from airollout.instrument.sites import Site
from airollout.instrument.values import ProviderValue

if TYPE_CHECKING:
    from tree_sitter import Node, Parser, Tree

__all__ = [
    "FUNCTION_NODES",
    "ScannerMissing",
    "descendants",
    "model_argument",
    "node_text",
    "parse_script",
    "scan_scripts",
]

_RESOLVE_SUFFIXES = (".ts", ".tsx", ".js", ".mjs", ".jsx", "/index.ts", "/index.js")
FUNCTION_NODES = frozenset({"function_declaration", "function_expression", "arrow_function", "method_definition",
                        "generator_function_declaration"})  # fmt: skip
_SCOPES = FUNCTION_NODES | {"class_declaration", "class"}
_PROMPT_KEYS = ("prompt", "promptId", "system")
_INSTALL = "pip install 'airollout[scan]'"


class ScannerMissing(RuntimeError):
    """The TypeScript/JavaScript grammars are not installed."""


@functools.cache
def _parser(suffix: str) -> Parser:
    try:
        import tree_sitter_javascript
        import tree_sitter_typescript
        from tree_sitter import Language, Parser
    except ImportError:
        raise ScannerMissing(f"scanning TypeScript/JavaScript needs tree-sitter's grammars: {_INSTALL}") from None
    if suffix in (".ts", ".mts", ".cts"):
        grammar = tree_sitter_typescript.language_typescript()
    elif suffix == ".tsx":
        grammar = tree_sitter_typescript.language_tsx()
    else:
        grammar = tree_sitter_javascript.language()
    return Parser(Language(grammar))


def parse_script(path: str, source: str) -> Tree:
    return _parser(PurePosixPath(path).suffix).parse(source.encode())


def node_text(node: Node | None) -> str:
    return (node.text or b"").decode() if node is not None else ""


def _string(node: Node | None) -> str | None:
    """The text of a string literal (or of a template literal without substitutions), else None."""
    if node is None:
        return None
    if node.type == "string" or (
        node.type == "template_string" and not any(c.type == "template_substitution" for c in node.named_children)
    ):
        return node_text(node)[1:-1]
    return None


@dataclass(frozen=True)
class _Module:
    path: str


@dataclass
class _Instance:
    attributes: dict[str, _Resolved] = field(default_factory=dict)


@dataclass(frozen=True)
class _Function:
    node: Node
    path: str


_Resolved = ProviderValue | _Module | _Instance | _Function


class _Project:
    def __init__(self, trees: Mapping[str, Tree]) -> None:
        self.trees = dict(trees)
        self._exports: dict[str, dict[str, _Resolved]] = {}

    def file_for(self, importer: str, source: str) -> str | None:
        if not source.startswith("."):
            return None
        base = (PurePosixPath(importer).parent / source).as_posix()
        parts: list[str] = []
        for part in base.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part != ".":
                parts.append(part)
        joined = "/".join(parts)
        stem = joined.rsplit(".", 1)[0] if joined.endswith((".js", ".mjs")) else joined
        for candidate in (joined, *(stem + suffix for suffix in _RESOLVE_SUFFIXES)):
            if candidate in self.trees:
                return candidate
        return None

    def exports(self, path: str) -> dict[str, _Resolved]:
        if path not in self._exports:
            self._exports[path] = {}  # an import cycle sees the file as empty rather than recursing
            self._exports[path] = _Scope(self, path, None).bind(self.trees[path].root_node)
        return self._exports[path]


def _walk(node: Node) -> Iterator[Node]:
    """The nodes under ``node`` in order, functions and classes too but not what is inside them."""
    pending = list(node.named_children)
    while pending:
        current = pending.pop(0)
        yield current
        if current.type not in _SCOPES:
            pending[0:0] = current.named_children


class _Scope:
    def __init__(self, project: _Project, path: str, parent: _Scope | None) -> None:
        self.project = project
        self.path = path
        self.parent = parent
        self.names: dict[str, _Resolved] = {}
        self.flagged: set[str] = set()

    def lookup(self, name: str) -> _Resolved | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def is_flagged(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.flagged:
                return True
            scope = scope.parent
        return False

    def bind(self, body: Node) -> dict[str, _Resolved]:
        declarators = []
        for node in _walk(body):
            if node.type == "import_statement":
                self._import(node)
            elif node.type == "variable_declarator":
                declarators.append(node)
                self._declare(node)
            elif node.type in ("function_declaration", "generator_function_declaration"):
                name = node.child_by_field_name("name")
                if name is not None:
                    self.names[node_text(name)] = _Function(node, self.path)
        # Names assigned from a flag evaluation, or from such a name, until nothing changes.
        changed = True
        while changed:
            changed = False
            for node in declarators:
                name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
                if name is None or name.type != "identifier" or value is None or node_text(name) in self.flagged:
                    continue
                if self.mentions_flag(value):
                    self.flagged.add(node_text(name))
                    changed = True
        return self.names

    def _import(self, node: Node) -> None:
        source = _string(node.child_by_field_name("source"))
        if source is None:
            return
        clause = next((c for c in node.named_children if c.type == "import_clause"), None)
        if clause is None:
            return
        for part in clause.named_children:
            if part.type == "identifier":  # the default export
                self._set(node_text(part), self._imported(source, "default", node_text(part)))
            elif part.type == "namespace_import":
                name = next((c for c in part.named_children if c.type == "identifier"), None)
                self._set(node_text(name), self._imported(source, None, ""))
            elif part.type == "named_imports":
                for specifier in part.named_children:
                    if specifier.type == "import_specifier":
                        imported = node_text(specifier.child_by_field_name("name"))
                        alias = specifier.child_by_field_name("alias")
                        self._set(node_text(alias) if alias else imported, self._imported(source, imported, imported))

    def _imported(self, source: str, name: str | None, local: str) -> _Resolved | None:
        """What ``import`` gives: ``name`` None for the whole module, ``default`` for its default export."""
        path = self.project.file_for(self.path, source)
        if path is not None:
            if name is None:
                return _Module(path)
            return self.project.exports(path).get(local if name == "default" else name)
        # A default export is named as the importer calls it (`import OpenAI from "openai"`).
        segment = local if name == "default" else name
        provider = provider_for_module(f"{source}.{segment}" if segment else source)
        if provider is None:
            return None
        return ProviderValue.imported(provider, (source, segment) if segment else (source,))

    def _declare(self, node: Node) -> None:
        name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
        if name is None or value is None:
            return
        required = self._required(value)
        if name.type == "identifier":
            if value.type in ("arrow_function", "function_expression", "function"):
                self.names[node_text(name)] = _Function(value, self.path)
            else:
                self._set(node_text(name), required if required is not None else self.resolve(value))
        elif name.type == "object_pattern":
            base = required if required is not None else self.resolve(value)
            for part in name.named_children:
                if part.type == "shorthand_property_identifier_pattern":
                    self._set(node_text(part), self._member(base, node_text(part)))
                elif part.type == "pair_pattern":
                    key, alias = part.child_by_field_name("key"), part.child_by_field_name("value")
                    if alias is not None and alias.type == "identifier":
                        self._set(node_text(alias), self._member(base, node_text(key)))

    def _required(self, value: Node) -> _Resolved | None:
        if value.type == "call_expression" and node_text(value.child_by_field_name("function")) == "require":
            arguments = value.child_by_field_name("arguments")
            source = _string(arguments.named_children[0]) if arguments and arguments.named_children else None
            if source is not None:
                return self._imported(source, None, "")
        return None

    def _set(self, name: str, value: _Resolved | None) -> None:
        if value is None:
            self.names.pop(name, None)
        else:
            self.names[name] = value

    def _member(self, base: _Resolved | None, name: str) -> _Resolved | None:
        if isinstance(base, ProviderValue):
            if len(base.chain) == 1:
                provider = provider_for_module(f"{base.chain[0]}.{name}") or base.provider
                return ProviderValue.imported(provider, (base.chain[0], name))
            return base.extend(name)
        if isinstance(base, _Module):
            return self.project.exports(base.path).get(name)
        if isinstance(base, _Instance):
            return base.attributes.get(name)
        return None

    def resolve(self, node: Node | None) -> _Resolved | None:
        if node is None:
            return None
        kind = node.type
        if kind == "identifier":
            return self.lookup(node_text(node))
        if kind == "this":
            return self.lookup("this")
        if kind in ("await_expression", "parenthesized_expression", "as_expression", "non_null_expression",
                    "satisfies_expression", "type_assertion"):  # fmt: skip
            inner = next((c for c in node.named_children if not c.type.endswith("type")), None)
            return self.resolve(inner)
        if kind == "member_expression":
            return self._member(
                self.resolve(node.child_by_field_name("object")), node_text(node.child_by_field_name("property"))
            )
        if kind in ("call_expression", "new_expression"):
            return self._call(node)
        if kind == "ternary_expression":
            return self.resolve(node.child_by_field_name("consequence")) or self.resolve(
                node.child_by_field_name("alternative")
            )
        return None

    def _call(self, node: Node) -> _Resolved | None:
        function = node.child_by_field_name("function") or node.child_by_field_name("constructor")
        callee = self.resolve(function)
        if isinstance(callee, _Function):
            return _returned(self.project, callee, self)
        arguments = _arguments(node)
        if not isinstance(callee, ProviderValue):
            # `prompt.pipe(llm)` where only the argument came from a provider.
            piped = function is not None and function.type == "member_expression"
            if piped and node_text(function.child_by_field_name("property")) == "pipe":  # type: ignore[union-attr]
                handed = [v for a in arguments if isinstance(v := self.resolve(a), ProviderValue) and v.bearing]
                return handed[0].extend("|") if handed else None
            return None
        if callee.chain[-1] == "pipe":
            # A chain holds a model when any part does; it is followed from the part that holds it.
            handed = [v for a in arguments if isinstance(v := self.resolve(a), ProviderValue) and v.bearing]
            return callee.extend("|") if callee.bearing or not handed else handed[0].extend("|")
        handed = [v for a in arguments if isinstance(v := self.resolve(a), ProviderValue) and v.bearing]
        model = _model_of(node, callee.provider.name, callee.chain[-1]) or next((v.model for v in handed), None)
        return callee.called(model, hands_model=model is not None or bool(handed))

    def mentions_flag(self, node: Node) -> bool:
        for child in [node, *descendants(node)]:
            if child.type == "call_expression":
                function = child.child_by_field_name("function")
                if function is not None and function.type == "member_expression":
                    function = function.child_by_field_name("property")
                if node_text(function) in FLAG_EVALUATIONS:
                    return True
            if child.type == "identifier" and self.is_flagged(node_text(child)):
                return True
        return False


def descendants(node: Node) -> Iterator[Node]:
    for child in node.named_children:
        yield child
        yield from descendants(child)


def _arguments(node: Node) -> list[Node]:
    arguments = node.child_by_field_name("arguments")
    return list(arguments.named_children) if arguments is not None else []


def _returned(project: _Project, function: _Function, caller: _Scope) -> _Resolved | None:
    body = function.node.child_by_field_name("body")
    if body is None:
        return None
    outer = caller
    while outer.parent is not None:
        outer = outer.parent
    if outer.path != function.path:
        outer = _Scope(project, function.path, None)
        outer.names = dict(project.exports(function.path))
    scope = _Scope(project, function.path, outer)
    if body.type != "statement_block":  # an arrow function's expression body
        return scope.resolve(body)
    scope.bind(body)
    for node in _walk(body):
        if node.type == "return_statement" and node.named_children:
            value = scope.resolve(node.named_children[0])
            if value is not None:
                return value
    return None


def _object_value(node: Node, keys: tuple[str, ...]) -> Node | None:
    """The value of the first of ``keys`` in an object literal argument (or one inside a ``new X({...})``)."""
    for pair in node.named_children:
        if pair.type == "pair" and node_text(pair.child_by_field_name("key")).strip("\"'") in keys:
            return pair.child_by_field_name("value")
    return None


def model_argument(node: Node, provider: str, callee: str) -> Node | None:
    """The node that names the model: a model key's value in an object argument (or in ``new X({...})``), the
    string a provider function is handed there (`model: openai("gpt-4o")`), else the positional one."""
    arguments = _arguments(node)
    for argument in arguments:
        if argument.type == "new_expression":
            argument = next(iter(_arguments(argument)), argument)
        value = _object_value(argument, MODEL_KEYS) if argument.type == "object" else None
        if value is not None:
            handed = _arguments(value) if value.type == "call_expression" else []
            return handed[0] if handed and handed[0].type == "string" else value
    position = model_position(provider, callee)
    return arguments[position] if position is not None and len(arguments) > position else None


def _model_of(node: Node, provider: str, callee: str) -> str | None:
    return _string(model_argument(node, provider, callee))


def _prompt_of(node: Node) -> str | None:
    for argument in _arguments(node):
        if argument.type == "object":
            text = _string(_object_value(argument, _PROMPT_KEYS))
            if text is not None:
                return text if len(text) <= 60 else text[:59] + "…"
    return None


class _Finder:
    def __init__(self, project: _Project, path: str, tree: Tree) -> None:
        self.project = project
        self.path = path
        self.tree = tree
        self.sites: list[Site] = []
        self.language = "typescript" if PurePosixPath(path).suffix in (".ts", ".tsx", ".mts", ".cts") else "javascript"

    def run(self) -> list[Site]:
        self._scope(self.tree.root_node, _Scope(self.project, self.path, None))
        return self.sites

    def _scope(self, body: Node, scope: _Scope) -> None:
        scope.bind(body)
        for node in _walk(body):
            if node.type == "call_expression":
                self._check(node, scope)
            elif node.type in FUNCTION_NODES:
                inner = node.child_by_field_name("body")
                if inner is not None:
                    local = _Scope(self.project, self.path, scope)
                    self._scope(inner, local) if inner.type == "statement_block" else self._expression(inner, local)
            elif node.type in ("class_declaration", "class"):
                self._class(node, scope)

    def _expression(self, node: Node, scope: _Scope) -> None:
        for child in [node, *descendants(node)]:
            if child.type == "call_expression":
                self._check(child, scope)

    def _class(self, node: Node, outer: _Scope) -> None:
        instance = _Instance()
        body = node.child_by_field_name("body")
        if body is None:
            return
        local = _Scope(self.project, self.path, outer)
        local.names["this"] = instance
        for member in body.named_children:
            if member.type in ("public_field_definition", "field_definition"):
                name = member.child_by_field_name("name") or member.child_by_field_name("property")
                value = local.resolve(member.child_by_field_name("value"))
                if name is not None and value is not None:
                    instance.attributes[node_text(name)] = value
            elif member.type == "method_definition":
                method = _Scope(self.project, self.path, local)
                method_body = member.child_by_field_name("body")
                if method_body is None:
                    continue
                method.bind(method_body)
                for child in descendants(method_body):
                    if child.type == "assignment_expression":
                        left = child.child_by_field_name("left")
                        if (
                            left is not None
                            and left.type == "member_expression"
                            and node_text(left.child_by_field_name("object")) == "this"
                        ):
                            value = method.resolve(child.child_by_field_name("right"))
                            if value is not None:
                                instance.attributes[node_text(left.child_by_field_name("property"))] = value
        for member in body.named_children:
            if member.type == "method_definition":
                method_body = member.child_by_field_name("body")
                if method_body is not None:
                    self._scope(method_body, _Scope(self.project, self.path, local))

    def _check(self, node: Node, scope: _Scope) -> None:
        found = self._invocation(node, scope)
        if found is None:
            return
        value, operation = found
        model = _model_of(node, value.provider.name, value.chain[-1]) or value.model
        (line, column), (end_line, end_column) = node.start_point, node.end_point
        self.sites.append(
            Site(
                path=self.path,
                line=line + 1,
                column=column + 1,
                end_line=end_line + 1,
                end_column=end_column + 1,
                provider=value.provider.name,
                operation=operation,
                kind="embedding" if embedding_operation(operation) else "generation",
                language=self.language,
                model=model,
                prompt=_prompt_of(node),
                guarded=self._guarded(node, scope),
            )
        )

    def _invocation(self, node: Node, scope: _Scope) -> tuple[ProviderValue, str] | None:
        function = node.child_by_field_name("function")
        if function is not None and function.type == "member_expression":
            receiver = scope.resolve(function.child_by_field_name("object"))
            method = node_text(function.child_by_field_name("property"))
            if isinstance(receiver, ProviderValue) and receiver.invokes(method):
                return receiver.extend(method), receiver.operation(method)
        callee = scope.resolve(function)
        if isinstance(callee, ProviderValue) and (callee.invoking_function or callee.invoking_object):
            return callee, callee.operation()
        return None

    def _guarded(self, node: Node, scope: _Scope) -> bool:
        if scope.mentions_flag(node):
            return True
        child: Any = node
        parent = node.parent
        while parent is not None and parent.type not in _SCOPES:
            if parent.type in ("if_statement", "ternary_expression", "while_statement"):
                condition = parent.child_by_field_name("condition")
                if condition is not None and condition.id != child.id and scope.mentions_flag(condition):
                    return True
            child, parent = parent, parent.parent
        return False


def scan_scripts(files: Mapping[str, str]) -> tuple[list[Site], list[str]]:
    """The invocations in ``files`` (relative path -> source), and a message per file with syntax errors."""
    trees = {path: parse_script(path, source) for path, source in files.items()}
    problems = [
        f"{path}: has syntax errors; the sites found in it may be incomplete"
        for path, tree in trees.items()
        if tree.root_node.has_error
    ]
    project = _Project(trees)
    sites: list[Site] = []
    for path, tree in trees.items():
        sites.extend(_Finder(project, path, tree).run())
    return sites, problems
