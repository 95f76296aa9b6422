"""Delta uploads: a changed file built from the server's own copy plus the bytes it lacks
(docs/protocol.md, "Delta upload").

``GET /<path>?chunks`` answers the file's chunk list (:mod:`syncd.chunking`: FastCDC cut
points, a sha-256 per chunk) for a client that has none of it in its manifest.
``POST /<path>?delta`` with ``If-Match: "<sha-256 of the base>"`` takes a body of steps: copy
a range of the base, or take the literal bytes that follow. The new file is written to a temp
file beside the target as any upload is (hashed as written), and renamed into place only when
its whole sha-256 is the one the request's ``Repr-Digest`` names; the base is kept as a
version as any replaced file is. A base that is not the one named gets 412: the client sends
the whole file instead.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from syncd import chunking
from syncd.server.answers import request_meta, stored_response
from syncd.server.appkeys import BODY_POOL, STORE
from syncd.server.errors import BadRequest, PreconditionFailed, StoreError, UnsupportedMediaType
from syncd.server.fdio import CHUNK
from syncd.server.paths import Target
from syncd.server.receive import read_chunk, request_digests
from syncd.server.store import Opened, Reader
from syncd.server.uploads import Stored, Upload

log = logging.getLogger("syncd.server")

DELTA_TYPE = "application/x-syncd-delta"
CHUNKS_TYPE = "application/x-syncd-chunks"
LENGTH = "X-Syncd-Length"
"""The new file's length, which a delta's steps must make exactly (a bound on what they build)."""
CHUNKING = "X-Syncd-Chunking"
"""The header naming the chunker's parameters (``chunking.PARAMS``), in OPTIONS and ?chunks."""


def _etag(value: str | None) -> str:
    """The sha-256 hex that ``If-Match: "<hex>"`` names (400 if it names none)."""
    tag = (value or "").strip()
    if tag.startswith("W/"):
        raise BadRequest("If-Match must name a strong ETag (the base's sha-256)")
    tag = tag.strip('"').lower()
    if len(tag) != 64 or any(c not in "0123456789abcdef" for c in tag):
        raise BadRequest('a delta needs If-Match: "<sha-256 of the base, hex>"')
    return tag


async def chunks(request: web.Request, target: Target) -> web.StreamResponse:
    """GET ?chunks: the file's chunk list, its ETag the sha-256 of the bytes chunked."""
    rel = target.rel
    store = request.app[STORE]
    opened = await asyncio.to_thread(store.open_file, rel, small=0, keep_open=True)
    reader = opened.reader
    try:
        if reader is None:  # (an empty file)
            found = chunking.Chunks(b"", opened.sha256)
        else:
            cut = functools.partial(chunking.chunk_fd, reader.fileno(), opened.size, whole=False)
            found = await asyncio.get_running_loop().run_in_executor(request.app[BODY_POOL], cut)
            found = chunking.Chunks(found.blob, opened.sha256)  # (the digest the cache has)
    except chunking.Changed as e:
        raise StoreError(f"{rel}: {e}") from None
    finally:
        if reader is not None:
            await asyncio.to_thread(reader.close)
    return web.Response(
        body=found.blob,
        headers={
            "Content-Type": CHUNKS_TYPE,
            "ETag": f'"{found.sha256}"',
            CHUNKING: chunking.PARAMS,
            "Cache-Control": "no-store",
        },
    )


async def delta(request: web.Request, target: Target) -> web.StreamResponse:
    """POST ?delta: a new version of the file built from its current one and the body."""
    rel = target.rel
    base_sha = _etag(request.headers.get("If-Match"))
    if request.content_type != DELTA_TYPE:
        raise UnsupportedMediaType(f"a delta body is {DELTA_TYPE}")
    if request.headers.get(CHUNKING, chunking.PARAMS).strip() != chunking.PARAMS:
        raise BadRequest(f"{CHUNKING}: this server cuts with {chunking.PARAMS}")
    expected = request_digests(request)  # (or the body's last step: D)
    raw = request.headers.get(LENGTH, "").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadRequest(f"a delta needs {LENGTH}: the new file's length in bytes")
    size = int(raw)
    mtime_ns, executable = request_meta(request)
    store = request.app[STORE]
    try:
        opened = await asyncio.to_thread(store.open_file, rel, small=0, keep_open=True)
    except StoreError as e:
        if e.status == 404:
            raise PreconditionFailed(f"{rel}: no base to build on (send the whole file)") from e
        raise
    try:
        if opened.sha256 != base_sha:
            raise PreconditionFailed(
                f"{rel}: the server's copy is not the base named (send the whole file)"
            )
        up = Upload(store, rel, hashed=False)
        up.set_meta(mtime_ns=mtime_ns, executable=executable)
        stored = await _build(request, up, opened, request.app[BODY_POOL], expected, size)
    finally:
        if opened.reader is not None:
            await asyncio.to_thread(opened.reader.close)
    replaced = bool(stored.replaced)
    log.info("stored %r (%d bytes, from a delta)", str(rel), stored.size)
    return stored_response(request, replaced, stored.digest)


