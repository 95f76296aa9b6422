"""Upload bodies for aiohttp: a small file from memory, a file streamed in chunks, or a large
file sent by the kernel (``silence.silence_limit`` bounds a request with one by
``remote.timeout`` seconds of silence).

``body_of(source)`` picks the body. Each counts its progress (``_Body.signal``), so a request
can fail after ``timeout`` seconds in which the server accepted no byte and gave no answer,
while a slow server that keeps reading is never cut off (aiohttp's ``sock_read`` runs while
the body is still being sent: aiohttp issue 7149). ``bwlimit`` paces every body, small ones
too.

Streaming a file through Python (read a chunk, hand it to the socket) costs two copies and a
thread hop per chunk, and caps an upload at ~300 MB/s on loopback. ``FileBody`` instead lets
``os.sendfile`` copy the file from the page cache to the socket (``loop.sendfile``), while a
worker thread computes its sha-256 from the same page cache (``os.preadv`` into one reused
buffer; hashlib releases the GIL). Both finish at about the same time, so the digest costs no
wall-clock time.

The bytes hashed and the bytes sent are read separately, so the file is pinned: it is opened
once (O_NOFOLLOW, regular file only), and its size, mtime and ctime must be the same after the
request as when it was opened, or the upload is SourceChanged and sent again. A write during
the transfer changes ctime (which nothing can set back); `syncd serve` also compares the
digest of what it received with ours. A *snapshot* (a file sent while it changes, for
``max_delay``) therefore never takes this path: ``ChunkedBody`` hashes the very bytes it sends.

TLS transports cannot use sendfile: there the file is read in 1 MiB chunks in a worker thread
and written through aiohttp. With ``bwlimit`` the pieces are 1 MiB, so the pacing stays fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

try:
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # not Linux/Unix: progress is counted by writes only
    _TIOCOUTQ = None

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from syncd.errors import SourceChanged, TransientError
from syncd.faults import crash_point
from syncd.hashing import CHUNK, Source, _open, _same

PIECE = 8 << 20  # bytes per sendfile call: progress and cancellation points, few wakeups
HASH_CHUNK = 1 << 20

#: Where the kernel path works: Unix with preadv (Windows gets the streamed path).
AVAILABLE = hasattr(os, "preadv") and hasattr(os, "sendfile")
#: Files from this size on take the kernel path. Below it, many files are usually in flight at
#: once and already keep both cores busy: there a second pass over each file (the separate
#: hash) costs more than the copies it saves (200 x 5 MiB to nginx: 2.0 s chunked, 2.5 s
#: sendfile); a single large file is where one stream must go as fast as the wire.
SENDFILE_MIN = 32 << 20


def _pinned(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


def _hash_fd(fd: int, size: int, rel: str, stop: threading.Event) -> str:
    """sha-256 of the first ``size`` bytes of ``fd`` (blocking: runs in a worker thread).
    Gives up as soon as ``stop`` is set (the upload failed or was cancelled: a 100 GiB file
    must not be hashed to the end before its descriptor can be closed)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    off = 0
    while off < size:
        if stop.is_set():
            raise SourceChanged(rel, "was not sent completely")
        n = os.preadv(fd, [view[: min(HASH_CHUNK, size - off)]], off)
        if n <= 0:
            raise SourceChanged(rel, "shrank while it was being sent")
        h.update(view[:n])
        off += n
    return h.hexdigest()


class _Body(payload.Payload):
    """What every upload body shares: its size, and a progress signal for ``silence_limit``
    (how many times bytes were handed on, and how full the transport's and the kernel's send
    buffers are: any change is a sign of life)."""

    def __init__(self, source: Source, size: int | None) -> None:
        super().__init__(source, content_type="application/octet-stream")
        self.data = self
        self._source = source
        self._size = size
        self._moves = 0
        self._own = 0  # > 0 while the time is ours (reading the disk, pausing for bwlimit)
        self._transport: Any = None
        self._sock: Any = None

    def _attach(self, writer: AbstractStreamWriter) -> None:
        self._transport = getattr(writer, "transport", None)
        if self._transport is not None:
            self._sock = self._transport.get_extra_info("socket")

    def _moved(self, nbytes: int) -> None:
        self._moves += 1

    @contextlib.contextmanager
    def _ours(self) -> Iterator[None]:
        """Time spent inside is not the server's silence (a slow disk, a bwlimit pause)."""
        self._own += 1
        try:
            yield
        finally:
            self._own -= 1
            self._moves += 1

    def signal(self) -> object:
        if self._own:
            return time.monotonic()  # always "moving"
        t = self._transport
        buffered = None
        if t is not None:
            with contextlib.suppress(Exception):
                buffered = t.get_write_buffer_size()
        return (self._moves, buffered, _send_queue(self._sock))

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file body has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def close(self) -> None:
        """aiohttp's hook: nothing to do (``body_of`` closes the file)."""


