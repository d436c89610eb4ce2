"""Output name templates: every placeholder, the slug rule, and errors before any API call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import check_manifest, check_output_stem, read_manifest
from jobs._template import DEFAULT_WIDTH, slug
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"


def jsonl(write: Write, *jobs: dict[str, object]) -> Path:
    return write("m.jsonl", "".join(json.dumps({"model": FLUX, **j}) + "\n" for j in jobs))


def stems(path: Path) -> list[str]:
    return [job.output for job in read_manifest(path)]


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("A Cat, in the Rain!", 64, "a-cat-in-the-rain"),
        ("Crème brûlée", 64, "creme-brulee"),  # NFKD: accents fold away
        ("ﬁne Ⅻ ²", 64, "fine-xii-2"),  # compatibility forms become ASCII
        ("東京 at night", 64, "at-night"),  # no ASCII form: dropped
        ("東京", 64, "_"),  # never empty
        ("  --__..  ", 64, "_"),
        ('12:30 "best"?', 64, "12-30-best"),
        ("a cat in the rain", 5, "a-cat"),
        ("a cat in the rain", 6, "a-cat"),  # cut, then trimmed of "-"
        ("CON", 64, "con_"),  # never a device name
        ("com1", 64, "com1_"),
        ("Nul", 3, "nul_"),
        ("-1", 64, "1"),
        ("0.5", 64, "0-5"),
    ],
)
def test_the_slug_rule(text: str, width: int, expected: str) -> None:
    assert slug(text, width) == expected


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_a_slug_is_always_a_portable_segment(text: str, width: int) -> None:
    made = slug(text, width)
    assert check_output_stem(made) is None
    assert made == "_" or all(c in "abcdefghijklmnopqrstuvwxyz0123456789-_" for c in made)
    assert 1 <= len(made) <= width + 1  # +1: the "_" after a device name
    assert not made.startswith("-")
    assert not made.endswith("-")


def test_input_fields_fill_the_template(write: Write) -> None:
    path = jsonl(
        write,
        {
            "input": {"prompt": "A Red Fox, at Dawn", "seed": 42},
            "output": "{input.seed}/{input.prompt:10}",
        },
        {"input": {"prompt": "x", "size": {"w": 512}}, "output": "{input.size.w}"},
        {"input": {"prompt": "y", "images": ["@@Lit.png", "b"]}, "output": "{input.images.0}"},
        {"input": {"prompt": "z", "hd": True, "cfg": 3.5}, "output": "{input.hd}_{input.cfg}"},
        {"input": {"prompt": "w" * 100}, "output": "{input.prompt}"},
    )
    assert stems(path) == ["42/a-red-fox", "512", "lit-png", "true_3-5", "w" * DEFAULT_WIDTH]


def test_input_fields_come_after_defaults_and_local_files_as_written(write: Write) -> None:
    write("photos/Me.PNG", "not really a png")
    path = write(
        "m.yaml",
        f"""
        defaults:
          model: {FLUX}
          input: {{seed: 7}}
          output: "{{input.seed}}-{{input.image}}"
        jobs:
          - input: {{image: "@photos/Me.PNG"}}
          - input: {{image: "@photos/Me.PNG", seed: 8}}
        """,
    )
    assert stems(path) == ["7-photos-me-png", "8-photos-me-png"]


def test_job_index_is_index_and_format_specs_still_work(write: Write) -> None:
    path = jsonl(
        write,
        *[{"input": {"n": n}, "output": "{job_index}-{index:03}-{model_owner}"} for n in range(2)],
    )
    assert stems(path) == ["0-000-black-forest-labs", "1-001-black-forest-labs"]


def test_model_path_keeps_deployments_apart(write: Write) -> None:
    path = write(
        "m.jsonl",
        json.dumps({"model": "deployments/acme/flux", "output": "{model_path}/{id}", "id": "a"})
        + "\n"
        + json.dumps({"model": "black-forest-labs/flux", "output": "{model_path}/{id}", "id": "b"})
        + "\n"
        + json.dumps({"model": "acme/flux:" + "0" * 64, "output": "{model_path}/{id}", "id": "c"})
        + "\n",
    )
    assert stems(path) == ["deployments/acme/flux/a", "black-forest-labs/flux/b", "acme/flux/c"]


def test_a_missing_input_field_names_the_job_line(write: Write) -> None:
    path = jsonl(
        write,
        {"input": {"prompt": "a", "seed": 1}, "output": "{input.seed}"},
        {"input": {"prompt": "b"}, "output": "{input.seed}"},
    )
    error = manifest_error(path)
    assert_located(error, path, 2, "output", "{input.seed}: input has no field 'seed'")
    assert "(it has: prompt)" in error.message


def test_a_missing_field_under_a_default_template_says_where_the_template_is(
    write: Write,
) -> None:
    path = write(
        "m.yaml",
        f"""
        defaults:
          model: {FLUX}
          output: "{{input.style.name}}/{{id}}"
        jobs:
          - input: {{style: {{name: oil}}}}
          - input: {{style: {{}}}}
        """,
    )
    error = manifest_error(path)
    assert error.line == 6
    assert "input.style has no field 'name'" in error.message
    assert "from defaults.output, line 3" in error.message


@pytest.mark.parametrize(
    ("given_input", "template", "fragment"),
    [
        ({"size": {"w": 1}}, "{input.size}", "input.size is a mapping"),
        ({"images": ["a"]}, "{input.images}", "input.images is a list"),
        ({"images": ["a"]}, "{input.images.1}", "is a list of 1; '1' is not an index"),
        ({"seed": 1}, "{input.seed.x}", "input.seed is a single value, with no field 'x'"),
    ],
)
def test_a_field_that_is_not_one_value_is_an_error(
    write: Write, given_input: dict[str, object], template: str, fragment: str
) -> None:
    path = jsonl(write, {"input": given_input, "output": template})
    assert_located(manifest_error(path), path, 1, "output", fragment)


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{input.prompt:abc}", "after ':' comes the slug's width, 1 to 200"),
        ("{input.prompt:0}", "after ':' comes the slug's width"),
        ("{input.prompt:201}", "after ':' comes the slug's width"),
        ("{input.images[0]}", "name an input field as {input.a}"),
        ("{input.}", "name an input field as {input.a}"),
        ("{id!r}", "conversions (!r, !s, !a) are not allowed"),
        ("{index:q}", "bad format spec"),
        ("{inputs.seed}", "unknown placeholder {inputs.seed}"),
        ("{prediction_id}", "is not supported: a prediction's id exists only once it is created"),
        ("{date}", "is not supported: the date a job runs changes between a run and its resume"),
    ],
)
def test_a_template_that_cannot_be_filled_is_refused_on_its_line(
    write: Write, template: str, fragment: str
) -> None:
    path = jsonl(write, {"input": {"prompt": "p"}, "output": template})
    assert_located(manifest_error(path), path, 1, "output", fragment)


def test_refused_placeholders_are_refused_in_the_defaults_too(write: Write) -> None:
    path = write(
        "m.yaml",
        f"""
        defaults:
          model: {FLUX}
          output: "{{date}}/{{id}}"
        jobs:
          - input: {{prompt: a}}
        """,
    )
    errors = check_manifest(path).errors
    assert errors[0].line == 3
    assert errors[0].field == "defaults.output"
    assert "{date}" in errors[0].message
    assert "--output" in errors[0].message


def test_slugs_that_collide_are_refused_naming_both_lines(write: Write) -> None:
    path = jsonl(
        write,
        {"input": {"prompt": "A portrait of a cat"}, "output": "{input.prompt:10}"},
        {"input": {"prompt": "a portrait of a dog"}, "output": "{input.prompt:10}"},
    )
    error = manifest_error(path)
    assert_located(error, path, 2, "output", "also the output of the job at line 1")
    assert "'a-portrait'" in error.message


def test_slugs_that_meet_a_namespace_are_refused(write: Write) -> None:
    # "cat" owns cat_0.png: a seed slug of "cat_0" would write into it.
    path = jsonl(
        write,
        {"input": {"prompt": "cat"}, "output": "{input.prompt}"},
        {"input": {"prompt": "cat", "seed": 0}, "output": "{input.prompt}_{input.seed}"},
    )
    assert_located(manifest_error(path), path, 2, "output", "line 1")


def test_a_device_name_slug_is_escaped_not_refused(write: Write) -> None:
    path = jsonl(write, {"input": {"prompt": "Con"}, "output": "x/{input.prompt}"})
    assert stems(path) == ["x/con_"]


@pytest.mark.parametrize(
    "template", ["{model_name}/{id}", "{model_owner}/{model_name}/{id}", "{model_name}-out/{id}"]
)
def test_a_folder_per_model_never_mixes_a_deployment_and_a_model_of_its_name(
    write: Write, template: str
) -> None:
    path = write(
        "m.jsonl",
        json.dumps({"model": "acme/flux", "id": "m", "output": template})
        + "\n"
        + json.dumps({"model": "deployments/acme/flux", "id": "d", "output": template})
        + "\n",
    )
    error = manifest_error(path)
    assert_located(error, path, 2, "output", "would hold a deployment (deployments/acme/flux)")
    assert "a model of the same name (line 1)" in error.message
    assert "{model_path}" in error.message


def test_the_mix_is_found_under_a_default_template_in_either_order(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        defaults:
          output: "{model_name}/{id}"
        jobs:
          - {model: deployments/acme/flux, id: d}
          - {model: deployments/acme/flux, id: e}
          - {model: black-forest-labs/flux, id: m}
        """,
    )
    error = manifest_error(path)
    assert error.line == 6
    assert "would hold a model (black-forest-labs/flux)" in error.message
    assert "a deployment of the same name (line 4)" in error.message


