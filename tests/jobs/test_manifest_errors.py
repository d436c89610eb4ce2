"""Every manifest error names the file, the line and (where there is one) the field."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from jobs import ManifestError, check_manifest, read_manifest
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"

# (name, YAML text, line, field, fragment of the message)
YAML_CASES = [
    ("bad-yaml", "jobs:\n  - model: [a\n", 3, None, "invalid YAML"),
    ("top-not-mapping", "- model: a/b\n", 1, None, "top level must be a mapping"),
    ("jobs-not-list", "jobs: {model: a/b}\n", 1, "jobs", "must be a list of jobs"),
    ("jobs-null", "jobs:\n", 1, "jobs", "must be a list of jobs, not null"),
    ("unknown-top", "job:\n  - model: a/b\n", 1, None, "did you mean 'jobs'?"),
    (
        "unknown-default",
        "defaults:\n  modle: a/b\njobs:\n  - model: a/b\n",
        2,
        "defaults.modle",
        "did you mean 'model'?",
    ),
    (
        "unknown-job-field",
        f"jobs:\n  - model: {FLUX}\n    inputs: {{prompt: x}}\n",
        3,
        "jobs[0].inputs",
        "unknown field (did you mean 'input'?)",
    ),
    ("missing-model", "jobs:\n  - input: {prompt: x}\n", 2, "jobs[0]", "missing field 'model'"),
    (
        "malformed-model",
        "jobs:\n  - input: {}\n    model: foo\n",
        3,
        "jobs[0].model",
        "malformed model reference 'foo': expected",
    ),
    (
        "bad-default-model",
        "defaults:\n  model: a/b/c\njobs:\n  - input: {}\n",
        2,
        "defaults.model",
        "malformed model reference",
    ),
    ("model-not-string", "jobs:\n  - model: 3\n", 2, "jobs[0].model", "must be a string"),
    (
        "input-not-mapping",
        f"jobs:\n  - model: {FLUX}\n    input: [1, 2]\n",
        3,
        "jobs[0].input",
        "must be a mapping, not a list",
    ),
    (
        "input-nan",
        f"jobs:\n  - model: {FLUX}\n    input: {{x: .nan}}\n",
        3,
        "jobs[0].input",
        "has no JSON form",
    ),
    (
        "input-date",
        f"jobs:\n  - model: {FLUX}\n    input: {{when: 2024-01-01}}\n",
        3,
        "jobs[0].input",
        "date value at $.when has no JSON form",
    ),
    ("job-not-mapping", "jobs:\n  - just a string\n", 2, "jobs[0]", "must be a mapping"),
    (
        "dup-field",
        f"jobs:\n  - model: {FLUX}\n    model: a/b\n",
        3,
        "jobs[0].model",
        "duplicate field (first defined at line 2)",
    ),
    (
        "defaults-after-jobs",
        f"jobs:\n  - model: {FLUX}\ndefaults:\n  model: a/b\n",
        3,
        None,
        "'defaults' must come before 'jobs'",
    ),
    ("two-documents", f"jobs:\n  - model: {FLUX}\n---\njobs: []\n", 3, None, "one YAML document"),
    ("bad-id", f"jobs:\n  - model: {FLUX}\n    id: a b\n", 3, "jobs[0].id", "invalid id 'a b'"),
    ("id-number", f"jobs:\n  - model: {FLUX}\n    id: 12\n", 3, "jobs[0].id", "quote it"),
    (
        "id-too-long",
        f"jobs:\n  - model: {FLUX}\n    id: {'x' * 129}\n",
        3,
        "jobs[0].id",
        "1 to 128",
    ),
    (
        "id-dotdot",
        f"jobs:\n  - model: {FLUX}\n    id: '..'\n",
        3,
        "jobs[0].id",
        "outside the output folder",
    ),
    (
        "output-absolute",
        f"jobs:\n  - model: {FLUX}\n    output: /etc/{{id}}\n",
        3,
        "jobs[0].output",
        "outside the output folder",
    ),
    (
        "output-dotdot",
        f"jobs:\n  - model: {FLUX}\n    output: a/../../{{id}}\n",
        3,
        "jobs[0].output",
        "'..' as a path segment",
    ),
    ("output-empty", f"jobs:\n  - model: {FLUX}\n    output: ''\n", 3, "jobs[0].output", "empty"),
    (
        "output-unknown-placeholder",
        f"jobs:\n  - model: {FLUX}\n    output: '{{idx}}'\n",
        3,
        "jobs[0].output",
        "unknown placeholder {idx}",
    ),
    (
        "output-malformed",
        f"jobs:\n  - model: {FLUX}\n    output: 'a{{id'\n",
        3,
        "jobs[0].output",
        "malformed template",
    ),
    (
        "defaults-output-unknown",
        f"defaults:\n  output: '{{name}}'\njobs:\n  - model: {FLUX}\n",
        2,
        "defaults.output",
        "unknown placeholder {name}",
    ),
    (
        "input-int-key",
        f"jobs:\n  - model: {FLUX}\n    input: {{1: x}}\n",
        3,
        "jobs[0].input",
        "key 1 at $ is not a string",
    ),
    (
        "defaults-input-list",
        "defaults:\n  input: [1]\njobs:\n  - model: a/b\n",
        2,
        "defaults.input",
        "must be a mapping, not a list",
    ),
    ("empty-jobs", "jobs: []\n", None, None, "has no jobs"),
    ("empty-file", "", None, None, "has no jobs"),
    ("only-comments", "# nothing yet\n", None, None, "has no jobs"),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [case[1:] for case in YAML_CASES],
    ids=[case[0] for case in YAML_CASES],
)
def test_yaml_error_is_located(
    write: Write, text: str, line: int | None, field: str | None, fragment: str
) -> None:
    path = write("m.yaml", text)
    assert_located(manifest_error(path), path, line, field, fragment)


JSONL_CASES = [
    ("bad-json", '{"model": "a/b"}\n{"model": \n', 2, None, "invalid JSON"),
    ("nan", '{"model": "a/b", "input": {"x": NaN}}\n', 1, None, "NaN is not JSON"),
    ("extra-data", '{"model": "a/b"} {}\n', 1, None, "invalid JSON: Extra data (column 18)"),
    ("bad-after-blank", '  {"model" "a/b"}\n', 1, None, "invalid JSON: Expecting ':' delimiter"),
    ("not-object", "[1, 2]\n", 1, None, "must be a mapping, not a list"),
    ("unknown-field", '{"model": "a/b", "ID": "x"}\n', 1, "ID", "did you mean 'id'?"),
    ("missing-model", '{"input": {}}\n', 1, None, "missing field 'model'"),
    ("malformed-model", '{"model": "a/b"}\n{"model": "a:b"}\n', 2, "model", "malformed"),
    ("input-not-mapping", '{"model": "a/b", "input": "x"}\n', 1, "input", "not a string"),
    ("bad-output", '{"model": "a/b", "output": "../x"}\n', 1, "output", "'..'"),
    ("not-utf8", None, 1, None, "not UTF-8"),
    ("empty", "\n\n", None, None, "has no jobs"),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [case[1:] for case in JSONL_CASES],
    ids=[case[0] for case in JSONL_CASES],
)
def test_jsonl_error_is_located(
    write: Write, text: str | None, line: int | None, field: str | None, fragment: str
) -> None:
    path = write("m.jsonl", text or "")
    if text is None:
        path.write_bytes(b'{"model": "a/b", "input": {"p": "\xff"}}\n')
    assert_located(manifest_error(path), path, line, field, fragment)


def test_duplicate_ids_name_both_lines(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        jobs:
          - id: a
            model: {FLUX}
          - id: b
            model: {FLUX}
          - id: a
            model: {FLUX}
        """,
    )
    error = manifest_error(path)
    assert_located(error, path, 6, "jobs[2]", "duplicate job id 'a' (first defined at line 2)")


