"""Job identity: canonical JSON, stable keys and input digests."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import ModelRef, ModelRefError, canonical_json, input_digest, job_key

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
inputs = st.dictionaries(st.text(max_size=10), values, max_size=5)
# Recursive values are slow to draw; fewer examples keep the suite fast and still
# cover nesting, unicode and number edge cases.
few = settings(max_examples=40, deadline=None)


def shuffled(value: Any, rng: random.Random) -> Any:
    """Return ``value`` with every mapping's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@few
@given(inputs, st.randoms(use_true_random=False))
def test_key_ignores_key_order(data: dict[str, Any], rng: random.Random) -> None:
    assert job_key(FLUX, shuffled(data, rng)) == job_key(FLUX, data)
    assert input_digest(shuffled(data, rng)) == input_digest(data)


@few
@given(inputs)
def test_canonical_json_round_trips(data: dict[str, Any]) -> None:
    text = canonical_json(data)
    assert json.loads(text) == data
    assert canonical_json(json.loads(text)) == text


@few
@given(inputs, inputs)
def test_different_inputs_have_different_keys(a: dict[str, Any], b: dict[str, Any]) -> None:
    if canonical_json(a) != canonical_json(b):
        assert job_key(FLUX, a) != job_key(FLUX, b)
        assert input_digest(a) != input_digest(b)


@few
@given(inputs)
def test_key_is_a_safe_id(data: dict[str, Any]) -> None:
    key = job_key(FLUX, data)
    assert len(key) == 17
    assert key[0] == "j"
    assert all(c in "0123456789abcdef" for c in key[1:])


def test_model_is_part_of_the_key() -> None:
    data = {"prompt": "x"}
    pinned = ModelRef.parse(f"black-forest-labs/flux-schnell:{'39ed52f2' * 8}")
    deployment = ModelRef.parse("deployments/black-forest-labs/flux-schnell")
    keys = {job_key(FLUX, data), job_key(pinned, data), job_key(deployment, data)}
    assert len(keys) == 3
    assert job_key("black-forest-labs/flux-schnell", data) == job_key(FLUX, data)


def test_key_is_pinned() -> None:
    # A key must never change between releases: journals on disk refer to it.
    assert (
        job_key(FLUX, {"prompt": "a cat"})
        == "j"
        + __import__("hashlib")
        .sha256(b'black-forest-labs/flux-schnell\n{"prompt":"a cat"}')
        .hexdigest()[:16]
    )


def test_canonical_json_is_compact_sorted_and_keeps_unicode() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é", "c": None}) == '{"a":"é","b":[1,2.5],"c":null}'
    assert canonical_json((1, True)) == "[1,true]"
    assert canonical_json({"p": PurePosixPath("/in/cat.png")}) == '{"p":"/in/cat.png"}'
    assert canonical_json({"p": Path("/x")}) == '{"p":"/x"}'


def test_bools_and_ints_differ() -> None:
    assert job_key(FLUX, {"x": 1}) != job_key(FLUX, {"x": True})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_nan_and_infinity(bad: float) -> None:
    with pytest.raises(ValueError, match=r"at \$\.a\[1\] has no JSON form"):
        canonical_json({"a": [0, bad]})


def test_canonical_json_rejects_non_string_keys_and_foreign_types() -> None:
    with pytest.raises(TypeError, match="key 1 at"):
        canonical_json({"a": {1: "x"}})
    with pytest.raises(TypeError, match=r"set value at \$\.s has no JSON form"):
        canonical_json({"s": {1, 2}})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Black-Forest-Labs/flux-schnell", "did you mean 'black-forest-labs/flux-schnell'?"),
        ("meta/Llama", "did you mean 'meta/llama'?"),
        ("deployments/Acme/x", "did you mean 'deployments/acme/x'?"),
        ("a/b\n", ""),  # surrounding blanks are stripped: this one parses
        ("a/b\nc", "malformed model reference"),
        ("a/b:abc", "64 lowercase hex"),
        (f"a/b:{'A' * 64}", "64 lowercase hex"),
        (f"a/b:{'0' * 63}", "64 lowercase hex"),
        (f"a/b:{'0' * 64}\n0", "malformed"),
        ("-a/b", "malformed model reference"),
        ("a/.b", "malformed model reference"),
        ("a b/c", "malformed model reference"),
        ("deployments/a/b:" + "0" * 64, "malformed model reference"),
    ],
)
def test_model_refs_have_replicates_form(text: str, fragment: str) -> None:
    if not fragment:
        assert ModelRef.parse(text).slug == "a/b"
        return
    with pytest.raises(ModelRefError) as info:
        ModelRef.parse(text)
    assert fragment in str(info.value)
