"""List the built-in models: versions, OpenAPI schemas, input validation and timings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.emulator.config import ModelTiming

__all__ = [
    "DEPLOYMENTS",
    "MODELS",
    "ModelSpec",
    "by_version",
    "canonical_key",
    "validate_input",
]

Kind = Literal[
    "image",
    "text",
    "video",
    "fails",
    "caption",
    "video_thumbnail",
    "segment",
    "detect",
    "multiview",
]
_CREATED_AT = "2024-06-01T12:00:00.000000Z"


def _version_id(name: str) -> str:
    return hashlib.sha256(f"emulator:{name}".encode()).hexdigest()


_PROMPT = {"type": "string", "title": "Prompt", "x-order": 0, "description": "Input prompt"}
_SEED = {"type": "integer", "title": "Seed", "x-order": 9, "description": "Random seed"}
_URI_LIST = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}


_IMAGE_IN = {
    "type": "string",
    "format": "uri",
    "title": "Image",
    "x-order": 0,
    "description": "Input image",
}
_URI = {"type": "string", "format": "uri"}


def _int(title: str, default: int, low: int, high: int, order: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "title": title,
        "default": default,
        "minimum": low,
        "maximum": high,
        "x-order": order,
    }


def _object(title: str, props: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "title": title, "required": required, "properties": dict(props)}


_BOX = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}


def _image_input(max_outputs: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "prompt": _PROMPT,
        "num_outputs": {
            "type": "integer",
            "title": "Num Outputs",
            "default": 1,
            "minimum": 1,
            "maximum": max_outputs,
            "x-order": 1,
        },
        "seed": _SEED,
        **(extra or {}),
    }
    return {"type": "object", "title": "Input", "required": ["prompt"], "properties": props}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model with its only version; ``kind`` picks how outputs are made."""

    owner: str
    name: str
    kind: Kind
    description: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    timing: ModelTiming = field(default_factory=ModelTiming)
    version: str = ""
    streamable: bool = False
    published: bool = True  # False: a model with no version yet (latest_version null)
    # Billing, as the API shows it: "output" models report metrics.image_count (Replicate
    # bills official image models per output); others are billed by predict time on
    # ``hardware``, which the prediction JSON names when set.
    billing: str = "time"
    hardware: str | None = None

    @property
    def ref(self) -> str:
        """Return ``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def version_id(self) -> str:
        """Return the 64-hex version id (fixed where the real one is well known)."""
        return self.version or _version_id(self.ref)

    def version_json(self) -> dict[str, Any]:
        """Return the Version object, with the schema ``run()`` inspects."""
        return {
            "id": self.version_id,
            "created_at": _CREATED_AT,
            "cog_version": "0.9.4",
            "openapi_schema": {
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "paths": {},
                "components": {
                    "schemas": {"Input": self.input_schema, "Output": self.output_schema}
                },
            },
        }

    def model_json(self) -> dict[str, Any]:
        """Return the Model object."""
        return {
            "url": f"https://replicate.com/{self.ref}",
            "owner": self.owner,
            "name": self.name,
            "description": self.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": 0,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": self.version_json() if self.published else None,
            "created_at": _CREATED_AT,
            "is_official": False,
        }


_MODELS = (
    ModelSpec(
        "black-forest-labs",
        "flux-schnell",
        "image",
        "Fast text-to-image (emulated)",
        _image_input(
            4,
            {
                "output_format": {
                    "type": "string",
                    "enum": ["webp", "jpg", "png"],
                    "default": "webp",
                    "x-order": 2,
                },
                "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 4},
            },
        ),
        _URI_LIST,
        ModelTiming(0.2, 0.6),
        billing="output",
    ),
    ModelSpec(
        "stability-ai",
        "sdxl",
        "image",
        "Stable Diffusion XL (emulated)",
        _image_input(
            4,
            {
                "width": {"type": "integer", "minimum": 128, "maximum": 1024, "default": 1024},
                "height": {"type": "integer", "minimum": 128, "maximum": 1024, "default": 1024},
            },
        ),
        _URI_LIST,
        ModelTiming(0.3, 0.9),
        version="39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
        hardware="gpu-a100-large",
    ),
    ModelSpec(
        "ai-forever",
        "kandinsky-2.2",
        "image",
        "Kandinsky 2.2 (emulated)",
        _image_input(4),
        _URI_LIST,
        ModelTiming(0.3, 0.8),
        version="ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a",
    ),
    ModelSpec(
        "meta",
        "meta-llama-3-70b-instruct",
        "text",
        "Llama 3 70B instruct (emulated)",
        {
            "type": "object",
            "title": "Input",
            "required": ["prompt"],
            "properties": {
                "prompt": _PROMPT,
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 64},
                "temperature": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.7},
            },
        },
        {
            "type": "array",
            "items": {"type": "string"},
            "title": "Output",
            "x-cog-array-type": "iterator",
            "x-cog-array-display": "concatenate",
        },
        ModelTiming(0.2, 0.8),
        streamable=True,
    ),
    ModelSpec(
        "kling-ai",
        "kling-video",
        "video",
        "Text-to-video (emulated); output size is the emulator's video_size",
        {
            "type": "object",
            "title": "Input",
            "required": ["prompt"],
            "properties": {
                "prompt": _PROMPT,
                "duration": {"type": "integer", "enum": [5, 10], "default": 5},
            },
        },
        {"type": "string", "format": "uri", "title": "Output"},
        ModelTiming(0.3, 1.2),
    ),
    ModelSpec(
        "emulator",
        "fails",
        "fails",
        "Always fails after running; validates its input like any model",
        {
            "type": "object",
            "title": "Input",
            "required": ["prompt"],
            "properties": {"prompt": _PROMPT},
        },
        {"type": "string", "title": "Output"},
        ModelTiming(0.1, 0.2),
    ),
    ModelSpec(
        "emulator",
        "captioner",
        "caption",
        "Image captioning: a caption and an annotated copy of the image",
        _object(
            "Input",
            {
                "image": _IMAGE_IN,
                "prompt": {**_PROMPT, "x-order": 1, "description": "Optional question"},
            },
            ["image"],
        ),
        _object(
            "ModelOutput",
            {
                "caption": {"type": "string", "title": "Caption"},
                "image": {**_URI, "title": "Image"},
            },
            ["caption", "image"],
        ),
        ModelTiming(0.1, 0.3),
    ),
    ModelSpec(
        "emulator",
        "video-thumbnail",
        "video_thumbnail",
        "Text-to-video with a poster frame: {video, thumbnail}",
        _object(
            "Input",
            {"prompt": _PROMPT, "duration": {"type": "integer", "enum": [5, 10], "default": 5}},
            ["prompt"],
        ),
        _object(
            "ModelOutput",
            {"video": {**_URI, "title": "Video"}, "thumbnail": {**_URI, "title": "Thumbnail"}},
            ["video", "thumbnail"],
        ),
        ModelTiming(0.3, 1.0),
    ),
    ModelSpec(
        "emulator",
        "segment-anything",
        "segment",
        "Segmentation: {masks: [url], boxes: [[x0, y0, x1, y1]], labels, scores}",
        _object(
            "Input", {"image": _IMAGE_IN, "max_masks": _int("Max Masks", 3, 1, 8, 1)}, ["image"]
        ),
        _object(
            "ModelOutput",
            {
                "masks": {"type": "array", "items": _URI, "title": "Masks"},
                "boxes": {"type": "array", "items": _BOX, "title": "Boxes"},
                "labels": {"type": "array", "items": {"type": "string"}, "title": "Labels"},
                "scores": {"type": "array", "items": {"type": "number"}, "title": "Scores"},
            },
            ["masks", "boxes", "labels", "scores"],
        ),
        ModelTiming(0.2, 0.5),
    ),
    ModelSpec(
        "emulator",
        "detect-objects",
        "detect",
        "Detection: a list of {mask, label, score, box}",
        _object(
            "Input", {"image": _IMAGE_IN, "max_objects": _int("Max Objects", 2, 1, 8, 1)}, ["image"]
        ),
        {
            "type": "array",
            "title": "Output",
            "items": _object(
                "Detection",
                {
                    "mask": {**_URI, "title": "Mask"},
                    "label": {"type": "string", "title": "Label"},
                    "score": {"type": "number", "title": "Score"},
                    "box": {**_BOX, "title": "Box"},
                },
                ["mask", "label", "score", "box"],
            ),
        },
        ModelTiming(0.2, 0.5),
    ),
    ModelSpec(
        "emulator",
        "multiview",
        "multiview",
        "Multi-view render: {preview, views: [{angle, image, depth: {map, range}}], meta}",
        _object(
            "Input", {"prompt": _PROMPT, "num_views": _int("Num Views", 2, 1, 6, 1)}, ["prompt"]
        ),
        _object(
            "ModelOutput",
            {
                "preview": {**_URI, "title": "Preview"},
                "views": {
                    "type": "array",
                    "title": "Views",
                    "items": _object(
                        "View",
                        {
                            "angle": {"type": "integer"},
                            "image": _URI,
                            "depth": _object(
                                "Depth",
                                {
                                    "map": _URI,
                                    "range": {"type": "array", "items": {"type": "number"}},
                                },
                                ["map", "range"],
                            ),
                        },
                        ["angle", "image", "depth"],
                    ),
                },
                "meta": {"type": "object", "title": "Meta"},
            },
            ["preview", "views", "meta"],
        ),
        ModelTiming(0.2, 0.6),
    ),
    ModelSpec(
        "emulator",
        "unpublished",
        "image",
        "A model created but with no version pushed yet: latest_version is null",
        _image_input(1),
        _URI_LIST,
        published=False,
    ),
)

MODELS: Mapping[str, ModelSpec] = {m.ref: m for m in _MODELS}
# Deployment -> the model of its current release; None: created, never released.
DEPLOYMENTS: Mapping[str, str | None] = {
    "emulator/flux": "black-forest-labs/flux-schnell",
    "emulator/sdxl": "stability-ai/sdxl",
    "emulator/llama": "meta/meta-llama-3-70b-instruct",
    "emulator/video": "kling-ai/kling-video",
    "emulator/segment": "emulator/segment-anything",
    "emulator/unreleased": None,
}
_BY_VERSION = {m.version_id: m for m in _MODELS if m.published}


def by_version(version: str) -> ModelSpec | None:
    """Find a model by a bare version id or ``owner/name:id``."""
    ref, _, vid = version.rpartition(":")
    model = _BY_VERSION.get(vid)
    if model is None or (ref and ref != model.ref):
        return None
    return model


_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _check(name: str, value: Any, prop: Mapping[str, Any]) -> dict[str, str] | None:
    expected = prop.get("type")
    types = _TYPES.get(str(expected))
    bad_bool = isinstance(value, bool) and expected in ("integer", "number")
    if types is not None and (bad_bool or not isinstance(value, types)):
        return {
            "type": "invalid_type",
            "field": f"input.{name}",
            "description": f"{name}: Invalid type. Expected: {expected}",
        }
    if "enum" in prop and value not in prop["enum"]:
        allowed = ", ".join(f'"{v}"' for v in prop["enum"])
        return {
            "type": "enum",
            "field": f"input.{name}",
            "description": f"{name} must be one of the following: {allowed}",
        }
    if "minimum" in prop and isinstance(value, int | float) and value < prop["minimum"]:
        return {
            "type": "number_gte",
            "field": f"input.{name}",
            "description": f"{name}: Must be greater than or equal to {prop['minimum']}",
        }
    if "maximum" in prop and isinstance(value, int | float) and value > prop["maximum"]:
        return {
            "type": "number_lte",
            "field": f"input.{name}",
            "description": f"{name}: Must be less than or equal to {prop['maximum']}",
        }
    return None


def validate_input(model: ModelSpec, data: Any) -> list[dict[str, str]]:
    """Return the invalid fields of ``data`` in Replicate's ``invalid_fields`` shape."""
    if not isinstance(data, dict):
        return [
            {"type": "invalid_type", "field": "input", "description": "input must be an object"}
        ]
    props: Mapping[str, Any] = model.input_schema.get("properties", {})
    problems = [
        {"type": "required", "field": "input", "description": f"{name} is required"}
        for name in model.input_schema.get("required", ())
        if name not in data
    ]
    for name, value in data.items():
        prop = props.get(name)
        # Unknown inputs are ignored, as cog does.
        problem = None if prop is None else _check(name, value, prop)
        if problem is not None:
            problems.append(problem)
    return problems


def canonical_key(model: ModelSpec, data: Any) -> str:
    """Return the (model, canonical input) key used for duplicate detection."""
    return f"{model.ref} {json.dumps(data, sort_keys=True, separators=(',', ':'))}"
