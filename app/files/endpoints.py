from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.auth.dependencies import CurrentTenant
from app.db.session import SessionDep
from app.files import service
from app.media.ranges import stream_stored_object

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.head("/{file_id}", include_in_schema=False)
@router.get(
    "/{file_id}",
    operation_id="download_file",
    responses={
        200: {"description": "The file.", "content": {"video/mp4": {}, "audio/mpeg": {}}},
        206: {"description": "The requested byte range."},
        404: {"description": "No such file for this tenant."},
        416: {"description": "The range is outside the file."},
    },
)
async def download_file(
    file_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> Response:
    """A job's output file. Supports `Range`, `If-None-Match` and HEAD."""
    file = await service.get_file(session, tenant.id, file_id)
    storage = request.app.state.storage
    obj = await storage.stat(file.storage_key)
    if obj is None:
        raise service.FileNotFound(f"File {file_id} is no longer stored.", param="file_id")
    return await stream_stored_object(
        storage, obj, request.headers, method=request.method, filename=file.filename
    )
