"""Replicate's create paths by reference kind, and the ids read out of its JSON.

Split from `engine._gateway` (issue 11).
"""

from __future__ import annotations

from collections.abc import Mapping

from jobs.model import ModelRef, RefKind

__all__ = ["create_path", "id_of", "model_slug"]


def id_of(version: object) -> str | None:
    """Return a version's id from its id string or its object; None when there is none."""
    if isinstance(version, Mapping):
        version = version.get("id")
    return version if isinstance(version, str) and version else None


def model_slug(model: object) -> str | None:
    """Return ``owner/name`` from a release's ``model`` (a string, or a Model object)."""
    if isinstance(model, Mapping):
        owner, name = model.get("owner"), model.get("name")
        return f"{owner}/{name}" if isinstance(owner, str) and isinstance(name, str) else None
    if isinstance(model, str) and model.count("/") == 1 and all(model.split("/")):
        return model
    return None


def create_path(ref: ModelRef) -> str:
    if ref.kind is RefKind.MODEL:
        return "/v1/models/{owner}/{name}/predictions"
    if ref.kind is RefKind.DEPLOYMENT:
        return "/v1/deployments/{owner}/{name}/predictions"
    return "/v1/predictions"
