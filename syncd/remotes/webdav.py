"""The WebDAV remote (RFC 4918): nginx, Apache, Nextcloud/ownCloud, NAS boxes, wsgidav, rclone.

PUT (streamed), MKCOL for missing parent collections (each directory once per run, and the
collections of the URL itself where they are missing, as rclone does), DELETE, MOVE with
``Overwrite: T`` and PROPFIND with ``Depth: 1`` walked level by level (many servers refuse
``Depth: infinity``). An answer that shows the URL is not a WebDAV collection (501 or 405 to a
WebDAV method, a page where a multistatus was expected) is WrongProtocol.

WebDAV has no standard digest, so listings give sizes only
(``features.lists_digests`` is False) and ``syncd verify`` reads files back to hash them
(``read``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from syncd.config import RemoteConfig
from syncd.digests import digest_header
from syncd.errors import ConfigError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes._http import HTTPRemote, needs_a_witness
from syncd.remotes.base import (
    Features,
    Version,
    is_reserved,
    marker_body,
    marker_path,
)
from syncd.remotes.body import body_of
from syncd.remotes.quickstate import quote_path
from syncd.remotes.webdav_xml import (
    PROPFIND_BODY,
    PROPFIND_TIMES_BODY,
    Listed,
    read_multistatus,
)
from syncd.types import RESERVED_PREFIX, RemoteEntry
from syncd.versioning import VERSION_PREFIX, Why, split_version_path, versions_path

log = logging.getLogger("syncd.remotes.webdav")

XML_HEADERS = {"Content-Type": 'application/xml; charset="utf-8"'}


def parents(path: str) -> list[str]:
    """``"a/b/c.txt"`` -> ``["a", "a/b"]``: the collections that must exist, top first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def read_password(password_file: Path | None) -> str:
    """The password from ``password_file`` (one line; a trailing newline is not part of it)."""
    if password_file is None:
        return ""
    try:
        text = password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config", "remote.password_file", f"cannot read: {e}") from e
    return text.rstrip("\r\n")


