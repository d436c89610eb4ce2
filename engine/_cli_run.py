"""Run one batch for the command line: the API (or the emulator), signals, live progress."""

from __future__ import annotations

import importlib.util
import os
import signal
from contextlib import ExitStack
from pathlib import Path

import anyio
import structlog
from rich.console import Console

from engine._config import ApiConfig, EngineConfig, Secret
from engine._control import RunControl, StopStage
from engine._display import Progress
from engine._errors import ConfigError, EngineError, one_error
from engine._report import RunSummary
from engine._runner import run_jobs_counted
from jobs import read_manifest

__all__ = ["api_config", "run_batch"]

_EMULATOR_STACK = ("starlette", "uvicorn", "trustme")  # the [emulator] extra

log = structlog.get_logger("engine.cli")


def run_batch(
    manifest: Path,
    config: EngineConfig,
    progress: Progress,
    *,
    show: bool,
    allow_outside_files: bool = False,
) -> RunSummary:
    """Run the batch with its progress display and signal handling.

    Raises `ConfigError`, `AuthenticationError` or `StorageError` (out of the task groups,
    one error) when the token, authentication or the disk makes the run impossible: the
    CLI turns it into exit code 2.
    """
    problem: BaseException
    config.api.require_token(how=None)
    try:
        return anyio.run(_run_async, manifest, config, progress, show, allow_outside_files)
    except* (EngineError, OSError) as group:  # the signal task group wraps run_jobs' error
        problem = one_error(group)  # an OSError (a report the disk refused) as StorageError
    raise problem


async def _run_async(
    manifest: Path, config: EngineConfig, progress: Progress, show: bool, allow_outside: bool
) -> RunSummary:
    control = RunControl()
    log.info(
        "run.started",
        manifest=str(manifest),
        jobs=progress.total,
        output_dir=str(config.output_dir.resolve()),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, control, config, progress)
        if show:
            tg.start_soon(progress.run)
        # The display's own stats: the panel counts download bytes as they arrive.
        summary = await run_jobs_counted(
            # checked_job_count read the whole file (or its stamp vouches for it).
            lambda: read_manifest(
                manifest, trust_earlier_check=True, allow_outside_files=allow_outside
            ),
            config,
            stats=progress.stats,
            control=control,
        )
        tg.cancel_scope.cancel()
    return summary


async def _handle_signals(control: RunControl, config: EngineConfig, progress: Progress) -> None:
    """Climb the stop ladder, one step per Ctrl-C or SIGTERM, and say each step's truth.

    First: drain (no new creates; running predictions and their downloads finish, for at
    most ``config.shutdown_grace`` seconds: then what still runs is left journaled and
    named). Second: cancel them on Replicate (bounded by the same grace). Third: exit at
    once, leaving them journaled. With ``--cancel-on-exit`` the first signal cancels. The
    panel (or the progress line) keeps showing the stage with live counts; hung API calls
    are bounded by their own deadlines.
    """
    say = progress.console or Console(stderr=True)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            stage = control.escalate(name, cancel_first=config.cancel_on_exit)
            progress.stage = stage
            log.debug("run.stopping", signal=name, stage=str(stage))
            bound = ""
            if stage is StopStage.DRAINING:
                bound = f" (what still runs after {config.shutdown_grace:g} s is left running)"
            say.print(
                f"{name}: {progress.stage_line()}{bound}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            if stage is StopStage.LEAVING:
                return


def api_config(emulator: bool, stack: ExitStack, console: Console) -> ApiConfig:
    """Return the API to talk to: the environment's, or a built-in emulator ``stack`` owns."""
    if not emulator:
        return ApiConfig.from_env(os.environ)
    missing = [name for name in _EMULATOR_STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"the emulator needs {', '.join(missing)}: "
            "pip install 'replicate-batch-engine[emulator]'"
        )
    from engine.emulator import EmulatorConfig, EmulatorServer  # noqa: PLC0415

    server = stack.enter_context(EmulatorServer(EmulatorConfig()))
    console.print(
        f"emulator: serving the Replicate API at {server.base_url}", markup=False, highlight=False
    )
    return ApiConfig(token=Secret(server.token), base_url=server.base_url, ca_file=server.ca_file)
