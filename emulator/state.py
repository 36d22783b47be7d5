"""The emulator's composition root: one `Emulator` per process, held in `app.state.emu`."""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from emulator.billing import Ledger
from emulator.catalog import PRICES
from emulator.config import EmulatorSettings, Knobs
from emulator.queue import QueueEngine
from emulator.requestlog import RequestLog
from emulator.signing import WebhookSigner
from emulator.storage import FileStore
from emulator.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from emulator.fastcache import FastCache

ADMIN_KEY_FILE = "admin_key"


def _resolve_admin_key(settings: EmulatorSettings) -> str:
    if settings.admin_key:
        return settings.admin_key
    path = settings.data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = f"emu-admin-{secrets.token_urlsafe(18)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


class Emulator:
    def __init__(self, settings: EmulatorSettings) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        knobs = settings.knobs()
        if knobs.seed is None:
            knobs.seed = secrets.randbelow(2**31)
        self._startup_knobs = knobs.model_copy(deep=True)
        self.knobs: Knobs = knobs
        self.base_url = settings.base_url()
        self.admin_key = _resolve_admin_key(settings)
        self.signer = WebhookSigner.load_or_create(settings.data_dir)
        self.store = FileStore(settings.data_dir, self.base_url)
        self.ledger = Ledger(PRICES, settings.max_kept_results)
        self.webhooks = WebhookDispatcher(
            self.signer, settings.user_id, lambda: self.knobs, settings.max_kept_results
        )
        self.requests = RequestLog(settings.request_log_size)
        self.executor = ThreadPoolExecutor(
            max_workers=settings.media_workers, thread_name_prefix="emulator-media"
        )
        self.engine = QueueEngine(self)
        self.fast_cache: FastCache | None = None
        self.http: httpx.AsyncClient = None  # type: ignore[assignment]  # set in start()
        self._seq = 0

    @property
    def seed(self) -> int:
        assert self.knobs.seed is not None
        return self.knobs.seed

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def start(self) -> None:
        self.http = httpx.AsyncClient(follow_redirects=True, trust_env=False)
        await self.webhooks.start()
        await self.engine.start()
        loop = asyncio.get_running_loop()
        if self.settings.fast:
            from emulator.fastcache import FastCache  # PyAV: only fast mode needs it at start

            self.fast_cache = await loop.run_in_executor(
                self.executor, FastCache.build, self.store, self.settings.data_dir / "fast-build"
            )
        else:
            # The audio engine takes seconds to import (scipy): do it now, in the background,
            # rather than in the first request.
            # A daemon thread, so that stopping right after a start does not wait for it.
            threading.Thread(
                target=importlib.import_module, args=("emulator.synth",), daemon=True
            ).start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.webhooks.stop()
        await self.http.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # --- control -------------------------------------------------------------------------
    def update_knobs(self, patch: dict[str, Any]) -> Knobs:
        merged = {**self.knobs.model_dump(), **patch}
        knobs = Knobs.model_validate(merged)
        if knobs.seed is None:
            knobs.seed = self.seed
        if "seed" in patch:
            self._seq = 0  # a new seed restarts the fault sequence: reproducible from here
        self.knobs = knobs
        self.engine.pump()  # a higher concurrency may let queued requests start
        return knobs

    def reset(self, *, jobs: bool = True, seed: int | None = None) -> Knobs:
        """Back to the startup knobs; clears logs, usage and (by default) every request."""
        self.knobs = self._startup_knobs.model_copy(deep=True)
        if seed is not None:
            self.knobs.seed = seed
        self._seq = 0
        self.requests.clear()
        self.webhooks.clear()
        self.ledger.clear()
        if jobs:
            self.engine.clear()
        return self.knobs

    # --- auth ----------------------------------------------------------------------------
    def key_ok(self, authorization: str | None) -> bool:
        """`Authorization: Key <key>`: any non-empty key, or one of `keys` when set."""
        if not authorization or not authorization.startswith("Key "):
            return False
        key = authorization[4:].strip()
        if not key:
            return False
        keys = self.knobs.keys
        return keys is None or key in keys or key == self.admin_key

    def admin_ok(self, authorization: str | None, *, bearer: bool = True) -> bool:
        if not authorization:
            return False
        scheme, _, key = authorization.partition(" ")
        if scheme == "Key" or (bearer and scheme == "Bearer"):
            return secrets.compare_digest(key.strip(), self.admin_key)
        return False
