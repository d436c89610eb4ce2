"""Check a job's input against a model's OpenAPI ``Input`` schema, before spending anything.

Covers what Cog schemas use: required fields, types, enums (``allOf``/``$ref`` to an enum
component included), numeric ranges and unknown fields. Pure: no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.model import Job

__all__ = ["check_input", "check_job_input", "input_schema"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str, PurePath),  # a local @file becomes an uploaded URL string
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}


def input_schema(openapi: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``components.schemas.Input`` of a version's OpenAPI document (or empty)."""
    schemas = openapi.get("components", {}).get("schemas", {})
    found = schemas.get("Input", {})
    return found if isinstance(found, Mapping) else {}


def check_input(
    schema: Mapping[str, Any],
    data: Mapping[str, Any],
    components: Mapping[str, Any] | None = None,
) -> list[str]:
    """Return one message per problem of ``data`` against ``schema`` (empty when valid)."""
    return [f"input.{name}: {problem}" for name, problem in _problems(schema, data, components)]


def check_job_input(
    schema: Mapping[str, Any], job: Job, components: Mapping[str, Any] | None = None
) -> list[str]:
    """Return ``file:line: input.x: problem`` per problem of ``job``'s input.

    A key the job took from the manifest's ``defaults`` is located at the defaults line
    that gave it, so the user edits the right place.
    """
    located: list[str] = []
    for name, problem in _problems(schema, job.input, components):
        where = job.where_input(name)
        origin = " (from the defaults)" if name in job.default_lines else ""
        located.append(f"{where}: input.{name}: {problem}{origin}")
    return located


def _problems(
    schema: Mapping[str, Any], data: Mapping[str, Any], components: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    props: Mapping[str, Any] = schema.get("properties", {})
    problems = [(name, "required") for name in schema.get("required", ()) if name not in data]
    if props:
        known = ", ".join(sorted(props))
        problems.extend(
            (name, f"unknown field (known: {known})") for name in data if name not in props
        )
    for name, value in data.items():
        prop = props.get(name)
        if isinstance(prop, Mapping):
            problem = _check_value(value, _resolve(prop, components or {}))
            if problem:
                problems.append((name, problem))
    return problems


def _resolve(prop: Mapping[str, Any], components: Mapping[str, Any]) -> Mapping[str, Any]:
    """Inline ``allOf: [{$ref: ...}]``, the way Cog writes enums."""
    merged = dict(prop)
    for part in prop.get("allOf", ()):
        ref = part.get("$ref", "") if isinstance(part, Mapping) else ""
        target = components.get(ref.rsplit("/", 1)[-1], {}) if ref else part
        if isinstance(target, Mapping):
            merged.update(target)
    return merged


def _check_value(value: Any, prop: Mapping[str, Any]) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, str) and kind in _TYPES:
        # bool is an int in Python but not in JSON Schema.
        wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
        if wrong_bool or not isinstance(value, _TYPES[kind]):
            return f"expected {kind}, got {type(value).__name__} {value!r:.60}"
    enum = prop.get("enum")
    if enum is not None and value not in enum:
        return f"{value!r} is not one of {', '.join(map(repr, enum))}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = prop.get("minimum"), prop.get("maximum")
        if low is not None and value < low:
            return f"{value} is below the minimum {low}"
        if high is not None and value > high:
            return f"{value} is above the maximum {high}"
    return None
