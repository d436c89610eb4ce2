"""Keep uploaded input files (``/v1/files``) and describe them as the API's File object."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from engine.emulator.lifecycle import iso

__all__ = ["Upload", "parse_multipart"]


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file, held in memory (uploads are small inputs, capped by max_upload)."""

    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created: float
    expires: float

    @classmethod
    def new(
        cls,
        name: str,
        content_type: str,
        data: bytes,
        metadata: dict[str, Any],
        *,
        now: float,
        ttl: float,
    ) -> Upload:
        """Store a file under a fresh url-safe id (the real ids are base64 too)."""
        file_id = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        return cls(file_id, name, content_type, data, metadata, now, now + ttl)

    def to_json(self, base_url: str) -> dict[str, Any]:
        """Return the File object with every field the client requires."""
        md5 = hashlib.md5(self.data, usedforsecurity=False).hexdigest()
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": md5,
            "checksums": {"sha256": hashlib.sha256(self.data).hexdigest(), "md5": md5},
            "metadata": self.metadata,
            "created_at": iso(self.created),
            "expires_at": iso(self.expires),
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }


def parse_multipart(content_type: str, body: bytes) -> tuple[str, str, bytes, dict[str, Any]]:
    """Return ``(filename, content type, bytes, metadata)`` from the client's form.

    The stdlib's MIME parser is enough for one ``content`` part and an optional
    ``metadata`` text part; it avoids a python-multipart dependency.
    """
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("expected multipart/form-data")
    found: tuple[str, str, bytes] | None = None
    metadata: dict[str, Any] = {}
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if field == "metadata":
            loaded = json.loads(data or b"{}")
            metadata = loaded if isinstance(loaded, dict) else {}
        elif field == "content":
            filename = part.get_filename() or "file"
            found = (filename, part.get_content_type(), data)
    if found is None:
        raise ValueError("missing the 'content' part")
    return (*found, metadata)
