"""One function per endpoint of ``syncd serve`` (docs/protocol.md is the contract).

Each takes the request and its checked :class:`~syncd.server.paths.Target`; :mod:`.app` routes
to it (one line of its table per method and query). Filesystem work runs in worker threads
through :mod:`.store`, :mod:`.listing` and :mod:`.uploads`; refusals are raised as
:class:`~syncd.server.errors.StoreError` and answered by the app's middleware.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
from json.encoder import encode_basestring
from urllib.parse import urlsplit

from aiohttp import web

from syncd.digests import digest_header
from syncd.server import dav
from syncd.server.answers import EXECUTABLE, MTIME, meta_headers, request_meta, stored_response
from syncd.server.appkeys import BODY_POOL, STORE, UPLOADS
from syncd.server.batch import receive_batch
from syncd.server.copy import copy as copy_tree
from syncd.server.errors import (
    BadRequest,
    Forbidden,
    StoreError,
    UnsupportedMediaType,
    printable,
)
from syncd.server.fdio import CHUNK
from syncd.server.listing import ListEntry, iter_listing
from syncd.server.paths import RelPath, Target, parse_path, split_target
from syncd.server.pending import discard_all
from syncd.server.receive import read_small, receive, request_digests
from syncd.server.store import Opened
from syncd.server.uploads import Stored, Upload

log = logging.getLogger("syncd.server")

WRITE_TIMEOUT = 60.0
"""Seconds a client may stall reading a response before the connection is dropped."""


READ_ONLY = "versions are read-only: read them (GET, HEAD, ?list, PROPFIND) or COPY one back"
"""The 403 of any change under /.~syncd-versions/."""


def _file_headers(opened: Opened) -> dict[str, str]:
    digest = bytes.fromhex(opened.sha256)
    return {
        "Repr-Digest": digest_header(digest),
        "ETag": f'"{opened.sha256}"',
        "Last-Modified": email.utils.formatdate(opened.mtime_ns / 1e9, usegmt=True),
        "Content-Type": "application/octet-stream",
        "X-Content-Type-Options": "nosniff",
        MTIME: str(opened.mtime_ns),
        EXECUTABLE: "?1" if opened.executable else "?0",
    }


async def get(request: web.Request, target: Target) -> web.StreamResponse:
    """GET, HEAD: the file's bytes (not for HEAD), with its digest."""
    rel = target.rel
    store = request.app[STORE]
    head = request.method == "HEAD"
    opened = await asyncio.to_thread(
        store.open_file, rel, small=0 if head else CHUNK, keep_open=not head
    )
    resp = web.StreamResponse(headers=_file_headers(opened))
    resp.content_length = opened.size
    reader = opened.reader
    try:
        await resp.prepare(request)
        if opened.data:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await resp.write(opened.data)
        elif reader is not None:
            offset = 0
            while offset < opened.size:
                size = min(CHUNK, opened.size - offset)
                chunk = await asyncio.to_thread(reader.read, offset, size)
                if not chunk:
                    raise StoreError(f"{rel}: the file shrank while it was sent")
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await resp.write(chunk)
                offset += len(chunk)
    except (StoreError, OSError, TimeoutError) as e:
        _abort_stream(request, f"GET {rel}", e)
    finally:
        if reader is not None:
            await asyncio.to_thread(reader.close)
    return resp


async def listing(request: web.Request, target: Target) -> web.StreamResponse:
    """GET ?list: every file below the directory, as NDJSON, streamed while walked."""
    rel = target.rel
    store = request.app[STORE]
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    batches = iter_listing(store, rel)
    try:
        async for batch in batches:
            if not resp.prepared:
                await resp.prepare(request)
            data = "".join(map(_ndjson_line, batch)).encode("utf-8")
            async with asyncio.timeout(WRITE_TIMEOUT):
                await resp.write(data)
    except (StoreError, OSError, TimeoutError) as e:
        if not resp.prepared:
            raise
        _abort_stream(request, f"GET {rel}?list", e)
        return resp
    finally:
        await batches.aclose()
    if not resp.prepared:
        await resp.prepare(request)
    return resp


