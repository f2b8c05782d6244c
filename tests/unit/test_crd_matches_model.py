"""The CRD and the pydantic models describe the same resource: this keeps them from drifting apart.

The apiserver enforces the CRD and the planner trusts the models, so a field, default, enum value or limit that
exists in one and not the other is a bug waiting for a rollout. The comparison walks both schemas together:
the models' JSON Schema (by alias, so camelCase) against the CRD's openAPIV3Schema.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from airollout.model import (
    GROUP,
    HISTORY_LIMIT,
    KIND,
    PLURAL,
    TEMPLATE_PLURALS,
    VERSION,
    AIRolloutSpec,
    AIRolloutStatus,
    GuardrailTemplateSpec,
    Phase,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "airollout.dev_airollouts.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

Schema = dict[str, Any]

# Constraints the models declare that the CRD must declare with the same value. The CRD may add more (length
# and item limits bound the cost of its CEL rules), but never loosen or contradict the models.
_SHARED_CONSTRAINTS = ("minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems")


def _crd() -> Schema:
    with CRD_PATH.open() as f:
        crd: Schema = yaml.safe_load(f)
    return crd


def _crd_version() -> Schema:
    (version,) = _crd()["spec"]["versions"]
    return version  # type: ignore[no-any-return]


def _crd_schema(part: str) -> Schema:
    return _crd_version()["schema"]["openAPIV3Schema"]["properties"][part]  # type: ignore[no-any-return]


def _model_schema(model: type[AIRolloutSpec] | type[AIRolloutStatus]) -> Schema:
    return _resolve(model.model_json_schema(by_alias=True, mode="validation"))


def _resolve(schema: Schema, defs: Schema | None = None) -> Schema:
    """Inline $refs and turn `X | None` (anyOf X, null) into X, so the shape lines up with the CRD's."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        target = _resolve(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        assert len(options) == 1, f"a union the CRD cannot express: {schema}"
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**_resolve(options[0], defs), **rest}
    if "oneOf" in schema:
        return _merged([_resolve(o, defs) for o in schema["oneOf"]])
    resolved = dict(schema)
    if "properties" in schema:
        resolved["properties"] = {k: _resolve(v, defs) for k, v in schema["properties"].items()}
    if "items" in schema:
        resolved["items"] = _resolve(schema["items"], defs)
    resolved.pop("$defs", None)
    return resolved


def _merged(options: list[Schema]) -> Schema:
    """Objects told apart by their fields (an inline guardrail or a template reference) are one object in the
    CRD: every field of either, required only what both require; CEL rules there keep the two apart."""
    assert all(o.get("type") == "object" for o in options), f"a union the CRD cannot express: {options}"
    properties: Schema = {}
    for option in options:
        for name, sub in option.get("properties", {}).items():
            assert properties.setdefault(name, sub) == sub, f"{name} differs between the members of a union"
    required = set.intersection(*(set(o.get("required", [])) for o in options))
    return {"type": "object", "properties": properties, "required": sorted(required)}


def _with_defaults(value: Any, schema: Schema) -> Any:
    """Apply the CRD's defaults to a value the way the apiserver does, field by field, recursively."""
    if schema.get("type") == "object" and isinstance(value, dict):
        out = dict(value)
        for name, sub in schema.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = _with_defaults(out[name], sub)
        return out
    if schema.get("type") == "array" and isinstance(value, list):
        return [_with_defaults(item, schema["items"]) for item in value]
    return value


def _constraint(crd: Schema, key: str) -> Any:
    """The CRD's value for a constraint; a list's minimum size may be a CEL rule, for a better message."""
    if key == "minItems" and key not in crd:
        rules = {v["rule"] for v in crd.get("x-kubernetes-validations", [])}
        return next((n + 1 for n in range(10) if f"size(self) > {n}" in rules), None)
    return crd.get(key)


def _walk(path: str, crd: Schema, model: Schema, *, spec: bool) -> list[str]:
    """Every disagreement between a CRD schema node and a model schema node, as readable lines."""
    problems: list[str] = []
    model_type = model.get("type", "string" if "enum" in model else None)
    if crd.get("type") != model_type:
        problems.append(f"{path}: the CRD says type {crd.get('type')}, the model {model_type}")
    if model.get("format") == "date-time" and crd.get("format") != "date-time":
        problems.append(f"{path}: a datetime in the model, but not format: date-time in the CRD")
    if "enum" in model and crd.get("enum") != model["enum"]:
        problems.append(f"{path}: enum {crd.get('enum')} in the CRD, {model['enum']} in the model")
    problems += [
        f"{path}: {key} is {_constraint(crd, key)!r} in the CRD, {model[key]!r} in the model"
        for key in _SHARED_CONSTRAINTS
        if key in model and _constraint(crd, key) != model[key]
    ]
    problems += _compare_defaults(path, crd, model, spec=spec)

    if model_type == "object":
        crd_props, model_props = crd.get("properties", {}), model.get("properties", {})
        problems += [f"{path}.{n}: in the CRD, not in the model" for n in sorted(crd_props.keys() - model_props)]
        problems += [f"{path}.{n}: in the model, not in the CRD" for n in sorted(model_props.keys() - crd_props)]
        if sorted(crd.get("required", [])) != sorted(model.get("required", [])):
            problems.append(
                f"{path}: required {sorted(crd.get('required', []))} in the CRD, "
                f"{sorted(model.get('required', []))} in the model"
            )
        for name in sorted(crd_props.keys() & model_props):
            problems += _walk(f"{path}.{name}", crd_props[name], model_props[name], spec=spec)
    elif model_type == "array":
        problems += _walk(f"{path}[]", crd.get("items", {}), model["items"], spec=spec)
    return problems


