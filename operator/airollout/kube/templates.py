"""Guardrail templates: the guardrails a GuardrailTemplate or ClusterGuardrailTemplate holds, written into the
AIRollouts that reference them.

A team writes its error-rate and latency guardrails once, with ``{{args.service}}`` where rollouts differ, and
each AIRollout says ``guardrails: [{templateRef: {name: ai-errors, kind: ClusterGuardrailTemplate},
args: {service: summarizer}}]``. Before a rollout is worked on, each reference is replaced by the template's
guardrails with the arguments filled in, so everything downstream (the planner, the judge, the Prometheus
adapter) sees inline guardrails only.

Templates are read through the operator's own apiserver client and kept for a while (a thousand rollouts
sharing one template cost one read per interval, not one per analysis). A template that does not exist or
cannot be used (an argument missing, a query or threshold it gets wrong) becomes a `Problem` naming the
template, the argument and the fix: the planner then holds the rollout where it is, with a condition saying
why, and the engine looks again with the retry backoff.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from airollout.guardrails.templating import (
    ArgumentsMissing,
    QueryTemplateInvalid,
    fill_args,
    validate_query,
)
from airollout.kube.apiserver import ApiServer, ApiServerError
from airollout.model import TEMPLATE_PLURALS, GuardrailTemplateSpec, TemplateKind
from airollout.planner import Problem
from airollout.reasons import Reason

__all__ = ["Expansion", "GuardrailTemplates", "TemplateKey", "expand"]


@dataclass(frozen=True, order=True)
class TemplateKey:
    kind: str
    namespace: str
    """Empty for a ClusterGuardrailTemplate."""
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Expansion:
    """A spec with its template references replaced by the guardrails they stand for."""

    spec: Mapping[str, Any]
    problem: Problem | None = None
    """The first reference that could not be expanded (its guardrails are left out), with the fix."""
    versions: tuple[tuple[TemplateKey, str], ...] = ()
    """The templates used and their resourceVersions: a new version means a new spec to parse."""


def references(spec: Mapping[str, Any], namespace: str) -> list[TemplateKey]:
    """The templates ``spec`` references, in order."""
    keys = []
    for entry in _entries(spec):
        ref = entry.get("templateRef")
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            kind = str(ref.get("kind") or TemplateKind.GUARDRAIL_TEMPLATE)
            scoped = "" if kind == TemplateKind.CLUSTER_GUARDRAIL_TEMPLATE else namespace
            keys.append(TemplateKey(kind, scoped, ref["name"]))
    return keys


def expand(
    spec: Mapping[str, Any], namespace: str, templates: Mapping[TemplateKey, Mapping[str, Any] | None]
) -> Expansion:
    """Replace each reference in ``spec.guardrails`` by its template's guardrails (pure: templates are given)."""
    entries = _entries(spec)
    if not any("templateRef" in entry for entry in entries):
        return Expansion(spec)
    keys = iter(references(spec, namespace))
    guardrails: list[Mapping[str, Any]] = []
    problems: list[Problem] = []
    versions: list[tuple[TemplateKey, str]] = []
    for index, entry in enumerate(entries):
        if "templateRef" not in entry:
            guardrails.append(entry)
            continue
        key = next(keys)
        template = templates.get(key)
        if template is None:
            problems.append(_not_found(key, index, namespace))
            continue
        versions.append((key, str((template.get("metadata") or {}).get("resourceVersion") or "")))
        try:
            guardrails.extend(_guardrails_of(key, template, entry.get("args") or {}, index))
        except _Unusable as error:
            problems.append(error.problem)
    names = [str(g.get("name")) for g in guardrails]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated and not problems:
        problems.append(
            Problem(
                Reason.GUARDRAIL_TEMPLATE_INVALID,
                f"spec.guardrails: the guardrail name {repeated[0]!r} comes twice (from a template and another "
                "entry, or two templates): rename the inline guardrail, or reference only one template holding it",
            )
        )
        guardrails = [g for g in guardrails if g.get("name") not in repeated]
    expanded = {**spec, "guardrails": guardrails}
    return Expansion(expanded, problems[0] if problems else None, tuple(versions))


