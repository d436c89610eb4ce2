"""Decode one JSONL line, refusing what JSON accepts but a job cannot be.

Private to `jobs._readers`: repeated keys (json keeps the last), nesting deeper than
`MAX_DEPTH`, lone surrogate escapes (text that cannot be encoded) and NaN/Infinity.
"""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["MAX_DEPTH", "DuplicateKeyError", "decode", "value_problem"]

MAX_DEPTH = 100  # nesting levels of one job, in JSON and YAML alike


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON; use a finite number or a string")


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key: json would silently keep the last one."""


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKeyError(f"duplicate key {name!r} in one object")
    return value


def value_problem(text: str, value: object) -> str | None:
    """Return what is wrong with a decoded line that JSON itself accepts, or None."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            return f"a lone surrogate \\u{ord(char):04x} is not text: escape a whole pair"
    return None


def _depth(value: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, dict):
            current = list(current.values())
        if isinstance(current, list):
            deepest = max(deepest, level)
            stack.extend((item, level + 1) for item in current)
    return deepest


# One decoder for all lines: json.loads builds a new one per call when given a hook.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_object)
_SCAN: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def decode(text: str) -> object:
    """Return the JSON value of one line; raise what `json.JSONDecoder.decode` raises."""
    # The C scanner alone: decode()'s Python wrapper costs as much again on every line.
    # Anything unusual (leading blanks, trailing data, an error) takes decode() itself,
    # for its exact message.
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return _DECODER.decode(text)
    if end != len(text) and not text[end:].isspace():
        return _DECODER.decode(text)
    return value
