"""Two-step uploads waiting for their commit (``PUT ?upload=`` then ``POST ?commit=``), by
the id the client chose; those left past :data:`UPLOAD_TTL` are swept away, their temps
removed, and so are all of them when the app shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from syncd.server.errors import NotFound
from syncd.server.paths import RelPath
from syncd.server.uploads import Upload

log = logging.getLogger("syncd.server")

UPLOAD_TTL = 3600.0
"""Seconds a two-step upload may wait for its commit."""


@dataclass
class _Pending:
    upload: Upload
    expires: float


class Pending:
    """Two-step uploads waiting for their commit, by client-chosen id."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[str, _Pending] = {}

    def add(self, uid: str, upload: Upload) -> Upload | None:
        """Register a finished upload; returns the one it replaces, if any."""
        old = self._items.pop(uid, None)
        self._items[uid] = _Pending(upload, time.monotonic() + self.ttl)
        return old.upload if old else None

    def take(self, uid: str, rel: RelPath) -> Upload:
        """Remove and return the pending upload ``uid`` of ``rel`` (404 if none)."""
        item = self._items.get(uid)
        if item is None or item.upload.rel.parts != rel.parts:
            raise NotFound(f"{rel}: no pending upload {uid} (unknown or expired)")
        del self._items[uid]
        return item.upload

    def pop_expired(self) -> list[Upload]:
        """Remove and return the uploads past their expiry."""
        now = time.monotonic()
        gone = [uid for uid, item in self._items.items() if item.expires <= now]
        return [self._items.pop(uid).upload for uid in gone]

    def drain(self) -> list[Upload]:
        """Remove and return every pending upload."""
        items = [item.upload for item in self._items.values()]
        self._items.clear()
        return items


@contextlib.asynccontextmanager
async def swept(pending: Pending) -> AsyncIterator[None]:
    """Sweep expired uploads for the life of the block; drop every one left at its end."""
    sweeper = asyncio.create_task(_sweep(pending))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        left = pending.drain()
        if left:
            await asyncio.to_thread(discard_all, left)
            log.info("dropped %d pending upload(s) at shutdown", len(left))


async def _sweep(pending: Pending) -> None:
    interval = max(0.05, min(60.0, pending.ttl / 2))
    while True:
        await asyncio.sleep(interval)
        expired = pending.pop_expired()
        if not expired:
            continue
        try:
            await asyncio.to_thread(discard_all, expired)
        except Exception:
            log.exception("dropping expired uploads failed")
        else:
            log.info("dropped %d expired pending upload(s)", len(expired))


def discard_all(uploads: Sequence[Upload]) -> None:
    """Remove the temps of ``uploads`` (blocking)."""
    for up in uploads:
        up.discard()
