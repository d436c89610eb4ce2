"""Answer the non-prediction endpoints: models, versions, account, files and output bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from engine.emulator.catalogue import DEPLOYMENTS, MODELS, ModelSpec
from engine.emulator.downloads import ByteRangeResponse, Chunks, if_range_matches, parse_range
from engine.emulator.problems import Problem, json_response, not_found
from engine.emulator.uploads import Upload, parse_multipart

if TYPE_CHECKING:
    from engine.emulator.app import Emulator

__all__ = [
    "account",
    "base_url",
    "delete_file",
    "download_output",
    "download_upload",
    "get_deployment",
    "get_file",
    "get_model",
    "get_version",
    "hardware",
    "list_deployments",
    "list_files",
    "list_models",
    "list_versions",
    "search_models",
    "upload_file",
    "webhook_secret",
]

_HARDWARE = [
    {"sku": "cpu", "name": "CPU"},
    {"sku": "gpu-t4", "name": "Nvidia T4 GPU"},
    {"sku": "gpu-l40s", "name": "Nvidia L40S GPU"},
    {"sku": "gpu-a100-large", "name": "Nvidia A100 (80GB) GPU"},
]
_OWNER = {"type": "organization", "username": "emulator", "name": "Replicate Emulator"}


def base_url(request: Request) -> str:
    """Return ``scheme://host:port`` as the client reached us, for absolute URLs."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _model(request: Request) -> ModelSpec:
    model = MODELS.get(f"{request.path_params['owner']}/{request.path_params['name']}")
    if model is None:
        raise not_found("The requested model could not be found.")
    return model


async def list_models(_em: Emulator, _request: Request) -> Response:
    """Return every catalogue model as one Page."""
    models = [m.model_json() for m in MODELS.values()]
    return json_response({"previous": None, "next": None, "results": models})


async def search_models(_em: Emulator, request: Request) -> Response:
    """Answer ``QUERY /v1/models``: models whose name or description contain the words."""
    words = (await request.body()).decode().lower().split()
    found = [
        m.model_json()
        for m in MODELS.values()
        if all(w in f"{m.ref} {m.description}".lower() for w in words)
    ]
    return json_response({"previous": None, "next": None, "results": found})


async def get_model(_em: Emulator, request: Request) -> Response:
    """Return a Model with its latest version."""
    return json_response(_model(request).model_json())


async def list_versions(_em: Emulator, request: Request) -> Response:
    """Return the model's versions (one each) as a Page."""
    model = _model(request)
    versions = [model.version_json()] if model.published else []
    return json_response({"previous": None, "next": None, "results": versions})


async def get_version(_em: Emulator, request: Request) -> Response:
    """Return a Version with its OpenAPI schema (``run`` fetches it after each create)."""
    model = _model(request)
    if not model.published or request.path_params["vid"] != model.version_id:
        raise not_found("The requested version could not be found.")
    return json_response(model.version_json())


def _deployment(ref: str) -> dict[str, Any]:
    owner, name = ref.split("/")
    released = DEPLOYMENTS[ref]
    if released is None:
        return {"owner": owner, "name": name, "current_release": None}
    model = MODELS[released]
    release = {
        "number": 1,
        "model": model.ref,
        "version": model.version_id,
        "created_at": model.version_json()["created_at"],
        "created_by": _OWNER,
        "configuration": {"hardware": "gpu-a100-large", "min_instances": 0, "max_instances": 10},
    }
    return {"owner": owner, "name": name, "current_release": release}


async def list_deployments(_em: Emulator, _request: Request) -> Response:
    """Return every deployment as one Page."""
    results = [_deployment(ref) for ref in DEPLOYMENTS]
    return json_response({"previous": None, "next": None, "results": results})


async def get_deployment(_em: Emulator, request: Request) -> Response:
    """Return a Deployment; ``current_release.version`` is a version id string (or no release)."""
    ref = f"{request.path_params['owner']}/{request.path_params['name']}"
    if ref not in DEPLOYMENTS:
        raise not_found("The requested deployment could not be found.")
    return json_response(_deployment(ref))


async def account(_em: Emulator, _request: Request) -> Response:
    """Return the token's account."""
    return json_response({**_OWNER, "github_url": None})


async def hardware(_em: Emulator, _request: Request) -> Response:
    """Return the hardware SKUs (a bare list, as the real API does)."""
    return json_response(_HARDWARE)


