"""The one writer of the manifest.

Every change to the manifest goes through here: what the remote confirmed (the uploader
reports each sent, moved or deleted file only after the remote said so), what a plan decided
(rows the server no longer backs, held deletions), which mirror a folder's rows describe, and
the daemon's outbox. Changes are staged in the manifest and committed every ``FLUSH_EVERY``
seconds while transfers run (``running``), or at once where a reader must see them (``flush``).
The files of one batch upload are reported together, with no await between them
(``Uploader.upload_batch``), so their rows are always committed in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from syncd.errors import ManifestError
from syncd.manifest import Manifest
from syncd.planner import Plan
from syncd.types import LocalFile, Row

FLUSH_EVERY = 0.5  # seconds between manifest commits while transfers run

log = logging.getLogger("syncd.manifest")


class Recorder:
    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._flusher: asyncio.Task[None] | None = None
        self._flush_stop: asyncio.Event | None = None
        self._failing = False  # the loop's last commit failed (said once)

    # -- what the remote confirmed (``syncd.uploader.Records``) ------------------------------
    def sent(self, scope: str, local: LocalFile, sha: str) -> None:
        """The remote holds the bytes read as ``local``, whose sha-256 is ``sha``."""
        row = Row(local.rel, local.size, local.mtime_ns, sha, time.time())
        self.manifest.put(
            scope,
            row._replace(ctime_ns=local.ctime_ns, inode=local.inode, executable=local.executable),
        )

    def chunks_sent(self, scope: str, rel: str, sha: str, blob: bytes) -> None:
        """The remote holds the bytes ``sha`` at ``rel``, cut as ``blob`` says (a delta)."""
        self.manifest.put_chunks(scope, rel, sha, blob)

    def chunks(self, scope: str, rel: str, sha: str) -> bytes | None:
        """The chunk list kept for the bytes ``sha`` at ``rel``, if any."""
        return self.manifest.chunks(scope, rel, sha)

    def moved(self, scope: str, src: str, dst: str, local: LocalFile | None, *, tree: bool) -> None:
        """The remote moved ``src`` to ``dst``: a file (``local``: the file now at ``dst``), or
        a directory (``tree``: every row under it, each keeping its file's identity)."""
        if not tree:
            self.manifest.move(scope, src, dst, local)
            return
        for row in list(self.manifest.under(scope, src)):
            self.manifest.move(scope, row.rel, dst + row.rel[len(src) :])

    def deleted(self, scope: str, rel: str, *, tree: bool) -> int:
        """The remote deleted a file, or a whole directory (``tree``); returns how many files
        of the manifest that removed."""
        if tree:
            return len(self.manifest.delete_tree(scope, rel))
        self.manifest.delete(scope, rel)
        return 1

    # -- what a plan decided ---------------------------------------------------------------------
    def forget(self, scope: str, rels: Iterable[str]) -> None:
        """Rows the server no longer backs (their files are sent again)."""
        for rel in rels:
            self.manifest.delete(scope, rel)

    def hold(self, scope: str, plan: Plan, *, whole: bool) -> None:
        """Keep the guard's verdict: held deletions persist across restarts (``syncd status``
        shows them) until a look at the whole folder needs them no more."""
        if plan.held:
            reason = plan.held_back[0].reason if plan.held_back else "deletions held back"
            count = plan.held
            earlier = next((h for h in self.manifest.held() if h[0] == scope), None)
            if not whole and earlier is not None:
                count = earlier[1] + plan.held_new  # (the ones held already counted once)
                reason = earlier[2]  # why they were held first stays the reason
            self.manifest.hold(scope, count, reason)
        elif whole:
            self.manifest.release(scope)

    # -- which mirror ----------------------------------------------------------------------------
    def mirror(self, scope: str, mirror: str, state: str | None = None) -> None:
        self.manifest.set_mirror(scope, mirror, state)

    def rekey(self, old: str, new: str) -> int:
        """``old``'s rows become ``new``'s (the same mirror by another URL spelling)."""
        return self.manifest.rekey(old, new)

    # -- the daemon's outbox ---------------------------------------------------------------------
    def queued(self, scope: str, rel: str, dest: str | None) -> None:
        self.manifest.outbox_add(scope, rel, dest)

    def unqueued(self, scope: str, rel: str) -> None:
        self.manifest.outbox_remove(scope, rel)

    # -- committing ------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Commit what is staged now (the fsync in a thread)."""
        await self.manifest.aflush()

    def running(self) -> None:
        """Commit every FLUSH_EVERY seconds from now until ``stop``."""
        if self._flusher is None or self._flusher.done():
            self._flush_stop = asyncio.Event()
            self._flusher = asyncio.create_task(self._flush_loop(self._flush_stop))

    async def stop(self) -> None:
        if self._flusher is not None:
            assert self._flush_stop is not None
            self._flush_stop.set()
            await self._flusher
            self._flusher = None

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        """A commit that fails (the file locked by another writer, the disk full) is said
        once; its changes stay staged and go with the next commit, tried every FLUSH_EVERY
        seconds (reads see them meanwhile)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            if not self.manifest.pending:
                continue
            try:
                await self.manifest.aflush()
            except ManifestError as e:
                if not self._failing:
                    log.error("%s; its changes are kept and committed again", e)
                self._failing = True
                continue
            if self._failing:
                log.info("manifest: committed again, with the changes kept meanwhile")
                self._failing = False


__all__ = ["FLUSH_EVERY", "Recorder"]
