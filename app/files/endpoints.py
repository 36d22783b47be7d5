from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.dependencies import CurrentTenant
from app.db.session import SessionDep
from app.files import service
from app.files.ranges import stream_stored_object
from app.files.schemas import FileOut
from app.kit.problems import BadRequest, NotFound, ProblemError
from app.kit.text import column_text
from app.models import StoredFile

router = APIRouter(prefix="/v1/files", tags=["files"])

_BINARY = {
    kind: {"schema": {"type": "string", "format": "binary"}}
    for kind in ("video/*", "audio/*", "application/octet-stream")
}
CONTENT = {
    200: {"description": "The file.", "content": _BINARY},
    206: {"description": "The requested byte range.", "content": _BINARY},
    304: {"description": "Not modified (If-None-Match)."},
    307: {"description": "Redirect to a presigned object-storage URL (when enabled)."},
    404: {"description": "No such file for this tenant."},
    410: {"description": "Deleted by the retention policy."},
    416: {"description": "The range is outside the file."},
}


class LengthRequired(ProblemError):
    status = 411
    code = "length_required"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post(
    "",
    response_model=FileOut,
    status_code=201,
    responses={
        400: {"description": "A multipart upload without a `file` field."},
        411: {"description": "A multipart upload without Content-Length."},
        413: {"description": "Larger than FOLEY_MAX_INPUT_BYTES."},
        422: {"description": "Not a readable video (`video_unreadable`)."},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "The video.",
                            }
                        },
                        "required": ["file"],
                        "additionalProperties": False,
                    }
                },
            },
            "required": True,
        }
    },
)
async def upload_file(
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    filename: Annotated[
        column_text(StoredFile.filename) | None,  # type: ignore[valid-type]
        Query(description="Name for a raw-body upload."),
    ] = None,
) -> FileOut:
    """Upload an input video: a raw body (any video content type) or multipart (`file`). It is
    streamed to storage, hashed and probed; use its `id` as a job's `input.video_file_id`."""
    settings = request.app.state.settings
    max_bytes = settings.max_input_bytes
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        chunks, name = await _multipart(request, max_bytes)
    else:
        chunks, name = request.stream(), filename
    file = await service.store_upload(
        session,
        request.app.state.storage,
        tenant_id=tenant.id,
        chunks=chunks,
        filename=name,
        max_bytes=max_bytes,
        tmp_dir=_tmp(settings),
    )
    return FileOut.of(file, _base_url(request), service.expires_at(file, settings.retention_days))


async def _multipart(request: Request, max_bytes: int) -> tuple[AsyncIterator[bytes], str | None]:
    length = request.headers.get("content-length")
    if length is None:
        raise LengthRequired("Multipart uploads need a Content-Length; or send the raw body.")
    if int(length) > max_bytes + 64 * 1024:
        raise service.UploadTooLarge(
            f"Uploads are limited to {max_bytes} bytes.", extra={"max_bytes": max_bytes}
        )
    # Starlette spools the part to a temporary file past 1 MB: memory stays bounded.
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadRequest("Send the video in a multipart field named 'file'.", param="file")

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await upload.read(256 * 1024):
                yield chunk
        finally:
            await upload.close()

    return chunks(), upload.filename


def _tmp(settings):  # type: ignore[no-untyped-def]
    path = settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _serve(request: Request, file: StoredFile) -> Response:
    service.ensure_present(file)
    storage = request.app.state.storage
    obj = await storage.stat(file.storage_key)
    if obj is None:
        raise service.FileNotFound(f"File {file.id} is no longer stored.", param="file_id")
    if request.app.state.settings.storage_presign and storage.supports_presigned_urls:
        url = await storage.presigned_url(file.storage_key, 300)
        if url:
            return RedirectResponse(url, status_code=307)
    # The row's content type is the sniffed one (the object may carry a generic type).
    obj = dataclasses.replace(obj, content_type=file.content_type)
    return await stream_stored_object(
        storage, obj, request.headers, method=request.method, filename=file.filename
    )


@router.head("/{file_id}", include_in_schema=False)
@router.get("/{file_id}", operation_id="download_file", responses=CONTENT)
async def download_file(
    file_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> Response:
    """A file's bytes (a job output or an upload). Supports `Range`, `If-None-Match`, HEAD."""
    return await _serve(request, await service.get_file(session, tenant.id, file_id))


@router.get("/{file_id}/metadata", response_model=FileOut, responses={404: CONTENT[404]})
async def file_metadata(
    file_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> FileOut:
    """The file resource: size, type, sha256, probe, retention."""
    file = await service.get_file(session, tenant.id, file_id)
    settings = request.app.state.settings
    return FileOut.of(file, _base_url(request), service.expires_at(file, settings.retention_days))


@router.head("/{file_id}/signed", include_in_schema=False)
@router.get("/{file_id}/signed", include_in_schema=False)
async def signed_download(
    file_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    expires: int,
    sig: str,
) -> Response:
    """A signed, expiring URL handed to fal for an upload (no API key: the signature is it)."""
    if not service.verify_file_signature(
        request.app.state.job_tokens.secret, file_id, expires, sig
    ):
        raise NotFound("No such file.", code="file_not_found")
    file = await service.get_any_file(session, file_id)
    if file is None:
        raise NotFound("No such file.", code="file_not_found")
    return await _serve(request, file)
