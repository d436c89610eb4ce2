"""Polling learns a model's run time: later predictions are not asked about too early."""

from __future__ import annotations

import pytest

from engine import read_manifest, run_jobs
from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from tests.e2e.helpers import FLUX, engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio

RUN = 0.5  # seconds per prediction, unscaled
JOBS = 15


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.0, run_time=RUN)})


async def test_predictions_after_the_first_few_cost_a_few_polls_each(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(JOBS))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=5)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.predictions_created) == (JOBS, JOBS)
    gets = emulator_server.emulator.stats.snapshot()["requests"]["predictions.get 200"]
    # Polled every 10 ms and then 10% of their age, the first 5 take ~8 GETs each to notice
    # a 0.5 s run; the other 10 start at 90% of the learned run time and need ~3 (measured:
    # 67 in all). Without learning: 15 x ~8 = 124 measured.
    assert gets < 5 * 10 + 10 * 4, gets
