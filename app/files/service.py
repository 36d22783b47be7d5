"""Files the gateway keeps for a tenant (job outputs; uploads come with the media work)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.problems import NotFound
from app.models import StoredFile


class FileNotFound(NotFound):
    code = "file_not_found"


async def get_file(session: AsyncSession, tenant_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
    stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id, StoredFile.id == file_id)
    file = (await session.scalars(stmt)).first()
    if file is None:
        raise FileNotFound(f"No file {file_id}.", param="file_id")
    return file
