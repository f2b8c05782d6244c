"""Finding AI model invocations in Python by reading the syntax tree, never the text.

Each module is read with `ast`. Names are followed from their import (``from openai import OpenAI as OA``)
through assignments (``client = OA()``), attributes set in ``__init__`` (``self.llm = ChatOpenAI()``),
functions that return a client, LangChain's ``prompt | llm`` and imports of other modules of the same code
base, so a client built in one module and called in another is found where it is called.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from airollout.instrument.providers import (
    FLAG_EVALUATIONS,
    MODEL_KEYS,
    Provider,
    embedding_operation,
    model_position,
    provider_for_module,
)
from airollout.instrument.sites import Site
from airollout.instrument.values import ProviderValue

__all__ = ["model_argument", "scan_python"]

_PROMPT_KEYS = ("prompt", "prompt_id", "prompt_name")


@dataclass(frozen=True)
class _Module:
    """A module of the scanned code base itself."""

    name: str


@dataclass
class _Instance:
    """``self`` inside a class: the attributes its methods assign."""

    attributes: dict[str, _Resolved] = field(default_factory=dict)


@dataclass(frozen=True)
class _Function:
    """A function of the scanned code base; calling it gives what it returns."""

    node: ast.FunctionDef | ast.AsyncFunctionDef
    module: str


_Resolved = ProviderValue | _Module | _Instance | _Function


class _Project:
    """Every Python module under the root, and what each exports, read once and on demand."""

    def __init__(self, files: Mapping[str, ast.Module]) -> None:
        self.trees: dict[str, ast.Module] = {}
        self.paths: dict[str, str] = {}
        for path, tree in files.items():
            for name in _module_names(path):
                self.trees.setdefault(name, tree)
                self.paths.setdefault(name, path)
        self._exports: dict[str, dict[str, _Resolved]] = {}

    def exports(self, module: str) -> dict[str, _Resolved]:
        if module not in self._exports:
            self._exports[module] = {}  # an import cycle sees the module as empty rather than recursing
            tree = self.trees.get(module)
            if tree is not None:
                self._exports[module] = _Scope(self, module, None).bind(tree.body)
        return self._exports[module]


def _module_names(path: str) -> list[str]:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    names = [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]
    return names


class _Scope:
    """The names of one module, function or class body, and how an expression resolves in it."""

    def __init__(self, project: _Project, module: str, parent: _Scope | None, *, is_package: bool = False) -> None:
        self.project = project
        self.module = module
        self.parent = parent
        self.names: dict[str, _Resolved] = {}
        self.flagged: set[str] = set()
        self.is_package: bool = is_package or (parent.is_package if parent else False)

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

    # -- binding ------------------------------------------------------------------------------------------------

    def bind(self, body: Sequence[ast.stmt]) -> dict[str, _Resolved]:
        for statement in _statements(body):
            self._bind(statement)
        return self.names

    def _bind(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self._set(alias.asname, self._import(alias.name))
                else:
                    top = alias.name.split(".")[0]
                    self._set(top, self._import(top))
        elif isinstance(node, ast.ImportFrom):
            base = self._absolute(node.module or "", node.level)
            for alias in node.names:
                if alias.name != "*":
                    self._set(alias.asname or alias.name, self._import_from(base, alias.name))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    self._set(target.id, self.resolve(node.value))
                    if self.mentions_flag(node.value):
                        self.flagged.add(target.id)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if isinstance(item.optional_vars, ast.Name):
                    self._set(item.optional_vars.id, self.resolve(item.context_expr))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.names[node.name] = _Function(node, self.module)

    def _set(self, name: str, value: _Resolved | None) -> None:
        if value is None:
            self.names.pop(name, None)
        else:
            self.names[name] = value

    def _absolute(self, module: str, level: int) -> str:
        if level == 0:
            return module
        package = self.module.split(".")
        if not self.is_package:
            package = package[:-1]
        package = package[: len(package) - (level - 1)] if level > 1 else package
        return ".".join([*package, module] if module else package)

    def _import(self, name: str) -> _Resolved | None:
        if name in self.project.trees:
            return _Module(name)
        provider = provider_for_module(name)
        return ProviderValue.imported(provider, tuple(name.split("."))) if provider else None

    def _import_from(self, module: str, name: str) -> _Resolved | None:
        if f"{module}.{name}" in self.project.trees:
            return _Module(f"{module}.{name}")
        if module in self.project.trees:
            return self.project.exports(module).get(name)
        provider = provider_for_module(f"{module}.{name}")
        if provider is None:
            return None
        return ProviderValue.imported(provider, (*module.split("."), name))

    # -- resolving ----------------------------------------------------------------------------------------------

    def resolve(self, node: ast.expr) -> _Resolved | None:
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Await):
            return self.resolve(node.value)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if isinstance(base, ProviderValue):
                return base.extend(node.attr)
            if isinstance(base, _Module):
                if f"{base.name}.{node.attr}" in self.project.trees:
                    return _Module(f"{base.name}.{node.attr}")
                return self.project.exports(base.name).get(node.attr)
            if isinstance(base, _Instance):
                return base.attributes.get(node.attr)
            return None
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            # LangChain's `prompt | llm | parser`: a chain holds a model when any of its parts does.
            parts = [self.resolve(node.left), self.resolve(node.right)]
            values = [part for part in parts if isinstance(part, ProviderValue)]
            if values:
                bearing = next((v for v in values if v.bearing), values[0])
                return bearing.extend("|", bearing=any(v.bearing for v in values))
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body) or self.resolve(node.orelse)
        return None

    def _call(self, node: ast.Call) -> _Resolved | None:
        callee = self.resolve(node.func)
        if isinstance(callee, _Function):
            return _returned(self.project, callee, self)
        if not isinstance(callee, ProviderValue):
            return None
        # A factory handed a model (`create_react_agent(llm, tools)`, `init_chat_model("gpt-4o")`) holds it.
        handed = [v for arg in node.args if isinstance(v := self.resolve(arg), ProviderValue) and v.bearing]
        model = _model_of(node, callee.provider, callee.chain[-1]) or next((v.model for v in handed), None)
        return callee.called(model, hands_model=model is not None or bool(handed))

    def mentions_flag(self, node: ast.AST) -> bool:
        for child in ast.walk(node):
            if isinstance(child, ast.Call):
                func = child.func
                called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if called in FLAG_EVALUATIONS:
                    return True
            if isinstance(child, ast.Name) and self.is_flagged(child.id):
                return True
        return False


def _returned(project: _Project, function: _Function, caller: _Scope) -> _Resolved | None:
    scope = _Scope(project, function.module, _module_scope(project, function.module, caller))
    scope.bind(function.node.body)
    for node in _walk_scope(function.node.body):
        if isinstance(node, ast.Return) and node.value is not None:
            value = scope.resolve(node.value)
            if value is not None:
                return value
    return None


def _module_scope(project: _Project, module: str, caller: _Scope) -> _Scope:
    scope = caller
    while scope.parent is not None:
        scope = scope.parent
    if scope.module == module:
        return scope
    exported = _Scope(project, module, None)
    exported.names = dict(project.exports(module))
    return exported


def _statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a body in order, into blocks (if, for, try, with) but not into functions or classes."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(statement, name, ()))
        for handler in getattr(statement, "handlers", ()):
            yield from _statements(handler.body)
        for case in getattr(statement, "cases", ()):
            yield from _statements(case.body)


def _walk_scope(body: Iterable[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a body, nested functions and classes too but not what is inside them."""
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop(0)
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            pending.extend(ast.iter_child_nodes(node))


