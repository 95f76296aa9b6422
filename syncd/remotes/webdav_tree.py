"""The WebDAV remote's collection tree: WebDAV's own requests as the remote's building blocks.

Collections are made sure of with MKCOL, each directory once per run (``_known``, the
collection cache), and the collections of the URL itself where they are missing (as rclone
does); a tree is listed with PROPFIND ``Depth: 1``, one collection at a time (many servers
refuse ``Depth: infinity``); a file is read with GET. ``DAVTrash`` and ``WebDAVRemote`` stand
on it; what a put, a delete or a kept version means is theirs.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from syncd.config import RemoteConfig
from syncd.errors import PermanentError, TransientError
from syncd.remotes._http import HTTPRemote
from syncd.remotes.base import Features, is_reserved
from syncd.remotes.quickstate import quote_path
from syncd.remotes.webdav_xml import PROPFIND_BODY, PROPFIND_TIMES_BODY, Listed, read_multistatus

log = logging.getLogger("syncd.remotes.webdav")

XML_HEADERS = {"Content-Type": 'application/xml; charset="utf-8"'}


def parents(path: str) -> list[str]:
    """``"a/b/c.txt"`` -> ``["a", "a/b"]``: the collections that must exist, top first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class DAVTree(HTTPRemote):
    """A WebDAV collection's tree: MKCOL once per directory, PROPFIND level by level, GET."""

    features: Features  # (the kind's class sets it; ``keeps_times`` picks the PROPFIND body)

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        # The collection's own path, decoded: listings' hrefs are compared with it.
        self._base_path = unquote(urlsplit(self.base).path)
        # Collections known to exist (created or seen), so MKCOL is sent once per directory.
        self._known: set[str] = set()
        self._mkcol_locks: dict[str, asyncio.Lock] = {}
        # Whether the collections of the URL itself were made sure of (once per session).
        self._base_made = False
        self._base_lock = asyncio.Lock()
        # Seen: a collection in the trash listed empty (nginx leaves dot names out).
        self._hides_dot_names = False

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

    async def _mkcol(self, url: URL, path: str, what: str) -> int:
        """MKCOL ``url``: 201 created, 405 there already, 409 its parent is missing (the
        callers decide); any other answer raises the matching syncd error."""
        return await self._request("MKCOL", url, path, what, ok=(200, 201, 204, 405, 409))

    def _urls(self, src: str, dst: str, is_coll: bool) -> tuple[URL, URL]:
        """The URLs of ``src`` and ``dst``: as collections (a trailing slash) or as files."""
        if is_coll:
            return self.collection_url(src), self.collection_url(dst)
        return self.url(src), self.url(dst)

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
                status = await self._mkcol(level(n), path, what)
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
                status = await self._mkcol(level(m), path, what)
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
                status = await self._mkcol(self.collection_url(coll), path, what)
                if status == 409 and "/" not in coll and not self._base_made:
                    # The URL's own collection is missing: make it (and what is above it).
                    await self._make_base(path, what)
                    status = await self._mkcol(self.collection_url(coll), path, what)
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

    async def _stat_collection(self, path: str) -> bool | None:
        """True for a collection, False for a file, None if absent (PROPFIND Depth: 0)."""
        found: bool | None = None
        async for item in self._propfind(self.url(path), path, depth="0"):
            found = item.is_coll
        return found

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
