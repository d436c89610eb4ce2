"""Make output bytes: small real PNGs from a prompt, and large videos streamed in chunks.

Everything is a pure function of its arguments so tests can compute expected bytes and
checksums without talking to the emulator.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator

__all__ = ["VIDEO_CHUNK", "iter_video", "png_bytes", "tokens_for", "video_sha256"]

VIDEO_CHUNK = 64 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An MP4 ``ftyp`` box, so tools sniffing the file see a video container.
_FTYP = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 0x200, b"isomiso2")


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_bytes(seed: str, size: int = 64) -> bytes:
    """Return a valid RGB PNG whose gradient and colours are derived from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    r0, g0, b0, dr, dg, db = digest[:6]
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type None
        for x in range(size):
            rows += bytes(((r0 + x * dr // 16) % 256, (g0 + y * dg // 16) % 256, (b0 + db) % 256))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + _chunk(b"IEND", b"")
    )


def _video_block(key: bytes, index: int) -> bytes:
    """Return block ``index``: a per-video pattern stamped with its index (cheap, unique)."""
    block = bytearray(key)
    block[:8] = struct.pack(">Q", index)
    if index == 0:
        block[: len(_FTYP)] = _FTYP
    return bytes(block)


def iter_video(video_id: str, size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the deterministic video ``video_id`` of ``size`` bytes.

    Memory is one 64 KiB block, whatever the size: the file is never materialised.
    """
    end = size if end is None else min(end, size)
    key = hashlib.shake_256(video_id.encode()).digest(VIDEO_CHUNK)
    pos = start
    while pos < end:
        index, offset = divmod(pos, VIDEO_CHUNK)
        block = _video_block(key, index)
        piece = block[offset : offset + min(VIDEO_CHUNK - offset, end - pos)]
        yield piece
        pos += len(piece)


def video_sha256(video_id: str, size: int) -> str:
    """Return the hex sha256 of the whole video, as a test would compute it."""
    digest = hashlib.sha256()
    for piece in iter_video(video_id, size):
        digest.update(piece)
    return digest.hexdigest()


_TEXT = (
    "the llama walks softly across the high andean plain under a pale morning sky "
    "while distant mountains keep their quiet watch and the wind hums an old song"
)
_WORDS = tuple(_TEXT.split())


def tokens_for(prompt: str, max_tokens: int) -> list[str]:
    """Return LLM-like tokens for ``prompt``: first token ``""``, later ones space-led."""
    digest = hashlib.sha256(prompt.encode()).digest()
    count = max(1, min(max_tokens, 12 + digest[0] % 12))
    tokens = [""]
    for i in range(count):
        word = _WORDS[(digest[i % len(digest)] + i) % len(_WORDS)]
        tokens.append(word.capitalize() if i == 0 else " " + word)
    tokens.append(".")
    return tokens
