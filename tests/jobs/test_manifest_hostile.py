"""Hostile or broken manifests fail at once with one located line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import check_manifest, read_manifest
from jobs._readers import MAX_DEPTH, MAX_NODES
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"

# The shape of the 541-byte file from issue 12: nine levels of nine aliases (9**9 values).
BOMB = """\
jobs:
  - model: a/b
    input:
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
      i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_is_refused_where_it_passes_the_bound(write: Write) -> None:
    # Counting nodes (each anchor measured once) stops at the level that crosses the
    # bound, long before anything is expanded.
    path = write("m.yaml", BOMB)
    assert_located(manifest_error(path), path, 10, None, f"more than {MAX_NODES:,} values")


def test_an_alias_bomb_in_the_defaults_is_refused(write: Write) -> None:
    text = BOMB.replace("jobs:\n  - model: a/b\n    input:", "defaults:\n  input:")
    path = write("m.yaml", text.replace("      ", "    ") + "jobs:\n  - model: a/b\n")
    assert "more than" in manifest_error(path).message


def test_aliases_within_the_bound_still_work(write: Write) -> None:
    path = write("m.yaml", "\n".join(BOMB.splitlines()[:6]) + "\n")  # 9**3 values
    (job,) = read_manifest(path)
    assert len(job.input["c"]) == 9


def test_an_alias_inside_its_own_anchor_is_refused(write: Write) -> None:
    path = write("m.yaml", "jobs:\n  - model: a/b\n    input: &x {self: *x}\n")
    assert "refers to the value that contains it" in manifest_error(path).message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 5000])
def test_yaml_nested_too_deep_is_one_line(write: Write, depth: int) -> None:
    block = "".join(f"{'  ' * (i + 2)}k:\n" for i in range(depth)) + f"{'  ' * (depth + 2)}v\n"
    path = write("m.yaml", f"jobs:\n  - model: a/b\n    input:\n{block}")
    assert "nested deeper than" in manifest_error(path).message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 5000])
def test_flow_yaml_nested_too_deep_is_one_line(write: Write, depth: int) -> None:
    path = write("m.yaml", f"jobs:\n  - model: a/b\n    input: {{x: {'[' * depth}{']' * depth}}}\n")
    error = manifest_error(path)
    assert error.line == 3
    assert "nest" in error.message


def test_yaml_nested_through_aliases_is_measured_too(write: Write) -> None:
    levels = "\n".join(f"      l{i}: &l{i} [*l{i - 1}]" for i in range(1, 2 * MAX_DEPTH))
    path = write("m.yaml", f"jobs:\n  - model: a/b\n    input:\n      l0: &l0 [x]\n{levels}\n")
    assert "nested deeper than" in manifest_error(path).message


def test_nesting_within_the_bound_is_fine(write: Write) -> None:
    depth = MAX_DEPTH - 5
    path = write("m.jsonl", json.dumps({"model": "a/b", "input": {"x": [[]] * 0 or _nest(depth)}}))
    assert len(list(read_manifest(path))) == 1


