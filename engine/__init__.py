"""Run thousands of Replicate predictions: bounded, rate-limited, resumable, paid for once.

The public surface: the batch runner (`run_jobs`, `open_run`), its configuration and
events, the seed document's `ReplicateClient`, and the error tree. Nothing is created
at import time.
"""

from engine._client import ReplicateClient, get_replicate_client, reset_replicate_client
from engine._config import ApiConfig, EngineConfig, Secret
from engine._control import RunControl
from engine._errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    DownloadError,
    EngineError,
    IntegrityError,
    InvalidRequestError,
    JournalLockedError,
    ModelError,
    OutputExpiredError,
    PredictionCanceledError,
    PredictionError,
    PredictionMayExistError,
    PredictionTimeoutError,
    RateLimitedError,
    ServerError,
    StorageError,
    TransportError,
    UnexpectedResponseError,
)
from engine._events import JobEvent, JobEventKind
from engine._handle import RunHandle, open_run
from engine._prediction import Prediction, PredictionStatus
from engine._report import RunSummary
from engine._runner import JobSource, run_jobs
from jobs import Job, ManifestError, ModelRef, read_manifest

__all__ = [
    "ApiConfig",
    "ApiError",
    "AuthenticationError",
    "ConfigError",
    "DownloadError",
    "EngineConfig",
    "EngineError",
    "IntegrityError",
    "InvalidRequestError",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobSource",
    "JournalLockedError",
    "ManifestError",
    "ModelError",
    "ModelRef",
    "OutputExpiredError",
    "Prediction",
    "PredictionCanceledError",
    "PredictionError",
    "PredictionMayExistError",
    "PredictionStatus",
    "PredictionTimeoutError",
    "RateLimitedError",
    "ReplicateClient",
    "RunControl",
    "RunHandle",
    "RunSummary",
    "Secret",
    "ServerError",
    "StorageError",
    "TransportError",
    "UnexpectedResponseError",
    "get_replicate_client",
    "open_run",
    "read_manifest",
    "reset_replicate_client",
    "run_jobs",
]
