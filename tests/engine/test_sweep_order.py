"""The order a sweep reads the prediction list in: the oldest first, and the oldest again.

A `Sweeper` over a real `Gateway`, against the emulator over HTTPS: predictions are
created and left to end, then one sweep is run by hand and what it hands over, and in
which order, is observed through the watches' wake-ups.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import anyio
import pytest

from engine._config import ApiConfig
from engine._control import RunControl
from engine._gateway import Gateway
from engine._limits import Budget, Limits
from engine._prediction import Prediction
from engine._retry import RetryPolicy
from engine._sweep import Sweeper, Watch
from jobs.model import ModelRef

pytestmark = pytest.mark.anyio

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")
FAST = RetryPolicy(attempts=4, timeout=30, wait_initial=0.001, wait_max=0.01)


@pytest.fixture
async def gateway(api: ApiConfig) -> AsyncIterator[Gateway]:
    limits = Limits(create=Budget("create", 600_000), read=Budget("read", 600_000))
    async with Gateway(api, limits, FAST) as gw:
        yield gw


async def _ended(gateway: Gateway, n: int) -> list[Prediction]:
    """Create ``n`` predictions and wait until all ended; return them oldest first."""
    created: list[Prediction] = []

    async def create(i: int) -> None:
        created.append(await gateway.create(FLUX, {"prompt": f"p{i}"}))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(create, i)
    created.sort(key=lambda p: p.created_at or "")  # one format: ISO strings sort as times
    last = created[-1]
    while not last.status.terminal:  # predictions take ~20 ms here (tests/engine/conftest.py)
        await anyio.sleep(0.005)
        last = await gateway.get(last.id)
    return created


async def _sweep_once(
    gateway: Gateway, predictions: list[Prediction], **options: Any
) -> tuple[Sweeper, list[str]]:
    """Watch ``predictions``, run one sweep; return it and the ids in the order woken."""
    sweeper = Sweeper(gateway, gateway.limits.read, RunControl(), **options)
    woken: list[str] = []

    async def wait(watch: Watch) -> None:
        await watch.wait()
        woken.append(watch.id)

    with ExitStack() as stack:
        async with anyio.create_task_group() as tg:
            for prediction in predictions:
                watch = stack.enter_context(sweeper.watch(prediction.id))
                watch.saw(prediction)
                tg.start_soon(wait, watch)
            await anyio.sleep(0)  # every waiter is waiting before the sweep starts
            await sweeper.sweep()
    return sweeper, woken


async def test_a_sweep_hands_over_the_oldest_predictions_first(gateway, server):
    # Two slices of ours: the oldest 100, then the newest 50. Their waiters run while
    # the second page is on its way, so the order woken is the order read.
    created = await _ended(gateway, 150)
    sweeper, woken = await _sweep_once(gateway, created)
    assert sweeper.delivered == 150
    assert set(woken[:100]) == {p.id for p in created[:100]}
    assert set(woken[100:]) == {p.id for p in created[100:]}
    assert (
        sweeper.pages == 2 == server.emulator.stats.snapshot()["requests"]["predictions.list 200"]
    )


async def test_a_long_sweep_reads_the_oldest_slice_again_between_the_others(gateway, server):
    # With no minimum interval the head (the oldest still waiting) is read again before
    # the later slices, page after page while whole pages of it have ended: 3 slices
    # cost 5 pages, and no prediction is handed over twice.
    created = await _ended(gateway, 250)
    sweeper, woken = await _sweep_once(gateway, created, min_interval=0.0)
    assert (
        sweeper.pages == 5 == server.emulator.stats.snapshot()["requests"]["predictions.list 200"]
    )
    assert sweeper.delivered == 250
    assert sorted(woken) == sorted(p.id for p in created)
    assert sweeper.duplicates == 0


async def test_while_sweeps_run_a_new_prediction_waits_for_the_next_one(gateway, server):
    # Made while sweeps run and succeed, a prediction is the sweep's from the start (no
    # GET of its own), except while its creation time is unknown: no window holds it.
    first, ended = await _ended(gateway, 2)
    sweeper = Sweeper(gateway, gateway.limits.read, RunControl())
    sweeper.active = True  # as while a run sweeps
    with sweeper.watch(first.id) as before:
        assert before.needs_get()  # no sweep has succeeded yet: its worker polls
        before.saw(first)
        await sweeper.sweep()
    gets = server.emulator.stats.snapshot()["requests"].get("predictions.get 200", 0)
    with sweeper.watch(ended.id) as watch:
        assert watch.needs_get()  # reattached after a restart: made when, unknown
        watch.saw(ended)
        assert not watch.needs_get()
        await sweeper.sweep()
        listed = watch.take()
    assert listed is not None
    assert (listed.id, listed.status.terminal) == (ended.id, True)
    assert server.emulator.stats.snapshot()["requests"].get("predictions.get 200", 0) == gets