async def webhook_secret(em: Emulator, _request: Request) -> Response:
    """Return the signing secret every webhook delivery uses."""
    return json_response({"key": em.config.webhook_secret})


async def upload_file(em: Emulator, request: Request) -> Response:
    """Store a multipart upload and answer 201 with the File object."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > em.config.max_upload:
        raise Problem(413, "Request Entity Too Large", "The file is larger than the upload limit")
    body = await request.body()
    try:
        name, content_type, data, metadata = parse_multipart(
            request.headers.get("content-type", ""), body
        )
    except ValueError as exc:
        raise Problem(400, "Bad request", str(exc)) from None
    upload = Upload.new(
        name, content_type, data, metadata, now=em.clock(), ttl=em.config.file_expiry
    )
    em.uploads[upload.id] = upload
    return json_response(upload.to_json(base_url(request)), 201)


def _upload(em: Emulator, request: Request) -> Upload:
    upload = em.uploads.get(request.path_params["id"])
    if upload is None or em.clock() >= upload.expires:
        raise not_found("The requested file could not be found.")
    return upload


async def list_files(em: Emulator, request: Request) -> Response:
    """Return the live uploads, newest first."""
    now, base = em.clock(), base_url(request)
    live = [u.to_json(base) for u in reversed(em.uploads.values()) if now < u.expires]
    return json_response({"previous": None, "next": None, "results": live})


async def get_file(em: Emulator, request: Request) -> Response:
    """Return one upload's File object."""
    return json_response(_upload(em, request).to_json(base_url(request)))


async def delete_file(em: Emulator, request: Request) -> Response:
    """Delete an upload: 204, empty body."""
    del em.uploads[_upload(em, request).id]
    return Response(status_code=204)


def _serve(
    em: Emulator,
    request: Request,
    key: str,
    *,
    size: int,
    media_type: str,
    chunks: Chunks,
    etag: str,
    modified: float,
) -> Response:
    last_modified = formatdate(modified, usegmt=True)
    header = request.headers.get("range")
    if not if_range_matches(request.headers.get("if-range"), etag, last_modified):
        header = None  # the client's part is of other bytes: send the whole file
    try:
        byte_range = parse_range(header, size)
    except ValueError:
        raise Problem(
            416,
            "Range Not Satisfiable",
            "The requested range is not satisfiable",
            headers={"content-range": f"bytes */{size}"},
        ) from None
    cut = bool(em.config.cut_download_rate) and em.rng.random() < em.config.cut_download_rate
    cut = cut or em.downloads[key] < em.config.cut_first_downloads
    em.downloads[key] += 1
    return ByteRangeResponse(
        chunks,
        size=size,
        byte_range=byte_range,
        media_type=media_type,
        etag=etag,
        last_modified=last_modified,
        stats=em.stats,
        cut=cut,
    )


async def download_upload(em: Emulator, request: Request) -> Response:
    """Serve an upload's bytes (``/v1/files/{id}/download``)."""
    upload = _upload(em, request)

    def chunks(start: int, end: int) -> Iterator[bytes]:
        yield upload.data[start:end]

    return _serve(
        em,
        request,
        f"upload/{upload.id}",
        size=len(upload.data),
        media_type=upload.content_type,
        chunks=chunks,
        etag='"' + hashlib.sha256(upload.data).hexdigest()[:32] + '"',
        modified=upload.created,
    )


async def download_output(em: Emulator, request: Request) -> Response:
    """Serve an output file like replicate.delivery: 404 once the output expired.

    The strong ETag is a digest of the bytes and ``Last-Modified`` the time they took
    their present form, so both change when ``output_salt`` changes the bytes.
    """
    record = em.predictions.get(request.path_params["id"])
    file = None if record is None else record.file(request.path_params["name"])
    now = em.clock()
    if record is None or file is None:
        raise not_found()
    end, status = record.end()
    if status != "succeeded" or now < end or now >= end + em.config.output_expiry:
        raise not_found()
    salt = em.config.output_salt
    size = file.size if file.content == "mp4" else len(file.data(salt))
    return _serve(
        em,
        request,
        f"{record.id}/{file.name}",
        size=size,
        media_type=file.media_type,
        chunks=file.chunks(salt),
        etag=f'"{file.identity(salt)}"',
        modified=max(end, em.salt_changed),
    )
