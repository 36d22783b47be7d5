"""The audit log: every admin mutation, who did it, and the object before and after."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.request_id import current_request_id
from app.models import AuditEvent


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Written in the mutation's own transaction: no change without its audit row."""
    session.add(
        AuditEvent(
            id=uuid.uuid4(),
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            before=before,
            after=after,
            request_id=current_request_id(),
        )
    )
    await session.flush()
