"""Idempotency-Key with Stripe's semantics.

* The first request with a key claims it in its own, immediately committed transaction (so a
  concurrent duplicate sees it and gets 409 instead of queueing behind a row lock).
* The response is stored in the SAME transaction as the work itself (the job row): either both
  are committed or neither is, so a replay can never name a job that does not exist.
* Same key, different body → 422 ``idempotency_key_reused``; same key while the first is still
  executing → 409 ``idempotency_request_in_progress``; afterwards the stored response is
  replayed verbatim with ``Idempotent-Replayed: true``, for ``retention`` (≥ 24 h).
* If the first request fails before producing a response (an error), the claim is released, so
  the client's retry executes afresh. A claim is a short lease (``CLAIM_LEASE``) its process
  renews while the request runs: one whose process died (its lease ran out) is taken over, so
  a client retrying after a crash gets its request executed within seconds, not a minute of
  409s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.clock import utcnow
from app.kit.problems import Conflict, Unprocessable
from app.models import IdempotencyKey

MAX_KEY_LENGTH = 255
CLAIM_LEASE = timedelta(seconds=5)


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    code = "idempotency_request_in_progress"


class IdempotencyKeyInvalid(Unprocessable):
    code = "idempotency_key_invalid"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def check_key(key: str) -> str:
    """A key the API takes: 1–255 characters (also on a dry run, which stores none)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} characters.", param="Idempotency-Key"
        )
    return key


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class IdempotencyGuard:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        tenant_id: uuid.UUID,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
        retention: timedelta,
        lease: timedelta = CLAIM_LEASE,
    ) -> None:
        check_key(key)
        self._sessionmaker = sessionmaker
        self.tenant_id = tenant_id
        self.key = key
        self.method = method
        self.path = path
        self.fingerprint = fingerprint
        self.retention = retention
        self.lease = lease
        self._renewing: asyncio.Task[None] | None = None

    async def claim(self) -> StoredResponse | None:
        """Claim the key, or return the response to replay. Raises on reuse / in-flight."""
        now = utcnow()
        async with self._sessionmaker() as s, s.begin():
            inserted = await s.execute(
                insert(IdempotencyKey)
                .values(
                    tenant_id=self.tenant_id,
                    key=self.key,
                    request_method=self.method,
                    request_path=self.path,
                    request_hash=self.fingerprint,
                    expires_at=now + self.retention,
                    claim_expires_at=now + self.lease,
                )
                .on_conflict_do_nothing()
                .returning(IdempotencyKey.key)
            )
            if inserted.first() is not None:
                self._renew()
                return None
            row = (
                await s.scalars(
                    select(IdempotencyKey)
                    .where(
                        IdempotencyKey.tenant_id == self.tenant_id, IdempotencyKey.key == self.key
                    )
                    .with_for_update()
                )
            ).one()
            lease_end = row.claim_expires_at or row.created_at + self.lease
            abandoned = row.response_status is None and lease_end < now
            if row.expires_at <= now or abandoned:
                # An expired key is a new key; an abandoned claim's request never committed.
                row.request_method, row.request_path = self.method, self.path
                row.request_hash, row.created_at = self.fingerprint, now
                row.expires_at = now + self.retention
                row.claim_expires_at = now + self.lease
                row.response_status = row.response_body = row.response_headers = None
                self._renew()
                return None
            if row.request_hash != self.fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different request; use a new key.",
                    param="Idempotency-Key",
                )
            if row.response_status is None:
                raise IdempotencyInProgress(
                    "A request with this Idempotency-Key is still being processed; retry later.",
                    param="Idempotency-Key",
                    headers={"Retry-After": "1"},
                )
            return StoredResponse(
                row.response_status, row.response_body or {}, row.response_headers or {}
            )

    def _renew(self) -> None:
        """Keep the claim's lease while this request runs (until ``record``'s transaction or
        ``release``): renewed at a third of its length."""

        async def renew() -> None:
            period = self.lease.total_seconds() / 3
            while True:
                await asyncio.sleep(period)
                with contextlib.suppress(Exception):  # a missed renewal: the next one, or expiry
                    async with self._sessionmaker() as s, s.begin():
                        await s.execute(
                            update(IdempotencyKey)
                            .where(
                                IdempotencyKey.tenant_id == self.tenant_id,
                                IdempotencyKey.key == self.key,
                                IdempotencyKey.response_status.is_(None),
                            )
                            .values(claim_expires_at=utcnow() + self.lease)
                        )

        self._renewing = asyncio.get_running_loop().create_task(renew())

    async def done(self) -> None:
        """The request is over (its response recorded and committed, or released)."""
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None

    async def record(self, session: AsyncSession, response: StoredResponse) -> None:
        """Store the response in the caller's transaction (the one that did the work)."""
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == self.tenant_id, IdempotencyKey.key == self.key)
            .values(
                response_status=response.status,
                response_body=response.body,
                response_headers=response.headers,
            )
        )

    async def release(self) -> None:
        await self.done()
        async with self._sessionmaker() as s, s.begin():
            await s.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.tenant_id == self.tenant_id,
                    IdempotencyKey.key == self.key,
                    IdempotencyKey.response_status.is_(None),
                )
            )


async def prune_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow())
    )
    return result.rowcount or 0
