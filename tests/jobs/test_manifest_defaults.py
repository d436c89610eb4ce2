"""Defaults say what users mean: per-model defaults, `key: null`, errors at their line."""

from __future__ import annotations

import json

import pytest

from jobs import read_manifest
from jobs.schema import check_job_input
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"
LLAMA = "meta/meta-llama-3-70b-instruct"
VERSION = "39ed52f2" * 8

MANIFEST = f"""
defaults:
  model: {FLUX}
  input:
    num_outputs: 1
    seed: 7
  models:
    {LLAMA}:
      input:
        num_outputs: null
        max_tokens: 512
    {FLUX}:
      input: {{aspect_ratio: "1:1"}}
    {FLUX}:{VERSION}:
      input: {{aspect_ratio: "16:9", go_fast: true}}
    deployments/acme/flux:
      input: {{seed: null}}
jobs:
  - input: {{prompt: a cat}}
  - model: {LLAMA}
    input: {{prompt: hi}}
  - model: {FLUX}:{VERSION}
    input: {{prompt: pinned, seed: null}}
  - model: deployments/acme/flux
    input: {{prompt: d}}
  - model: {LLAMA}
    input: {{prompt: again, max_tokens: null, num_outputs: 2}}
"""


def test_defaults_apply_per_model_and_null_removes_a_key(write: Write) -> None:
    cat, llama, pinned, deployment, again = read_manifest(write("m.yaml", MANIFEST))
    assert cat.input == {"num_outputs": 1, "seed": 7, "aspect_ratio": "1:1", "prompt": "a cat"}
    assert llama.input == {"seed": 7, "max_tokens": 512, "prompt": "hi"}
    assert pinned.input == {
        "num_outputs": 1,
        "aspect_ratio": "16:9",  # the pinned version's entry wins over the model's
        "go_fast": True,
        "prompt": "pinned",
    }
    assert deployment.input == {"num_outputs": 1, "prompt": "d"}
    assert again.input == {"seed": 7, "num_outputs": 2, "prompt": "again"}


def test_each_key_knows_the_defaults_line_it_came_from(write: Write) -> None:
    cat, llama, _, _, again = read_manifest(write("m.yaml", MANIFEST))
    assert dict(cat.default_lines) == {"num_outputs": 4, "seed": 5, "aspect_ratio": 12}
    assert dict(llama.default_lines) == {"seed": 5, "max_tokens": 10}
    assert dict(again.default_lines) == {"seed": 5}  # its own keys are its own
    assert cat.where_input("seed") == f"{cat.source}:5"
    assert cat.where_input("prompt") == cat.where


def test_a_schema_problem_with_a_default_points_at_the_defaults_line(write: Write) -> None:
    cat, llama, *_ = read_manifest(write("m.yaml", MANIFEST))
    schema = {"properties": {"prompt": {"type": "string"}, "max_tokens": {"type": "integer"}}}
    source = cat.source
    assert check_job_input(schema, llama, {}) == [
        f"{source}:5: input.seed: unknown field (known: max_tokens, prompt) (from the defaults)"
    ]
    assert check_job_input({"required": ["steps"]}, cat, {}) == [
        f"{cat.where}: input.steps: required"
    ]


def test_null_without_defaults_means_not_sent(write: Write) -> None:
    path = write("m.jsonl", json.dumps({"model": FLUX, "input": {"a": None, "b": 1}}) + "\n")
    (job,) = read_manifest(path)
    assert job.input == {"b": 1}
    same = write("n.jsonl", json.dumps({"model": FLUX, "input": {"b": 1}}) + "\n")
    assert next(iter(read_manifest(same))).key == job.key


def test_nested_nulls_are_sent(write: Write) -> None:
    path = write("m.jsonl", json.dumps({"model": FLUX, "input": {"a": {"b": None}}}) + "\n")
    assert next(iter(read_manifest(path))).input == {"a": {"b": None}}


def test_a_build_error_in_a_default_points_at_the_defaults_line(write: Write) -> None:
    path = write(
        "sub/m.yaml",
        f"defaults:\n  models:\n    {FLUX}:\n      input:\n        image: '@missing.png'\n"
        f"jobs:\n  - model: {FLUX}\n",
    )
    error = manifest_error(path)
    assert_located(error, path, 5, f"defaults.models.{FLUX}.input.image", "cannot read")


@pytest.mark.parametrize(
    ("block", "line", "field", "fragment"),
    [
        ("  models: [a/b]\n", 2, "defaults.models", "must be a mapping of model to defaults"),
        ("  models:\n    Foo/Bar: {input: {}}\n", 3, "defaults.models.Foo/Bar", "lowercase"),
        ("  models:\n    a/b: 3\n", 3, "defaults.models.a/b", "must be a mapping like"),
        (
            "  models:\n    a/b:\n      inputs: {}\n",
            4,
            "defaults.models.a/b.inputs",
            "did you mean 'input'?",
        ),
        ("  models:\n    a/b:\n      input: [1]\n", 4, "defaults.models.a/b.input", "mapping"),
        ("  modles: {}\n", 2, "defaults.modles", "did you mean 'models'?"),
    ],
)
def test_bad_model_defaults_are_located(
    write: Write, block: str, line: int, field: str, fragment: str
) -> None:
    path = write("m.yaml", f"defaults:\n{block}jobs:\n  - model: a/b\n")
    assert_located(manifest_error(path), path, line, field, fragment)


def test_a_job_without_defaults_for_its_model_gets_the_general_ones(write: Write) -> None:
    path = write(
        "m.yaml",
        "defaults:\n  input: {x: 1}\n  models:\n    a/b: {input: {y: 2}}\n"
        "jobs:\n  - model: c/d\n  - model: a/b\n",
    )
    other, own = read_manifest(path)
    assert (other.input, own.input) == ({"x": 1}, {"x": 1, "y": 2})
