"""The remote for `syncd serve` (see docs/protocol.md)."""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from yarl import URL

from syncd.config import RemoteConfig
from syncd.digests import digest_header, parse_digest
from syncd.errors import AuthError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes._http import needs_a_witness
from syncd.remotes.base import (
    BatchAnswer,
    BatchLimits,
    Features,
    Version,
    is_reserved,
    marker_body,
    marker_path,
)
from syncd.remotes.batchbody import multipart, parse_batch_limits
from syncd.remotes.body import body_of
from syncd.remotes.quickstate import read_token
from syncd.remotes.syncd_large import LargeUploads
from syncd.remotes.webdav_xml import PROPFIND_BODY, read_multistatus
from syncd.resumes import Resumes
from syncd.types import RemoteEntry
from syncd.versioning import VERSION_PREFIX, VERSIONS_DIR, split_version_path

log = logging.getLogger("syncd.remotes.syncd")


def meta_headers(source: Source) -> dict[str, str]:
    """The local file's mtime (integer ns) and exec bit (RFC 8941 boolean), for every upload
    request (docs/protocol.md, "Upload metadata")."""
    return {
        "X-Syncd-Mtime": str(int(source.local.mtime_ns)),
        "X-Syncd-Executable": "?1" if source.local.executable else "?0",
    }


