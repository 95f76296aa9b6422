"""Request bodies, from the connection to an :class:`~syncd.server.uploads.Upload`.

Waiting for a client's bytes is the event loop's job; only the blocking work (write, hash,
fsync, and for large bodies the socket reads themselves, in short slices) runs in threads, in
the app's own bounded pool of body threads (``BODY_THREADS``), apart from the default executor
that listings, reads, deletes and small uploads use. So however many clients trickle their
bodies in, no thread waits for any of them, and nothing else waits for the body threads.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from syncd.digests import sha256_members
from syncd.server.errors import (
    BadRequest,
    ContentTooLarge,
    NotImplementedHere,
    RequestTimeout,
    Unavailable,
    UnsupportedMediaType,
)
from syncd.server.fdio import CHUNK
from syncd.server.uploads import Stored, Upload

READ_TIMEOUT = 60.0
"""Seconds a request body may stall before the request fails (408)."""
READ_AHEAD = 2 * CHUNK
"""Bytes of a large body the connection reads ahead while the previous MiB is written."""
DIRECT_MIN = 8 << 20
"""Bodies from this size on are received straight from the socket (see :func:`_take_socket`)."""
BODY_THREADS = 16
"""Threads for body work; each holds at most a few MiB of buffers while it runs."""

CLOSE = "syncd.close"
"""Request key: the body was read past aiohttp, so the answer closes the connection."""

BODY_METHODS = ("PUT", "POST", "MKCOL", "PROPFIND")


def body_pool() -> ThreadPoolExecutor:
    """The pool that runs body work (one per app)."""
    return ThreadPoolExecutor(BODY_THREADS, thread_name_prefix="syncd-body")


def check_body_headers(request: web.Request) -> None:
    """Refuse what would make the stored bytes differ from the bytes sent, before any body
    byte is read: a content coding (415; the server never decodes a body), a transfer coding
    other than chunked (501), a partial PUT (``Content-Range``, 400)."""
    if request.method not in BODY_METHODS and not request.body_exists:
        return
    coding = _other_coding(request, "Content-Encoding", "identity")
    if coding is not None:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding!r} is not accepted: send the bytes to be stored"
            " as they are (a body is stored and its digest checked as sent)"
        )
    coding = _other_coding(request, "Transfer-Encoding", "chunked")
    if coding is not None:
        raise NotImplementedHere(f"Transfer-Encoding {coding!r} is not supported (only chunked)")
    if "Content-Range" in request.headers:
        raise BadRequest("Content-Range is not supported: send the whole body")


def _other_coding(request: web.Request, header: str, allowed: str) -> str | None:
    """The first coding listed in ``header`` (every occurrence) that is not ``allowed``."""
    for value in request.headers.getall(header, ()):
        for coding in value.split(","):
            coding = coding.strip()
            if coding and coding.lower() != allowed:
                return coding
    return None


def request_digests(request: web.Request) -> list[bytes]:
    """Every sha-256 in the request's Repr-Digest / Content-Digest headers (RFC 9530)."""
    found: list[bytes] = []
    for header in ("Repr-Digest", "Content-Digest"):
        for value in request.headers.getall(header, ()):
            try:
                found.extend(sha256_members(value))
            except ValueError as e:
                raise BadRequest(f"malformed {header}: {e}") from None
    return found


async def read_chunk(request: web.Request) -> bytes:
    """The next piece of the body as received (b"" at its end), without copying it again.

    ``readchunk()`` also reports the ends of HTTP chunks as ``(b"", True)``: skip those, but
    only while the body goes on. (aiohttp's shared empty body answers ``(b"", True)`` forever
    once it has been read: without the ``at_eof()`` check a second empty PUT spins here.)
    """
    content = request.content
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            while True:
                data, end_of_http_chunk = await content.readchunk()
                if data or not end_of_http_chunk or content.at_eof():
                    return data
    except TimeoutError:
        raise RequestTimeout(f"no body data for {READ_TIMEOUT:.0f} s") from None
    except (ConnectionError, HttpProcessingError):
        raise BadRequest("the body ended early (client disconnected)") from None
    except RequestPayloadError as e:  # a malformed chunked body
        raise BadRequest(f"malformed body: {_payload_reason(e)}") from None


def _payload_reason(e: BaseException) -> str:
    cause = e.__cause__ or e
    text = getattr(cause, "message", None) or str(cause) or type(cause).__name__
    return str(text).splitlines()[0][:120] if str(text).strip() else type(cause).__name__


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


async def receive(
    request: web.Request,
    up: Upload,
    pool: ThreadPoolExecutor,
    *,
    expected: Sequence[bytes],
    commit: bool,
) -> Stored:
    """Stream the body into ``up``, 1 MiB at a time, off the event loop.

    Each MiB is written and hashed in a body thread (os.writev and hashlib release the GIL)
    while the next MiB is received. (Hashing in a second thread, in parallel with the write,
    measured slower on two cores.) A small body costs one hop to the default executor (temp,
    write, hash, fsync, rename). On any failure, including cancellation, the temp is removed.
    """
    loop = asyncio.get_running_loop()
    direct = _take_socket(request)
    if direct is not None:
        return await _receive_direct(request, up, pool, direct, expected=expected, commit=commit)
    restore_recv = None
    if request.content_length is None or request.content_length > CHUNK:
        # Let the connection read ahead while a MiB is written (aiohttp pauses reading at
        # twice this much buffered).
        set_size = getattr(request.content, "set_read_chunk_size", None)
        if set_size is not None:
            set_size(READ_AHEAD)
        restore_recv = _large_reads(request)
    buf: list[bytes] = []
    buffered = 0
    pending: asyncio.Future[None] | None = None
    wrote = False
    ok = False
    try:
        while chunk := await read_chunk(request):
            buf.append(chunk)
            buffered += len(chunk)
            if buffered >= CHUNK:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(pool, up.write, buf)
                wrote = True
                buf = []
                buffered = 0
        if pending is not None:
            await pending
        finish = partial(
            up.complete, buf, length=request.content_length, expected=expected, commit=commit
        )
        # A body of one piece is a small request: the default executor, not the body threads.
        stored = await loop.run_in_executor(pool if wrote else None, finish)
        ok = True
        return stored
    finally:
        if restore_recv is not None:
            restore_recv()
        if pending is not None:
            pending.add_done_callback(_retrieve)
        if not ok:
            # Runs even when this task is cancelled again: the thread call is already queued.
            await asyncio.to_thread(up.discard)


