"""Values no file system or message can hold are refused with file:line, never a traceback;
error text stays bounded; redaction masks credentials and nothing else, in every output."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.helpers import FLUX, cli_env, engine_cli, image_jobs, write_jsonl

CAPTIONER = "emulator/captioner"
MANIFEST_TOKEN = "r8_SECRETMANIFESTTOKEN0123456789abcdefghi"


def one_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if len(lines) == 2:  # validate counts what it found
        assert lines[1].endswith("in the manifest; nothing was run"), lines
    else:
        assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def assert_nothing_sent(server) -> None:
    assert server.emulator.stats.snapshot()["requests"] == {}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.jsonl", '{"id":"a10","model":"emulator/captioner","input":{"image":"@a\\u0000x"}}\n'),
        (
            "m.jsonl",
            '{"id":"a10","model":"emulator/captioner","input":{"images":["@ok.png","@b\\u0000"]}}\n',
        ),
        (
            "m.yaml",
            'jobs:\n  - id: a10\n    model: emulator/captioner\n    input: {image: "@x\\0y"}\n',
        ),
    ],
)
def test_a_nul_in_an_at_path_is_a_manifest_error(emulator_server, tmp_path, name, text):
    (tmp_path / "ok.png").write_bytes(b"png")
    (tmp_path / name).write_text(text)

    for command in ("run", "validate"):
        line = one_error(engine_cli(tmp_path, cli_env(emulator_server), command, name))
        assert line.startswith(f"error: {name}:"), line
        assert "NUL" in line

    assert_nothing_sent(emulator_server)


def test_an_at_path_longer_than_a_file_name_is_a_manifest_error(emulator_server, tmp_path):
    long = "x" * 5000
    write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "model": CAPTIONER, "input": {"image": f"@{long}"}}]
    )

    line = one_error(engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl"))

    assert line.startswith("error: m.jsonl:1: input.image:"), line
    assert len(line) < 1500  # the path is cut in the message, not echoed whole
    assert_nothing_sent(emulator_server)


@pytest.mark.parametrize(
    ("value", "ids"), [("a\u0000b", "id"), ("x\u0000{id}", "output")], ids=["id", "output"]
)
def test_a_nul_in_an_id_or_output_is_a_manifest_error(emulator_server, tmp_path, value, ids):
    job = {"id": "a", "model": FLUX, "input": {"prompt": "x"}, ids: value}
    write_jsonl(tmp_path / "m.jsonl", [job])

    line = one_error(engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl"))

    assert line.startswith("error: m.jsonl:1:"), line
    assert_nothing_sent(emulator_server)


@pytest.mark.parametrize(
    "template",
    [
        "{index:.100000000f}",
        "{index:100000000}",
        "{id:>300}",
        "{index:0256}",
        f"{{index:{'9' * 5000}}}",
    ],
)
def test_a_format_spec_wider_than_a_file_name_is_refused_in_a_bounded_line(
    emulator_server, tmp_path, template
):
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "a", "model": FLUX, "input": {"prompt": "x"}, "output": template}],
    )

    for command in ("validate", "run"):
        result = engine_cli(tmp_path, cli_env(emulator_server), command, "m.jsonl")
        assert result.returncode == 2, result.stderr[:500]
        assert len(result.stderr) < 1500
        assert "Traceback" not in result.stderr
        assert "m.jsonl:1: output:" in result.stderr
        assert "255" in result.stderr or "format spec" in result.stderr

    assert_nothing_sent(emulator_server)


def test_the_widest_accepted_spec_still_makes_a_name(emulator_server, tmp_path):
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "a", "model": FLUX, "input": {"prompt": "x"}, "output": "{index:03}"}],
    )

    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", "out")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "000.webp").exists() or list((tmp_path / "out").glob("000.*"))


def test_a_megabyte_value_in_an_error_is_cut(emulator_server, tmp_path):
    huge = "y" * 1_000_000
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "a", "model": FLUX, "input": {"prompt": "x"}, "output": "{nope" + huge + "}"}],
    )

    line = one_error(engine_cli(tmp_path, cli_env(emulator_server), "validate", "m.jsonl"))

    assert len(line) < 1500


# --- redaction: credentials masked everywhere, ordinary words nowhere ---------------------


def test_a_job_named_bearer_keeps_its_prediction_id_in_the_logs(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [{"id": "bearer", "model": FLUX, "input": {"prompt": "x"}}])

    result = engine_cli(
        tmp_path,
        cli_env(emulator_server),
        "run",
        "m.jsonl",
        "--output-dir",
        "out",
        "--log-file",
        "run.log",
    )

    assert result.returncode == 0, result.stderr
    records = [
        json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    ]
    prediction = next(r["p"] for r in records if r.get("e") == "created")
    log = (tmp_path / "run.log").read_text()
    assert prediction in log
    assert "[REDACTED]" not in log


def test_the_bad_token_error_keeps_its_words(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server) | {"REPLICATE_API_TOKEN": "r8_abc def"}

    line = one_error(engine_cli(tmp_path, env, "run", "m.jsonl"))

    assert "token contains whitespace" in line
    assert "[REDACTED]" not in line
    assert_nothing_sent(emulator_server)


def test_validate_masks_a_token_in_the_manifest_as_run_does(emulator_server, tmp_path):
    jobs = [
        {"id": "a", "model": "r8_SECRETMODEL/flux", "input": {"prompt": "x"}},
        {"id": "b", "model": FLUX, "input": {"prompt": "x", "output_format": MANIFEST_TOKEN}},
    ]
    write_jsonl(tmp_path / "m.jsonl", jobs)

    validated = engine_cli(tmp_path, cli_env(emulator_server), "validate", "m.jsonl")
    ran = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", "out")

    for result in (validated, ran):
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "r8_SECRET" not in result.stdout + result.stderr
    assert "[REDACTED]" in validated.stdout + validated.stderr


def test_status_and_export_mask_a_token_in_inputs(emulator_server, tmp_path):
    token = emulator_server.token
    prompt = f"say {token} and {MANIFEST_TOKEN}"
    write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": prompt}}])
    env = cli_env(emulator_server)
    assert engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out").returncode == 0

    outputs = [
        engine_cli(tmp_path, env, "status", "m.jsonl", "--output-dir", "out"),
        engine_cli(tmp_path, env, "status", "m.jsonl", "--output-dir", "out", "--json"),
        engine_cli(tmp_path, env, "export", "m.jsonl", "--output-dir", "out"),
        engine_cli(tmp_path, env, "export", "m.jsonl", "--output-dir", "out", "--format", "csv"),
    ]

    for result in outputs:
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        assert "r8_SECRET" not in text
        assert token not in text
    row = json.loads(outputs[2].stdout.splitlines()[0])
    assert row["input"]["prompt"] == "say [REDACTED] and [REDACTED]"
    assert row["job"] == "a"
    page = (tmp_path / "out" / "index.html").read_text()
    assert "r8_SECRET" not in page  # the gallery is made to be shared
    assert '"a"' in page


@pytest.mark.parametrize("field", ["id", "output"])
def test_an_id_or_output_shaped_like_a_token_is_a_manifest_error(emulator_server, tmp_path, field):
    job = {"id": "a", "model": FLUX, "input": {"prompt": "x"}, field: MANIFEST_TOKEN}
    write_jsonl(tmp_path / "m.jsonl", [job])

    for command in ("run", "validate"):
        result = engine_cli(tmp_path, cli_env(emulator_server), command, "m.jsonl")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert f"m.jsonl:1: {field}: [REDACTED] looks like an API token" in result.stderr
        assert "r8_SECRET" not in result.stderr + result.stdout
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0
