"""A default output folder is never silently shared by two manifests of one file name.

``A/night.jsonl`` and ``B/night.jsonl`` both default to ``outputs/night``. Shared, each
run took the other's jobs for its own changed ones, paid for them again and overwrote
their files and sidecars. The second manifest is refused (exit 2, one line naming both)
before any API call, until it is given its own ``--output-dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine._config import default_output_dir
from tests.e2e.helpers import FLUX, cli_env, engine_cli, journal_records, write_jsonl
from tests.e2e.test_refusals import assert_refused

ROOT = Path(__file__).resolve().parents[2]


def _night(tmp_path: Path, folder: str, prompt: str) -> Path:
    (tmp_path / folder).mkdir()
    jobs = [
        {
            "id": f"n{i}",
            "model": FLUX,
            "input": {"prompt": f"{prompt} {i}"},
        }
        for i in range(2)
    ]
    return write_jsonl(tmp_path / folder / "night.jsonl", jobs)


@pytest.fixture
def two_nights(emulator_server, tmp_path):
    _night(tmp_path, "A", "a lighthouse")
    _night(tmp_path, "B", "a windmill")
    env = cli_env(emulator_server)
    first = engine_cli(tmp_path, env, "run", "A/night.jsonl", "--poll-interval", "0.02", "-q")
    assert first.returncode == 0, first.stderr
    return env


@pytest.mark.parametrize(
    "command",
    [
        ("run", "B/night.jsonl"),
        ("run", "B/night.jsonl", "--dry-run"),
        ("validate", "B/night.jsonl"),
        ("cancel", "B/night.jsonl"),
        ("status", "B/night.jsonl"),
        ("export", "B/night.jsonl"),
        ("gallery", "B/night.jsonl"),
    ],
    ids=lambda c: " ".join(c[::2] if len(c) > 2 else c[:1]),
)
def test_a_second_manifest_of_the_same_name_is_refused_its_default_folder(
    emulator_server, tmp_path, two_nights, command
):
    journal = tmp_path / "outputs" / "night" / "journal.jsonl"
    before = journal.read_bytes()
    requests = emulator_server.emulator.stats.snapshot()["requests"]

    result = engine_cli(tmp_path, two_nights, *command)

    line = assert_refused(result, "--output-dir", "same file name")
    assert str((tmp_path / "A" / "night.jsonl").resolve()) in line
    assert str((tmp_path / "B" / "night.jsonl").resolve()) in line
    assert journal.read_bytes() == before  # nothing journaled, nothing overwritten
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["requests"] == requests  # no API call
    assert stats["predictions_created"] == 2


def test_each_manifest_pays_once_in_its_own_folder(emulator_server, tmp_path, two_nights):
    # B given its own folder; then A, B, A again: nothing is paid twice.
    argv = ("--poll-interval", "0.02", "-q")
    b = engine_cli(tmp_path, two_nights, "run", "B/night.jsonl", "--output-dir", "out-b", *argv)
    again = engine_cli(tmp_path, two_nights, "run", "A/night.jsonl", *argv)
    b_again = engine_cli(
        tmp_path, two_nights, "run", "B/night.jsonl", "--output-dir", "out-b", *argv
    )

    assert (b.returncode, again.returncode, b_again.returncode) == (0, 0, 0), b.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 4
    assert stats["duplicates"] == {}
    for folder, manifest in (("outputs/night", "A"), ("out-b", "B")):
        records = journal_records(tmp_path / folder / "journal.jsonl")
        assert {r.get("m") for r in records if r["e"] == "run"} == {
            str((tmp_path / manifest / "night.jsonl").resolve())
        }
        assert sum(r["e"] == "created" for r in records) == 2
        sidecar = json.loads((tmp_path / folder / "n0.info.json").read_text())
        assert sidecar["input"]["prompt"] == (
            "a lighthouse 0" if manifest == "A" else "a windmill 0"
        )


def test_the_shipped_examples_have_folders_of_their_own() -> None:
    examples = sorted(p for p in (ROOT / "manifests").iterdir() if p.suffix in (".yaml", ".jsonl"))
    examples = [p for p in examples if not p.name.startswith("prices")]
    assert len(examples) == 2, examples
    folders = {default_output_dir(p) for p in examples}
    assert len(folders) == len(examples), folders