def _without_none(value: Any) -> Any:
    """A model default as the apiserver would store it: an optional field left unset is absent, not null."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def _compare_defaults(path: str, crd: Schema, model: Schema, *, spec: bool) -> list[str]:
    """A CRD default must be the model's; in spec, every meaningful model default must be in the CRD too.

    Status has no defaults in the CRD: the operator always writes it whole from the model.
    """
    model_default = _without_none(model.get("default"))
    if "default" in crd:
        effective = _with_defaults(crd["default"], crd)
        if effective != model_default:
            return [f"{path}: default {effective!r} in the CRD, {model_default!r} in the model"]
    elif spec and model_default not in (None, [], ()):
        return [f"{path}: the model defaults to {model_default!r}, the CRD has no default"]
    return []


def test_the_crd_serves_the_models_group_version_and_kind() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == KIND
    assert crd["spec"]["names"]["plural"] == PLURAL
    assert crd["spec"]["names"]["shortNames"] == ["air"]
    version = _crd_version()
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_every_spec_field_default_enum_and_limit_is_the_same_in_crd_and_model() -> None:
    assert _walk("spec", _crd_schema("spec"), _model_schema(AIRolloutSpec), spec=True) == []


def test_every_status_field_is_declared_so_the_apiserver_never_prunes_it() -> None:
    assert _walk("status", _crd_schema("status"), _model_schema(AIRolloutStatus), spec=False) == []


def test_the_crd_keeps_no_more_history_than_the_model() -> None:
    assert _crd_schema("status")["properties"]["history"]["maxItems"] == HISTORY_LIMIT


def test_the_phase_column_and_enum_list_every_phase() -> None:
    assert _crd_schema("status")["properties"]["phase"]["enum"] == [p.value for p in Phase]
    columns = {c["name"]: c["jsonPath"] for c in _crd_version()["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Stage": ".status.stageName",
        "Percentage": ".status.percentage",
        "Guardrails": ".status.guardrailSummary",
        "Age": ".metadata.creationTimestamp",
    }


def _undocumented(path: str, schema: Schema) -> list[str]:
    missing = [] if "description" in schema or path.endswith("[]") else [path]
    for name, sub in schema.get("properties", {}).items():
        missing += _undocumented(f"{path}.{name}", sub)
    if "items" in schema:
        missing += _undocumented(f"{path}[]", schema["items"])
    return missing


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    assert _undocumented("spec", _crd_schema("spec")) + _undocumented("status", _crd_schema("status")) == []


def test_the_comparison_notices_a_field_missing_from_the_crd() -> None:
    crd = copy.deepcopy(_crd_schema("spec"))
    del crd["properties"]["flag"]["properties"]["dispatchKey"]
    crd["properties"]["onBreach"]["default"] = "pause"
    problems = _walk("spec", crd, _model_schema(AIRolloutSpec), spec=True)
    assert problems == [
        "spec.flag.dispatchKey: in the model, not in the CRD",
        "spec.onBreach: default 'pause' in the CRD, 'rollback' in the model",
    ]


def _airollouts() -> list[Any]:
    docs = [doc for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [pytest.param(doc, id=doc["metadata"]["name"]) for doc in docs if doc["kind"] == KIND]


@pytest.mark.parametrize("manifest", _airollouts())
def test_the_examples_are_valid_airollouts(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == f"{GROUP}/{VERSION}"
    spec = AIRolloutSpec.model_validate(manifest["spec"])
    # What the apiserver stores after defaulting is what the model reads, field for field.
    stored = _with_defaults(manifest["spec"], _crd_schema("spec"))
    assert AIRolloutSpec.model_validate(stored) == spec
    assert _pruned(spec.model_dump(mode="json", by_alias=True)) == stored


def _pruned(value: Any) -> Any:
    """A model dump without the unset fields (None) and empty lists, which the CRD leaves out."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def test_there_is_an_example() -> None:
    assert _airollouts(), f"no {KIND} in {ROOT / 'examples'}"


_TEMPLATE_CRDS = {kind: ROOT / "crds" / f"airollout.dev_{plural}.yaml" for kind, plural in TEMPLATE_PLURALS.items()}


@pytest.mark.parametrize("kind", sorted(_TEMPLATE_CRDS))
def test_each_template_crd_is_the_template_model_with_a_description_everywhere(kind: str) -> None:
    with _TEMPLATE_CRDS[kind].open() as f:
        crd: Schema = yaml.safe_load(f)
    assert crd["metadata"]["name"] == f"{TEMPLATE_PLURALS[kind]}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["scope"] == ("Cluster" if kind.startswith("Cluster") else "Namespaced")
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    model = _resolve(GuardrailTemplateSpec.model_json_schema(by_alias=True, mode="validation"))
    assert _walk("spec", spec, model, spec=True) == []
    assert _undocumented("spec", spec) == []
