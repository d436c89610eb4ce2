"""The output-name examples of manifests/README.md are what the reader makes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jobs import read_manifest

README = Path(__file__).resolve().parents[2] / "manifests" / "README.md"
FLUX = "black-forest-labs/flux-schnell"
ROW = re.compile(r"^\| `(?P<template>[^`]+)`(?: \(the default\))? \| `(?P<stem>[^`]+)` \|$")


def _examples() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| Template | Stem |") :].split("\n\n", 1)[0]
    return [(m["template"], m["stem"]) for m in map(ROW.match, table.splitlines()) if m]


def test_every_example_stem_is_what_the_template_gives(tmp_path: Path) -> None:
    examples = _examples()
    assert len(examples) == 5
    job = {"model": FLUX, "input": {"prompt": "A Red Fox, at Dawn", "seed": 42}}
    others = [{"model": FLUX, "input": {"prompt": f"x{i}"}} for i in range(3)]  # index 3
    for template, stem in examples:
        path = tmp_path / "m.jsonl"
        rows = [*others, {**job, "output": template}]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        assert list(read_manifest(path))[-1].output == stem, template
