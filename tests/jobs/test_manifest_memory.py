"""Reading a manifest streams: memory grows by the duplicate table, never by the file.

Peak memory is measured as the growth of the peak resident set size of a fresh
interpreter (``ru_maxrss``), not with tracemalloc: tracing every allocation makes the
200,000-line read about five times slower, too slow for the default suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import resource, sys
from pathlib import Path
from jobs import read_manifest

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = sum(1 for _ in read_manifest(Path(sys.argv[1])))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, (after - before) / 1024)  # ru_maxrss is in KiB on Linux
"""


def write_jsonl(path: Path, count: int) -> None:
    line = (
        '{"model": "black-forest-labs/flux-schnell", "input": {"prompt": "a cat %d", "seed": %d}}\n'
    )
    # Formatting, not json.dumps: writing the file should not cost more than reading it.
    path.write_text("".join(line % (i, i) for i in range(count)), encoding="utf-8")


def write_yaml(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("defaults:\n  model: black-forest-labs/flux-schnell\njobs:\n")
        for i in range(count):
            out.write(f"  - input:\n      prompt: a cat, number {i}\n      seed: {i}\n")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ by platform")
@pytest.mark.parametrize(
    ("name", "count", "limit_mib"),
    [
        # Holding 200,000 jobs would take several hundred MiB; the duplicate table
        # (about 120 bytes a job) is what remains.
        ("big.jsonl", 200_000, 40),
        # A composed YAML document costs kilobytes per job; one job at a time does not.
        ("big.yaml", 10_000, 10),
    ],
)
def test_reading_streams(tmp_path: Path, name: str, count: int, limit_mib: int) -> None:
    path = tmp_path / name
    (write_jsonl if name.endswith(".jsonl") else write_yaml)(path, count)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    read, growth_mib = result.stdout.split()
    assert int(read) == count
    assert float(growth_mib) < limit_mib