def test_duplicate_identical_jobs_name_both_lines(write: Write) -> None:
    job = '{"model": "a/b", "input": {"x": 1, "y": 2}}'
    same = '{"input": {"y": 2, "x": 1}, "model": "a/b"}'  # same job, keys reordered
    path = write("m.jsonl", f"{job}\n\n{same}\n")
    error = manifest_error(path)
    assert_located(error, path, 3, None, "same model and input as line 1")


def test_a_checked_manifest_is_read_again_without_the_duplicate_index(write: Write) -> None:
    # `trust_earlier_check=True` is the caller's promise that the whole file was read without error
    # before (the CLI's pre-run check): the second read keeps no per-job index.
    job = '{"model": "a/b", "input": {"x": 1}}'
    path = write("m.jsonl", f"{job}\n{job}\n")
    assert len(list(read_manifest(path, trust_earlier_check=True))) == 2
    assert "same model and input as line 1" in str(manifest_error(path))


def test_a_checked_manifest_is_not_checked_again_for_an_explicit_id(write: Write) -> None:
    # An explicit id is the key: the canonical input was rendered only to check the input,
    # and the first read did that, and checked the id. (Both are refused below.)
    path = write("m.yaml", "jobs:\n  - id: a\n    model: a/b\n    input: {1: x}\n")
    assert [job.key for job in read_manifest(path, trust_earlier_check=True)] == ["a"]
    assert_located(manifest_error(path), path, 4, "jobs[0].input", "not JSON")
    path = write("m.jsonl", '{"id": "a b", "model": "a/b"}\n')
    assert [job.key for job in read_manifest(path, trust_earlier_check=True)] == ["a b"]
    assert_located(manifest_error(path), path, 1, "id", "invalid id 'a b'")


