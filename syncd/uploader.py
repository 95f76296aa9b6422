"""Carry out one planned operation against the remote, with the retry policy, and report the
result to the manifest's writer (``Records``) only after the remote confirmed it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, cast

from syncd.chunking import DELTA_MIN, Chunks
from syncd.errors import (
    AuthError,
    PermanentError,
    RemoteError,
    SourceChanged,
    SourceError,
    SyncdError,
    TransientError,
    WrongProtocol,
)
from syncd.faults import crash_point
from syncd.hashing import SMALL, ReadStats, Source, cut_path, hash_path
from syncd.remotes.base import Batcher, BatchLimits, Mover, Remote
from syncd.retry import RetryPolicy
from syncd.scanner import Scanner
from syncd.types import LocalFile, Op, OpKind, RemoteEntry, Row

log = logging.getLogger("syncd.uploader")


class Throttle:
    """A token bucket shared by every transfer: ``bwlimit`` bytes per second, 0 = unlimited."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._next = time.monotonic()

    def __call__(self, nbytes: int) -> float:
        """Account for ``nbytes`` just sent; return how long the sender should pause."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self._next = max(self._next, now) + nbytes / self.rate
        return max(0.0, self._next - now - 0.05)


class Records(Protocol):
    """Where a confirmed result goes (``syncd.recorder.Recorder``, the manifest's writer)."""

    def sent(self, scope: str, local: LocalFile, sha: str) -> None: ...

    def moved(
        self, scope: str, src: str, dst: str, local: LocalFile | None, *, tree: bool
    ) -> None: ...

    def deleted(self, scope: str, rel: str, *, tree: bool) -> int: ...

    def chunks_sent(self, scope: str, rel: str, sha: str, blob: bytes) -> None: ...

    def chunks(self, scope: str, rel: str, sha: str) -> bytes | None: ...


@dataclass
class FolderCtx:
    """What the workers need to know about one folder."""

    root: Path
    remote_path: str
    scope: str
    scanner: Scanner
    #: The file at a relative path as it is now (None: gone), judged as a scan judges it
    #: (the scanner's ``stat``, handed to the Send stage so that it never calls back up).
    stat: Callable[[str], LocalFile | None] = field(init=False)
    # Files the remote already holds (from its listing), used to adopt them without sending
    # when the manifest is empty or was lost.
    remote_hints: dict[str, RemoteEntry] = field(default_factory=dict)
    # The mirror id (the marker on the server) this pass found, if any, and whether the
    # server holds the marker (None: not read this time).
    mirror: str | None = None
    marked: bool | None = None

    def __post_init__(self) -> None:
        self.stat = self.scanner.stat

    def remote(self, rel: str) -> str:
        return f"{self.remote_path}/{rel}"


@dataclass(frozen=True)
class _Prepared:
    """A file about to be sent: as it is now, whether it is changing (a snapshot), and its
    source if it was read already (to compare it with what the server may hold)."""

    local: LocalFile
    key: tuple[str, str]
    snapshot: bool
    first: Source | None
    cut: Chunks | None = None
    """The chunk list taken while it was compared (a delta then need not read it again)."""


BatchResult = str | SyncdError | None
"""Per item of a batch: its outcome, the error it met, or None (send it alone)."""


class Outcome:
    UPLOADED = "uploaded"
    REFRESHED = "refreshed"  # same bytes, new mtime: the row was refreshed, nothing sent
    ADOPTED = "adopted"  # the remote already held these bytes
    DELETED = "deleted"
    MOVED = "moved"


#: Paths remembered as "changing" at most (a bound on memory; forgetting one only costs it a
#: refused first attempt).
CHANGING_MAX = 10_000


@dataclass
class Uploader:
    """Sends files, moves and deletes with the retry policy, and records what the remote
    confirmed.

    A file that changes while it is read or sent is not refused for ever (``max_delay``
    promises it is sent): after one refused attempt it is sent at once as a *snapshot*
    (``Source.snapshot``): exactly the size its stat gave, hashed from the very bytes sent,
    which is the digest the server checks (``syncd serve``, S3) and the manifest records, with
    the stat taken before the read. That row matches no later state of the file, so the next
    change sends it again; SourceChanged still tells the caller to queue it again. A path stays
    "changing" (its next attempts are snapshots at once) until it is sent unchanged."""

    remote: Remote
    records: Records
    policy: RetryPolicy
    stats: ReadStats
    throttle: Throttle
    on_bytes: Callable[[int], None] | None = None
    _changing: set[tuple[str, str]] = field(default_factory=set)
    _limits: asyncio.Future[BatchLimits | Literal[False] | None] | None = None

    async def upload(
        self, ctx: FolderCtx, op: Op, progress: Callable[[int], None] | None = None
    ) -> str:
        """Send one file (hashing first where the same bytes may be known); return the outcome.

        Raises SourceChanged if the file changed during the upload (nothing is recorded unless
        a snapshot was sent, see the class; the caller queues it again), SourceError if it
        cannot be read, RemoteError from the remote.
        """
        on_bytes = self._counter(progress)
        prep = await self._prepare(ctx, op, on_bytes)
        if isinstance(prep, str):
            return prep
        path, local, key = ctx.root / op.rel, prep.local, prep.key
        snapshot, first = prep.snapshot, prep.first

        async def attempt() -> str:
            nonlocal first
            if first is not None:
                src, first = first, None
            else:
                src = await self._open(path, local, on_bytes, snapshot=snapshot)
            row = op.row
            if row is not None and src.data is None and self.remote.features.delta:
                # (a delta of the server's copy, if the row still names it: it checks)
                src.base_sha256 = row.sha256
                src.base_chunks = self.records.chunks(ctx.scope, op.rel, row.sha256)
                if prep.cut is not None:
                    src.cut_ahead = (prep.local, prep.cut)
            sha = await self.remote.put(ctx.remote(op.rel), src)
            if src.data is not None:
                on_bytes(len(src.data))
            if src.new_chunks is not None and src.new_chunks[0] == sha:
                self.records.chunks_sent(ctx.scope, op.rel, sha, src.new_chunks[1])
            return sha

        started = time.monotonic()
        what = f"upload {ctx.remote_path}/{op.rel}"
        try:
            sha = await self.policy.run(what, attempt)
        except SourceChanged as e:
            if snapshot:
                raise
            # It changed while it was read or sent: send what it holds now, as it is.
            local = self._still_there(ctx, op.rel)
            log.info("%s/%s: %s; sending it as it is now", ctx.remote_path, op.rel, e.problem)
            self._mark_changing(key)
            snapshot, first = True, None
            sha = await self.policy.run(what, attempt)
        return self._sent(ctx, op, local, sha, started)

    def _delta_of(self, row: Row | None, local: LocalFile) -> bool:
        """Whether a changed ``local`` would go as a delta of the server's copy ``row``."""
        return row is not None and self.remote.features.delta and local.size >= DELTA_MIN

    async def _prepare(
        self, ctx: FolderCtx, op: Op, on_bytes: Callable[[int], None]
    ) -> _Prepared | str:
        """What every upload does before sending, alone or in a batch: the file as it is now,
        and, where the row or the server's listing may know its bytes, their comparison (an
        outcome then: nothing to send). Raises SourceChanged (vanished), PermanentError (a
        first contact that would replace other bytes)."""
        assert op.local is not None
        local = self._still_there(ctx, op.rel, "vanished before it could be read")
        key = (ctx.scope, op.rel)
        snapshot = key in self._changing
        path = ctx.root / op.rel
        row = op.row
        hint = ctx.remote_hints.get(op.rel)
        first: Source | None = None
        cut: Chunks | None = None
        if not snapshot and (
            (row is not None and row.size == local.size)
            or (hint is not None and hint.size == local.size and hint.sha256)
        ):
            try:
                if local.size <= SMALL:
                    first = await self._open(path, local, on_bytes)
                    assert first.sha256 is not None
                    sha = first.sha256
                elif self._delta_of(row, local):
                    # cut while hashed (one read, the cut in a second thread): a delta of it
                    # sends the steps from this list instead of reading the file again
                    cut = await asyncio.to_thread(cut_path, path, local, self.stats)
                    sha = cut.sha256
                else:
                    sha = await asyncio.to_thread(hash_path, path, local, self.stats)
            except SourceChanged:
                local = self._still_there(ctx, op.rel)
                snapshot = True  # changing: no known bytes to compare, send what it holds
                self._mark_changing(key)
            else:
                if row is not None and row.sha256 == sha and not op.meta:
                    self.records.sent(ctx.scope, local, sha)
                    return Outcome.REFRESHED
                if hint is not None and hint.sha256 == sha:
                    self.records.sent(ctx.scope, local, sha)
                    return Outcome.ADOPTED
        if op.confirm:
            raise PermanentError(
                f"{ctx.remote(op.rel)}: not sent: the server already holds other bytes under "
                "this name (first sync to this directory); to replace them, run "
                "`syncd sync --force-delete`",
                path=op.rel,
            )
        return _Prepared(local, key, snapshot, first, cut)

    def _sent(self, ctx: FolderCtx, op: Op, local: LocalFile, sha: str, started: float) -> str:
        """The remote confirmed ``sha`` for the bytes read as ``local``: record exactly that,
        then check the file is still what was read (SourceChanged if not: sent again)."""
        crash_point("after-upload")
        # The remote now holds the bytes read as `local`: record exactly that. If the file has
        # changed since, it no longer matches this row and is sent again.
        self.records.sent(ctx.scope, local, sha)
        log.info(
            "sent %s/%s (%d bytes)",
            ctx.remote_path,
            op.rel,
            local.size,
            extra={
                "event": "sent",
                "folder": ctx.remote_path,
                "path": op.rel,
                "bytes": local.size,
                "ms": round((time.monotonic() - started) * 1000),
                "result": "ok",
            },
        )
        if ctx.stat(op.rel) != local:
            raise SourceChanged(op.rel, "changed while it was being sent; will send again")
        self._changing.discard((ctx.scope, op.rel))
        return Outcome.UPLOADED

    async def upload_batch(
        self, ctx: FolderCtx, items: Sequence[tuple[Op, Callable[[int], None] | None]]
    ) -> list[BatchResult]:
        """Send several small files of one folder in one request (``Batcher``), each prepared
        and recorded as :meth:`upload` does it alone. Per item: its outcome, the error it met
        (to be handled as if :meth:`upload` had raised it), or None (send it alone: it is
        changing, or the server took it in no batch). The whole batch is retried under the
        retry policy; a TransientError left after the tries is every item's error."""
        batcher = cast(Batcher, self.remote)
        results: list[BatchResult] = [None] * len(items)
        ready: list[tuple[int, _Prepared, Source, Callable[[int], None]]] = []
        for i, (op, progress) in enumerate(items):
            on_bytes = self._counter(progress)
            try:
                prep = await self._prepare(ctx, op, on_bytes)
                if isinstance(prep, str):
                    results[i] = prep
                    continue
                if prep.snapshot:
                    continue  # (alone: a changing file is sent as a snapshot)
                src = prep.first or await self._open(ctx.root / op.rel, prep.local, on_bytes)
            except SourceChanged:
                continue  # (alone: it decides what a changing file becomes)
            except (SourceError, RemoteError) as e:
                results[i] = e
                continue
            if src.data is None:
                continue  # (alone: it grew past what is read into memory since its scan)
            ready.append((i, prep, src, on_bytes))
        if not ready:
            return results
        parts = [(items[i][0].rel, src) for i, _, src, _ in ready]
        for _, _, src, _ in ready:
            await src.pace(len(src.data or b""))
        started = time.monotonic()
        what = f"upload {len(parts)} files to {ctx.remote_path}/"
        try:
            answers = await self.policy.run(what, lambda: batcher.put_batch(ctx.remote_path, parts))
        except TransientError as e:
            for i, _, _, _ in ready:
                results[i] = e
            return results
        for (i, prep, src, on_bytes), answer in zip(ready, answers, strict=True):
            op = items[i][0]
            if isinstance(answer, TransientError):
                continue  # (alone, under its own retries: a 507 or 503 for this file)
            if not isinstance(answer, str):
                results[i] = answer
                continue
            on_bytes(len(src.data or b""))
            try:
                results[i] = self._sent(ctx, op, prep.local, answer, started)
            except SourceChanged as e:
                results[i] = e
        return results

    def batch_limits(self) -> BatchLimits | None:
        """What the remote takes in one batch; None if it takes none, or while that is not
        known yet: the first call asks in the background (so no file waits for the answer)
        and files go alone until it comes; a remote that could not say is asked again."""
        if not self.remote.features.batch:
            return None
        asking = self._limits
        if asking is None:
            self._limits = asking = asyncio.ensure_future(self._ask_limits())
        if not asking.done():
            return None
        limits = asking.result()
        if limits is False:
            self._limits = None  # (asked again by the next file)
            return None
        return limits

    async def _ask_limits(self) -> BatchLimits | Literal[False] | None:
        try:
            return await cast(Batcher, self.remote).batch_limits()
        except RemoteError:
            return False  # (whatever is wrong, the files meet it one by one)

    @staticmethod
    def _still_there(
        ctx: FolderCtx, rel: str, problem: str = "vanished while it was being read"
    ) -> LocalFile:
        local = ctx.stat(rel)
        if local is None:
            raise SourceChanged(rel, problem)
        return local

    def _mark_changing(self, key: tuple[str, str]) -> None:
        if len(self._changing) >= CHANGING_MAX:
            self._changing.clear()
        self._changing.add(key)

    def _counter(self, progress: Callable[[int], None] | None) -> Callable[[int], None]:
        def count(n: int) -> None:
            if self.on_bytes is not None:
                self.on_bytes(n)
            if progress is not None:
                progress(n)

        return count

    async def _open(
        self,
        path: Path,
        local: LocalFile,
        on_bytes: Callable[[int], None],
        *,
        snapshot: bool = False,
    ) -> Source:
        return await Source.open(
            path,
            local,
            stats=self.stats,
            on_bytes=on_bytes,
            throttle=self.throttle,
            snapshot=snapshot,
        )

    async def move(self, ctx: FolderCtx, op: Op) -> str:
        """Move on the server (the caller checked the remote can), then move the rows.

        A move that the planner could not confirm (``op.confirm``) is made only if the file
        now at ``dest`` holds the bytes the row says the server holds at ``rel``; otherwise
        ``dest`` is uploaded and ``rel`` deleted, and the outcome is UPLOADED."""
        assert op.dest is not None
        if op.confirm and not await self._same_bytes(ctx, op):
            assert op.local is not None
            outcome = await self.upload(ctx, Op(OpKind.UPLOAD, op.dest, local=op.local))
            await self.delete(ctx, Op(OpKind.DELETE, op.rel, row=op.row))
            return outcome
        src, dst = ctx.remote(op.rel), ctx.remote(op.dest)
        assert self.remote.features.move
        mover = cast(Mover, self.remote)
        try:
            await self.policy.run(f"move {src}", lambda: mover.move(src, dst))
        except (AuthError, WrongProtocol):
            raise
        except PermanentError as e:
            if op.tree or op.local is None:
                raise
            # The server refused (it no longer holds the source, say): send it instead.
            log.info("could not move %s (%s); sending %s instead", src, e, dst)
            outcome = await self.upload(ctx, Op(OpKind.UPLOAD, op.dest, local=op.local))
            await self.delete(ctx, Op(OpKind.DELETE, op.rel, row=op.row))
            return outcome
        crash_point("after-move")
        self.records.moved(ctx.scope, op.rel, op.dest, op.local, tree=op.tree)
        log.info(
            "moved %s -> %s",
            src,
            dst,
            extra={"event": "moved", "folder": ctx.remote_path, "path": op.rel, "result": "ok"},
        )
        return Outcome.MOVED

    async def _same_bytes(self, ctx: FolderCtx, op: Op) -> bool:
        """Does the file at ``op.dest`` hash to the row of ``op.rel``?"""
        assert op.dest is not None and op.row is not None
        local = ctx.stat(op.dest)
        if local is None:
            raise SourceChanged(op.dest, "vanished before it could be read")
        if local.size != op.row.size:
            return False
        sha = await asyncio.to_thread(hash_path, ctx.root / op.dest, local, self.stats)
        return sha == op.row.sha256

    async def delete(self, ctx: FolderCtx, op: Op) -> int:
        """Delete a file, or a whole directory (``op.tree``), on the remote; returns how many
        files of the manifest that removed."""
        target = ctx.remote(op.rel)
        await self.policy.run(f"delete {target}", lambda: self.remote.delete(target))
        crash_point("after-delete")
        n = self.records.deleted(ctx.scope, op.rel, tree=op.tree)
        log.info(
            "deleted %s",
            target,
            extra={"event": "deleted", "folder": ctx.remote_path, "path": op.rel, "result": "ok"},
        )
        return n
