"""Lay out each model kind's output: a JSON template whose file slots become URLs.

A prediction's output is decided at creation as a template (plain JSON with `Slot`
markers) and a list of `OutputFile`s. ``render_output`` turns slots into the file URLs;
``inline_output`` turns small images into ``data:`` URIs at any depth, as sync creates do.
Everything is a pure function of the prediction's input, so tests can predict shapes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from engine.emulator.media import iter_video, png_bytes, tokens_for

__all__ = ["OutputFile", "Slot", "inline_output", "layout", "render_output"]

Content = Literal["png", "mp4"]
_MEDIA_TYPES: Mapping[Content, str] = {"png": "image/png", "mp4": "video/mp4"}
# A download needs a PNG's size, digest and bytes: make each once, not per use.
_png = functools.lru_cache(maxsize=512)(png_bytes)
_LABELS = ("cat", "dog", "person", "car", "tree", "bicycle", "bird", "chair")


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One output file: its name under ``/files/{id}/`` and what its bytes derive from."""

    name: str
    content: Content
    seed: str  # png: the pixel seed; mp4: the video id
    size: int = 0  # mp4 only; a png's size is that of its bytes

    @property
    def media_type(self) -> str:
        """Return the ``Content-Type`` the file is served with."""
        return _MEDIA_TYPES[self.content]

    def data(self, salt: str = "") -> bytes:
        """Return the whole file (PNGs only: videos are streamed, never held)."""
        assert self.content == "png", "videos are streamed"
        return _png(self.seed + salt)

    def chunks(self, salt: str) -> Callable[[int, int], Iterator[bytes]]:
        """Return a reader of bytes ``[start, stop)``; ``salt`` changes every byte source."""
        if self.content == "mp4":
            video_id, size = self.seed + salt, self.size

            def video(start: int, stop: int) -> Iterator[bytes]:
                return iter_video(video_id, size, start, stop)

            return video
        data = self.data(salt)

        def image(start: int, stop: int) -> Iterator[bytes]:
            yield data[start:stop]

        return image

    def identity(self, salt: str) -> str:
        """Return a digest of the bytes served (a strong validator for ``ETag``)."""
        if self.content == "mp4":
            source = f"mp4:{self.seed}{salt}:{self.size}".encode()
        else:
            source = self.data(salt)
        return hashlib.sha256(source).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Slot:
    """Where file ``index`` of the prediction goes in the output."""

    index: int


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _count(data: Mapping[str, Any], name: str, default: int) -> int:
    return int(data.get(name, default))


def _caption(data: Mapping[str, Any], key: str) -> tuple[Any, list[OutputFile]]:
    words = tokens_for(str(data.get("image", "")) + str(data.get("prompt", "")), 12)
    caption = "".join(words).strip()
    return {"caption": caption, "image": Slot(0)}, [OutputFile("out-0.png", "png", f"{key}#0")]


def _box(digest: bytes, i: int) -> list[int]:
    x, y = digest[i % 32] % 200, digest[(i + 7) % 32] % 200
    return [x, y, x + 16 + digest[(i + 3) % 32] % 48, y + 16 + digest[(i + 5) % 32] % 48]


def _score(digest: bytes, i: int) -> float:
    return round(0.5 + digest[(i + 11) % 32] / 512, 3)


def _segment(data: Mapping[str, Any], key: str) -> tuple[Any, list[OutputFile]]:
    count, digest = _count(data, "max_masks", 3), _digest(key)
    files = [OutputFile(f"mask-{i}.png", "png", f"{key}#mask{i}") for i in range(count)]
    return {
        "masks": [Slot(i) for i in range(count)],
        "boxes": [_box(digest, i) for i in range(count)],
        "labels": [_LABELS[digest[i] % len(_LABELS)] for i in range(count)],
        "scores": [_score(digest, i) for i in range(count)],
    }, files


def _detect(data: Mapping[str, Any], key: str) -> tuple[Any, list[OutputFile]]:
    count, digest = _count(data, "max_objects", 2), _digest(key)
    files = [OutputFile(f"object-{i}.png", "png", f"{key}#object{i}") for i in range(count)]
    return [
        {
            "mask": Slot(i),
            "label": _LABELS[digest[i] % len(_LABELS)],
            "score": _score(digest, i),
            "box": _box(digest, i),
        }
        for i in range(count)
    ], files


def _multiview(data: Mapping[str, Any], key: str) -> tuple[Any, list[OutputFile]]:
    count = _count(data, "num_views", 2)
    files = [OutputFile("preview.png", "png", f"{key}#preview")]
    views = []
    for i in range(count):
        files.append(OutputFile(f"view-{i}.png", "png", f"{key}#view{i}"))
        files.append(OutputFile(f"depth-{i}.png", "png", f"{key}#depth{i}"))
        views.append(
            {
                "angle": i * 360 // count,
                "image": Slot(2 * i + 1),
                "depth": {"map": Slot(2 * i + 2), "range": [0.1, 10.0]},
            }
        )
    return {"preview": Slot(0), "views": views, "meta": {"num_views": count}}, files


def layout(
    kind: str, data: Mapping[str, Any], key: str, *, video_id: str, video_size: int
) -> tuple[Any, list[OutputFile]]:
    """Return the output template and files of a prediction (``None, []`` for no files)."""
    if kind == "image":
        count = _count(data, "num_outputs", 1)
        files = [OutputFile(f"out-{i}.png", "png", f"{key}#{i}") for i in range(count)]
        return [Slot(i) for i in range(count)], files
    if kind == "video":
        return Slot(0), [OutputFile("output.mp4", "mp4", video_id, video_size)]
    if kind == "video_thumbnail":
        files = [
            OutputFile("output.mp4", "mp4", video_id, video_size),
            OutputFile("thumbnail.png", "png", f"{key}#thumbnail"),
        ]
        return {"video": Slot(0), "thumbnail": Slot(1)}, files
    shapes = {
        "caption": _caption,
        "segment": _segment,
        "detect": _detect,
        "multiview": _multiview,
    }
    if kind in shapes:
        return shapes[kind](data, key)
    return None, []


def _walk(template: Any, leaf: Callable[[Slot], Any]) -> Any:
    if isinstance(template, Slot):
        return leaf(template)
    if isinstance(template, list):
        return [_walk(v, leaf) for v in template]
    if isinstance(template, dict):
        return {k: _walk(v, leaf) for k, v in template.items()}
    return template


def render_output(template: Any, urls: list[str]) -> Any:
    """Return the output with every slot replaced by its file's URL."""
    return _walk(template, lambda slot: urls[slot.index])


def inline_output(
    template: Any, urls: list[str], files: list[OutputFile], budget: int, salt: str = ""
) -> Any:
    """Return the output with every image as a ``data:`` URI when their total fits ``budget``.

    All or nothing, as the real sync API answered for image models; videos stay URLs.
    """
    images = {i: f.data(salt) for i, f in enumerate(files) if f.content == "png"}
    if sum(len(d) for d in images.values()) > budget:
        return render_output(template, urls)

    def leaf(slot: Slot) -> str:
        data = images.get(slot.index)
        if data is None:
            return urls[slot.index]
        media_type = files[slot.index].media_type
        return f"data:{media_type};base64,{base64.b64encode(data).decode()}"

    return _walk(template, leaf)
