"""Define the values a batch is made of: model references, jobs, their states and outputs.

Everything here is pure data: frozen, slotted, comparable, with no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "Job",
    "JobStatus",
    "ModelRef",
    "ModelRefError",
    "OutputFile",
    "RefKind",
]

# Replicate's owners and model names are lowercase letters, digits, "-", "_" and ".",
# starting with a letter or digit; a version id is 64 lowercase hex digits. Checked
# here so a typo fails on its manifest line, not as an HTTP 404 after other jobs ran.
_NAME = r"[a-z0-9][a-z0-9._-]*"
_MODEL_RE = re.compile(rf"(?P<owner>{_NAME})/(?P<name>{_NAME})(?::(?P<version>[^/]*))?")
_VERSION_RE = re.compile(r"[0-9a-f]{64}")
_DEPLOYMENT_PREFIX = "deployments/"
# One empty, read-only mapping shared by every job without defaults.
_NO_LINES: Mapping[str, int] = MappingProxyType({})


class ModelRefError(ValueError):
    """Raise when a model reference is not ``owner/name``, ``owner/name:version``
    or ``deployments/owner/name``."""


class RefKind(StrEnum):
    """Say which create endpoint a reference goes to."""

    MODEL = "model"  # POST /v1/models/{owner}/{name}/predictions
    VERSION = "version"  # POST /v1/predictions with {"version": ...}
    DEPLOYMENT = "deployment"  # POST /v1/deployments/{owner}/{name}/predictions


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model reference.

    ``owner/name`` runs the model's latest version, ``owner/name:version`` pins one,
    ``deployments/owner/name`` runs a deployment.
    """

    owner: str
    name: str
    version: str | None = None
    deployment: bool = False

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``text`` or raise `ModelRefError` saying what shape was expected."""
        raw = text.strip()
        deployment = raw.startswith(_DEPLOYMENT_PREFIX)
        body = raw.removeprefix(_DEPLOYMENT_PREFIX)
        match = _MODEL_RE.fullmatch(body)
        if match is None or (deployment and match["version"] is not None):
            hint = ""
            if body != body.lower() and _MODEL_RE.fullmatch(body.lower()):
                fixed = f"{_DEPLOYMENT_PREFIX if deployment else ''}{body.lower()}"
                hint = f" (names are lowercase on Replicate: did you mean {fixed!r}?)"
            raise ModelRefError(
                f"malformed model reference {text!r}: expected 'owner/name', "
                f"'owner/name:version' or 'deployments/owner/name'{hint}"
            )
        version = match["version"]
        if version is not None and not _VERSION_RE.fullmatch(version):
            raise ModelRefError(
                f"malformed version in {text!r}: a version id is 64 lowercase hex digits, "
                f"not {version!r}"
            )
        return cls(match["owner"], match["name"], version, deployment)

    @property
    def kind(self) -> RefKind:
        """Return the create endpoint this reference uses."""
        if self.deployment:
            return RefKind.DEPLOYMENT
        return RefKind.VERSION if self.version else RefKind.MODEL

    @property
    def slug(self) -> str:
        """Return ``owner/name`` without the version."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        if self.deployment:
            return f"{_DEPLOYMENT_PREFIX}{self.slug}"
        return f"{self.slug}:{self.version}" if self.version else self.slug


class JobStatus(StrEnum):
    """The state of one job, as replayed from the journal."""

    PENDING = "pending"  # nothing journaled yet
    CREATING = "creating"  # a create was sent; its prediction id is not known yet
    RUNNING = "running"  # a prediction id is journaled; not terminal yet
    SUCCEEDED = "succeeded"  # the prediction succeeded; outputs are not all on disk
    DONE = "done"  # every output is on disk, verified
    FAILED = "failed"  # the last attempt failed (see `permanent` on the state)
    CANCELED = "canceled"  # canceled by us (deadline, second Ctrl-C) or on Replicate


@dataclass(frozen=True, slots=True)
class Job:
    """One prediction to run and where its outputs go.

    ``key`` is the stable identity: the manifest ``id`` when given, else a hash of the
    model reference and the canonical input. ``output`` is the file stem, relative to the
    output folder (defaults to ``key``). ``source``/``line`` say where the job was defined.
    """

    key: str
    model: ModelRef
    input: dict[str, Any]
    output: str
    source: str = "<memory>"
    line: int = 0
    index: int = 0  # position in the manifest, for exports in manifest order
    explicit_id: bool = False
    # The `defaults` line of each input key the job took from there (shared, read-only).
    default_lines: Mapping[str, int] = field(default_factory=lambda: _NO_LINES, compare=False)

    @property
    def where(self) -> str:
        """Return ``file:line`` for messages."""
        return f"{self.source}:{self.line}"

    def where_input(self, name: str) -> str:
        """Return ``file:line`` of input key ``name``: the defaults' line if it came from there."""
        line = self.default_lines.get(name)
        return self.where if line is None else f"{self.source}:{line}"


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file on disk, verified: its path relative to the output folder, size and sha256."""

    name: str
    size: int
    sha256: str
    url: str | None = field(default=None, compare=False)
    content_type: str | None = field(default=None, compare=False)