class WebDAVRemote(HTTPRemote):
    """A WebDAV collection. Implements Remote, Mover, Reader, Marker and Versions (with a
    ``trash``: what a delete removes is MOVEd there, what an upload or a move replaces is
    COPied there first; without one, ``features.versions`` is False and nothing is kept).

    Every PUT carries ``X-OC-Mtime`` (the local mtime, whole seconds, as rclone sends it);
    a server that answers ``X-OC-Mtime: accepted`` (Nextcloud, ownCloud) keeps it, and from
    then on ``features.keeps_times`` is True and listings give getlastmodified as the mtime."""

    features = Features(move=True, read=True, mark=True, size_of=True, versions=True)
    protocol = "WebDAV"
    protocol_hint = "is it a WebDAV collection URL?"

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.username: str = cfg.options["username"]
        if self.username:  # (without a ':': the config checked)
            pair = f"{self.username}:{read_password(cfg.options['password_file'])}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        # The collection's own path, decoded: listings' hrefs are compared with it.
        self._base_path = unquote(urlsplit(self.base).path)
        # Collections known to exist (created or seen), so MKCOL is sent once per directory.
        self._known: set[str] = set()
        self._mkcol_locks: dict[str, asyncio.Lock] = {}
        # Whether the collections of the URL itself were made sure of (once per session).
        self._base_made = False
        self._base_lock = asyncio.Lock()
        self.trash: str = (cfg.options.get("trash") or "").strip("/")
        self.features = replace(type(self).features, versions=bool(self.trash))
        # Seen: a collection in the trash listed empty (nginx leaves dot names out).
        self._hides_dot_names = False

    def auth_hint(self) -> str:
        if not self.username:
            return ": the server wants a login; set remote.username and remote.password_file"
        return f": check remote.username ({self.username!r}) and remote.password_file"

    def collection_url(self, path: str) -> URL:
        return URL(self.base + (quote_path(path) + "/" if path else ""), encoded=True)

    async def _request(
        self, method: str, url: URL, path: str, what: str, *, ok: tuple[int, ...], **kw: Any
    ) -> int:
        """One request whose answer body is not needed; raises the matching syncd error."""
        async with self.request(method, url, path, what, **kw) as resp:
            if resp.status not in ok:
                await self.fail(resp, path, what)
            await resp.read()
            return resp.status

    def foreign_page(self, resp: aiohttp.ClientResponse) -> bool:
        # WebDAV servers send HTML error pages; a page where a multistatus is expected is
        # caught in _propfind. (405 and 501 still mean no WebDAV here: ``speaks``; MKCOL's
        # 405, "it exists", is handled before.)
        return False

    # -- the URL's own collections ----------------------------------------------------------
    async def _make_base(self, path: str, what: str) -> None:
        """Create the missing collections of the URL itself (``…/a/b/mirror/``): MKCOL the
        deepest first; each 409 (its parent is missing) moves one level up, then the missing
        ones are made top down. 201 is created, 405 exists. Once per session."""
        async with self._base_lock:
            if self._base_made:
                return
            u = URL(self.base, encoded=True)
            segs = [seg for seg in u.raw_path.split("/") if seg]
            origin = str(u.origin())

            def level(n: int) -> URL:
                return URL(origin + "/" + "".join(seg + "/" for seg in segs[:n]), encoded=True)

            n = len(segs)
            missing: list[int] = []
            while n > 0:
                status = await self._request(
                    "MKCOL", level(n), path, what, ok=(200, 201, 204, 405, 409)
                )
                if status != 409:
                    break
                missing.append(n)
                n -= 1
            else:
                raise PermanentError(
                    f"{what} {path}: cannot create the collections of {self.description}: "
                    "the server refuses them (409 Conflict)",
                    path=path,
                    status=409,
                )
            for m in reversed(missing):
                log.info("creating the collection %s", level(m))
                status = await self._request(
                    "MKCOL", level(m), path, what, ok=(200, 201, 204, 405, 409)
                )
                if status == 409:
                    raise TransientError(
                        f"{what} {path}: cannot create the collection {level(m)}: 409 Conflict",
                        path=path,
                        status=409,
                    )
            self._base_made = True

    # -- collections ------------------------------------------------------------------------
    async def _ensure_parents(self, path: str, what: str) -> None:
        """MKCOL every missing parent collection of ``path``, top first, once per run.
        Errors are reported as errors of ``what`` (the upload or move that needed them)."""
        for coll in parents(path):
            if coll in self._known:
                continue
            lock = self._mkcol_locks.setdefault(coll, asyncio.Lock())
            async with lock:
                if coll in self._known:
                    continue
                log.debug("MKCOL %s/", coll)
                status = await self._request(
                    "MKCOL", self.collection_url(coll), path, what, ok=(200, 201, 204, 405, 409)
                )
                if status == 409 and "/" not in coll and not self._base_made:
                    # The URL's own collection is missing: make it (and what is above it).
                    await self._make_base(path, what)
                    status = await self._request(
                        "MKCOL",
                        self.collection_url(coll),
                        path,
                        what,
                        ok=(200, 201, 204, 405, 409),
                    )
                if status == 409:
                    msg = f"{what} {path}: cannot create the collection {coll}/: 409 Conflict"
                    if "/" not in coll:
                        raise PermanentError(
                            f"{msg}: does {self.description} exist?", path=path, status=409
                        )
                    # A parent we thought was there is gone (deleted behind our back): forget
                    # it, so that the retry creates it again.
                    for up in parents(path):
                        self._known.discard(up)
                    raise TransientError(f"{msg}: its parent is missing", path=path, status=409)
                # 201: created; 405: it exists already (MKCOL is not allowed on a resource).
                self._known.add(coll)
            self._mkcol_locks.pop(coll, None)

    def _forget(self, path: str) -> None:
        """Drop cached collections at or under ``path`` (deleted or moved away)."""
        prefix = path + "/"
        self._known = {c for c in self._known if c != path and not c.startswith(prefix)}

    # -- Remote -----------------------------------------------------------------------------
    async def put(self, path: str, source: Source) -> str:
        """PUT the file (parents created first). Raises SourceChanged if the file changed while
        it was streamed, TransientError/PermanentError/AuthError from the server."""
        await self._ensure_parents(path, "upload")
        await self._keep(path, "replaced")
        url = self.url(path)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-OC-Mtime": str(int(source.local.mtime_ns) // 1_000_000_000),
        }
        if source.data is not None:
            assert source.sha256 is not None
            # Harmless where unknown; a server that knows RFC 9530 checks the bytes with it.
            headers["Content-Digest"] = digest_header(source.sha256)
        else:
            headers["Content-Length"] = str(source.size)
        async with body_of(source) as body:
            await self._put(path, url, headers, body=body)
            return await body.digest()

    async def _put(self, path: str, url: URL, headers: dict[str, str], **kw: Any) -> None:
        async with self.request("PUT", url, path, "upload", headers=headers, **kw) as resp:
            if not 200 <= resp.status < 300:
                # A parent collection we thought was there may be gone (deleted behind our
                # back; servers say 409, nginx 500): forget them, so that the retry makes
                # sure of them again (MKCOL of an existing one is a cheap 405).
                for coll in parents(path):
                    self._known.discard(coll)
            if resp.status == 409:
                await resp.read()
                if "/" not in path and not self._base_made:
                    await self._make_base(path, "upload")
                raise TransientError(
                    f"upload {path}: 409 Conflict: a parent collection is missing",
                    path=path,
                    status=409,
                )
            if not 200 <= resp.status < 300:
                await self.fail(resp, path, "upload")
            if not self.features.keeps_times and resp.headers.get("X-OC-Mtime") == "accepted":
                log.debug("%s keeps the mtime sent in X-OC-Mtime", self.description)
                self.features = replace(self.features, keeps_times=True)
            await resp.read()

    async def delete(self, path: str) -> None:
        """DELETE a file or a collection and all under it; absent is fine. With a trash, a
        MOVE into it instead."""
        if await self._keep(path, "deleted", move=True):
            return
        self._forget(path)
        status = await self._request(
            "DELETE",
            self.url(path),
            path,
            "delete",
            ok=(200, 202, 204, 404, 409, 301, 308),
            headers={"Depth": "infinity"},
            allow_redirects=False,
        )
        if status in (409, 301, 308):
            # A collection addressed without its trailing slash (nginx answers 409, others
            # redirect): address it as a collection.
            status = await self._request(
                "DELETE",
                self.collection_url(path),
                path,
                "delete",
                ok=(200, 202, 204, 404),
                headers={"Depth": "infinity"},
            )
        if status == 404 and needs_a_witness(path):
            parent = path.rpartition("/")[0]
            here = self._base_path + (parent + "/" if parent else "")
            listed = (
                href[len(here) :].strip("/")
                async for href, *_ in self._propfind(self.collection_url(parent), parent, depth="1")
                if href.startswith(here)
            )
            await self.check_gone(path, listed)

    async def move(self, src: str, dst: str) -> None:
        """MOVE ``src`` onto ``dst`` with ``Overwrite: T``. PermanentError if ``src`` is absent."""
        is_coll = await self._stat_collection(src)
        if is_coll is None:
            raise PermanentError(f"move {src}: not on the server", path=src, status=404)
        await self._ensure_parents(dst, "move")
        await self._keep(dst, "overwritten")
        if is_coll:
            s_url, d_url = self.collection_url(src), self.collection_url(dst)
        else:
            s_url, d_url = self.url(src), self.url(dst)
        self._forget(src)
        self._forget(dst)
        await self._request(
            "MOVE",
            s_url,
            src,
            "move",
            ok=(200, 201, 204),
            headers={"Destination": str(d_url), "Overwrite": "T", "Depth": "infinity"},
        )
        if is_coll:
            self._known.add(dst)

    async def _stat_collection(self, path: str) -> bool | None:
        """True for a collection, False for a file, None if absent (PROPFIND Depth: 0)."""
        found: bool | None = None
        async for item in self._propfind(self.url(path), path, depth="0"):
            found = item.is_coll
        return found

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Every file under ``prefix``: PROPFIND ``Depth: 1``, one collection at a time.

        An absent ``prefix`` lists nothing. Sizes only (``sha256`` is None; the mtime where
        the server keeps it: ``features.keeps_times``). Names starting with ``.~syncd-`` (and
        collections so named) are skipped. Raises TransientError/PermanentError/AuthError.
        """
        async for full, item in self._walk(prefix):
            rel = full[len(prefix) + 1 :] if prefix else full
            yield RemoteEntry(rel, item.size, None, self._mtime_ns(item))

    def _mtime_ns(self, item: Listed) -> int | None:
        if not self.features.keeps_times or item.mtime is None:
            return None
        return item.mtime * 1_000_000_000

    async def _walk(
        self, prefix: str, *, raw: bool = False, depth: int = -1
    ) -> AsyncIterator[tuple[str, Listed]]:
        """(path, listing) of every file under collection ``prefix``, level by level
        (``depth`` levels; -1: all). ``raw`` keeps syncd's own names (the trash's entries)."""
        todo = [(prefix, depth)]
        while todo:
            coll, left = todo.pop()
            here = self._base_path + (coll + "/" if coll else "")
            shown, there = 0, False
            async for item in self._propfind(self.collection_url(coll), coll, depth="1"):
                href = item.href
                if href.rstrip("/") == here.rstrip("/"):
                    there = True
                    continue  # the collection itself
                shown += 1
                if not href.startswith(here):
                    raise PermanentError(
                        f"list {coll}: the server listed {href!r}, outside the collection",
                        path=coll,
                    )
                name = href[len(here) :].strip("/")
                if not name or (not raw and is_reserved(name)):
                    continue  # syncd's own names (the marker, temps) are never listed
                full = f"{coll}/{name}" if coll else name
                if item.is_coll:
                    self._known.add(full)
                    if left != 1:
                        todo.append((full, left - 1))
                    else:
                        yield full + "/", item
                else:
                    yield full, item
            if raw and there and shown == 0:
                # An entry of the trash is never empty: the server leaves names out.
                self._hides_dot_names = True

    async def _propfind(self, url: URL, path: str, *, depth: str) -> AsyncIterator[Listed]:
        """One ``Listed`` per response; nothing if ``url`` is 404."""
        headers = {"Depth": depth, **XML_HEADERS}
        body = PROPFIND_TIMES_BODY if self.features.keeps_times else PROPFIND_BODY
        try:
            async with self.request(
                "PROPFIND", url, path, "list", data=body, headers=headers
            ) as resp:
                if resp.status == 404:
                    await resp.read()
                    return
                if resp.status == 200 or (resp.status == 207 and "xml" not in resp.content_type):
                    # A page where a multistatus was expected: not a WebDAV server.
                    raise self.wrong_protocol(resp, "a 207 multistatus")
                if resp.status != 207:
                    await self.fail(resp, path, "list")
                items = await read_multistatus(resp.content.iter_chunked(1 << 16))
        except ET.ParseError as e:
            raise TransientError(f"list {path}: unreadable PROPFIND answer: {e}", path=path) from e
        for item in items:
            yield item

    # -- Reader -----------------------------------------------------------------------------
    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``path`` (GET). PermanentError if absent."""
        async with self.request("GET", self.url(path), path, "read") as resp:
            if resp.status != 200:
                await self.fail(resp, path, "read")
            async for chunk in resp.content.iter_chunked(1 << 20):
                yield chunk

    async def size_of(self, path: str) -> int | None:
        """The stored size of ``path`` (HEAD), None if absent. Some servers leave names out
        of their listings (nginx: dot files); this says whether such a file is there."""
        async with self.request("HEAD", self.url(path), path, "stat") as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                await self.fail(resp, path, "stat")
            return resp.content_length

    # -- Marker -----------------------------------------------------------------------------
    async def write_marker(self, prefix: str, mirror_id: str) -> None:
        """PUT the marker to a temporary name beside it, then MOVE it into place: a server
        that writes a PUT straight into its target (wsgidav) never shows half a marker, and
        MOVE of a file is a rename on file-backed servers."""
        path = marker_path(prefix)
        tmp = (
            path[: -len(path.rsplit("/", 1)[-1])] + f"{RESERVED_PREFIX}{secrets.token_hex(16)}.tmp"
        )
        body = marker_body(mirror_id)
        await self._ensure_parents(path, "write marker")
        headers = {"Content-Type": "application/json"}
        await self._put(tmp, self.url(tmp), headers, data=body)
        try:
            await self._request(
                "MOVE",
                self.url(tmp),
                path,
                "write marker",
                ok=(200, 201, 204),
                headers={"Destination": str(self.url(path)), "Overwrite": "T"},
            )
        except BaseException:
            try:
                await self._request("DELETE", self.url(tmp), tmp, "delete", ok=(200, 204, 404))
            except Exception as e:  # the original error matters more
                log.debug("could not remove the temporary marker %s: %s", tmp, e)
            raise

    # -- the trash (Versions) ---------------------------------------------------------------
    async def _keep(self, path: str, why: Why, *, move: bool = False) -> bool:
        """With a trash: COPY (``move``: MOVE) what is at ``path`` (a file or a collection) to
        ``<trash>/<path>/.~syncd-v<when>-<why>``, server-side. False if there is no trash or
        nothing at ``path``."""
        if not self.trash:
            return False
        is_coll = await self._stat_collection(path)
        if is_coll is None:
            return False
        dest = f"{self.trash}/{versions_path(path, time.time_ns(), why)}"
        await self._ensure_parents(dest, "keep")
        if is_coll:
            s_url, d_url = self.collection_url(path), self.collection_url(dest)
        else:
            s_url, d_url = self.url(path), self.url(dest)
        if move:
            self._forget(path)
        await self._request(
            "MOVE" if move else "COPY",
            s_url,
            path,
            "keep",
            ok=(200, 201, 204),
            headers={"Destination": str(d_url), "Overwrite": "F", "Depth": "infinity"},
        )
        return True

    async def versions(self, prefix: str) -> AsyncIterator[Version]:
        """The versions in the trash at or under ``prefix`` (a file or a directory): every
        file under ``<trash>/<prefix>/``, and those of the deleted-directory entries directly
        in each directory above it. Nothing without a trash."""
        if not self.trash:
            return
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        top = len(self.trash) + 1
        found: list[tuple[str, Listed]] = [
            x
            async for x in self._walk(f"{self.trash}/{prefix}" if prefix else self.trash, raw=True)
        ]
        for i in range(len(parts) - 1, -1, -1):
            above = "/".join(parts[:i])
            place = f"{self.trash}/{above}" if above else self.trash
            async for full, _item in self._walk(place, raw=True, depth=1):
                name = full.rstrip("/").rpartition("/")[2]
                if full.endswith("/") and name.startswith(VERSION_PREFIX):
                    found += [x async for x in self._walk(full.rstrip("/"), raw=True)]
        if self._hides_dot_names:
            raise PermanentError(
                f"versions of {prefix or '/'}: {self.description} leaves names starting with "
                f"'.' out of its listings (nginx does), so the versions kept in {self.trash}/ "
                "cannot be listed; copy them back from the server's disk, or use a WebDAV "
                "server that lists such names (Apache, Nextcloud, wsgidav)",
                path=prefix,
            )
        for full, item in found:
            v = split_version_path(full[top:])
            if v is None or (prefix and v.path != prefix and not v.path.startswith(prefix + "/")):
                continue
            yield Version(
                path=v.path,
                when_ns=v.when_ns,
                why=v.why,
                size=max(item.size, 0),
                mtime_ns=self._mtime_ns(item),
                ref=full,
            )

    async def read_version(self, version: Version) -> AsyncIterator[bytes]:
        """The bytes of a version in the trash (GET)."""
        async for chunk in self.read(version.ref):
            yield chunk

    async def restore_version(self, version: Version, path: str) -> None:
        """COPY the version from the trash back to ``path`` (``Overwrite: T``); what ``path``
        held is kept in the trash first ("overwritten")."""
        await self._ensure_parents(path, "restore")
        await self._keep(path, "overwritten")
        await self._request(
            "COPY",
            self.url(version.ref),
            path,
            "restore",
            ok=(200, 201, 204),
            headers={"Destination": str(self.url(path)), "Overwrite": "T"},
        )

    async def retention(self) -> str:
        if self.trash:
            return f"versions: trash at {self.trash} (kept until removed from it)"
        return "versions: none — deleted files cannot be brought back (set remote.trash)"
