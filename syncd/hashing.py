"""Reading local files for upload: sha-256 computed from the very bytes that are sent.

Small files are read whole in one worker-thread call (read + hash together). Large files are
streamed in 1 MiB chunks, each read and hashed in a worker thread (hashlib releases the GIL)
while the previous chunk is on the wire; memory stays at a few chunks whatever the file's size.
Files are opened with O_NOFOLLOW | O_NONBLOCK and checked to be regular files after opening, so a
path swapped for a symlink or a FIFO since the scan is refused instead of followed or hung on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from syncd.chunking import Changed, Chunks, Cutter
from syncd.errors import SourceChanged, SourceError
from syncd.faults import crash_point
from syncd.types import LocalFile

CHUNK = 1 << 20  # 1 MiB: large enough that the thread hop per chunk costs nothing
SMALL = 1 << 20  # files up to this size are read into memory and sent in one request
INLINE = 64 << 10  # files up to this size are read on the event loop's thread

_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_O_FLAGS |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass
class ReadStats:
    """Counts what was read from disk (a no-op pass must read nothing)."""

    files: int = 0
    bytes: int = 0


def _open(path: Path, expect: LocalFile) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading; refuse anything but the regular file the scan saw."""
    try:
        fd = os.open(path, _O_FLAGS)
    except FileNotFoundError:
        raise SourceChanged(expect.rel, "vanished before it could be read") from None
    except OSError as e:
        if e.errno == getattr(os, "ELOOP", -1):
            raise SourceError(expect.rel, "became a symbolic link (not followed)") from None
        raise SourceError(expect.rel, f"cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(expect.rel, "is no longer a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _same(st: os.stat_result, expect: LocalFile) -> bool:
    return st.st_size == expect.size and st.st_mtime_ns == expect.mtime_ns


def digest_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_path(path: Path, expect: LocalFile, stats: ReadStats | None = None) -> str:
    """sha-256 of a file (blocking: call in a thread). Raises SourceChanged if it changed."""
    fd, st = _open(path, expect)
    try:
        if not _same(st, expect):
            raise SourceChanged(expect.rel, "changed since it was scanned")
        h = hashlib.sha256()
        n = 0
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
            n += len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if stats is not None:
        stats.files += 1
        stats.bytes += n
    if n != expect.size or not _same(after, expect):
        raise SourceChanged(expect.rel, "changed while it was being read")
    crash_point("hashing")
    return h.hexdigest()


CUT_BATCH = 512
"""Chunk records handed on at a time while a file is cut."""


def cut_path(
    path: Path,
    expect: LocalFile,
    stats: ReadStats | None = None,
    stop: threading.Event | None = None,
    emit: Callable[[list[tuple[int, int, bytes]]], None] | None = None,
) -> Chunks:
    """The file's chunk list and whole sha-256 in one read (blocking: a worker thread; the
    hash in a second one, :class:`~syncd.chunking.Cutter`), each batch of records handed to
    ``emit`` as it is cut. Raises SourceChanged if it is not, or no longer, the file
    ``expect`` describes; stops early (an incomplete result) once ``stop`` is set."""
    fd, st = _open(path, expect)
    try:
        if not _same(st, expect):
            raise SourceChanged(expect.rel, "changed since it was scanned")
        cutter = Cutter(fd, expect.size)
        try:
            for batch in cutter.batches(stop or threading.Event(), CUT_BATCH):
                if emit is not None:
                    emit(batch)
        except Changed:
            raise SourceChanged(expect.rel, "changed while it was being read") from None
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if stats is not None:
        stats.files += 1
        stats.bytes += expect.size
    if not _same(after, expect):
        raise SourceChanged(expect.rel, "changed while it was being read")
    if cutter.chunks is None:
        raise SourceChanged(expect.rel, "was not read completely")
    return cutter.chunks


@dataclass
class Source:
    """A local file being uploaded, as the remotes see it.

    ``data``/``sha256`` are set for small files (read whole before sending). For large files
    ``chunks()`` streams the body and ``sha256`` is known once it is exhausted.
    ``check_unchanged()`` raises SourceChanged if the file differs from what was read.

    ``snapshot``: the file is known to be changing and is sent anyway (``max_delay``): exactly
    ``size`` bytes are read (a file that grew is cut at ``size``), the digest is that of the
    bytes read, which are the bytes sent, and a change meanwhile is not an error; only a file
    that shrank below ``size`` cannot be sent (SourceChanged). ``error`` keeps the file's own
    error met while a body was streamed (the HTTP client reports it as a connection error).
    """

    path: Path
    local: LocalFile
    data: bytes | None = None
    sha256: str | None = None
    stats: ReadStats | None = None
    on_bytes: Callable[[int], None] | None = None
    throttle: Callable[[int], float] | None = None
    snapshot: bool = False
    #: The sha-256 of the server's copy this file replaces (its manifest row), and that
    #: copy's chunk list if the manifest keeps one: a large file may go as a delta of it.
    base_sha256: str | None = None
    base_chunks: bytes | None = None
    #: Set by a remote that cut the file into chunks: (the sha-256 of the bytes cut, their
    #: list), for the manifest once the remote confirms those bytes.
    new_chunks: tuple[str, bytes] | None = field(default=None, init=False)
    #: The chunk list (and sha-256) of the file as ``local`` describes it, taken before the
    #: upload began; ``cut`` hands it out while the file is still that one.
    cut_ahead: tuple[LocalFile, Chunks] | None = None
    error: SourceError | None = field(default=None, init=False)
    _sent: int = field(default=0, init=False)

    @property
    def rel(self) -> str:
        return self.local.rel

    @property
    def size(self) -> int:
        return self.local.size

    @classmethod
    async def open(
        cls,
        path: Path,
        local: LocalFile,
        *,
        stats: ReadStats | None = None,
        on_bytes: Callable[[int], None] | None = None,
        throttle: Callable[[int], float] | None = None,
        snapshot: bool = False,
    ) -> Source:
        """Prepare an upload. Small files are read and hashed now, in one thread hop."""
        src = cls(path, local, stats=stats, on_bytes=on_bytes, throttle=throttle, snapshot=snapshot)
        if local.size <= INLINE:
            # open + read + hash of a few KiB take ~20 us: less than handing them to a worker
            # thread and waking the event loop again (~100 us and two GIL hand-offs).
            src.data, src.sha256 = src._read_whole()
        elif local.size <= SMALL:
            src.data, src.sha256 = await asyncio.to_thread(src._read_whole)
        return src

    def _read_whole(self) -> tuple[bytes, str]:
        fd, st = _open(self.path, self.local)
        try:
            if not self.snapshot and not _same(st, self.local):
                raise SourceChanged(self.rel, "changed since it was scanned")
            data = os.read(fd, self.local.size + 1)
            while len(data) <= self.local.size and (more := os.read(fd, CHUNK)):
                data += more
        finally:
            os.close(fd)
        if self.stats is not None:
            self.stats.files += 1
            self.stats.bytes += len(data)
        if self.snapshot and len(data) > self.local.size:
            data = data[: self.local.size]  # it grew since its stat: send what the stat saw
        if len(data) != self.local.size:
            raise SourceChanged(self.rel, "changed while it was being read")
        digest = hashlib.sha256(data).hexdigest()
        crash_point("hashing")
        return data, digest

    async def pace(self, nbytes: int) -> None:
        """Account ``nbytes`` about to be sent to ``bwlimit``: wait as long as it says."""
        if self.throttle is not None:
            delay = self.throttle(nbytes)
            if delay > 0:
                await asyncio.sleep(delay)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The file's bytes in 1 MiB chunks; reads one chunk ahead in a worker thread.

        Paced by ``throttle``. A change of the file (SourceChanged) is also kept in ``error``.
        The descriptor is closed however the iteration ends (use ``contextlib.aclosing`` to
        end it early)."""
        if self.data is not None:
            await self.pace(len(self.data))
            yield self.data
            return
        h = hashlib.sha256()
        self.sha256 = None
        remaining = self.local.size
        pending: asyncio.Future[bytes] | None = None
        fd = -1

        def read(n: int) -> bytes:
            buf = os.read(fd, n)
            while buf and len(buf) < n:
                more = os.read(fd, n - len(buf))
                if not more:
                    break
                buf += more
            h.update(buf)
            return buf

        loop = asyncio.get_running_loop()
        try:
            fd, st = await asyncio.to_thread(_open, self.path, self.local)
            if not self.snapshot and not _same(st, self.local):
                raise SourceChanged(self.rel, "changed since it was scanned")
            pending = loop.run_in_executor(None, read, min(CHUNK, remaining)) if remaining else None
            if pending is None:  # an empty file (a size that changed to 0 is caught above)
                self.sha256 = h.hexdigest()
            while pending is not None:
                buf = await pending
                pending = None
                if not buf:
                    raise SourceChanged(self.rel, "shrank while it was being sent")
                remaining -= len(buf)
                if remaining > 0:
                    pending = loop.run_in_executor(None, read, min(CHUNK, remaining))
                if self.stats is not None:
                    self.stats.bytes += len(buf)
                await self.pace(len(buf))
                if self.on_bytes is not None:
                    self.on_bytes(len(buf))
                if remaining == 0:
                    # Everything is read: the digest is final before the last chunk goes out
                    # (the HTTP client may stop iterating once Content-Length bytes are sent).
                    self.sha256 = h.hexdigest()
                    if self.stats is not None:
                        self.stats.files += 1
                yield buf
                self._sent += len(buf)
                if self._sent >= self.local.size // 2:
                    crash_point("mid-body")
        except SourceError as e:
            self.error = e
            raise
        finally:
            if pending is not None:
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()  # retrieved: the read-ahead is not needed any more
            if fd >= 0:
                os.close(fd)

    def cut(
        self, stop: threading.Event, emit: Callable[[list[tuple[int, int, bytes]]], None]
    ) -> Chunks:
        """Cut the file into chunks (blocking: a worker thread; :mod:`syncd.chunking`), each
        batch of (offset, length, xxh3-128) handed to ``emit`` as it is cut; returns the list
        and the whole sha-256. Raises SourceChanged if it is not, or no longer, the file
        ``local`` describes; stops early (an incomplete result) once ``stop`` is set.

        A list already taken of this very file (``cut_ahead``: the uploader's compare cut it
        instead of only hashing it) is handed out again, the file not read a second time."""
        ahead = self.cut_ahead
        if ahead is not None and ahead[0] == self.local:
            fd, st = _open(self.path, self.local)
            os.close(fd)
            if not _same(st, self.local):
                raise SourceChanged(self.rel, "changed since it was read")
            entries = list(ahead[1].entries())
            for i in range(0, len(entries), CUT_BATCH):
                if stop.is_set():
                    return ahead[1]
                emit(entries[i : i + CUT_BATCH])
            emit([])
            return ahead[1]
        return cut_path(self.path, self.local, self.stats, stop, emit)

    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the file from ``offset`` (blocking); SourceChanged if fewer."""
        fd, st = _open(self.path, self.local)
        try:
            if not _same(st, self.local):
                raise SourceChanged(self.rel, "changed while it was being sent")
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise SourceChanged(self.rel, "shrank while it was being sent")
        return data

    async def check_unchanged(self) -> None:
        """Raise SourceChanged unless the file still has the size and mtime it had when read
        (a ``snapshot`` was sent as it was read: nothing to check)."""
        if self.error is not None:
            raise self.error
        if self.snapshot:
            return
        try:
            st = await asyncio.to_thread(os.lstat, self.path)
        except FileNotFoundError:
            raise SourceChanged(self.rel, "vanished while it was being sent") from None
        if not stat.S_ISREG(st.st_mode) or not _same(st, self.local):
            raise SourceChanged(self.rel, "changed while it was being sent")
