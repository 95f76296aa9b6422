"""The WebDAV remote (RFC 4918): nginx, Apache, Nextcloud/ownCloud, NAS boxes, wsgidav, rclone.

PUT (streamed, parents made first), DELETE, MOVE with ``Overwrite: T``, the marker, and
listings, on the building blocks of ``webdav_tree`` (MKCOL once per directory, PROPFIND
``Depth: 1`` walked level by level, GET) and the trash of ``webdav_trash``. An answer that
shows the URL is not a WebDAV collection (501 or 405 to a WebDAV method, a page where a
multistatus was expected) is WrongProtocol.

WebDAV has no standard digest, so listings give sizes only
(``features.lists_digests`` is False) and ``syncd verify`` reads files back to hash them
(``read``).
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from yarl import URL

from syncd.config import RemoteConfig
from syncd.digests import digest_header
from syncd.errors import ConfigError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes._http import needs_a_witness
from syncd.remotes.base import Features, marker_body, marker_path
from syncd.remotes.body import body_of
from syncd.remotes.webdav_trash import DAVTrash
from syncd.remotes.webdav_tree import parents
from syncd.types import RESERVED_PREFIX, RemoteEntry

log = logging.getLogger("syncd.remotes.webdav")


def read_password(password_file: Path | None) -> str:
    """The password from ``password_file`` (one line; a trailing newline is not part of it)."""
    if password_file is None:
        return ""
    try:
        text = password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config", "remote.password_file", f"cannot read: {e}") from e
    return text.rstrip("\r\n")


class WebDAVRemote(DAVTrash):
    """A WebDAV collection. Implements Remote, Mover, Reader, Marker and Versions (with a
    ``trash``: ``DAVTrash``), on the MKCOL/PROPFIND building blocks of ``DAVTree``.

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

    def auth_hint(self) -> str:
        if not self.username:
            return ": the server wants a login; set remote.username and remote.password_file"
        return f": check remote.username ({self.username!r}) and remote.password_file"

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
        s_url, d_url = self._urls(src, dst, is_coll)
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

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Every file under ``prefix``: PROPFIND ``Depth: 1``, one collection at a time.

        An absent ``prefix`` lists nothing. Sizes only (``sha256`` is None; the mtime where
        the server keeps it: ``features.keeps_times``). Names starting with ``.~syncd-`` (and
        collections so named) are skipped. Raises TransientError/PermanentError/AuthError.
        """
        async for full, item in self._walk(prefix):
            rel = full[len(prefix) + 1 :] if prefix else full
            yield RemoteEntry(rel, item.size, None, self._mtime_ns(item))

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