def _nest(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_json_nested_too_deep_is_one_line(write: Write, depth: int) -> None:
    line = '{"model": "a/b", "input": {"x": ' + "[" * depth + "]" * depth + "}}"
    path = write("m.jsonl", f'{{"model": "a/b"}}\n{line}\n')
    assert_located(manifest_error(path), path, 2, None, f"nested deeper than {MAX_DEPTH} levels")


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\uDBFF", "x\\ud83d", "\\ude00y"])
def test_a_lone_surrogate_in_jsonl_is_one_line(write: Write, escape: str) -> None:
    path = write("m.jsonl", f'{{"model": "a/b", "input": {{"p": "{escape}"}}}}\n')
    assert_located(manifest_error(path), path, 1, None, "lone surrogate")


def test_a_surrogate_pair_is_text(write: Write) -> None:
    path = write("m.jsonl", '{"model": "a/b", "input": {"p": "\\ud83d\\ude00"}}\n')
    (job,) = read_manifest(path)
    assert job.input == {"p": "\N{GRINNING FACE}"}


@pytest.mark.parametrize(
    "line",
    [
        '{"model": "a/b", "input": {"p": 1, "p": 2}}',
        '{"model": "a/b", "input": {"p": {"q": 1, "q": 2}}}',
        '{"model": "a/b", "input": {"p": [{"q": [{"r": 1, "r": 1}]}]}}',
        '{"model": "a/b", "model": "a/b"}',
    ],
)
def test_duplicate_keys_in_jsonl_name_the_line(write: Write, line: str) -> None:
    path = write("m.jsonl", f'{{"model": "a/b"}}\n{line}\n')
    assert_located(manifest_error(path), path, 2, None, "duplicate key")


@pytest.mark.parametrize(
    ("input_block", "line", "field"),
    [
        ("    input:\n      p: 1\n      p: 2\n", 5, "jobs[0].input.p"),
        ("    input:\n      p:\n        q: 1\n        q: 2\n", 6, "jobs[0].input.p.q"),
        ("    input:\n      l:\n        - {r: 1, r: 1}\n", 5, "jobs[0].input.l[0].r"),
        ("    input: {p: 1, 'p': 2}\n", 3, "jobs[0].input.p"),
    ],
)
def test_duplicate_keys_in_yaml_name_the_line(
    write: Write, input_block: str, line: int, field: str
) -> None:
    path = write("m.yaml", f"jobs:\n  - model: a/b\n{input_block}")
    assert_located(manifest_error(path), path, line, field, "duplicate key (first defined at line")


def test_duplicate_keys_in_yaml_defaults_are_refused(write: Write) -> None:
    path = write("m.yaml", "defaults:\n  input:\n    a: 1\n    a: 2\njobs:\n  - model: a/b\n")
    assert_located(manifest_error(path), path, 4, "defaults.input.a", "duplicate key")


def test_merge_keys_may_be_overridden(write: Write) -> None:
    path = write(
        "m.yaml",
        "jobs:\n  - model: a/b\n    input: &b {p: 1, q: 2}\n"
        "  - model: a/b\n    input: {<<: *b, p: 3}\n",
    )
    assert [job.input for job in read_manifest(path)] == [{"p": 1, "q": 2}, {"p": 3, "q": 2}]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('jobs:\n  - model: a/b\n    input: {p: "abc}\n  - model: a/b\n', 3),
        ("jobs:\n  - model: a/b\n    input:\n      p: 'abc\n  - model: a/b\n", 4),
        ('jobs:\n  - model: a/b\n    input:\n      p: "x"\n      q: "abc\n\n\n', 5),
    ],
)
def test_an_unclosed_quote_names_its_own_line(write: Write, text: str, line: int) -> None:
    path = write("m.yaml", text)
    assert_located(manifest_error(path), path, line, None, "quoted scalar")


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("m.yaml", 'jobs:\n  - model: a/b\n    input: {p: "caf\xe9"}\n', 3),
        ("m.yaml", "# caf\xe9\njobs:\n  - model: a/b\n", 1),
        ("m.yaml", "jobs:\n  - model: a/b\n\n\n  - model: a/b\n    input: {p: \xe9t\xe9}\n", 6),
        ("m.jsonl", '{"model": "a/b"}\n{"model": "a/b", "input": {"p": "caf\xe9"}}\n', 2),
    ],
)
def test_a_latin1_file_names_the_line(tmp_path: Path, name: str, content: str, line: int) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    assert_located(manifest_error(path), path, line, None, "not UTF-8")
    assert "UTF-8" in str(check_manifest(path).errors[-1])


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a\n", "invalid id"),
        ("a\nb", "invalid id"),
        ("a\r", "invalid id"),
        ("a\x00", "invalid id"),
        ("a\tb", "invalid id"),
        ("\u2028a", "invalid id"),
        ("a\x7f", "invalid id"),
    ],
)
def test_ids_with_control_characters_are_refused(write: Write, value: str, fragment: str) -> None:
    path = write("m.jsonl", json.dumps({"model": FLUX, "id": value}) + "\n")
    assert_located(manifest_error(path), path, 1, "id", fragment)


def test_an_id_with_a_trailing_newline_in_yaml_is_refused(write: Write) -> None:
    path = write("m.yaml", f'jobs:\n  - model: {FLUX}\n    id: "a\\n"\n')
    assert_located(manifest_error(path), path, 3, "jobs[0].id", "invalid id 'a\\n'")


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("Black-Forest-Labs/flux-schnell", "did you mean 'black-forest-labs/flux-schnell'?"),
        ("a/b:abc", "64 lowercase hex"),
        ("a/b:" + "F" * 64, "64 lowercase hex"),
        ("deployments/Me/x", "lowercase"),
    ],
)
def test_model_refs_are_checked_for_their_real_form(
    write: Write, model: str, fragment: str
) -> None:
    path = write("m.jsonl", json.dumps({"model": model}) + "\n")
    assert_located(manifest_error(path), path, 1, "model", fragment)


def test_a_lone_surrogate_escape_in_yaml_is_one_line(write: Write) -> None:
    path = write("m.yaml", 'jobs:\n  - model: a/b\n    input: {p: "\\ud800"}\n')
    assert_located(manifest_error(path), path, 3, None, "invalid Unicode character escape")


def test_an_alias_to_a_scalar_and_a_repeated_anchor_use_are_fine(write: Write) -> None:
    path = write(
        "m.yaml",
        "jobs:\n  - model: a/b\n    input: {p: &p hello, q: *p, l: &l [1], m: [*l, *l]}\n",
    )
    (job,) = read_manifest(path)
    assert job.input == {"p": "hello", "q": "hello", "l": [1], "m": [[1], [1]]}
