from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamps, UUIDPrimaryKey


class ConsoleSession(UUIDPrimaryKey, Timestamps, Base):
    """A signed-in console (app.console.sessions): the cookie carries a random token, the row only
    its SHA-256, so a copy of the table signs nobody in. A tenant's session is its key's: the
    key's revocation or expiry ends it (checked on every request), and deleting the key deletes
    it."""

    __tablename__ = "console_sessions"
    __table_args__ = (CheckConstraint("admin = (api_key_id IS NULL)", name="one_principal"),)

    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
