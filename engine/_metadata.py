"""Write the prompt and the key parameters into image files, without re-encoding pixels.

PNG gets text chunks as Stable Diffusion tools write them, with the standard library only:
``parameters`` in AUTOMATIC1111's layout (readable by its "PNG info" tab and by
exiftool), ``Description`` (the prompt, a standard PNG keyword) and ``Software``, plus
``replicate:model``, ``replicate:version``, ``replicate:prediction`` and
``replicate:input`` (JSON). Latin-1 text goes in ``tEXt``, anything else in ``iTXt``. The
prompt is deliberately not written under ``prompt``: ComfyUI reads that keyword as its own
JSON graph.

JPEG and WebP carry the same text in EXIF (``UserComment`` holds ``parameters``, as A1111
writes it; ``ImageDescription`` the prompt). The EXIF block is built by Pillow, an optional
extra (``pip install 'replicate-batch-engine[images]'``), and spliced into the file as an
APP1 segment or a RIFF ``EXIF`` chunk: the compressed image data is copied byte for byte.

Every change is written to a temporary file, fsynced and renamed over the original; the
caller records the new size and sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from engine._durable import write_durably
from engine._errors import StorageError
from engine._logs import get_logger
from engine._prediction import Prediction
from jobs import Job

__all__ = [
    "IMAGES_EXTRA_HINT",
    "ImagesExtraMissingError",
    "a1111_parameters",
    "embed_metadata",
    "embed_output_metadata",
    "image_fields",
    "images_extra_available",
]

log = get_logger("engine.metadata")

IMAGES_EXTRA_HINT = (
    "JPEG and WebP metadata needs Pillow: pip install 'replicate-batch-engine[images]'"
)
SOFTWARE = "replicate-batch-engine"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")
_USER_COMMENT, _IMAGE_DESCRIPTION, _SOFTWARE_TAG, _EXIF_IFD = 0x9286, 0x010E, 0x0131, 0x8769
# Input fields shown in the ``parameters`` line, with A1111's names for them.
_PARAMETER_NAMES = (
    ("num_inference_steps", "Steps"),
    ("steps", "Steps"),
    ("scheduler", "Sampler"),
    ("guidance_scale", "CFG scale"),
    ("guidance", "CFG scale"),
    ("seed", "Seed"),
    ("aspect_ratio", "Aspect ratio"),
    ("output_format", "Format"),
)


class ImagesExtraMissingError(RuntimeError):
    """Raise when a JPEG or WebP needs Pillow and the ``images`` extra is not installed."""


def images_extra_available() -> bool:
    """Tell whether Pillow (the ``images`` extra) can be imported."""
    try:
        import PIL.Image  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def a1111_parameters(
    inputs: Mapping[str, Any], *, model: str, version: str | None, prediction_id: str
) -> str:
    """Return ``parameters`` in AUTOMATIC1111's layout: prompt, negative prompt, settings."""
    lines = [str(inputs.get("prompt") or "")]
    negative = inputs.get("negative_prompt")
    if isinstance(negative, str) and negative:
        lines.append(f"Negative prompt: {negative}")
    settings: dict[str, str] = {}
    for field, name in _PARAMETER_NAMES:
        if field in inputs and name not in settings:
            settings[name] = _value(inputs[field])
    width, height = inputs.get("width"), inputs.get("height")
    if isinstance(width, int) and isinstance(height, int):
        settings["Size"] = f"{width}x{height}"
    settings["Model"] = _value(model)
    if version:
        settings["Version"] = version
    settings["Replicate prediction"] = prediction_id
    lines.append(", ".join(f"{name}: {value}" for name, value in settings.items()))
    return "\n".join(lines)


def image_fields(
    inputs: Mapping[str, Any], *, model: str, version: str | None, prediction_id: str
) -> dict[str, str]:
    """Return the text fields written into an image made by ``prediction_id``."""
    fields = {
        "parameters": a1111_parameters(
            inputs, model=model, version=version, prediction_id=prediction_id
        ),
        "Software": SOFTWARE,
        "replicate:model": model,
        "replicate:prediction": prediction_id,
        "replicate:input": json.dumps(dict(inputs), ensure_ascii=False, sort_keys=True),
    }
    prompt = inputs.get("prompt")
    if isinstance(prompt, str) and prompt:
        fields["Description"] = prompt
    if version:
        fields["replicate:version"] = version
    return fields


def embed_metadata(path: Path, fields: Mapping[str, str]) -> tuple[int, str] | None:
    """Write ``fields`` into the image at ``path``; return its new (size, sha256).

    Return None when the file is not a PNG, JPEG or WebP (it is left as it is). Raise
    `ImagesExtraMissingError` for a JPEG or WebP without Pillow. Blocking: run it in a
    worker thread.
    """
    data = path.read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        new = _png_with_text(data, fields)
    elif data.startswith(b"\xff\xd8\xff"):
        new = _jpeg_with_exif(data, _exif_bytes(data, fields))
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        new = _webp_with_exif(data, _exif_bytes(data, fields))
    else:
        return None
    write_durably(path, new)
    return len(new), hashlib.sha256(new).hexdigest()


