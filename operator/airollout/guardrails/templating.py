"""Guardrail queries as templates: one PromQL text, rendered once for the candidate and once for the control.

A guardrail is written once (``rate(ai_errors_total{variant="{{variant}}"}[5m])``) and the operator fills in
the variation being judged. The values are not the query author's to choose (flag keys, namespaces,
FeatBit variation ids), so they are escaped for a PromQL double-quoted string and may only appear inside one:
a value can never change the shape of the query. A template is checked whole, at admission and before the
first measurement, so a typo surfaces as a clear message rather than as a guardrail that never matches.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "ARGS_PREFIX",
    "ArgumentsMissing",
    "QueryTemplateInvalid",
    "QueryVariables",
    "escape_string",
    "fill_args",
    "render_query",
    "validate_query",
]


@dataclass(frozen=True)
class QueryVariables:
    """What a guardrail query may refer to besides ``{{variant}}``: the rollout it belongs to."""

    flag: str
    """The FeatBit flag key."""
    namespace: str
    """The AIRollout's namespace."""
    stage: str
    """The name of the stage being judged."""
    window: str | None = None
    """A comparison's window (``540s``): the stage's time since its warm-up, written by the operator."""


# ``{{variant}}`` is the FeatBit variation id being measured: the candidate's, then the control's.
_KNOWN = tuple(sorted(["variant", *(f.name for f in dataclasses.fields(QueryVariables))]))
# ``{{window}}`` is a range (``[{{window}}]``), never a string: its value is digits the operator writes.
_RANGE = "window"

# Whitespace inside the braces is tolerated; anything between them is captured so that a near miss such as
# ``{{ .Variant }}`` (Go-template habit) is reported as written.
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class QueryTemplateInvalid(ValueError):
    """A guardrail query template cannot be rendered; ``problems`` lists every reason found."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


ARGS_PREFIX = "args."
"""``{{args.NAME}}``: an argument of a GuardrailTemplate, filled in from the AIRollout that uses it."""


class ArgumentsMissing(ValueError):
    """A template's query uses arguments the reference gives no value for; ``names`` lists them."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def escape_string(value: str) -> str:
    """Escape ``value`` for the inside of a PromQL double-quoted string."""
    # Backslash first, or the escapes added for the others would be doubled.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True)
class _Placeholder:
    start: int
    end: int
    name: str
    text: str
    quoted: bool
    """Inside a double-quoted string, the only place where escaping makes a value safe."""


def _scan(template: str) -> tuple[list[_Placeholder], list[str]]:
    """Walk the template once, tracking PromQL's string literals, and collect placeholders and problems."""
    placeholders: list[_Placeholder] = []
    problems: list[str] = []
    depth = 0  # label-matcher braces outside strings
    quote: str | None = None  # the delimiter of the string literal we are in, if any
    i = 0
    while i < len(template):
        if template.startswith("{{", i):
            match = _PLACEHOLDER.match(template, i)
            if match is None:
                problems.append(f"unclosed placeholder at position {i}: {template[i : i + 20]!r}")
                i += 2
                continue
            placeholders.append(_Placeholder(i, match.end(), match[1], match[0], quote == '"'))
            i = match.end()
            continue
        char = template[i]
        if quote is not None:
            if char == "\\" and quote != "`":  # raw (backtick) strings have no escapes
                if template.startswith("{{", i + 1):
                    # The backslash would pair with the value's first escape and let a quote in it through.
                    problems.append(f"a backslash right before the placeholder at position {i + 1}")
                    i += 1
                else:
                    i += 2
                continue
            if char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif template.startswith("}}", i):
            problems.append(f"'}}}}' without a matching '{{{{' at position {i}")
            i += 2
            continue
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                problems.append(f"'}}' without a matching '{{' at position {i}")
            else:
                depth -= 1
        i += 1
    if quote is not None:
        problems.append(f"unterminated string literal (opened with {quote})")
    if depth > 0:
        problems.append(f"{depth} unclosed '{{'")
    return placeholders, problems


def _problems(template: str) -> Iterator[str]:
    if not template.strip():
        yield "the query is empty"
        return
    placeholders, problems = _scan(template)
    yield from problems
    known = ", ".join(f"{{{{{name}}}}}" for name in _KNOWN)
    for p in placeholders:
        if p.name not in _KNOWN:
            yield f"unknown placeholder {p.text}; known placeholders: {known}"
        elif p.name == _RANGE:
            if p.quoted:
                yield f"placeholder {p.text} is a range and sits unquoted, e.g. increase(x[{{{{window}}}}])"
        elif not p.quoted:
            yield (
                f"placeholder {p.text} must sit inside a double-quoted string, "
                f'e.g. {p.name}="{{{{{p.name}}}}}", so that its value is escaped'
            )


@functools.lru_cache(maxsize=4096)
def _checked(template: str) -> tuple[tuple[_Placeholder, ...], tuple[str, ...]]:
    """The template's placeholders and problems, worked out once per distinct template text.

    A thousand rollouts render the same few templates twice each per analysis; scanning them anew each
    time was a measurable share of the operator's CPU.
    """
    placeholders, _ = _scan(template)
    return tuple(placeholders), tuple(_problems(template))


def validate_query(template: str) -> None:
    """Raise `QueryTemplateInvalid` listing every problem of ``template``; return if it can be rendered."""
    problems = _checked(template)[1]
    if problems:
        raise QueryTemplateInvalid(problems)


def render_query(template: str, variables: QueryVariables, variant: str) -> str:
    """Fill ``{{variant}}`` and every other ``{{name}}`` of ``template`` with its escaped value."""
    validate_query(template)
    values = {**dataclasses.asdict(variables), "variant": variant}
    placeholders = _checked(template)[0]
    parts: list[str] = []
    last = 0
    for p in placeholders:
        if p.name == _RANGE:
            if variables.window is None or not re.fullmatch(r"\d+s", variables.window):
                raise QueryTemplateInvalid((f"{p.text} is only for the queries of a comparison (compare:)",))
            value = variables.window
        else:
            value = escape_string(str(values[p.name]))
        parts += [template[last : p.start], value]
        last = p.end
    parts.append(template[last:])
    return "".join(parts)


def fill_args(template: str, args: Mapping[str, str]) -> str:
    """Fill each ``{{args.NAME}}`` of a template's query, leaving ``{{variant}}`` and the rest to `render_query`.

    Arguments obey the rule of every other value: escaped, and only inside a double-quoted string.
    """
    placeholders = [p for p in _scan(template)[0] if p.name.startswith(ARGS_PREFIX)]
    problems = [
        f'placeholder {p.text} must sit inside a double-quoted string, e.g. label="{p.text}", so that its value is '
        "escaped"
        for p in placeholders
        if not p.quoted
    ]
    for name, value in args.items():
        if "{{" in value or "}}" in value:
            problems.append(f"the value of argument {name!r} holds '{{{{' or '}}}}', which a query cannot tell apart")
    if problems:
        raise QueryTemplateInvalid(tuple(problems))
    missing = tuple(sorted({p.name[len(ARGS_PREFIX) :] for p in placeholders} - set(args)))
    if missing:
        raise ArgumentsMissing(missing)
    parts: list[str] = []
    last = 0
    for p in placeholders:
        parts += [template[last : p.start], escape_string(args[p.name[len(ARGS_PREFIX) :]])]
        last = p.end
    parts.append(template[last:])
    return "".join(parts)