def listed_entry(line: bytes, prefix: str) -> RemoteEntry:
    """One NDJSON listing line as a RemoteEntry (``mtime_ns`` and ``executable`` where the
    server gives them: an older one gives neither). TransientError if it is unreadable."""
    try:
        item = json.loads(line)
        mtime = item.get("mtime_ns")
        exe = item.get("executable")
        return RemoteEntry(
            item["path"],
            int(item["size"]),
            item.get("sha256"),
            int(mtime) if isinstance(mtime, int) and not isinstance(mtime, bool) else None,
            exe if isinstance(exe, bool) else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TransientError(f"list {prefix}: unreadable listing line: {e}", path=prefix) from e


def parse_retention(value: str | None) -> str:
    """``X-Syncd-Versions: keep=<seconds|forever>; space=<bytes>`` (or ``off``) for people."""
    if value is None:
        return "versions: kept by syncd serve (it does not say for how long: an older version?)"
    value = value.strip()
    if value == "off":
        return "versions: none — this syncd serve keeps none (it runs with --keep 0)"
    fields: dict[str, str] = {}
    for part in value.split(";"):
        k, _, v = part.strip().partition("=")
        fields[k.strip()] = v.strip()
    keep, space = fields.get("keep", ""), fields.get("space", "")
    if keep == "forever":
        how_long = "for ever"
    elif keep.isdigit():
        how_long = "for " + _duration(int(keep))
    else:
        how_long = f"for {keep or 'an unknown time'}"
    how_much = f", up to {_size(int(space))}" if space.isdigit() else ""
    return f"versions: kept by syncd serve {how_long}{how_much}"


def _duration(secs: int) -> str:
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= n and secs % n == 0:
            k = secs // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{secs} seconds"


def _size(n: int) -> str:
    for unit, k in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


class SyncdRemote(LargeUploads):
    """`syncd serve`: one-request PUT with Repr-Digest for small files, upload + commit for
    large ones, batches of small files, DELETE, MOVE, and an NDJSON listing with digests.
    Implements Remote, Mover, Marker, StateToken, Reader, Versions and Batcher; keeps the
    local mtime (ns) and exec bit."""

    features = Features(
        lists_digests=True,
        move=True,
        read=True,
        mark=True,
        state_token=True,
        versions=True,
        keeps_times=True,
        keeps_exec=True,
        batch=True,
        resumes=True,
        delta=True,
    )

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self._limits: BatchLimits | None = None
        self._limits_asked = False
        self.resumes = Resumes()
        self.token_file: Path | None = cfg.options["token_file"]
        token = read_token(self.token_file)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def auth_hint(self) -> str:
        if self.token_file is None:
            return ": the server wants a token; set remote.token_file"
        return f": check the token in {self.token_file}"

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: str = "",
        ok: tuple[int, ...],
        **kw: Any,
    ) -> tuple[int, str | None]:
        """One request; returns (status, digest header) or raises the matching syncd error
        (WrongProtocol for an answer no `syncd serve` gives)."""
        async with self.request(method, self.url(path, query), path, what, **kw) as resp:
            if resp.status not in ok:
                await self.fail(resp, path, what)
            if not self.speaks(resp):
                raise self.wrong_protocol(resp)
            await resp.read()
            return resp.status, parse_digest(resp.headers.get("Repr-Digest"))

    async def put(self, path: str, source: Source) -> str:
        """Small files: one PUT with Repr-Digest. Large ones: ``PUT ?upload=`` (the server
        answers the digest of what it received), then ``POST ?commit=``. Raises SourceChanged
        if the file changed while it was read, Transient/Permanent/AuthError, WrongProtocol."""
        if source.data is not None:
            assert source.sha256 is not None
            async with body_of(source) as body:
                return await self._put_whole(
                    path, "upload", source.sha256, body=body, headers=meta_headers(source)
                )
        meta = meta_headers(source)
        if await self.delta_possible(source):
            sha = await self.put_delta(path, source, meta)
            if sha is not None:
                return sha
        if await self.resumable(source):
            return await self.put_resumable(path, source, meta)
        upload_id = uuid.uuid4().hex
        query = f"upload={upload_id}"
        try:
            async with body_of(source) as body:
                _, received = await self._request(
                    "PUT",
                    path,
                    "upload",
                    query=query,
                    ok=(202,),
                    body=body,
                    headers={"Content-Length": str(source.size), **meta_headers(source)},
                )
                sha = await body.digest()
            if received != sha:
                raise TransientError(
                    f"upload {path}: the server received different bytes than were sent", path=path
                )
            try:
                _, stored = await self._request(
                    "POST",
                    path,
                    "commit",
                    query=f"commit={upload_id}",
                    ok=(200, 201, 204),
                    headers={"Repr-Digest": digest_header(sha), **meta_headers(source)},
                    timeout=self.read_timeout,
                )
            except PermanentError as e:
                if e.status != 404 or isinstance(e, AuthError):
                    raise
                # The server no longer holds the upload (it restarted, or the upload expired):
                # the whole file must be sent again, which the retry policy does.
                raise TransientError(
                    f"commit {path}: the server no longer holds the upload "
                    "(restarted or expired); sending the file again",
                    path=path,
                    status=404,
                ) from e
        except BaseException:
            await self._abort(path, query)
            raise
        return self._confirm(path, sha, stored)

    async def _put_whole(
        self, path: str, what: str, sha: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> str:
        """One PUT of a whole file with its Repr-Digest; the digest the server stored, checked."""
        _, stored = await self._request(
            "PUT",
            path,
            what,
            ok=(200, 201, 204),
            headers={"Repr-Digest": digest_header(sha), **(headers or {})},
            **kw,
        )
        return self._confirm(path, sha, stored)

    async def _abort(self, path: str, query: str) -> None:
        try:
            async with self.request("DELETE", self.url(path, query), path, "abort"):
                pass
        except TransientError:
            pass  # the server expires pending uploads by itself

    def _confirm(self, path: str, sent: str, stored: str | None) -> str:
        if stored is None:
            raise TransientError(f"upload {path}: the server did not confirm a digest", path=path)
        if stored != sent:
            raise TransientError(f"upload {path}: the server stored different bytes", path=path)
        return stored

    async def delete(self, path: str) -> None:
        """DELETE a file or a directory; absent (404) is fine, but a 404 for a name the
        server's listing still shows is not (a name the server cannot address, such as one
        with a control character on an older `syncd serve`): PermanentError then."""
        status, _ = await self._request("DELETE", path, "delete", ok=(200, 204, 404))
        if status == 404 and needs_a_witness(path):
            parent = path.rpartition("/")[0]
            listed = (entry.path async for entry in self.list(parent))
            await self.check_gone(path, listed, hint="; a newer syncd serve can")

    async def move(self, src: str, dst: str) -> None:
        await self._request(
            "MOVE",
            src,
            "move",
            ok=(201, 204),
            headers={"Destination": str(self.url(dst)), "Overwrite": "T"},
        )

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Every file under ``prefix`` (``GET /<prefix>/?list``, NDJSON with digests).
        WrongProtocol when the answer is not an NDJSON listing (a static file server's page)."""
        prefix = prefix.strip("/")
        url = URL(self.base + (self.quoted(prefix) + "/" if prefix else "") + "?list", encoded=True)
        async with self.request("GET", url, prefix, "list") as resp:
            if resp.status != 200:
                await self.fail(resp, prefix, "list")
            if resp.content_type != "application/x-ndjson":
                raise self.wrong_protocol(resp)
            async for line in resp.content:
                if not line.strip():
                    continue
                entry = listed_entry(line, prefix)
                if is_reserved(entry.path):
                    continue  # an older server: never show syncd's own names
                yield entry

    # -- Batcher ----------------------------------------------------------------------------
    async def batch_limits(self) -> BatchLimits | None:
        """``OPTIONS``' ``X-Syncd-Batch`` (asked once): None from a server without batches."""
        if not self._limits_asked:
            answer = await self._options("X-Syncd-Batch", "ask about batches")
            self._limits = parse_batch_limits(answer)
            self._limits_asked = True
        return self._limits

    async def _options(self, header: str, what: str) -> str | None:
        """One header of the server's answer to ``OPTIONS /`` (None if it has none)."""
        async with self.request("OPTIONS", URL(self.base, encoded=True), "/", what) as resp:
            if resp.status >= 400:
                await self.fail(resp, "/", what)
            await resp.read()
            return resp.headers.get(header)

    async def put_batch(
        self, prefix: str, items: builtins.list[tuple[str, Source]]
    ) -> builtins.list[BatchAnswer]:
        """``POST /<prefix>/?batch``: one multipart body, a part per file with its path,
        Content-Length, Repr-Digest, mtime and exec bit (docs/protocol.md, "Batch upload").
        Per file: the sha-256 stored (checked against the one sent), its error, or None (a
        server that turns batches down: each is sent alone, and no batch is tried again)."""
        prefix = prefix.strip("/")
        where = f"{prefix}/"
        body = multipart(items, self.quoted, meta_headers)
        target = (self.quoted(prefix) + "/" if prefix else "") + "?batch"
        url = URL(self.base + target, encoded=True)
        headers = {"Content-Type": body.content_type}
        async with self.request(
            "POST", url, where, "upload batch", data=body, headers=headers
        ) as resp:
            if resp.status in (400, 404, 405, 413, 415, 501):
                await resp.read()  # (not a server that takes this batch: send them alone)
                if resp.status != 413:
                    self._limits = None
                return [None] * len(items)
            if resp.status != 200:
                await self.fail(resp, where, "upload batch")
            if resp.content_type != "application/x-ndjson":
                raise self.wrong_protocol(resp, "an NDJSON answer")
            lines = [line for line in (await resp.read()).splitlines() if line.strip()]
        if len(lines) != len(items):
            raise TransientError(
                f"upload batch {where}: {len(lines)} answers for {len(items)} files", path=where
            )
        return [
            self._answer(prefix, rel, src, line)
            for (rel, src), line in zip(items, lines, strict=True)
        ]

    def _answer(self, prefix: str, rel: str, src: Source, line: bytes) -> BatchAnswer:
        """One file's line of a batch's answer, checked: the digest stored, or its error."""
        path = f"{prefix}/{rel}" if prefix else rel
        try:
            doc = json.loads(line)
            status, shown = int(doc["status"]), doc["path"]
            stored, message = parse_digest(doc.get("digest")), str(doc.get("message") or "")
        except (ValueError, KeyError, TypeError) as e:
            raise TransientError(f"upload {path}: unreadable batch answer: {e}", path=path) from e
        if shown != rel:
            raise TransientError(f"upload {path}: the batch's answers are out of order", path=path)
        if status not in (201, 204):
            return self.status_error(status, f"upload {path}: {status} {message}", path)
        assert src.sha256 is not None
        try:
            return self._confirm(path, src.sha256, stored)
        except TransientError as e:
            return e

    # -- Marker -----------------------------------------------------------------------------
    async def write_marker(self, prefix: str, mirror_id: str) -> None:
        """Store the marker with one PUT (renamed into place by the server: atomic)."""
        path = marker_path(prefix)
        body = marker_body(mirror_id)
        sha = hashlib.sha256(body).hexdigest()
        await self._put_whole(
            path,
            "write marker",
            sha,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=self.read_timeout,
        )

    # -- StateToken -------------------------------------------------------------------------
    async def state(self, prefix: str) -> str | None:
        """``GET /<prefix>/?state``: the server's token for everything under ``prefix``.

        None if the server offers none (an older server answers 400/404/405) or the answer is
        not a token; AuthError on 401, TransientError/Unreachable as for every request.
        """
        prefix = prefix.strip("/")
        target = (self.quoted(prefix) + "/" if prefix else "") + "?state"
        url = URL(self.base + target, encoded=True)
        data = await self.small_get(url, prefix, "state", absent=(400, 404, 405, 501), limit=4096)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        token = doc.get("state") if isinstance(doc, dict) else None
        return token if isinstance(token, str) and token else None

    # -- Reader -----------------------------------------------------------------------------
    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``path`` (GET), checked against the answer's Repr-Digest
        before the last chunk is given: TransientError if they differ, PermanentError if the
        answer has none (not a `syncd serve`) or the file is absent."""
        async for chunk in self._read_checked(self.url(path), path, "read"):
            yield chunk

    async def _read_checked(self, url: URL, path: str, what: str) -> AsyncIterator[bytes]:
        async with self.request("GET", url, path, what) as resp:
            if resp.status != 200:
                await self.fail(resp, path, what)
            want = parse_digest(resp.headers.get("Repr-Digest"))
            if want is None:
                raise PermanentError(
                    f"{what} {path}: the answer has no Repr-Digest (is {self.description} "
                    "a syncd serve?)",
                    path=path,
                )
            h = hashlib.sha256()
            held: bytes | None = None
            async for chunk in resp.content.iter_chunked(1 << 20):
                if held is not None:
                    yield held
                h.update(chunk)
                held = chunk
            if h.hexdigest() != want:
                raise TransientError(
                    f"{what} {path}: the bytes received do not match the server's digest",
                    path=path,
                )
            if held is not None:
                yield held

    # -- Versions ---------------------------------------------------------------------------
    async def versions(self, prefix: str) -> AsyncIterator[Version]:
        """Every kept version at or under ``prefix``: ``GET /.~syncd-versions/<prefix>/?list``
        (a raw listing: the entries' reserved names are kept), read back with
        ``split_version_path``; and, for each directory above ``prefix``, the
        deleted-directory entries there that hold ``prefix`` (found by ``PROPFIND Depth: 1``,
        each then listed; a server without PROPFIND: the directory's whole listing)."""
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        found: list[tuple[str, RemoteEntry]] = [
            (prefix, item) async for item in self._versions_under(prefix)
        ]
        for place in ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]:
            entries = await self._entries_in(place)
            if entries is None:  # (no PROPFIND: an older syncd serve)
                found += [(place, item) async for item in self._versions_under(place)]
                continue
            for entry in entries:
                found += [(place, item) async for item in self._versions_under(entry)]
        for place, item in found:
            v = split_version_path(item.path)
            if v is None:
                continue
            if prefix and v.path != prefix and not v.path.startswith(prefix + "/"):
                continue
            if place != prefix and v.entry.rpartition("/")[0] != place:
                continue  # (only a deleted directory's entry directly in ``place``)
            yield Version(
                path=v.path,
                when_ns=v.when_ns,
                why=v.why,
                size=item.size,
                sha256=item.sha256,
                mtime_ns=item.mtime_ns,
                executable=item.executable,
                ref=f"{VERSIONS_DIR}/{item.path}",
            )

    async def _entries_in(self, place: str) -> builtins.list[str] | None:
        """The deleted-directory entries directly in ``/.~syncd-versions/<place>/`` (their
        paths under the versions root), by ``PROPFIND Depth: 1``; None if the server does
        not answer PROPFIND (an older syncd serve), [] if there is nothing."""
        where = f"{VERSIONS_DIR}/{place}"
        url = URL(self.base + self.quoted(where) + "/", encoded=True)
        here = unquote(urlsplit(self.base).path) + where + "/"
        headers = {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'}
        out: builtins.list[str] = []
        try:
            async with self.request(
                "PROPFIND", url, where, "list versions", data=PROPFIND_BODY, headers=headers
            ) as resp:
                if resp.status == 404:
                    await resp.read()
                    return []
                if resp.status in (400, 403, 405, 501) or "xml" not in resp.content_type:
                    await resp.read()
                    return None
                if resp.status != 207:
                    await self.fail(resp, where, "list versions")
                items = await read_multistatus(resp.content.iter_chunked(1 << 16))
        except ET.ParseError as e:
            raise TransientError(
                f"list versions {place}: unreadable PROPFIND answer: {e}", path=place
            ) from e
        for item in items:
            if not item.is_coll or not item.href.startswith(here):
                continue
            name = item.href[len(here) :].strip("/")
            if name and "/" not in name and name.startswith(VERSION_PREFIX):
                out.append(f"{place}/{name}")
        return out

    async def _versions_under(self, place: str) -> AsyncIterator[RemoteEntry]:
        """The raw listing of ``/.~syncd-versions/<place>/`` (paths relative to the versions
        root); nothing if there is none (404)."""
        where = f"{VERSIONS_DIR}/{place}" if place else VERSIONS_DIR
        url = URL(self.base + self.quoted(where) + "/?list", encoded=True)
        async with self.request("GET", url, where, "list versions") as resp:
            if resp.status == 404:
                await resp.read()
                return
            if resp.status != 200:
                await self.fail(resp, where, "list versions")
            if resp.content_type != "application/x-ndjson":
                raise self.wrong_protocol(resp)
            async for line in resp.content:
                if not line.strip():
                    continue
                entry = listed_entry(line, where)
                rel = f"{place}/{entry.path}" if place else entry.path
                yield entry._replace(path=rel)

    async def read_version(self, version: Version) -> AsyncIterator[bytes]:
        """The bytes of a kept version (GET of its path under /.~syncd-versions/)."""
        async for chunk in self._read_checked(self.url(version.ref), version.path, "read version"):
            yield chunk

    async def restore_version(self, version: Version, path: str) -> None:
        """COPY the version onto ``path`` (``Overwrite: T``): what ``path`` holds is kept as a
        version in turn; the server keeps the version's mtime and exec bit."""
        await self._request(
            "COPY",
            version.ref,
            "restore",
            ok=(200, 201, 204),
            headers={"Destination": str(self.url(path)), "Overwrite": "T"},
        )

    async def retention(self) -> str:
        """How long and how much the server keeps (``OPTIONS``' ``X-Syncd-Versions``)."""
        return parse_retention(await self._options("X-Syncd-Versions", "ask about versions"))