def test_outputs_written_twice_are_rejected(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        jobs:
          - id: a
            model: {FLUX}
          - model: {FLUX}
            output: a
        """,
    )
    assert_located(
        manifest_error(path), path, 4, "jobs[1].output", "also the output of the job at line 2"
    )


@pytest.mark.parametrize("name", ["m.txt", "m.json", "manifest"])
def test_unknown_format_is_an_error(write: Write, name: str) -> None:
    path = write(name, "{}\n")
    assert_located(manifest_error(path), path, None, None, "unknown manifest format")


def test_missing_manifest_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert_located(manifest_error(path), path, None, None, "does not exist")


def test_check_collects_every_job_error_and_counts_the_good(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        defaults:
          colour: red
        jobs:
          - model: {FLUX}
            input: {{prompt: one}}
          - model: nope
          - model: {FLUX}
            input: {{prompt: two}}
            promt: x
          - model: {FLUX}
            input: {{prompt: one}}
          - model: meta/meta-llama-3-70b-instruct
        """,
    )
    summary = check_manifest(path)
    assert not summary.ok
    assert [(e.line, e.field) for e in summary.errors] == [
        (2, "defaults.colour"),
        (6, "jobs[1].model"),
        (9, "jobs[2].promt"),
        (10, "jobs[3]"),
    ]
    assert summary.jobs == 2
    assert summary.by_model == {FLUX: 1, "meta/meta-llama-3-70b-instruct": 1}


def test_check_stops_at_a_syntax_error(write: Write) -> None:
    path = write("m.yaml", f"jobs:\n  - model: nope\n  - model: {FLUX}\n    input: {{a: [}}\n")
    summary = check_manifest(path)
    assert [e.line for e in summary.errors] == [2, 4]
    assert "invalid YAML" in summary.errors[-1].message


def test_check_goes_on_after_a_bad_jsonl_line(write: Write) -> None:
    path = write("m.jsonl", '{"model": "a/b"}\n{oops\n{"model": "c/d"}\n{"model": "x"}\n')
    summary = check_manifest(path)
    assert [e.line for e in summary.errors] == [2, 4]
    assert summary.jobs == 2


def test_check_caps_the_errors(write: Write) -> None:
    path = write("m.jsonl", '{"model": "x"}\n' * 20)
    summary = check_manifest(path, max_errors=5)
    assert len(summary.errors) == 5


def test_manifest_error_is_a_value_error_and_pickles() -> None:
    error = ManifestError("boom", path="m.yaml", line=3, field="jobs[0].id")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line, copy.field) == ("m.yaml:3: jobs[0].id: boom", 3, "jobs[0].id")
    assert str(ManifestError("boom", path="m.yaml")) == "m.yaml: boom"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.yaml", 'jobs:\n  - model: a/b\n    "in\\nput": 1\n'),
        ("m.yaml", 'jobs:\n  - model: a/b\n    input: {"a\\rb": 1, "a\\rb": 2}\n'),
        ("m.jsonl", '{"model": "a/b", "in\\u2028put\\u0007": 1}\n'),
        ("m.jsonl", '{"model": "a/b", "id": "x\\ny"}\n'),
        ("m.yaml", 'jobs:\n  - model: "a/b\\nc"\n'),
    ],
)
def test_every_error_is_one_line(write: Write, name: str, text: str) -> None:
    path = write(name, text)
    shown = str(manifest_error(path))
    assert "\n" not in shown
    assert "\r" not in shown
    assert shown.isprintable(), shown
