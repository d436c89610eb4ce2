"""Reading manifests: YAML and JSONL happy paths, defaults, keys and outputs."""

from __future__ import annotations

import json
from pathlib import Path

from jobs import Job, ModelRef, check_manifest, job_key, read_manifest
from tests.jobs.helpers import Write

FLUX = "black-forest-labs/flux-schnell"
LLAMA = "meta/meta-llama-3-70b-instruct"
VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


def test_yaml_jobs_merge_defaults_key_by_key(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        # comments are fine
        defaults:
          model: {FLUX}
          input: {{num_outputs: 1, seed: 7}}
          output: "{{model_name}}/{{id}}"
        jobs:
          - input: {{prompt: a cat}}
          - id: dog
            input: {{prompt: a dog, num_outputs: 2}}
            output: "dogs/{{index}}"
          - model: {LLAMA}
            input:
              prompt: hi
        """,
    )
    jobs = list(read_manifest(path))
    assert [j.line for j in jobs] == [7, 8, 11]
    assert [j.index for j in jobs] == [0, 1, 2]
    assert [j.explicit_id for j in jobs] == [False, True, False]
    cat, dog, llama = jobs
    assert cat.model == ModelRef.parse(FLUX)
    assert cat.input == {"num_outputs": 1, "seed": 7, "prompt": "a cat"}
    assert cat.key == job_key(cat.model, cat.input)
    assert cat.output == f"flux-schnell/{cat.key}"
    assert cat.source == str(path)
    assert dog.key == "dog"
    assert dog.input == {"num_outputs": 2, "seed": 7, "prompt": "a dog"}  # the job wins
    assert dog.output == "dogs/1"
    assert llama.model.slug == LLAMA
    assert llama.output == f"meta-llama-3-70b-instruct/{llama.key}"


def test_yaml_without_defaults_uses_key_as_output(write: Write) -> None:
    path = write("m.yml", f"jobs:\n  - model: {FLUX}:{VERSION}\n    input: {{prompt: x}}\n")
    (job,) = read_manifest(path)
    assert job.output == job.key
    assert job.key.startswith("j")
    assert len(job.key) == 17
    assert job.model.version == VERSION


def test_yaml_anchors_and_aliases_work(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        jobs:
          - model: {FLUX}
            input: &base {{prompt: shared, seed: 1}}
          - model: {LLAMA}
            input: *base
        """,
    )
    first, second = read_manifest(path)
    assert first.input == second.input == {"prompt": "shared", "seed": 1}


def test_jsonl_jobs_and_deployments(write: Write) -> None:
    lines = [
        {"model": FLUX, "input": {"prompt": "a"}},
        {"model": "deployments/emulator/flux", "input": {"prompt": "b"}, "id": "b-1"},
        {"model": LLAMA, "input": {"prompt": "c"}, "output": "text/{id}"},
    ]
    path = write("m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b, c = read_manifest(path)
    assert (a.line, b.line, c.line) == (1, 2, 3)
    assert b.model.deployment
    assert b.key == "b-1"
    assert c.output == f"text/{c.key}"


def test_jsonl_lines_may_have_blanks_around_them_and_crlf_endings(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b' \t{"model": "a/b", "id": "a"}\r\n{"model": "a/b", "id": "b"}  \n')
    assert [job.key for job in read_manifest(path)] == ["a", "b"]


def test_ndjson_suffix_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "m.NDJSON"
    path.write_bytes(b'\xef\xbb\xbf{"model": "a/b", "input": {"p": "\xc3\xa9"}}\n')
    (job,) = read_manifest(path)
    assert job.input == {"p": "é"}


def test_same_job_has_same_key_in_both_formats(write: Write) -> None:
    yaml_path = write("m.yaml", f"jobs:\n  - model: {FLUX}\n    input: {{b: 2, a: [1, x]}}\n")
    jsonl_path = write("m.jsonl", json.dumps({"input": {"a": [1, "x"], "b": 2}, "model": FLUX}))
    (from_yaml,) = read_manifest(yaml_path)
    (from_jsonl,) = read_manifest(jsonl_path)
    assert from_yaml.key == from_jsonl.key


def test_editing_one_job_changes_only_its_key(write: Write) -> None:
    before = write(
        "a.jsonl", '{"model": "a/b", "input": {"p": 1}}\n{"model": "a/b", "input": {"p": 2}}'
    )
    after = write(
        "b.jsonl", '{"model": "a/b", "input": {"p": 1}}\n{"model": "a/b", "input": {"p": 3}}'
    )
    keys_before = [j.key for j in read_manifest(before)]
    keys_after = [j.key for j in read_manifest(after)]
    assert keys_before[0] == keys_after[0]
    assert keys_before[1] != keys_after[1]


def test_literal_at_is_escaped(write: Write) -> None:
    path = write("m.yaml", f"jobs:\n  - model: {FLUX}\n    input: {{prompt: '@@home'}}\n")
    (job,) = read_manifest(path)
    assert job.input == {"prompt": "@home"}


def test_check_summary_of_a_good_manifest(write: Write) -> None:
    path = write("m.jsonl", '{"model": "a/b"}\n{"model": "a/b", "input": {"x": 1}}\n')
    summary = check_manifest(path)
    assert summary.ok
    assert summary.jobs == 2
    assert summary.by_model == {"a/b": 2}


def test_reading_is_lazy(write: Write) -> None:
    # The first job arrives before the broken line is read: the engine can stream.
    path = write("m.jsonl", '{"model": "a/b"}\n{broken\n')
    jobs = read_manifest(path)
    assert isinstance(next(jobs), Job)


def test_example_manifests_are_valid() -> None:
    folder = Path(__file__).resolve().parents[2] / "manifests"
    for name in ("example.yaml", "example-lines.jsonl"):
        summary = check_manifest(folder / name)
        assert summary.ok, [str(e) for e in summary.errors]
        assert 8 <= summary.jobs <= 12


def test_output_template_format_specs(write: Write) -> None:
    path = write(
        "m.jsonl",
        '{"model": "a/b", "input": {"n": 1}, "output": "{model_owner}/{index:03d}"}\n'
        '{"model": "a/b", "input": {"n": 2}, "output": "{model_owner}/{index:03d}"}\n',
    )
    assert [j.output for j in read_manifest(path)] == ["a/000", "a/001"]