@pytest.mark.parametrize(
    "template",
    [
        "{id}",  # no folder per model: the default, not an accident
        "{model_name}-{id}",  # no folder at all
        "flux/{id}",  # the user named the folder
        "{model_path}/{id}",
        "out/{model_name}-{id}",  # {model_name} is in the file's name, not the folder
    ],
)
def test_templates_that_do_not_mean_a_folder_per_model_are_accepted(
    write: Write, template: str
) -> None:
    path = write(
        "m.jsonl",
        json.dumps({"model": "acme/flux", "id": "m", "input": {"n": 1}, "output": template})
        + "\n"
        + json.dumps({"model": "deployments/acme/flux", "id": "d", "output": template})
        + "\n",
    )
    assert len(stems(path)) == 2


def test_two_deployments_or_two_models_may_share_a_folder(write: Write) -> None:
    path = write(
        "m.jsonl",
        "".join(
            json.dumps({"model": model, "id": i, "output": "{model_name}/{id}"}) + "\n"
            for i, model in [
                ("a", "deployments/acme/flux"),
                ("b", "deployments/other/flux"),
                ("c", "acme/sdxl"),
                ("d", "other/sdxl"),
            ]
        ),
    )
    assert stems(path) == ["flux/a", "flux/b", "sdxl/c", "sdxl/d"]
