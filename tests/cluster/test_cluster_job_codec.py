"""A job travels through Redis as JSON and comes back the same, ``@path`` files included."""

from __future__ import annotations

from pathlib import Path

from engine._cluster._queue import job_from_json, job_to_json
from jobs import Job, ModelRef


def test_files_at_any_depth_come_back_as_files_and_strings_stay_strings() -> None:
    job = Job(
        key="k1",
        model=ModelRef.parse("black-forest-labs/flux-schnell"),
        input={
            "image": Path("/data/a.png"),
            "masks": [Path("/data/m0.png"), {"inner": Path("/data/m1.png")}],
            "prompt": "/data/a.png",  # looks like a path: stays text
            "n": 2,
        },
        output="a",
        source="m.jsonl",
        line=3,
        index=2,
    )
    back = job_from_json(job_to_json(job))
    assert back == job
    assert isinstance(back.input["masks"][1]["inner"], Path)
    assert isinstance(back.input["prompt"], str)