class FileBody(_Body):
    """The whole of ``source`` (a large file) as a request body; see the module docstring.

    Use ``async with FileBody.open(source) as body``; after the response, ``await
    body.digest()`` gives the sha-256 (and sets ``source.sha256``) or raises SourceChanged.
    An error of the file itself met while sending is kept in ``error`` (aiohttp reports it as
    a connection error; ``body_of`` raises ``error`` instead).
    """

    def __init__(self, source: Source, fd: int, st: os.stat_result, start: int = 0) -> None:
        super().__init__(source, source.size - start)
        self._start = start  # (a resumed upload sends from here; the digest is the whole's)
        self._fd = fd
        self._st = st
        self._hash: asyncio.Future[str] | None = None
        self._stop = threading.Event()
        self.error: SourceChanged | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, source: Source, start: int = 0) -> AsyncIterator[FileBody]:
        """The file from byte ``start`` on as the body (its digest still that of all of it)."""
        fd, st = await asyncio.to_thread(_open, source.path, source.local)
        body = cls(source, fd, st, start)
        try:
            if not _same(st, source.local):
                raise SourceChanged(source.rel, "changed since it was scanned")
            yield body
        finally:
            # The hash thread reads fd: fd is closed once it is done. After digest() it is;
            # otherwise it stops at its next MiB. No await here, so that a cancelled upload
            # cannot skip the close.
            hashing = body._hash

            def close(fut: asyncio.Future[str] | None = None) -> None:
                if fut is not None and not fut.cancelled():
                    fut.exception()  # retrieved: reported through digest(), or dropped
                os.close(fd)

            if hashing is None:
                close()
            elif hashing.done():
                close(hashing)
            else:
                body._stop.set()
                hashing.add_done_callback(close)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._attach(writer)
        src = self._source
        size = src.size
        if content_length is not None:
            size = min(size, self._start + content_length)
        if self._hash is None:
            self._hash = asyncio.ensure_future(
                asyncio.to_thread(_hash_fd, self._fd, size, src.rel, self._stop)
            )
        try:
            await self._send(writer, size)
        except SourceChanged as e:
            self.error = e
            raise

    async def _send(self, writer: AbstractStreamWriter, size: int) -> None:
        src = self._source
        loop = asyncio.get_running_loop()
        transport: Any = getattr(writer, "transport", None)
        native = transport is not None and transport.get_extra_info("sslcontext") is None
        send_headers = getattr(writer, "send_headers", None)
        throttled = src.throttle is not None and getattr(src.throttle, "rate", 0) > 0
        # A few pieces per file at least, so progress (and the mid-body crash point) move.
        piece = CHUNK if throttled or not native else max(CHUNK, min(PIECE, size // 4))
        if native and send_headers is not None:
            send_headers()  # the headers must be on the transport before sendfile's bytes
        else:
            native = False
        # loop.sendfile wants a file object; a dup keeps our fd's offset and lifetime our own.
        with open(os.dup(self._fd), "rb", buffering=0) as f:
            sent = self._start
            while sent < size:
                n = min(piece, size - sent)
                if native:
                    got = await loop.sendfile(transport, f, sent, n, fallback=False)
                else:
                    with self._ours():
                        chunk = await asyncio.to_thread(os.pread, self._fd, n, sent)
                    got = len(chunk)
                    if got:
                        await writer.write(chunk)
                if got <= 0:
                    raise SourceChanged(src.rel, "shrank while it was being sent")
                self._moved(got)
                before = sent
                sent += got
                if src.stats is not None:
                    src.stats.bytes += got
                with self._ours():
                    await src.pace(got)
                if src.on_bytes is not None:
                    src.on_bytes(got)
                if before < size // 2 <= sent:
                    crash_point("mid-body")

    async def digest(self) -> str:
        """The sha-256 of what was sent; SourceChanged if the file changed meanwhile."""
        src = self._source
        if self.error is not None:
            raise self.error
        if self._hash is None:
            raise SourceChanged(src.rel, "was not sent")
        sha = await asyncio.shield(self._hash)
        after = await asyncio.to_thread(os.fstat, self._fd)
        if not _pinned(self._st, after):
            raise SourceChanged(src.rel, "changed while it was being sent")
        try:
            now = await asyncio.to_thread(os.lstat, src.path)
        except FileNotFoundError:
            raise SourceChanged(src.rel, "vanished while it was being sent") from None
        if not _pinned(self._st, now):
            raise SourceChanged(src.rel, "was replaced while it was being sent")
        if src.stats is not None:
            src.stats.files += 1
        src.sha256 = sha
        return sha


class MemoryBody(_Body):
    """A small file already in memory (``source.data``), between optional ``head`` and
    ``tail`` (a multipart form's framing). Sent in one write, or in pieces paced by
    ``bwlimit`` when a limit is set, so many small files are limited like one large one."""

    def __init__(self, source: Source, head: bytes = b"", tail: bytes = b"") -> None:
        assert source.data is not None
        super().__init__(source, len(head) + len(source.data) + len(tail))
        self._parts = (head, source.data, tail)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._attach(writer)
        head, data, tail = self._parts
        src = self._source
        throttled = src.throttle is not None and getattr(src.throttle, "rate", 0) > 0
        view = memoryview(head + data + tail if not throttled else data)
        if not throttled:
            await writer.write(view)
            self._moved(len(view))
            return
        piece = _paced_piece(src.throttle)
        if head:
            await writer.write(head)
        for off in range(0, len(view), piece):
            chunk = view[off : off + piece]
            with self._ours():
                await src.pace(len(chunk))
            await writer.write(chunk)
            self._moved(len(chunk))
        if tail:
            await writer.write(tail)

    async def digest(self) -> str:
        assert self._source.sha256 is not None
        return self._source.sha256


class ChunkedBody(_Body):
    """The streamed body: 1 MiB chunks read and hashed in a worker thread (``Source.chunks``,
    paced by ``bwlimit`` there), between optional ``head`` and ``tail``. The digest is that of
    the very bytes sent. Used below SENDFILE_MIN, without sendfile (Windows, TLS), and for
    snapshots (a file sent while it changes: see ``Source.snapshot``)."""

    def __init__(self, source: Source, head: bytes = b"", tail: bytes = b"") -> None:
        super().__init__(source, len(head) + source.size + len(tail))
        self._head, self._tail = head, tail
        self._started = False

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._attach(writer)
        self._started = True
        if self._head:
            await writer.write(self._head)
        async with contextlib.aclosing(self._source.chunks()) as chunks:
            while True:
                with self._ours():  # reading (and pacing, in chunks()) is our own time
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                await writer.write(chunk)
                self._moved(len(chunk))
        if self._tail:
            await writer.write(self._tail)

    async def digest(self) -> str:
        src = self._source
        if not self._started:
            raise SourceChanged(src.rel, "was not sent")
        await src.check_unchanged()
        if src.sha256 is None:
            raise SourceChanged(src.rel, "was not sent completely")
        return src.sha256


class StreamBody(_Body):
    """A body of ``size`` bytes made as it is sent (a delta's steps: :mod:`.syncd_large`),
    watched by ``silence_limit`` as every body is; ``pieces`` does its own pacing."""

    def __init__(self, source: Source, size: int | None, pieces: AsyncIterator[bytes]) -> None:
        super().__init__(source, size)  # (None: sent chunked)
        self._pieces = pieces

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._attach(writer)
        while True:
            with self._ours():
                try:
                    piece = await anext(self._pieces)
                except StopAsyncIteration:
                    break
            await writer.write(piece)
            self._moved(len(piece))


UploadBody = FileBody | ChunkedBody | MemoryBody


@asynccontextmanager
async def body_of(
    source: Source, head: bytes = b"", tail: bytes = b""
) -> AsyncIterator[UploadBody]:
    """The request body for ``source``: give it to aiohttp as ``data``; after the answer,
    ``await body.digest()`` (the sha-256 of what was sent, or SourceChanged). A TransientError
    raised inside (aiohttp reports a failed body as a connection error) becomes the file's own
    SourceError when that was the cause. Every descriptor is closed on the way out."""
    body: UploadBody
    if source.data is not None:
        body = MemoryBody(source, head, tail)
    elif not AVAILABLE or source.size < SENDFILE_MIN or source.snapshot or head or tail:
        body = ChunkedBody(source, head, tail)
    else:
        async with FileBody.open(source) as fbody:
            try:
                yield fbody
            except TransientError:
                if fbody.error is not None:
                    raise fbody.error from None
                raise
        return
    try:
        yield body
    except TransientError:
        if source.error is not None:
            raise source.error from None
        raise


def _paced_piece(throttle: object) -> int:
    """Bytes per paced write: about an eighth of a second at the limit, 4 KiB to 1 MiB."""
    rate = int(getattr(throttle, "rate", 0) or 0)
    return max(4 << 10, min(CHUNK, rate // 8))


def _send_queue(sock: Any) -> int | None:
    """Bytes in the kernel's send queue of ``sock`` (Linux: SIOCOUTQ), None where unknown."""
    if _TIOCOUTQ is None or sock is None:
        return None
    try:
        out = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    return int.from_bytes(out, sys.byteorder, signed=True)
