"""The remote for `syncd serve` (see docs/protocol.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from yarl import URL

from syncd.config import RemoteConfig
from syncd.digests import digest_header, parse_digest
from syncd.errors import AuthError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes._http import HTTPRemote, needs_a_witness
from syncd.remotes.base import Features, is_reserved, marker_body, marker_path
from syncd.remotes.body import body_of
from syncd.remotes.quickstate import read_token
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.remotes.syncd")


class SyncdRemote(HTTPRemote):
    """`syncd serve`: one-request PUT with Repr-Digest for small files, upload + commit for
    large ones, DELETE, MOVE, and an NDJSON listing with digests. Implements Remote, Mover,
    Marker and StateToken."""

    features = Features(lists_digests=True, move=True, mark=True, state_token=True)

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
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
                return await self._put_whole(path, "upload", source.sha256, body=body)
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
                    headers={"Content-Length": str(source.size)},
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
                    headers={"Repr-Digest": digest_header(sha)},
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
                try:
                    item = json.loads(line)
                    entry = RemoteEntry(item["path"], int(item["size"]), item.get("sha256"))
                except (ValueError, KeyError, TypeError) as e:
                    raise TransientError(
                        f"list {prefix}: unreadable listing line: {e}", path=prefix
                    ) from e
                if is_reserved(entry.path):
                    continue  # an older server: never show syncd's own names
                yield entry

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