def _keyword(node: ast.Call, names: Iterable[str]) -> ast.expr | None:
    wanted = set(names)
    return next((k.value for k in node.keywords if k.arg in wanted), None)


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def model_argument(node: ast.Call, provider: str, callee: str) -> ast.expr | None:
    """The argument that names the model: a ``model=``-like keyword, else the provider's positional one."""
    keyword = _keyword(node, MODEL_KEYS)
    if keyword is not None:
        return keyword
    position = model_position(provider, callee)
    return node.args[position] if position is not None and len(node.args) > position else None


def _model_of(node: ast.Call, provider: Provider, callee: str) -> str | None:
    return _literal(model_argument(node, provider.name, callee))


def _prompt_of(node: ast.Call) -> str | None:
    value = _keyword(node, _PROMPT_KEYS)
    if isinstance(value, ast.Dict):
        for key, item in zip(value.keys, value.values, strict=True):
            if _literal(key) == "id":
                return _literal(item)
        return None
    text = _literal(value)
    return text if text is None or len(text) <= 60 else text[:59] + "…"


class _Finder:
    """Walks one module, scope by scope, and records each invocation."""

    def __init__(self, project: _Project, path: str, tree: ast.Module) -> None:
        self.project = project
        self.path = path
        self.tree = tree
        self.parents: dict[ast.AST, ast.AST] = {
            child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)
        }
        self.sites: list[Site] = []

    def run(self) -> list[Site]:
        module = _module_names(self.path)[0]
        scope = _Scope(self.project, module, None, is_package=self.path.endswith("__init__.py"))
        self._scope(self.tree.body, scope)
        return self.sites

    def _scope(self, body: Sequence[ast.stmt], scope: _Scope) -> None:
        scope.bind(body)
        self._flag_names(body, scope)
        for node in _walk_scope(body):
            if isinstance(node, ast.Call):
                self._check(node, scope)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self._scope(node.body, _Scope(self.project, scope.module, scope))
            elif isinstance(node, ast.ClassDef):
                self._class(node, scope)

    def _class(self, node: ast.ClassDef, outer: _Scope) -> None:
        instance = _Instance()
        methods = [m for m in node.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
        for method in methods:
            local = _Scope(self.project, outer.module, outer)
            local.names["self"] = instance
            local.bind(method.body)
            for child in _walk_scope(method.body):
                if isinstance(child, ast.Assign):
                    for target in child.targets:
                        if _is_self_attribute(target):
                            value = local.resolve(child.value)
                            if value is not None:
                                instance.attributes[target.attr] = value  # type: ignore[attr-defined]
        for method in methods:
            local = _Scope(self.project, outer.module, outer)
            local.names["self"] = instance
            self._scope(method.body, local)

    def _flag_names(self, body: Sequence[ast.stmt], scope: _Scope) -> None:
        """Names assigned from a flag evaluation, or from a name that was (until nothing changes)."""
        assignments = [s for s in _walk_scope(body) if isinstance(s, ast.Assign | ast.AnnAssign) and s.value]
        changed = True
        while changed:
            changed = False
            for statement in assignments:
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                value = statement.value
                assert value is not None
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in scope.flagged and scope.mentions_flag(value):
                        scope.flagged.add(target.id)
                        changed = True

    def _check(self, node: ast.Call, scope: _Scope) -> None:
        found = self._invocation(node, scope)
        if found is None:
            return
        value, operation = found
        model = _model_of(node, value.provider, value.chain[-1]) or value.model
        end_line = node.end_lineno or node.lineno
        end_column = (node.end_col_offset or node.col_offset) + 1
        self.sites.append(
            Site(
                path=self.path,
                line=node.lineno,
                column=node.col_offset + 1,
                end_line=end_line,
                end_column=end_column,
                provider=value.provider.name,
                operation=operation,
                kind="embedding" if embedding_operation(operation) else "generation",
                language="python",
                model=model,
                prompt=_prompt_of(node),
                guarded=self._guarded(node, scope),
            )
        )

    def _invocation(self, node: ast.Call, scope: _Scope) -> tuple[ProviderValue, str] | None:
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver = scope.resolve(func.value)
            if isinstance(receiver, ProviderValue) and receiver.invokes(func.attr):
                return receiver.extend(func.attr), receiver.operation(func.attr)
        callee = scope.resolve(func)
        if isinstance(callee, ProviderValue) and (callee.invoking_function or callee.invoking_object):
            return callee, callee.operation()
        return None

    def _guarded(self, node: ast.Call, scope: _Scope) -> bool:
        if scope.mentions_flag(node):
            return True
        child: ast.AST = node
        while child in self.parents:
            parent = self.parents[child]
            branch = isinstance(parent, ast.If | ast.IfExp | ast.While) and child is not parent.test
            if branch and scope.mentions_flag(parent.test):  # type: ignore[attr-defined]
                return True
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                break
            child = parent
        return False


def _is_self_attribute(target: ast.expr) -> bool:
    return isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"


def scan_python(files: Mapping[str, str]) -> tuple[list[Site], list[str]]:
    """The invocations in ``files`` (relative path -> source), and a message per file that does not parse."""
    trees: dict[str, ast.Module] = {}
    problems: list[str] = []
    for path, source in files.items():
        try:
            trees[path] = ast.parse(source, filename=path)
        except SyntaxError as error:
            problems.append(f"{path}:{error.lineno}: not Python this scanner can read ({error.msg}); skipped")
    project = _Project(trees)
    sites: list[Site] = []
    for path, tree in trees.items():
        sites.extend(_Finder(project, path, tree).run())
    return sites, problems
