"""The declared public surface of `jobs`, and its independence from `engine`."""

from __future__ import annotations

import subprocess
import sys

import jobs


def test_all_is_sorted_and_complete() -> None:
    assert jobs.__all__ == sorted(jobs.__all__)
    for name in jobs.__all__:
        assert hasattr(jobs, name), name


def test_jobs_never_imports_engine() -> None:
    code = "import sys, jobs, jobs.manifest, jobs.outputs; print('engine' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
