"""The batch engine's vocabulary: jobs, their identity, manifests and outputs.

Pure: no network, no event loop. `engine` imports this package, never the reverse.
"""

from jobs.errors import ManifestError
from jobs.identity import canonical_json, input_digest, job_key
from jobs.manifest import ManifestSummary, check_manifest, read_manifest
from jobs.model import Job, JobStatus, ModelRef, ModelRefError, OutputFile, RefKind
from jobs.names import ENGINE_FILES, EngineFiles
from jobs.outputs import (
    KeyPath,
    OutputItem,
    OutputKind,
    PlannedOutput,
    UnsafeOutputNameError,
    check_output_stem,
    normalise_output,
    plan_output_names,
    plan_outputs,
)

__all__ = [
    "ENGINE_FILES",
    "EngineFiles",
    "Job",
    "JobStatus",
    "KeyPath",
    "ManifestError",
    "ManifestSummary",
    "ModelRef",
    "ModelRefError",
    "OutputFile",
    "OutputItem",
    "OutputKind",
    "PlannedOutput",
    "RefKind",
    "UnsafeOutputNameError",
    "canonical_json",
    "check_manifest",
    "check_output_stem",
    "input_digest",
    "job_key",
    "normalise_output",
    "plan_output_names",
    "plan_outputs",
    "read_manifest",
]
