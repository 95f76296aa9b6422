"""Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload-12, interop version 8):
creation, offset retrieval, append and cancellation (docs/protocol.md, "Resumable uploads").

A request to a file's path that carries ``Upload-Complete`` (POST or PUT) creates an upload
resource, ``/.~syncd-uploads/<id>``: its bytes go to :mod:`.resumable_state`'s ``.part``
file, hashed as they arrive. ``HEAD`` there answers the offset, ``PATCH`` appends from it,
``DELETE`` cancels. When the last byte is in (``Upload-Complete: ?1``), the length and the
whole sha-256 (``Repr-Digest``, of the creation or the last append) are checked and only then
is the file renamed into place as any upload is (:class:`.Upload`: the old one kept as a
version); until then nothing of it is visible. A newer request to an upload ends the one
still appending to it, as the draft recommends, so an offset is never outdated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field

from aiohttp import web

from syncd.faults import crash_point
from syncd.server.answers import request_meta, stored_response
from syncd.server.appkeys import BODY_POOL, STORE
from syncd.server.errors import (
    BadRequest,
    NotFound,
    StoreError,
    UnsupportedMediaType,
    os_error,
)
from syncd.server.fdio import CHUNK, write_all
from syncd.server.paths import RelPath, Target
from syncd.server.receive import read_chunk
from syncd.server.resumable_state import MAX_AGE, UPLOADS_DIR, Meta, Parts, valid_id
from syncd.server.store import Store
from syncd.server.tree import Dirs
from syncd.server.uploads import Upload, check_file_target

log = logging.getLogger("syncd.server")

INTEROP = "8"
"""``Upload-Draft-Interop-Version`` of the revision implemented (-12)."""
PREFIX = f"/{UPLOADS_DIR}/"
PARTIAL = "application/partial-upload"
PROBLEM = "https://iana.org/assignments/http-problem-types#"
TITLE_LENGTH = "Inconsistent Upload Length Values"
_DIGITS = re.compile(r"[0-9]{1,19}")  # (ASCII only: str.isdigit() takes "²")


class Registry:
    """Per upload: its lock, its hash so far (in memory; rebuilt from the data after a
    restart) and the request appending to it now."""

    def __init__(self) -> None:
        self.items: dict[str, _Live] = {}

    def get(self, uid: str) -> _Live:
        return self.items.setdefault(uid, _Live())

    def forget_gone(self, parts: Parts) -> None:
        """Drop the entries of uploads no longer on disk (the sweep removed them)."""
        for uid in list(self.items):
            live = self.items[uid]
            if not live.lock.locked() and not parts.exists(uid):
                del self.items[uid]


@dataclass
class _Live:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hasher: hashlib._Hash | None = None
    hashed: int = -1  # how many bytes ``hasher`` covers
    task: asyncio.Task[object] | None = None


REGISTRY = web.AppKey("syncd.resumable", Registry)
PARTS = web.AppKey("syncd.parts", Parts)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.headers.get(name, "").strip()
    if raw not in ("?0", "?1"):
        raise BadRequest(f"{name} must be ?0 or ?1 (an RFC 8941 boolean)")
    return raw == "?1"


def _int(request: web.Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


def limit(parts: Parts, uid: str | None) -> str:
    left = MAX_AGE if uid is None else max(0, int(MAX_AGE - parts.age(uid)))
    return f"min-size=0, max-age={left}"


def _whole_digests(request: web.Request) -> list[bytes]:
    """The sha-256s a request's Repr-Digest names (the whole upload's bytes)."""
    from syncd.digests import sha256_members

    found: list[bytes] = []
    for value in request.headers.getall("Repr-Digest", ()):
        try:
            found.extend(sha256_members(value))
        except ValueError as e:
            raise BadRequest(f"malformed Repr-Digest: {e}") from None
    return found


def _problem(
    status: int, kind: str, title: str, headers: dict[str, str], **more: int
) -> web.Response:
    body = json.dumps({"type": PROBLEM + kind, "title": title, **more})
    return web.Response(
        status=status, text=body, content_type="application/problem+json", headers=headers
    )


async def create(request: web.Request, target: Target) -> web.StreamResponse:
    """POST or PUT with ``Upload-Complete``: a new upload resource for the file's path."""
    rel = target.rel
    if not rel.parts or rel.trailing_slash or rel.in_versions:
        raise BadRequest(f"{rel}: an upload needs a file path")
    complete = _flag(request, "Upload-Complete")
    length = _int(request, "Upload-Length")
    if complete and request.content_length is not None:
        if length is not None and length != request.content_length:
            raise BadRequest("Upload-Length and Content-Length disagree")
        length = request.content_length
    mtime_ns, executable = request_meta(request)
    digests = tuple(d.hex() for d in _whole_digests(request))
    # (a directory or a symlink at the path: refused now, not after the last byte)
    await asyncio.to_thread(_check_target, request.app[STORE], rel)
    parts = request.app[PARTS]
    meta = Meta(rel.parts, length, mtime_ns, executable, digests)
    uid = await asyncio.to_thread(parts.create, meta)
    # Relative to the request's own URL, so that it stays right behind a reverse proxy that
    # serves this server under a path prefix (an absolute path would leave the prefix out).
    location = "../" * (len(rel.parts) - 1) + f"{UPLOADS_DIR}/{uid}"
    has_body = bool(request.content_length) or "Transfer-Encoding" in request.headers
    wants = request.headers.get("Upload-Draft-Interop-Version", "").strip() == INTEROP
    if has_body and wants and request.version >= (1, 1):
        interim = (
            "HTTP/1.1 104 Upload Resumption Supported\r\n"
            f"Location: {location}\r\nUpload-Draft-Interop-Version: {INTEROP}\r\n"
            f"Upload-Limit: {limit(parts, None)}\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            await request.writer.write(interim.encode("ascii"))
    log.debug("created upload %s for %r", uid, str(rel))
    return await _take(request, uid, 0, complete, location=location)


async def resource(request: web.Request, uid: str) -> web.StreamResponse:
    """HEAD/GET (offset), PATCH (append), DELETE (cancel) of ``/.~syncd-uploads/<id>``."""
    if not valid_id(uid):
        raise NotFound("no such upload")
    method = request.method
    parts = request.app[PARTS]
    await asyncio.to_thread(parts.meta, uid)  # (404 for an unknown one: no entry made for it)
    live = request.app[REGISTRY].get(uid)
    _end_running(live)
    if method in ("HEAD", "GET"):
        async with live.lock:
            meta = await asyncio.to_thread(parts.meta, uid)
            offset = await asyncio.to_thread(parts.offset, uid)
        headers = {
            "Upload-Offset": str(offset),
            "Upload-Complete": "?0",
            "Upload-Limit": limit(parts, uid),
            "Upload-Draft-Interop-Version": INTEROP,
            "Cache-Control": "no-store",
        }
        if meta.length is not None:
            headers["Upload-Length"] = str(meta.length)
        return web.Response(status=204, headers=headers)
    if method == "DELETE":
        async with live.lock:
            await asyncio.to_thread(parts.meta, uid)  # (404 if unknown)
            await asyncio.to_thread(parts.drop, uid)
            request.app[REGISTRY].items.pop(uid, None)
        log.debug("cancelled upload %s", uid)
        return web.Response(status=204)
    if method == "PATCH":
        if request.content_type != PARTIAL:
            raise UnsupportedMediaType(f"an append is {PARTIAL}")
        given = _int(request, "Upload-Offset")
        if given is None:
            raise BadRequest("an append needs Upload-Offset")
        complete = _flag(request, "Upload-Complete")
        return await _take(request, uid, given, complete)
    return web.Response(
        status=405,
        text="HEAD, GET, PATCH or DELETE an upload\n",
        headers={"Allow": "HEAD, GET, PATCH, DELETE"},
    )


def _check_target(store: Store, rel: RelPath) -> None:
    try:
        with Dirs(store.root, rel.parent) as dirs:
            check_file_target(dirs.last, rel)
    except NotFound:
        return  # (its directories are made when it is stored)


def _end_running(live: _Live) -> None:
    """A newer request ends the one still appending (its bytes so far are kept)."""
    task = live.task
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()


async def _take(
    request: web.Request, uid: str, offset: int, complete: bool, *, location: str | None = None
) -> web.StreamResponse:
    """Append the request's content at ``offset``, then finish the upload if ``complete``."""
    parts = request.app[PARTS]
    live = request.app[REGISTRY].get(uid)
    async with live.lock:
        live.task = asyncio.current_task()
        try:
            meta = await asyncio.to_thread(parts.meta, uid)
            have = await asyncio.to_thread(parts.offset, uid)
            headers = {"Upload-Draft-Interop-Version": INTEROP}
            if offset != have:
                headers |= {"Upload-Offset": str(have), "Upload-Complete": "?0"}
                return _problem(
                    409,
                    "mismatching-upload-offset",
                    "Mismatching Upload Offset",
                    headers,
                    **{"expected-offset": have, "provided-offset": offset},
                )
            if live.hashed != have or live.hasher is None:
                live.hasher = await asyncio.to_thread(parts.hash_prefix, uid, have)
                live.hashed = have
            try:
                received = await _append(request, parts, uid, live, have, meta.length)
            except _TooLong:
                await asyncio.to_thread(parts.drop, uid)
                request.app[REGISTRY].items.pop(uid, None)
                return _problem(
                    400,
                    "inconsistent-upload-length",
                    TITLE_LENGTH,
                    {**headers, "Upload-Complete": "?1"},
                )
            offset = have + received
            if complete:
                live.task = None  # (past the last byte: a newer request waits, ends nothing)
                return await _finish(request, uid, meta, live, offset)
            headers |= {
                "Upload-Complete": "?0",
                "Upload-Offset": str(offset),
                "Upload-Limit": limit(parts, uid),
            }
            if location is not None:
                headers["Location"] = location
                return web.Response(status=201, headers=headers)
            return web.Response(status=204, headers=headers)
        finally:
            live.task = None


class _TooLong(Exception):
    pass


async def _append(
    request: web.Request, parts: Parts, uid: str, live: _Live, offset: int, length: int | None
) -> int:
    """Write the content at ``offset`` (in body threads, 1 MiB at a time), hashing it; the
    data is fsynced however the request ends. Returns how many bytes came."""
    loop = asyncio.get_running_loop()
    pool = request.app[BODY_POOL]
    fd = await asyncio.to_thread(parts.open_append, uid)
    hasher = live.hasher
    assert hasher is not None
    at = offset

    def put(pieces: list[bytes], where: int) -> None:
        try:
            os.lseek(fd, where, os.SEEK_SET)
            write_all(fd, pieces)
        except OSError as e:  # (a full disk: 507, its bytes so far kept)
            raise os_error(e, f"upload {uid}") from e
        for p in pieces:
            hasher.update(p)
        crash_point("server-mid-append")

    try:
        buf: list[bytes] = []
        held = 0
        while True:
            chunk = await read_chunk(request)
            if chunk:
                if length is not None and at + held + len(chunk) > length:
                    raise _TooLong
                buf.append(chunk)
                held += len(chunk)
            if buf and (held >= CHUNK or not chunk):
                fut = loop.run_in_executor(pool, put, buf, at)
                try:
                    await asyncio.shield(fut)
                except asyncio.CancelledError:
                    # (a newer request ends this one: the write running is waited for, so
                    # the fd is closed, and the hash is counted, only once it is done, even
                    # if more cancellations come)
                    await _settled(fut)
                    if not fut.exception():
                        at += held
                    raise
                at += held
                live.hashed = at
                buf, held = [], 0
            if not chunk:
                break
        return at - offset
    finally:
        live.hashed = at  # what is written is hashed: a lost piece was never written
        await asyncio.to_thread(_close_synced, fd)


async def _settled(fut: asyncio.Future[None]) -> None:
    """Wait until ``fut`` is done, whatever cancellations come meanwhile."""
    while not fut.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([fut])


def _close_synced(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _finish(
    request: web.Request, uid: str, meta: Meta, live: _Live, size: int
) -> web.StreamResponse:
    """The last byte is in: check the length and digests, then put the file in place."""
    parts = request.app[PARTS]
    done = {"Upload-Complete": "?1", "Upload-Draft-Interop-Version": INTEROP}
    if meta.length is not None and size != meta.length:
        await asyncio.to_thread(parts.drop, uid)
        request.app[REGISTRY].items.pop(uid, None)
        return _problem(400, "inconsistent-upload-length", TITLE_LENGTH, done)
    assert live.hasher is not None
    digest = live.hasher.digest()
    expected = [bytes.fromhex(d) for d in meta.digests] + _whole_digests(request)
    if not expected:
        raise BadRequest("the last append needs Repr-Digest: sha-256=:<base64>: of the upload")
    rel = RelPath(meta.parts, False)
    up = Upload(request.app[STORE], rel)
    up.set_meta(mtime_ns=meta.mtime_ns, executable=meta.executable)
    mtime_ns, executable = request_meta(request)
    up.set_meta(mtime_ns=mtime_ns, executable=executable)

    def place() -> bool:
        dir_fd = parts.open_dir()
        try:
            up.adopt(dir_fd, f"{uid}.part", size, digest)
        finally:
            os.close(dir_fd)
        return up.commit(expected)

    try:
        replaced = await asyncio.to_thread(place)
    except StoreError as e:
        await asyncio.to_thread(parts.drop, uid)
        request.app[REGISTRY].items.pop(uid, None)
        if e.status == 400:
            got = base64.b64encode(digest).decode()
            log.info("upload %s to %r: digest mismatch (received sha-256=:%s:)", uid, str(rel), got)
        raise
    await asyncio.to_thread(parts.drop, uid)
    request.app[REGISTRY].items.pop(uid, None)
    log.info("stored %r (%d bytes, a resumable upload)", str(rel), size)
    resp = stored_response(request, replaced, digest)
    resp.headers.update(done)
    return resp