async def embed_output_metadata(
    path: Path, job: Job, prediction: Prediction, stored: tuple[int, str]
) -> tuple[int, str]:
    """Embed ``prediction``'s prompt and parameters in the output at ``path``.

    Return the file's (size, sha256) after embedding, or ``stored`` when the file is left
    as it is (not an image, or a JPEG/WebP without the images extra). Raise `StorageError`
    when the disk refuses the rewrite.
    """
    inputs = prediction.input if prediction.input is not None else job.input
    fields = image_fields(
        inputs,
        model=prediction.model or job.model.slug,
        version=prediction.version or job.model.version,
        prediction_id=prediction.id,
    )
    try:
        result = await anyio.to_thread.run_sync(embed_metadata, path, fields)
    except ImagesExtraMissingError:
        log.debug("metadata.skipped", file=path.name, reason=IMAGES_EXTRA_HINT)
        return stored
    except ValueError as exc:  # a file that only looks like an image: keep it as it is
        log.warning("metadata.skipped", file=path.name, reason=str(exc))
        return stored
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
        raise StorageError(f"cannot write metadata into {path}: {reason}") from exc
    return stored if result is None else result


# -- PNG -------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_text_chunk(keyword: str, text: str) -> bytes:
    key = keyword.encode("latin-1")
    try:
        return _png_chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # iTXt: keyword, no compression, no language tag, no translated keyword, UTF-8.
        return _png_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, data[pos:end]))
        pos = end
        if kind == b"IEND":
            break
    return chunks


def _png_keyword(kind: bytes, raw: bytes) -> str | None:
    if kind not in _TEXT_CHUNKS:
        return None
    body = raw[8:-4]
    return body.split(b"\0", 1)[0].decode("latin-1")


def _png_with_text(data: bytes, fields: Mapping[str, str]) -> bytes:
    """Return the PNG with ``fields`` as text chunks after IHDR (replacing same keywords)."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("not a PNG: IHDR is not the first chunk")
    out = [_PNG_SIGNATURE, chunks[0][1]]
    out += [_png_text_chunk(key, text) for key, text in fields.items()]
    out += [raw for kind, raw in chunks[1:] if _png_keyword(kind, raw) not in fields]
    return b"".join(out)


# -- JPEG and WebP (EXIF built by Pillow) ------------------------------------------------


def _exif_bytes(data: bytes, fields: Mapping[str, str]) -> bytes:
    """Return ``Exif\\0\\0`` + TIFF data: the file's EXIF with our text added."""
    try:
        from PIL import Image  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise ImagesExtraMissingError(IMAGES_EXTRA_HINT) from exc
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
    if "Description" in fields:
        exif[_IMAGE_DESCRIPTION] = fields["Description"]
    exif[_SOFTWARE_TAG] = fields.get("Software", SOFTWARE)
    # UserComment: an 8-byte character code, then the text; A1111 writes UNICODE.
    comment = b"UNICODE\0" + fields["parameters"].encode("utf-16-be")
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = comment
    raw = exif.tobytes()
    return raw if raw.startswith(b"Exif\0\0") else b"Exif\0\0" + raw


def _jpeg_with_exif(data: bytes, exif: bytes) -> bytes:
    """Return the JPEG with ``exif`` as its APP1 segment; the scan data is copied as is."""
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF block too large for one JPEG segment")
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append(data[pos : pos + 2 + length])
        pos += 2 + length
    keep = [s for s in segments if not (s[1] == 0xE1 and s[4:10] == b"Exif\0\0")]
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    # JFIF's APP0 must stay first; EXIF follows it.
    lead = [s for s in keep[:1] if s[1] == 0xE0]
    rest = keep[len(lead) :]
    return b"\xff\xd8" + b"".join(lead) + app1 + b"".join(rest) + data[pos:]


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    pad = b"\0" if len(body) % 2 else b""
    return kind + struct.pack("<I", len(body)) + body + pad


def _webp_with_exif(data: bytes, exif: bytes) -> bytes:
    """Return the WebP with an ``EXIF`` chunk (and a VP8X header saying so)."""
    from PIL import Image  # noqa: PLC0415 - _exif_bytes has checked it is there

    tiff = exif.removeprefix(b"Exif\0\0")
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length % 2)
    chunks = [(k, b) for k, b in chunks if k != b"EXIF"]
    if chunks and chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        header[0] |= 0x08  # EXIF present
        chunks[0] = (b"VP8X", bytes(header))
    else:
        with Image.open(io.BytesIO(data)) as image:
            (width, height), alpha = image.size, "A" in image.getbands()
        flags = 0x08 | (0x10 if alpha else 0)
        size = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
        chunks.insert(0, (b"VP8X", bytes([flags, 0, 0, 0]) + size))
    chunks.append((b"EXIF", tiff))
    body = b"WEBP" + b"".join(_riff_chunk(k, b) for k, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
