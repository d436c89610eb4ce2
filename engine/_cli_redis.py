"""The commands that coordinate a run through Redis: ``run --redis``, ``worker``, ``journal``.

redis-py is imported only when one of them runs (`cluster_cli`); without the extra the
command says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import click

from engine._cli_options import embed_metadata, epilog, json_logs, no_sidecars, quiet_verbose
from engine._cli_stop import Stop, checked_total
from engine._cluster._args import REDIS_EXTRA_HINT, RUN_ONLY_FLAGS, lease_options, redis_options
from engine._config import ApiConfig, EngineConfig, journal_path
from engine._errors import AuthenticationError, ConfigError
from engine._paths import InputsApart, check_paths, engine_files
from engine._settings import (
    RUN_SETTINGS,
    api_settings,
    config_option,
    given_settings,
    option,
    setting_options,
)
from jobs import read_manifest

__all__ = ["cluster_call", "cluster_cli", "journal", "run_on_redis", "worker"]


def cluster_cli() -> Any:
    """Import the Redis commands (and so redis-py): only a command that uses --redis does."""
    try:
        from engine._cluster import _cli  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "redis" and not (exc.name or "").startswith("redis."):
            raise
        raise Stop(REDIS_EXTRA_HINT) from None
    return _cli


def cluster_call(func: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """Call a Redis command; its configuration errors end the command in one line."""
    try:
        return func(*args, **kwargs)
    except (AuthenticationError, ConfigError) as exc:
        raise Stop(str(exc)) from None


def _cluster_options(options: dict[str, Any]) -> Any:
    from engine._cluster._worker import ClusterOptions  # noqa: PLC0415 - imports redis

    return ClusterOptions(options["redis_url"], options["run_name"], lease=options["lease"])


def _engine_config(api: dict[str, Any], **kwargs: Any) -> EngineConfig:
    """Build the config once: the environment's API settings with the flags given over them."""
    try:
        return EngineConfig(api=replace(ApiConfig.from_env(os.environ), **api), **kwargs)
    except ConfigError as exc:
        raise Stop(str(exc)) from None


def run_on_redis(
    ctx: click.Context, manifest: Path, output_dir: Path, options: dict[str, Any]
) -> int:
    """``run --redis``: submit the manifest, work it with --workers processes here."""
    if not (options["redis_url"] and options["run_name"]):
        raise Stop("--redis needs --run NAME (and --run needs --redis URL)")
    settings, api = given_settings(ctx), api_settings(ctx)
    given = settings | api
    fields = {s.param: s.field for s in RUN_SETTINGS}
    refused = [
        flag
        for name, flag in RUN_ONLY_FLAGS.items()
        if (given.get(fields[name]) if name in fields else options.get(name))
    ]
    if refused:
        raise Stop(f"{', '.join(refused)} cannot be used with --redis yet")
    cluster = cluster_cli()
    with ExitStack() as stack:
        cluster.configure_cluster_logging(
            stack,
            quiet=options["quiet"],
            verbose=options["verbose"],
            json_logs=options["json_logs"],
        )
        outside = options["allow_outside_files"]
        journal = journal_path(output_dir)
        kept = {"--json-logs": options["json_logs"], "the journal": journal}
        inputs = InputsApart(output_dir, kept | engine_files(output_dir, journal))
        total = checked_total(
            manifest, journal.parent, allow_outside_files=outside, local_file=inputs
        )
        inputs.check(partial(read_manifest, manifest, allow_outside_files=outside))
        config = _engine_config(
            api,
            output_dir=output_dir,
            sidecars=not options["no_sidecars"],
            embed_metadata=options["embed_metadata"],
            **settings,
        )
        worker_args = [
            *(["-q"] if options["quiet"] else []),
            *(["-v"] if options["verbose"] else []),
            *(["--json-logs", str(options["json_logs"])] if options["json_logs"] else []),
        ]
        return cluster_call(
            cluster.run_on_redis,
            manifest,
            config,
            _cluster_options(options),
            workers=options["workers"],
            total=total,
            allow_outside_files=outside,
            worker_args=worker_args,
        )


@click.command(
    short_help="Join a run coordinated by Redis and take its jobs.",
    epilog=epilog(
        "replicate-batch worker --redis redis://host:6379/0 --run night \\\n--output-dir out/",
        "replicate-batch worker --redis redis://host:6379/0 --run night \\\n"
        "--output-dir out/ --concurrency 8 --json-logs worker.log",
        codes_of="worker",
    ),
)
@redis_options(required=True, what="The Redis the run is coordinated through")
@option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Where this machine writes outputs (and its own journal under .cluster/).",
)
@setting_options(
    "concurrency",
    "rate-limit",
    "read-rate-limit",
    "max-retries",
    "poll-interval",
    "job-timeout",
    "attempt-timeout",
    "shutdown-grace",
    "settle",
    "retry-failed",
)
@config_option()
@embed_metadata
@no_sidecars
@lease_options
@quiet_verbose("Log only errors.", "Log debug events too.")
@json_logs("standard error", "Append the JSON log lines to PATH.")
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> int:
    """Join a run coordinated by Redis: take its jobs until every one has an outcome.

    Start the run with 'run MANIFEST --redis URL --run NAME'; a worker may join before or
    after. The rate limits are the account's, shared by every worker through Redis.
    """
    cluster = cluster_cli()
    with ExitStack() as stack:
        cluster.configure_cluster_logging(
            stack,
            quiet=options["quiet"],
            verbose=options["verbose"],
            json_logs=options["json_logs"],
        )
        config = _engine_config(
            api_settings(ctx),
            output_dir=options["output_dir"],
            sidecars=not options["no_sidecars"],
            embed_metadata=options["embed_metadata"],
            **given_settings(ctx),
        )
        result: int = cluster_call(cluster.serve_on_redis, config, _cluster_options(options))
        return result


@click.group(
    short_help="Write a Redis run's state as a standard journal.",
    epilog=epilog(
        "replicate-batch journal export --redis redis://host:6379/0 --run night \\\n"
        "--output night.jsonl",
    ),
)
def journal() -> None:
    """Journal tools: write a Redis run's state as a standard journal."""


@journal.command(
    "export",
    short_help="Write a Redis run's state as a standard journal.",
    epilog=epilog(
        "replicate-batch journal export --redis redis://host:6379/0 --run night \\\n"
        "--output night.jsonl",
        "replicate-batch run night.jsonl --state night.jsonl --output-dir out/",
        codes_of="journal export",
    ),
)
@redis_options(required=True, what="The Redis the run is coordinated through")
@option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    metavar="JOURNAL",
    help="Write the journal here (atomically); 'run --state JOURNAL' resumes from it.",
)
def journal_export(redis_url: str, run_name: str, output: Path) -> int:
    """Write a standard journal of a Redis run: every job's records, no network to Replicate.

    A single-machine 'run --state JOURNAL' then finishes what the cluster started.
    """
    check_paths(reads={}, writes={"--output": output})  # not a folder, a FIFO, a device
    cluster = cluster_cli()
    result: int = cluster_call(cluster.export_from_redis, redis_url, run_name, output)
    return result