class _Hasher:
    """The sha-256 of what a delta builds, taken in a thread of its own while a body thread
    writes it: the copies of the base's ranges (read again, from the page cache) and the
    literal bytes, in the order they are written. One after the other the hash and the write
    of a 1 GiB file took 1.0-1.1 s; side by side, 0.67 s (docs/performance.md)."""

    def __init__(self, base_fd: int, rel: str) -> None:
        self._fd = base_fd
        self._rel = rel
        self._todo: queue.Queue[bytes | tuple[int, int] | None] = queue.Queue(maxsize=64)
        self._sha = hashlib.sha256()
        self._error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="syncd-delta-hash", daemon=True)
        self._thread.start()

    def add(self, item: bytes | tuple[int, int]) -> None:
        """Hash literal bytes, or ``(offset, length)`` of the base, after what came before."""
        if not self._closed:  # (a body thread left running by a cancelled request)
            self._todo.put(item)

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            if self._error is not None:
                continue  # (drained until the end, so that add() never blocks for good)
            if isinstance(item, bytes):
                self._sha.update(item)
                continue
            offset, end = item[0], item[0] + item[1]
            try:
                while offset < end:
                    piece = os.pread(self._fd, min(4 * CHUNK, end - offset), offset)
                    if not piece:
                        self._error = "the base shrank while the delta was applied"
                        break
                    self._sha.update(piece)
                    offset += len(piece)
            except OSError as e:
                self._error = f"the base could not be read: {e.strerror or e}"

    def digest(self) -> bytes:
        """The sha-256 of everything added (blocks until it is hashed)."""
        self.close()
        if self._error is not None:
            raise StoreError(f"{self._rel}: {self._error}")
        return self._sha.digest()

    def close(self) -> None:
        """Stop the thread (blocks until it has hashed what was added); idempotent."""
        self._closed = True
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()


def _apply(
    up: Upload, reader: Reader | None, hasher: _Hasher, ops: list[tuple[int, int, bytes]]
) -> None:
    """Write ``ops`` in order into the upload (a body thread): ``(offset, length, b"")`` copies
    that range of the base, ``(0, 0, data)`` writes ``data``; each is handed to ``hasher``
    first, so that it is hashed while it is written."""
    for offset, length, data in ops:
        if data:
            hasher.add(data)
            up.write([data])
        else:
            if reader is None:  # (no copy step passes the check against an empty base)
                raise BadRequest(f"{up.rel}: a copy step of an empty base")
            hasher.add((offset, length))
            up.copy_in(reader.fileno(), offset, length)


async def _build(
    request: web.Request,
    up: Upload,
    base: Opened,
    pool: ThreadPoolExecutor,
    expected: list[bytes],
    size: int,
) -> Stored:
    """Apply the body's steps to a new upload and commit it if its digest checks out (the
    digests of ``expected`` and of a last ``D`` step: all must be the one of what was built)
    and its length is ``size``. Steps are applied a MiB or more at a time, in body threads."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    ops: list[tuple[int, int, bytes]] = []
    held = 0  # bytes in ops
    built = 0  # bytes the steps so far make
    ok = False
    hasher = _Hasher(base.reader.fileno() if base.reader is not None else -1, str(up.rel))

    async def fill(n: int) -> None:
        while len(buf) < n:
            data = await read_chunk(request)
            if not data:
                raise BadRequest("the delta body ends inside a step")
            buf.extend(data)

    async def flush() -> None:
        nonlocal ops, held
        if ops:
            todo, ops, held = ops, [], 0
            await loop.run_in_executor(pool, _apply, up, base.reader, hasher, todo)

    def grow(n: int) -> None:
        nonlocal built, held
        built += n
        held += n
        if built > size:
            raise BadRequest(f"the steps make more than the {size} bytes X-Syncd-Length says")

    try:
        while True:
            if not buf:
                data = await read_chunk(request)
                if not data:
                    break
                buf.extend(data)
            await fill(chunking.STEP.size)
            kind, offset, length = chunking.STEP.unpack_from(buf)
            del buf[: chunking.STEP.size]
            if kind == b"C":
                if length == 0 or offset + length > base.size:
                    raise BadRequest(f"a copy step past the base's end ({base.size} bytes)")
                grow(length)
                ops.append((offset, length, b""))
            elif kind == b"D":
                if length != 32:
                    raise BadRequest("a D step carries a sha-256 (32 bytes)")
                await fill(32)
                expected = [*expected, bytes(buf[:32])]
                del buf[:32]
                if buf or await read_chunk(request):
                    raise BadRequest("the D step must be the delta body's last")
                break
            elif kind == b"L":
                while length:
                    if not buf:
                        await fill(1)
                    take = min(length, len(buf))
                    grow(take)
                    ops.append((0, 0, bytes(buf[:take])))
                    del buf[:take]
                    length -= take
                    if held >= CHUNK:
                        await flush()
            else:
                raise BadRequest(f"unknown delta step {kind!r} (C, L or D)")
            if held >= CHUNK:
                await flush()
        if not expected:
            raise BadRequest("a delta needs the new file's sha-256: Repr-Digest or a D step")
        await flush()
        stored = await loop.run_in_executor(
            pool,
            lambda: up.complete(
                [], length=size, expected=expected, commit=True, digest=hasher.digest()
            ),
        )
        ok = True
        return stored
    finally:
        if not ok:
            await asyncio.to_thread(up.discard)
        await asyncio.to_thread(hasher.close)
