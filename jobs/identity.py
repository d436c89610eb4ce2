"""Compute stable identities: canonical JSON, job keys and input digests.

A job without an explicit ``id`` is known by ``job_key(model, input)``: editing a
manifest changes the key of exactly the jobs whose model or input changed, so a re-run
resumes everything else.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.model import ModelRef

__all__ = ["canonical_json", "canonical_key", "input_digest", "job_key"]

_KEY_HEX_CHARS = 16  # 64 bits: a collision among a million jobs has odds of about 1e-8


def canonical_json(value: object) -> str:
    """Return the one JSON text of ``value``: sorted keys, compact, UTF-8 kept as is.

    Accept what JSON can say (mappings with string keys, lists, tuples, strings,
    finite numbers, booleans, None) and ``PurePath`` (as its POSIX text, so a job's
    input with local files still has a digest). Raise `TypeError` naming the place of
    any other type or a non-string key, and `ValueError` for NaN and infinity: they
    have no JSON spelling, and a key must not depend on how a library spells them.
    """
    # json.dumps would turn a key 1 into "1" and make {1: x} and {"1": x} collide.
    _check_keys(value, "$")
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):
        # The fast path failed somewhere; walk the value to say where.
        _plain(value, "$")
        raise


def canonical_key(model: ModelRef | str, canonical_input: str) -> str:
    """Return `job_key` from an input already rendered by `canonical_json`."""
    text = f"{model}\n{canonical_input}"
    return "j" + hashlib.sha256(text.encode()).hexdigest()[:_KEY_HEX_CHARS]


def job_key(model: ModelRef | str, input: Mapping[str, object]) -> str:
    """Return the stable key of running ``model`` on ``input``: ``j`` + 16 hex digits.

    The key only uses characters allowed in a manifest ``id``, so it names files safely.
    """
    return canonical_key(model, canonical_json(input))


def input_digest(input: Mapping[str, object]) -> str:
    """Return the sha256 hex digest of ``input``'s canonical JSON.

    Used to recognise a prediction by the input it echoes back.
    """
    return hashlib.sha256(canonical_json(input).encode()).hexdigest()


def _check_keys(value: object, where: str) -> None:
    # Exact type checks first: this runs once per manifest line.
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"key {key!r} at {where} is not a string")
            if type(item) is not str:
                _check_keys(item, f"{where}.{key}")
    elif type(value) is list or isinstance(value, tuple):
        for i, item in enumerate(value):
            if type(item) is not str:
                _check_keys(item, f"{where}[{i}]")


def _encode_other(value: object) -> object:
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


# One encoder for all calls: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_encode_other,
)


def _plain(value: object, where: str) -> object:
    """Return ``value`` as plain JSON types, or raise saying where it fails."""
    # bool before int: bool is an int subclass, but JSON keeps them apart.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} at {where} has no JSON form; use a finite number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # json.dumps would turn 1 into "1" and make {1: x} and {"1": x} collide.
                raise TypeError(f"key {key!r} at {where} is not a string")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, PurePath):
        return value.as_posix()
    raise TypeError(f"{type(value).__name__} value at {where} has no JSON form")
