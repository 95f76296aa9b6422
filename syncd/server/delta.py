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
import logging
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
        up = Upload(store, rel)
        up.set_meta(mtime_ns=mtime_ns, executable=executable)
        stored = await _build(request, up, opened, request.app[BODY_POOL], expected, size)
    finally:
        if opened.reader is not None:
            await asyncio.to_thread(opened.reader.close)
    replaced = bool(stored.replaced)
    log.info("stored %r (%d bytes, from a delta)", str(rel), stored.size)
    return stored_response(request, replaced, stored.digest)


def _apply(up: Upload, reader: Reader | None, ops: list[tuple[int, int, bytes]]) -> None:
    """Write ``ops`` in order into the upload (a body thread): ``(offset, length, b"")`` copies
    that range of the base, ``(0, 0, data)`` writes ``data``."""
    for offset, length, data in ops:
        if data:
            up.write([data])
            continue
        end = offset + length
        while offset < end:
            piece = reader.read(offset, min(CHUNK, end - offset)) if reader is not None else b""
            if not piece:
                raise BadRequest(f"{up.rel}: the base shrank while the delta was applied")
            up.write([piece])
            offset += len(piece)


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
            await loop.run_in_executor(pool, _apply, up, base.reader, todo)

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
            pool, lambda: up.complete([], length=size, expected=expected, commit=True)
        )
        ok = True
        return stored
    finally:
        if not ok:
            await asyncio.to_thread(up.discard)