def _take_socket(request: web.Request) -> tuple[socket.socket, list[bytes], int] | None:
    """For a large plain-TCP body: stop the event loop reading the connection and return a
    duplicate of its socket, the body bytes aiohttp already buffered, and how many are left.

    The rest of the body is then read by :meth:`Upload.receive_some` in body threads, and the
    connection is closed after the answer (aiohttp's parser never saw those bytes). None when
    the body is small, chunked, over TLS, or the transport is not a plain socket one.
    """
    length = request.content_length
    transport = request.transport
    if length is None or length < DIRECT_MIN or transport is None:
        return None
    if "Transfer-Encoding" in request.headers:
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    tsock = transport.get_extra_info("socket")
    if tsock is None or not hasattr(transport, "pause_reading"):
        return None
    content = request.content
    # All in one tick: nothing can arrive between draining the buffer and pausing.
    head: list[bytes] = []
    while not content.is_eof() and (data := _buffered(content)):
        head.append(data)
    request[CLOSE] = True  # from here on, whatever happens, this connection is done
    transport.pause_reading()
    sock = socket.socket(fileno=os.dup(tsock.fileno()))
    sock.setblocking(False)
    return sock, head, length - sum(len(b) for b in head)


def _buffered(content: StreamReader) -> bytes:
    try:
        return content.read_nowait()
    except RuntimeError:  # someone is waiting on it (cannot happen before we read)
        return b""


async def _readable(sock: socket.socket) -> None:
    """Wait on the event loop until ``sock`` has something to read (or is closed)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _receive_direct(
    request: web.Request,
    up: Upload,
    pool: ThreadPoolExecutor,
    direct: tuple[socket.socket, list[bytes], int],
    *,
    expected: Sequence[bytes],
    commit: bool,
) -> Stored:
    """The large-body path of :func:`receive`: slices of socket reads in body threads, and
    the event loop waiting for the socket whenever the client is quiet."""
    loop = asyncio.get_running_loop()
    sock, head, remaining = direct
    stop = threading.Event()
    ok = False
    try:
        if head:
            await loop.run_in_executor(pool, up.write, head)
        if remaining < 0:
            raise BadRequest("the body is longer than Content-Length")
        while remaining > 0:
            got = await loop.run_in_executor(pool, up.receive_some, sock, remaining, stop)
            remaining -= got
            if up.stopping:
                raise Unavailable("the server is stopping; send it again later")
            if remaining > 0 and not got:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        await _readable(sock)
                except TimeoutError:
                    raise RequestTimeout(f"no body data for {READ_TIMEOUT:.0f} s") from None
        finish = partial(
            up.complete, [], length=request.content_length, expected=expected, commit=commit
        )
        stored = await loop.run_in_executor(pool, finish)
        ok = True
        return stored
    finally:
        stop.set()  # a cancelled request: the body thread returns within a few milliseconds
        request.content.feed_eof()  # nothing more to read here (no lingering for the rest)
        if not ok:
            # Waits for the running slice (it holds the upload's lock), then cleans up.
            await asyncio.to_thread(up.discard)
        sock.close()


def _large_reads(request: web.Request) -> Callable[[], None] | None:
    """Let the connection receive up to a MiB per read while a large body arrives.

    asyncio's socket transport reads at most ``max_size`` (256 KiB) per event; with 1 MiB the
    event loop handles a quarter of the events per GiB (server CPU per GiB received: 2.96 s ->
    2.6 s). ``max_size`` is an attribute of the standard library's transports, not API: where
    it is absent (another event loop) nothing changes. Returns how to put it back.
    """
    transport = request.transport
    size = getattr(transport, "max_size", None)
    if transport is None or not isinstance(size, int) or size >= CHUNK:
        return None
    setattr(transport, "max_size", CHUNK)  # noqa: B010 (not a declared attribute)

    def restore() -> None:
        setattr(transport, "max_size", size)  # noqa: B010

    return restore


async def read_small(request: web.Request, limit: int) -> bytes:
    """A small request body (a PROPFIND's XML) read whole: 413 if it has more than ``limit``
    bytes, without reading past them."""
    if request.content_length is not None and request.content_length > limit:
        request[CLOSE] = True  # (the body is not read)
        raise ContentTooLarge(f"the body is larger than {limit} bytes")
    data = bytearray()
    while chunk := await read_chunk(request):
        data += chunk
        if len(data) > limit:
            request[CLOSE] = True  # the rest is never read: this connection ends here
            raise ContentTooLarge(f"the body is larger than {limit} bytes")
    return bytes(data)
