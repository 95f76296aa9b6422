"""Large files to `syncd serve`: resumable uploads and deltas (docs/protocol.md, "Resumable
uploads" and "Delta upload").

**Resumable** (draft-ietf-httpbis-resumable-upload-12, interop version 8). A file from
:data:`RESUMABLE_MIN` on is created empty on the server ("careful creation": aiohttp shows a
client no 104), its upload URL kept in the state dir (:class:`syncd.resumes.Resumes`) with the
file's identity, then appended with PATCH and finished by an empty PATCH carrying the whole
file's ``Repr-Digest``. After a reset connection, a server restart or a restart of syncd, the
next attempt asks the server's offset (HEAD) and sends only the rest, provided the file is
still the one the upload was started for (size, mtime, ctime, inode); otherwise the upload is
cancelled and started again. The digest covers the whole file, read locally again, so the
server never takes bytes that are not the file's.

**Delta.** A changed file from :data:`syncd.chunking.DELTA_MIN` on, whose server copy the
manifest names, is cut into chunks (:mod:`syncd.chunking`); the chunks the server's copy has
(its list from the manifest, else from ``GET ?chunks``) are copied there from it, only the
others are sent. The server checks the whole file's digest before it shows the file. A base
that is not the one named (412), a server without deltas, or a delta that would send over
half of the file: the file goes whole instead. A same-size edit was cut when the uploader
compared it with the manifest (``Source.cut_ahead``): the file is read once, not twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from syncd import chunking
from syncd.digests import digest_header, parse_digest
from syncd.errors import AuthError, PermanentError, SourceChanged, TransientError
from syncd.hashing import Source
from syncd.remotes._http import HTTPRemote
from syncd.remotes.body import AVAILABLE, FileBody, StreamBody
from syncd.resumes import Resumes, identity

log = logging.getLogger("syncd.remotes.syncd")

RESUMABLE_MIN = 16 << 20
"""Files from this size on go as resumable uploads (smaller ones cost little to send again)."""
INTEROP = "8"
PIECE = 1 << 20


class LargeUploads(HTTPRemote):
    """The resumable and delta uploads of :class:`~syncd.remotes.syncd.SyncdRemote`."""

    resumes: Resumes
    _offers: dict[str, str] | None = None

    async def offers(self) -> dict[str, str]:
        """The headers of the server's ``OPTIONS /`` that say what it takes (asked once)."""
        if self._offers is None:
            async with self.request("OPTIONS", URL(self.base, encoded=True), "/", "ask") as r:
                if r.status >= 400:
                    await self.fail(r, "/", "ask what the server takes")
                await r.read()
                self._offers = {k.lower(): v for k, v in r.headers.items()}
        return self._offers

    async def resumable(self, source: Source) -> bool:
        if source.size < RESUMABLE_MIN or source.snapshot or not AVAILABLE:
            return False
        return "upload-limit" in await self.offers()

    async def delta_possible(self, source: Source) -> bool:
        if source.size < chunking.DELTA_MIN or source.snapshot or not source.base_sha256:
            return False
        return (await self.offers()).get("x-syncd-chunking") == chunking.PARAMS

    # -- resumable ---------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        # (not the URL's spelling: 127.0.0.1 or localhost, with a slash or without, the same
        # server's upload is resumed; a record names its upload relative to the base)
        return f"syncd {path}"

    def _kept(self, url: str) -> str:
        """An upload's URL as its record keeps it: relative to the base where it is under it."""
        return url[len(self.base) :] if url.startswith(self.base) else url

    def _absolute(self, kept: str) -> str:
        return kept if "://" in kept else self.base + kept

    async def put_resumable(self, path: str, source: Source, meta: dict[str, str]) -> str:
        """Send (or go on sending) ``source`` as a resumable upload; the sha-256 stored."""
        key = self._key(path)
        ident = identity(source.local)
        url, offset = None, 0
        record = self.resumes.get(key)
        if record is not None and isinstance(record.get("url"), str):
            record["url"] = self._absolute(record["url"])
            if record.get("identity") == ident:
                found = await self._offset(record["url"], path)
                if found is not None and found <= source.size:
                    url, offset = record["url"], found
                elif (
                    found is None and record.get("sha") and await self._held(path) == record["sha"]
                ):
                    # every byte was sent and the last append's answer was lost: the server
                    # holds the file already
                    self.resumes.drop(key)
                    return str(record["sha"])
            if url is None:
                await self._cancel(record["url"], path)
                self.resumes.drop(key)
        if url is None:
            url = await self._create(path, source, meta)
            self.resumes.put(key, {"url": self._kept(url), "identity": ident})
        elif offset:
            log.info("%s: resuming the upload at byte %d of %d", path, offset, source.size)
        try:
            sha = await self._append(url, path, source, offset)
            self.resumes.put(key, {"url": self._kept(url), "identity": ident, "sha": sha})
            return await self._complete(url, path, source.size, sha, meta)
        except (SourceChanged, AuthError):
            await self._cancel(url, path)
            self.resumes.drop(key)
            raise
        except PermanentError as e:
            self.resumes.drop(key)
            await self._cancel(url, path)
            if e.status in (400, 404, 410):
                # the server dropped the upload (a whole digest that differs, an upload it no
                # longer has): the next attempt starts it again
                raise TransientError(f"{e}; starting the upload again", path=path) from e
            raise

    async def _create(self, path: str, source: Source, meta: dict[str, str]) -> str:
        headers = {
            "Upload-Complete": "?0",
            "Upload-Length": str(source.size),
            "Upload-Draft-Interop-Version": INTEROP,
            **meta,
        }
        async with self.request(
            "POST", self.url(path), path, "create upload", headers=headers
        ) as resp:
            if resp.status != 201 or "Location" not in resp.headers:
                await self.fail(resp, path, "create upload")
            await resp.read()
            # (relative to this request's URL, as any URI reference in an answer)
            return str(self.url(path).join(URL(resp.headers["Location"], encoded=True)))

    async def _offset(self, url: str, path: str) -> int | None:
        """The server's offset of the upload (None: it no longer has it)."""
        headers = {"Upload-Draft-Interop-Version": INTEROP}
        async with self.request(
            "HEAD", URL(url, encoded=True), path, "ask upload offset", headers=headers
        ) as resp:
            if resp.status in (404, 410):
                return None
            if resp.status >= 300:
                await self.fail(resp, path, "ask upload offset")
            raw = resp.headers.get("Upload-Offset", "")
            return int(raw) if raw.isdigit() else None

    async def _held(self, path: str) -> str | None:
        """The sha-256 of the file the server holds at ``path`` (None: none)."""
        async with self.request("HEAD", self.url(path), path, "ask the stored file") as resp:
            if resp.status != 200:
                return None
            return parse_digest(resp.headers.get("Repr-Digest"))

    async def _cancel(self, url: str, path: str) -> None:
        with contextlib.suppress(TransientError, PermanentError):
            async with self.request("DELETE", URL(url, encoded=True), path, "cancel upload"):
                pass

    async def _append(self, url: str, path: str, source: Source, offset: int) -> str:
        """PATCH the file from ``offset`` to its end; the whole file's sha-256."""
        async with FileBody.open(source, offset) as body:
            if offset < source.size:
                headers = {
                    "Upload-Offset": str(offset),
                    "Upload-Complete": "?0",
                    "Upload-Draft-Interop-Version": INTEROP,
                    "Content-Type": "application/partial-upload",
                    "Content-Length": str(source.size - offset),
                }
                async with self.request(
                    "PATCH", URL(url, encoded=True), path, "upload", body=body, headers=headers
                ) as resp:
                    if resp.status == 409 and _offset_moved(resp):
                        raise TransientError(
                            f"upload {path}: the server's offset moved; asking it again", path=path
                        )
                    if resp.status >= 300:
                        await self.fail(resp, path, "upload")
                    await resp.read()
                return await body.digest()
        return await asyncio.to_thread(_whole_sha, source)

    async def _complete(
        self, url: str, path: str, size: int, sha: str, meta: dict[str, str]
    ) -> str:
        """The empty last append: the server checks the whole digest, then stores the file."""
        headers = {
            "Upload-Offset": str(size),
            "Upload-Complete": "?1",
            "Upload-Draft-Interop-Version": INTEROP,
            "Content-Type": "application/partial-upload",
            "Repr-Digest": digest_header(sha),
            **meta,
        }
        async with self.request(
            "PATCH", URL(url, encoded=True), path, "commit", headers=headers, data=b""
        ) as resp:
            if resp.status == 409 and _offset_moved(resp):
                raise TransientError(
                    f"upload {path}: the server has less than was sent; sending the rest",
                    path=path,
                )
            if resp.status not in (200, 201, 204):
                await self.fail(resp, path, "commit")
            await resp.read()
            stored = parse_digest(resp.headers.get("Repr-Digest"))
        self.resumes.drop(self._key(path))
        if stored != sha:
            raise TransientError(f"upload {path}: the server stored different bytes", path=path)
        return sha

    # -- delta -------------------------------------------------------------------------------
    async def put_delta(self, path: str, source: Source, meta: dict[str, str]) -> str | None:
        """Send ``source`` as a delta of the server's copy; None: send it whole instead.

        The file is cut in a worker thread from the start (while the server's list, if the
        manifest has none, is asked for), and the steps go on the wire as the chunks come: the
        server builds the new file while this end still reads it. The whole file's sha-256
        ends the body (its ``D`` step)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def emit(batch: list[tuple[int, int, bytes]]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("batch", batch))

        def cut() -> None:
            try:
                done = source.cut(stop, emit)
            except BaseException as e:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("done", done))

        cutting = loop.run_in_executor(None, cut)
        state = _Delta()
        try:
            base_sha, blob = source.base_sha256, source.base_chunks
            if blob is None or not chunking.valid_blob(blob):
                found = await self._server_chunks(path)
                if found is None:
                    return None
                base_sha, blob = found
            assert base_sha is not None
            base = chunking.Chunks(blob, base_sha)
            headers = {
                "If-Match": f'"{base_sha}"',
                "X-Syncd-Chunking": chunking.PARAMS,
                "X-Syncd-Length": str(source.size),
                "Content-Type": "application/x-syncd-delta",
                **meta,
            }
            steps = await _plan(base, queue, state)
            if state.literal * 2 > source.size:
                log.info("%s: mostly new bytes; sending it whole", path)
                return None
            body = StreamBody(source, None, _body(source, steps, queue, state))
            stored = await self._post_delta(path, body, headers)
        finally:
            stop.set()
            with contextlib.suppress(BaseException):
                await cutting
        if stored is None:
            return None
        await source.check_unchanged()
        assert state.chunks is not None
        if stored != state.chunks.sha256:
            raise TransientError(f"delta {path}: the server stored different bytes", path=path)
        source.new_chunks = (state.chunks.sha256, state.chunks.blob)
        log.info(
            "%s: sent as a delta: %d of %d bytes (%d steps)",
            path,
            state.literal,
            source.size,
            state.steps,
        )
        if source.on_bytes is not None:
            source.on_bytes(source.size)
        return stored

    async def _post_delta(self, path: str, body: StreamBody, headers: dict[str, str]) -> str | None:
        """The delta request: the sha-256 the server stored, or None (it takes no delta)."""
        async with self.request(
            "POST", self.url(path, "delta"), path, "delta", body=body, headers=headers
        ) as resp:
            refused = resp.status in (404, 405, 412, 501)
            if resp.status == 400:
                # an older server (no such query), or the file it built is not this one (its
                # base changed under it): nothing was stored; the whole file goes instead
                text = await resp.text()
                refused = "query" in text or "digest mismatch" in text
            if refused:
                await resp.read()
                log.info("%s: no delta taken (%d); sending it whole", path, resp.status)
                return None
            if resp.status not in (200, 201, 204):
                await self.fail(resp, path, "delta")
            await resp.read()
            return parse_digest(resp.headers.get("Repr-Digest"))

    async def _server_chunks(self, path: str) -> tuple[str, bytes] | None:
        """The server's chunk list of its copy and that copy's sha-256 (None: none)."""
        async with self.request("GET", self.url(path, "chunks"), path, "ask chunks") as resp:
            if resp.status != 200:
                await resp.read()
                return None
            etag = resp.headers.get("ETag", "").strip('"')
            if resp.headers.get("X-Syncd-Chunking") != chunking.PARAMS or len(etag) != 64:
                await resp.read()
                return None
            blob = await resp.read()
        return (etag, blob) if chunking.valid_blob(blob) else None


@dataclass
class _Delta:
    """What a delta found on its way: the new list (once the whole file's hash is done), the
    literal bytes it sends, its steps."""

    chunks: chunking.Chunks | None = None
    literal: int = 0
    steps: int = 0


async def _plan(
    base: chunking.Chunks, queue: asyncio.Queue[tuple[str, Any]], state: _Delta
) -> list[tuple[str, int, int]]:
    """The steps, once the cut is complete (the whole file's sha-256 may still be running)."""
    maker = chunking.Steps(base)
    steps: list[tuple[str, int, int]] = []
    while True:
        kind, item = await queue.get()
        if kind == "error":
            raise item
        if kind == "done":  # (a size-0 file: cut and hashed at once)
            state.chunks = item
            break
        if not item:
            break
        steps.extend(step for entry in item if (step := maker.add(*entry)) is not None)
    if (last := maker.finish()) is not None:
        steps.append(last)
    state.literal = maker.literal
    state.steps = len(steps)
    return steps


async def _body(
    source: Source,
    steps: list[tuple[str, int, int]],
    queue: asyncio.Queue[tuple[str, Any]],
    state: _Delta,
) -> AsyncIterator[bytes]:
    """The delta body: the steps (literal bytes read from the file as they go), then, once
    the whole file's hash is done, the ``D`` step."""
    for kind, start, length in steps:
        if kind == "C":
            yield chunking.STEP.pack(b"C", start, length)
            continue
        yield chunking.STEP.pack(b"L", 0, length)
        end = start + length
        while start < end:
            n = min(PIECE, end - start)
            data = await asyncio.to_thread(source.read_at, start, n)
            await source.pace(n)
            yield data
            start += n
    while state.chunks is None:
        kind, item = await queue.get()
        if kind == "error":
            raise item
        if kind == "done":
            state.chunks = item
    yield chunking.STEP.pack(b"D", 0, 32) + bytes.fromhex(state.chunks.sha256)


def _offset_moved(resp: aiohttp.ClientResponse) -> bool:
    """Is this 409 the draft's "mismatching upload offset" (another 409, such as a target
    that is a directory, is the path's own permanent failure)?"""
    return resp.content_type == "application/problem+json" and "Upload-Offset" in resp.headers


def _whole_sha(source: Source) -> str:
    from syncd.hashing import hash_path

    return hash_path(source.path, source.local, source.stats)