async def state(request: web.Request, target: Target) -> web.StreamResponse:
    """GET ?state: the directory's state token."""
    rel = target.rel
    token = await asyncio.to_thread(request.app[STORE].state, rel)
    return web.Response(
        text=json.dumps({"state": token}) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _ndjson_line(e: ListEntry) -> str:
    """One listing line: what ``json.dumps({"path": ..., "size": ..., "sha256": ...,
    "mtime": ..., "mtime_ns": ..., "executable": ...}, ensure_ascii=False)`` gives, byte
    for byte, in a quarter of the time (a listing of 100,000 files: 1.3 s -> 0.3 s of the
    server's CPU)."""
    return (
        f'{{"path": {encode_basestring(e.path)}, "size": {e.size}, '
        f'"sha256": "{e.sha256}", "mtime": {e.mtime_ns / 1e9!r}, '
        f'"mtime_ns": {e.mtime_ns}, "executable": {"true" if e.executable else "false"}}}\n'
    )


def _abort_stream(request: web.Request, what: str, e: BaseException) -> None:
    """Cut a response that is half sent, so the client sees it incomplete."""
    if isinstance(e, ConnectionError):
        log.debug("%s: the client went away", printable(what))
    elif isinstance(e, TimeoutError):
        log.info("%s: the client stopped reading; connection dropped", printable(what))
    else:
        log.warning("%s: failed while sending: %s", printable(what), printable(str(e)))
    if request.transport is not None:
        request.transport.abort()


async def put(request: web.Request, target: Target) -> web.StreamResponse:
    """PUT: a whole file in one request, stored once its length and digest check out."""
    rel = target.rel
    _, stored = await _receive(request, rel, commit=True)
    replaced = bool(stored.replaced)
    log.info("stored %r (%d bytes, %s)", str(rel), stored.size, "replaced" if replaced else "new")
    return stored_response(request, replaced, stored.digest)


async def put_upload(request: web.Request, target: Target) -> web.StreamResponse:
    """PUT ?upload=: the first step of a two-step upload (kept until its commit)."""
    rel, uid = target.rel, target.uid
    up, stored = await _receive(request, rel, commit=False)
    old = request.app[UPLOADS].add(uid, up)
    if old is not None:
        await asyncio.to_thread(old.discard)
    log.debug("received %r for upload %s (%d bytes)", str(rel), uid, stored.size)
    headers = {"Repr-Digest": digest_header(stored.digest), **meta_headers(request)}
    return web.Response(status=202, headers=headers)


async def _receive(request: web.Request, rel: RelPath, *, commit: bool) -> tuple[Upload, Stored]:
    """The body into a new upload to ``rel``: its length and digests checked, and renamed into
    place if ``commit``."""
    expected = request_digests(request)
    mtime_ns, executable = request_meta(request)
    up = Upload(request.app[STORE], rel)
    up.set_meta(mtime_ns=mtime_ns, executable=executable)
    stored = await receive(request, up, request.app[BODY_POOL], expected=expected, commit=commit)
    return up, stored


async def commit(request: web.Request, target: Target) -> web.StreamResponse:
    """POST ?commit=: the second step, which renames the upload into place if the digest the
    client read is the one the server received."""
    rel, uid = target.rel, target.uid
    expected = request_digests(request)
    if not expected:
        raise BadRequest("a commit needs Repr-Digest: sha-256=:<base64>:")
    mtime_ns, executable = request_meta(request)
    uploads = request.app[UPLOADS]
    expired = uploads.pop_expired()
    if expired:
        await asyncio.to_thread(discard_all, expired)
    up = uploads.take(uid, rel)
    up.set_meta(mtime_ns=mtime_ns, executable=executable)  # (a finished upload: no wait)
    # (The commit discards the temp on any failure; once the thread call is queued it runs
    # even if this request is cancelled.)
    replaced = await asyncio.to_thread(up.commit, expected)
    log.info("stored %r (%d bytes, %s)", str(rel), up.size, "replaced" if replaced else "new")
    return stored_response(request, replaced, up.digest)


async def batch(request: web.Request, target: Target) -> web.StreamResponse:
    """POST ?batch: many small files in one multipart body, each stored as a PUT would store
    it, the fsyncs shared (:mod:`.batch`); the answer says per file what became of it."""
    rel = target.rel
    if not rel.trailing_slash and rel.parts:
        raise BadRequest(f"{rel}: a batch is posted to a directory (its path ends with '/')")
    parts = await receive_batch(request, rel, request.app[STORE], request.app[BODY_POOL])
    stored = sum(p.status in (201, 204) for p in parts)
    log.info("stored %d of %d files in a batch to %r", stored, len(parts), str(rel))
    for p in parts:
        if p.status not in (201, 204):
            log.info(
                "batch to %r: refused %r: %d %s", str(rel), p.shown, p.status, printable(p.message)
            )
    body = "".join(p.line() for p in parts).encode("utf-8")
    return web.Response(body=body, content_type="application/x-ndjson")


async def abort(request: web.Request, target: Target) -> web.StreamResponse:
    """DELETE ?upload=: drop a two-step upload before its commit."""
    rel, uid = target.rel, target.uid
    up = request.app[UPLOADS].take(uid, rel)
    await asyncio.to_thread(up.discard)
    log.debug("dropped upload %s of %r", uid, str(rel))
    return web.Response(status=204)


async def delete(request: web.Request, target: Target) -> web.StreamResponse:
    """DELETE: a file, or a directory with everything in it."""
    rel = target.rel
    was_dir = await asyncio.to_thread(request.app[STORE].delete, rel)
    log.info("deleted %s %r", "directory" if was_dir else "file", str(rel))
    return web.Response(status=204)


def _destination(request: web.Request) -> RelPath:
    value = request.headers.get("Destination", "").strip()
    if not value:
        raise BadRequest(f"{request.method} needs a Destination header")
    if value.startswith("/"):
        target = value
    else:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise BadRequest("Destination must be an http(s) URL or an absolute path")
        slash = rest.find("/")
        authority = rest[:slash] if slash >= 0 else rest
        try:
            urlsplit(f"http://{authority}/").port  # noqa: B018 (raises on a broken authority)
        except ValueError:
            raise BadRequest("Destination is not a usable URL (its host or port)") from None
        target = rest[slash:] if slash >= 0 else "/"
    path, query = split_target(target)
    if query is not None:
        raise BadRequest("Destination must not have a query")
    dst = parse_path(path, versions=True)
    if dst.in_versions:
        raise Forbidden(f"{dst}: {READ_ONLY}")
    return dst


async def move(request: web.Request, target: Target) -> web.StreamResponse:
    """MOVE to the Destination header's path (Overwrite: T or F)."""
    rel = target.rel
    dst = _destination(request)
    flag = request.headers.get("Overwrite", "T").strip().upper()
    if flag not in ("T", "F"):
        raise BadRequest("Overwrite must be T or F")
    replaced = await asyncio.to_thread(request.app[STORE].move, rel, dst, overwrite=flag == "T")
    log.info("moved %r to %r", str(rel), str(dst))
    return web.Response(status=204 if replaced else 201)


async def mkcol(request: web.Request, target: Target) -> web.StreamResponse:
    """MKCOL: one directory."""
    rel = target.rel
    if request.body_exists and (request.content_length or 0) != 0:
        raise UnsupportedMediaType("MKCOL does not take a body")
    await asyncio.to_thread(request.app[STORE].mkcol, rel)
    log.debug("created directory %r", str(rel))
    return web.Response(status=201)


# --------------------------------------------------------------------------- WebDAV


async def propfind(request: web.Request, target: Target) -> web.StreamResponse:
    """PROPFIND (Depth 0 or 1): the path's properties, and its entries', as a streamed 207."""
    rel = target.rel
    try:
        depth = dav.parse_depth(request.headers.get("Depth"))
    except dav.InfiniteDepth:
        return web.Response(
            status=403, body=dav.FINITE_DEPTH, headers={"Content-Type": dav.XML_TYPE}
        )
    body = await read_small(request, dav.MAX_BODY)
    req = await asyncio.to_thread(dav.parse_propfind, body)
    finder = dav.Finder(request.app[STORE], rel, req, depth)
    try:
        first = await asyncio.to_thread(finder.start)
        resp = web.StreamResponse(status=207, headers={"Content-Type": dav.XML_TYPE})
        await resp.prepare(request)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await resp.write(first)
            while (chunk := await asyncio.to_thread(finder.next_chunk)) is not None:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await resp.write(chunk)
        except (StoreError, OSError, TimeoutError) as e:
            _abort_stream(request, f"PROPFIND {rel}", e)
    finally:
        finder.close()
    return resp


async def copy(request: web.Request, target: Target) -> web.StreamResponse:
    """COPY to the Destination header's path (Depth 0 or infinity, Overwrite T or F)."""
    src = target.rel
    if request.body_exists and (request.content_length or 0) != 0:
        raise UnsupportedMediaType("COPY does not take a body")
    dst = _destination(request)
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "infinity"):
        raise BadRequest("COPY takes Depth 0 or infinity")
    flag = request.headers.get("Overwrite", "T").strip().upper()
    if flag not in ("T", "F"):
        raise BadRequest("Overwrite must be T or F")
    # In the body threads, not the default executor: copying gigabytes is body work (write,
    # hash, fsync), and must not hold the threads that serve listings and reads.
    work = functools.partial(
        copy_tree, request.app[STORE], src, dst, deep=depth == "infinity", overwrite=flag == "T"
    )
    replaced = await asyncio.get_running_loop().run_in_executor(request.app[BODY_POOL], work)
    log.info("copied %r to %r%s", str(src), str(dst), " (replaced)" if replaced else "")
    return web.Response(status=204 if replaced else 201)
