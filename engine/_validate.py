"""Check a manifest against the models' input schemas before spending anything.

Only read endpoints are called (one model/version lookup per distinct model), within the
read budget; nothing is created.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine._config import EngineConfig
from engine._errors import ApiError, AuthenticationError, ConfigError, EngineError
from engine._gateway import Gateway
from engine._journal import load_journal
from engine._limits import Limits
from engine._precheck import check_journalable
from engine._pricing import Estimate, model_label
from engine._retry import RetryPolicy
from jobs import JobStatus, ManifestError, check_manifest, read_manifest
from jobs.schema import check_job_input, input_schema

__all__ = ["Plan", "validate_manifest"]


@dataclass(slots=True)
class Plan:
    """What a run of the manifest would do, and every problem found."""

    jobs: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    already_done: int = 0
    problems: list[str] = field(default_factory=list)
    estimate: Estimate | None = None  # with a price table: what the pending jobs would cost

    @property
    def ok(self) -> bool:
        """Tell whether the manifest can run as is."""
        return not self.problems


async def validate_manifest(
    manifest: Path, config: EngineConfig, *, allow_outside_files: bool = False
) -> Plan:
    """Parse everything, resolve every model's schema, check every job's input.

    ``allow_outside_files`` lets ``@file`` inputs leave the manifest's folder, as for a run.
    """
    plan = Plan(estimate=Estimate(config.prices) if config.prices else None)
    summary = check_manifest(manifest, allow_outside_files=allow_outside_files)
    plan.problems.extend(str(e) for e in summary.errors)
    if not summary.ok:
        return plan  # inputs of a manifest that does not parse cannot be trusted either
    journal = load_journal(config.journal_path) if config.journal_path.exists() else None
    schemas: dict[str, tuple[dict[str, Any], dict[str, Any]] | str] = {}
    limits = Limits.from_config(config)
    async with Gateway(config.api, limits, RetryPolicy.from_config(config)) as gateway:
        for job in read_manifest(manifest, allow_outside_files=allow_outside_files):
            plan.jobs += 1
            plan.by_model[str(job.model)] += 1
            try:
                check_journalable(job)
            except ManifestError as exc:
                plan.problems.append(str(exc))
            state = journal.jobs.get(job.key) if journal is not None else None
            done = state is not None and state.status is JobStatus.DONE
            plan.already_done += done
            ref = str(job.model)
            if ref not in schemas:
                schemas[ref] = await _schema(gateway, job.model)
            found = schemas[ref]
            if isinstance(found, str):
                plan.problems.append(f"{job.where}: model: {found}")
                continue
            schema, components = found
            if plan.estimate is not None:
                model = model_label(job.model)
                past = state.predict_time if state is not None and done else None
                plan.estimate.add(
                    model, job.input, schema, done_predict_time=past, pending=not done
                )
            plan.problems.extend(check_job_input(schema, job, components))
    return plan


async def _schema(gateway: Gateway, ref: Any) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """Return (Input schema, components) for ``ref``, or why it cannot be had."""
    try:
        version = await gateway.get_version(ref)
    except (AuthenticationError, ConfigError):
        raise  # the whole check cannot work: one error, not one per model
    except ApiError as exc:
        return f"cannot resolve {ref}: {exc.detail or exc.title or exc.status}"
    except EngineError as exc:
        return f"cannot resolve {ref}: {exc}"
    openapi = version.get("openapi_schema") or {}
    components = openapi.get("components", {}).get("schemas", {})
    return dict(input_schema(openapi)), dict(components)