class GuardrailTemplates:
    """Templates read through the apiserver client, each kept for ``ttl`` seconds once found."""

    def __init__(self, api: ApiServer, *, ttl: float) -> None:
        self._api = api
        self._ttl = ttl
        self._cache: dict[TemplateKey, tuple[float, Mapping[str, Any]]] = {}

    async def expand(self, namespace: str, spec: Mapping[str, Any]) -> Expansion:
        keys = references(spec, namespace)
        if not keys:
            return Expansion(spec)
        found: dict[TemplateKey, Mapping[str, Any] | None] = {}
        unreadable = None
        for key in dict.fromkeys(keys):
            try:
                found[key] = await self._read(key)
            except ApiServerError as error:
                # Its guardrails are left out like a missing template's; the others are still judged.
                found[key] = None
                unreadable = unreadable or _unreadable(key, error)
        expansion = expand(spec, namespace, found)
        return replace(expansion, problem=unreadable) if unreadable is not None else expansion

    async def _read(self, key: TemplateKey) -> Mapping[str, Any] | None:
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            template = await self._api.read_template(TEMPLATE_PLURALS[key.kind], key.name, key.namespace or None)
        except ApiServerError:
            if cached is not None:
                return cached[1]  # an apiserver hiccup: the last version read still holds
            raise
        if template is None:
            # Not kept: a template created to fix this is seen at the rollout's next retry.
            self._cache.pop(key, None)
            return None
        self._cache[key] = (time.monotonic(), template)
        return template


class _Unusable(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _entries(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = spec.get("guardrails")
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return []
    return [entry for entry in raw if isinstance(entry, Mapping)]


def _guardrails_of(
    key: TemplateKey, template: Mapping[str, Any], args: Mapping[str, Any], index: int
) -> list[dict[str, Any]]:
    where = f"spec.guardrails[{index}]"
    try:
        parsed = GuardrailTemplateSpec.model_validate(template.get("spec") or {})
    except ValidationError as error:
        fields = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise _Unusable(
            Problem(
                Reason.GUARDRAIL_TEMPLATE_INVALID,
                f"{key} ({where}.templateRef) cannot be used: {fields}; fix the template",
            )
        ) from None
    declared = {arg.name: arg.value for arg in parsed.args}
    unknown = sorted(set(args) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise _Unusable(
            Problem(
                Reason.GUARDRAIL_TEMPLATE_INVALID,
                f"{where}.args.{unknown[0]}: {key} declares no argument {unknown[0]!r} (it declares: {known}); "
                "remove it, or declare it in the template's spec.args",
            )
        )
    values = {name: value for name, value in declared.items() if value is not None}
    values.update({name: str(value) for name, value in args.items()})
    guardrails = []
    for guardrail in parsed.guardrails:
        try:
            filled = guardrail.with_queries(lambda query: fill_args(query, values))
            for query in filled.queries.values():
                validate_query(query)
        except ArgumentsMissing as error:
            needed = error.names[0]
            raise _Unusable(
                Problem(
                    Reason.GUARDRAIL_TEMPLATE_ARGUMENT_MISSING,
                    f"{where}.args.{needed} is missing: {key} needs argument {needed!r} for its guardrail "
                    f"{guardrail.name!r}; add it, e.g. args: {{{needed}: ...}}, or give it a value in the "
                    "template's spec.args",
                )
            ) from None
        except QueryTemplateInvalid as error:
            raise _Unusable(
                Problem(
                    Reason.GUARDRAIL_TEMPLATE_INVALID,
                    f"{key} ({where}.templateRef): the query of guardrail {guardrail.name!r} cannot be used: {error}; "
                    "fix the template",
                )
            ) from None
        guardrails.append(filled.model_dump(mode="json", by_alias=True, exclude_none=True))
    return guardrails


def _not_found(key: TemplateKey, index: int, namespace: str) -> Problem:
    if key.kind == TemplateKind.CLUSTER_GUARDRAIL_TEMPLATE:
        where = "in the cluster"
    else:
        where = f"in namespace {namespace} (a GuardrailTemplate must be in the AIRollout's namespace)"
    return Problem(
        Reason.GUARDRAIL_TEMPLATE_NOT_FOUND,
        f"{key.kind} {key.name!r} named by spec.guardrails[{index}].templateRef does not exist {where}: create it "
        f"(`kubectl get {TEMPLATE_PLURALS[key.kind]} -A` lists those there are) or fix the name; the rollout holds "
        "until it resolves",
    )


def _unreadable(key: TemplateKey, error: ApiServerError) -> Problem:
    if error.status == 403:
        message = (
            f"the operator may not read {key}: grant its ServiceAccount get on "
            f"{TEMPLATE_PLURALS[key.kind]}.airollout.dev (the Helm chart does)"
        )
    else:
        message = f"reading {key} failed, will retry: {error}"
    return Problem(Reason.GUARDRAIL_TEMPLATE_NOT_FOUND, message)
