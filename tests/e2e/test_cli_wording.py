"""Counts read as words: "1 problem", "2 problems", never "1 problem(s)"."""

from __future__ import annotations

import io
import os
import re
import tokenize
from pathlib import Path

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
BAD_ID = "  - id: {}\n    model: a/b\n"


def no_token_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}


def test_a_manifest_s_problems_are_counted_in_words(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("jobs:\n" + BAD_ID.format("'my job'") + BAD_ID.format("ok"))
    (tmp_path / "two.yaml").write_text(
        "jobs:\n" + BAD_ID.format("'my job'") + BAD_ID.format("'x y'")
    )

    one = run_cli("validate", "one.yaml", env=no_token_env(), cwd=tmp_path)
    two = run_cli("validate", "two.yaml", env=no_token_env(), cwd=tmp_path)

    assert one.returncode == two.returncode == 2
    assert one.stderr.splitlines()[-1] == "1 problem in the manifest; nothing was run"
    assert two.stderr.splitlines()[-1] == "2 problems in the manifest; nothing was run"


def test_unknown_only_ids_are_counted_in_words(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))

    one = run_cli("run", "m.jsonl", "--only", "nope", env=no_token_env(), cwd=tmp_path)
    two = run_cli("run", "m.jsonl", "--only", "nope,zilch", env=no_token_env(), cwd=tmp_path)

    assert one.returncode == two.returncode == 2
    assert "--only names 1 id that no job has: 'nope'" in one.stderr
    assert "--only names 2 ids that no job has: 'nope', 'zilch'" in two.stderr
    assert not (tmp_path / "outputs").exists()


def test_status_export_and_gallery_of_one_run_say_one(emulator_server, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server)
    ran = run_cli("run", "m.jsonl", env=env, cwd=tmp_path)

    status = run_cli("status", "m.jsonl", env=env, cwd=tmp_path)
    export = run_cli("export", "m.jsonl", env=env, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert re.search(r"gallery: \S+index\.html \(1 job, 1 file\)", ran.stderr), ran.stderr
    assert status.returncode == 0, status.stderr
    assert re.search(r"^journal: \S+ \(\d+ records, 1 run\)$", status.stdout, re.M), status.stdout
    assert re.search(r"^manifest: \S+ \(1 job\)$", status.stdout, re.M), status.stdout
    assert export.stderr.strip() == "exported 1 file"


def _strings(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(t.start[0], t.string) for t in tokens if t.type == tokenize.STRING]


def test_no_message_of_the_engine_says_a_count_with_s_in_brackets() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for folder in ("engine", "jobs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, text in _strings(path)
        if re.search(r"(?<![\w.$])[a-z]+\(s\)", text.replace("http(s)", ""))
    ]

    assert found == []


def test_a_number_out_of_bounds_says_its_bound_in_words(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    redis = ("--redis", "redis://127.0.0.1:1/0", "--run", "night")
    cases = {
        ("run", "m.jsonl", "--max-spend", "0"): "--max-spend: must be more than 0, got '0'",
        ("worker", *redis, "--output-dir", "o", "--lease", "0"): "--lease: must be more than 0",
        ("run", "m.jsonl", *redis, "--workers", "0"): "--workers: must be at least 1, got '0'",
        ("run", "m.jsonl", "--concurrency", "0"): "--concurrency: must be at least 1, got '0'",
    }
    for args, said in cases.items():
        result = run_cli(*args, env=no_token_env(), cwd=tmp_path)

        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"error: {said}"), (args, result.stderr)
        assert "range" not in result.stderr
