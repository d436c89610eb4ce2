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

__all__ = ["canonical_json", "input_digest", "job_key"]

_KEY_HEX_CHARS = 16  # 64 bits: a collision among a million jobs has odds of about 1e-8


def canonical_json(value: object) -> str:
    """Return the one JSON text of ``value``: sorted keys, compact, UTF-8 kept as is.

    Accept what JSON can say (mappings with string keys, lists, tuples, strings,
    finite numbers, booleans, None) and ``PurePath`` (as its POSIX text, so a job's
    input with local files still has a digest). Raise `TypeError` naming the place of
    any other type or a non-string key, and `ValueError` for NaN and infinity: they
    have no JSON spelling, and a key must not depend on how a library spells them.
    """
    return json.dumps(
        _plain(value, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def job_key(model: ModelRef | str, input: Mapping[str, object]) -> str:
    """Return the stable key of running ``model`` on ``input``: ``j`` + 16 hex digits.

    The key only uses characters allowed in a manifest ``id``, so it names files safely.
    """
    text = f"{model}\n{canonical_json(input)}"
    return "j" + hashlib.sha256(text.encode()).hexdigest()[:_KEY_HEX_CHARS]


def input_digest(input: Mapping[str, object]) -> str:
    """Return the sha256 hex digest of ``input``'s canonical JSON.

    Used to recognise a prediction by the input it echoes back.
    """
    return hashlib.sha256(canonical_json(input).encode()).hexdigest()


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
