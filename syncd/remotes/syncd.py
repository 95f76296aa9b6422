"""The remote for `syncd serve` (see docs/protocol.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import aiohttp
from yarl import URL

from syncd import __version__
from syncd.config import RemoteConfig
from syncd.digests import digest_header, parse_digest
from syncd.errors import (
    AuthError,
    PermanentError,
    Silent,
    SourceError,
    TransientError,
    Unreachable,
    WrongProtocol,
)
from syncd.hashing import Source
from syncd.remotes.base import is_reserved, marker_body, marker_id, marker_path
from syncd.remotes.body import UploadBody, body_of, silence_limit
from syncd.remotes.quickstate import quote_path as quote_path  # re-exported
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.remotes.syncd")

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 507}
#: 5xx answers that no retry can change: the server does not implement what was asked.
PERMANENT_5XX = {501, 505}


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def ssl_context(cfg: RemoteConfig) -> ssl.SSLContext | bool:
    if not cfg.verify_tls:
        return False
    if cfg.ca_file is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_file))
    return True


def _source_error(e: BaseException) -> SourceError | None:
    """The local file's own error behind a transport error (aiohttp wraps what a body raises
    as a connection error), if there is one."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, SourceError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class HTTPRemote:
    """What the HTTP-based remotes share: one session, keep-alive, timeouts, error mapping.

    Timeouts: connecting is bounded by ``timeout``; a request without a body by ``timeout``
    seconds of silence while its answer is awaited or read (aiohttp's ``sock_read``); a request
    with a body (``request(..., body=...)``) by ``timeout`` seconds in which no byte of the body
    was accepted and no answer came (``silence_limit``: a slow server that keeps reading is
    fine). Either way: a TransientError that names the timeout.
    """

    lists_digests = False
    #: What this kind speaks, for WrongProtocol's message, and the question that helps.
    protocol = "syncd"
    protocol_hint = "is it a syncd serve URL?"

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        self.cfg = cfg
        base = cfg.url if cfg.url.endswith("/") else cfg.url + "/"
        self.base = base
        u = URL(base)
        self.description = str(u.with_user(None).with_password(None).with_query(None))
        self._headers: dict[str, str] = {"User-Agent": f"syncd/{__version__}"}
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: a large upload may take as long as it takes. Connecting and
            # each silence while reading the answer are bounded instead.
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.cfg.timeout,
                sock_connect=self.cfg.timeout,
                sock_read=None,
            )
            connector = aiohttp.TCPConnector(
                limit=self._concurrency + 4, ssl=ssl_context(self.cfg), keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                connector=connector,
                headers=self._headers,
                auto_decompress=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HTTPRemote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """Is the server there? Any HTTP answer is; raises Unreachable/TransientError/AuthError."""
        async with self.request("HEAD", URL(self.base, encoded=True), "/", "ping") as r:
            if r.status == 401 or r.status >= 500:
                await self.fail(r, "/", "ping")

    async def read_marker(self, prefix: str) -> str | None:
        """The mirror id in ``<prefix>/.~syncd-mirror`` (GET); None if absent. PermanentError
        if it is not a marker (or the server refuses the name: an older syncd serve)."""
        path = marker_path(prefix)
        data = await self.small_get(self.url(path), path, "read marker", absent=(404, 410))
        return None if data is None else marker_id(data, path)

    async def small_get(
        self, url: URL, path: str, what: str, *, absent: tuple[int, ...], limit: int = 1 << 16
    ) -> bytes | None:
        """GET a small document: its first ``limit`` bytes, None on an ``absent`` status,
        the matching syncd error on any other failure."""
        async with self.request("GET", url, path, what) as resp:
            if self.foreign_page(resp):
                raise self.wrong_protocol(resp)
            if resp.status in absent:
                await resp.read()
                return None
            if resp.status != 200:
                await self.fail(resp, path, what)
            return await resp.content.read(limit)

    def url(self, path: str, query: str = "") -> URL:
        """The URL of ``path``: every byte of every segment but the unreserved ones
        percent-encoded (a newline is ``%0A``, ``?`` is ``%3F``, ``%`` is ``%25``).
        PermanentError for a name that is not valid UTF-8 (no server can address it)."""
        return URL(self.base + self.quoted(path) + (f"?{query}" if query else ""), encoded=True)

    @staticmethod
    def quoted(path: str) -> str:
        try:
            return quote_path(path)
        except UnicodeEncodeError:
            shown = path.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise PermanentError(
                f"{shown}: the name is not valid UTF-8 (no server can address it)", path=shown
            ) from None

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: URL,
        path: str,
        what: str,
        *,
        body: UploadBody | None = None,
        **kw: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, its answer inside the block; every failure of the transport (a
        timeout included) becomes the matching syncd error, and an error of the local file
        met while its body was sent is raised as itself (SourceChanged, SourceError)."""
        try:
            if body is None:
                kw.setdefault("timeout", self.read_timeout)
                # sock_read bounds each silence while the answer is read, but not the wait
                # for the final answer after an interim one (a "100" and then nothing): the
                # whole wait for the answer's head is bounded too.
                async with asyncio.timeout(self.cfg.timeout):
                    resp = await self.session.request(method, url, **kw)
                async with resp:
                    yield resp
                return
            async with (
                silence_limit(body.signal, self.cfg.timeout),
                self.session.request(method, url, data=body, **kw) as resp,
            ):
                yield resp
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, path, what) from e

    @property
    def read_timeout(self) -> aiohttp.ClientTimeout:
        """Per-request timeout for requests whose answer should come promptly."""
        return aiohttp.ClientTimeout(
            total=None,
            connect=self.cfg.timeout,
            sock_connect=self.cfg.timeout,
            sock_read=self.cfg.timeout,
        )

    def wrong_protocol(self, resp: aiohttp.ClientResponse, expected: str = "") -> WrongProtocol:
        """The error for an answer that shows the URL does not speak this kind's protocol."""
        target = resp.url.raw_path_qs if resp.url.raw_path else "/"
        if resp.status == 200 and not expected:
            answer = resp.content_type or "no content type"
        else:
            answer = f"{resp.status} {resp.reason or ''}".strip()[:60]
            if resp.content_type and resp.content_type != "application/octet-stream":
                answer += f", {resp.content_type}"
        if expected:
            answer += f", not {expected}"
        return WrongProtocol(
            f"{self.description} does not speak the {self.protocol} protocol "
            f"({resp.method} {target} answered {answer}); {self.protocol_hint}",
            path=target,
            status=resp.status,
        )

    def speaks(self, resp: aiohttp.ClientResponse) -> bool:
        """False when the answer cannot come from a server of this kind: 501 or 405 to one of
        the kind's own requests, or a web page where `syncd serve` answers (``foreign_page``)."""
        return resp.status not in (405, 501) and not self.foreign_page(resp)

    def foreign_page(self, resp: aiohttp.ClientResponse) -> bool:
        """An HTML page as a success or a 404: `syncd serve` never sends HTML (a 5xx page of a
        proxy in front of it is still only a server error)."""
        return resp.content_type == "text/html" and (resp.status < 300 or resp.status == 404)

    async def fail(self, resp: aiohttp.ClientResponse, path: str, what: str) -> NoReturn:
        """Raise the syncd error that matches a non-2xx answer (WrongProtocol where the answer
        shows the URL does not speak this kind's protocol: never retried)."""
        if resp.status != 401 and not self.speaks(resp):
            resp.release()
            raise self.wrong_protocol(resp)
        try:
            text = (await resp.text(errors="replace")).strip().splitlines()
        except (aiohttp.ClientError, TimeoutError):
            text = []
        detail = f"{resp.status} {resp.reason}" + (f": {text[0][:200]}" if text else "")
        msg = f"{what} {path}: {detail}"
        if resp.status == 401:
            raise AuthError(
                f"{self.description} refused the credentials (401){self.auth_hint()}",
                path=path,
                status=401,
            )
        if resp.status in TRANSIENT_STATUS or (
            resp.status >= 500 and resp.status not in PERMANENT_5XX
        ):
            raise TransientError(
                msg,
                path=path,
                status=resp.status,
                retry_after=retry_after(resp.headers.get("Retry-After")),
            )
        raise PermanentError(msg, path=path, status=resp.status)

    def auth_hint(self) -> str:
        return ""

    def transport_error(self, e: BaseException, path: str, what: str) -> TransientError:
        """The syncd error for a failure of the transport (raised at once when it is not a
        TransientError: refused TLS, or the local file's own error)."""
        source = _source_error(e)
        if source is not None:
            raise source from None
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            raise AuthError(
                f"{self.description}: the server's TLS certificate is not trusted "
                f"({e.certificate_error}); set remote.ca_file to its CA, or verify_tls = false",
                path=path,
            ) from e
        if isinstance(e, aiohttp.ClientSSLError):
            raise AuthError(f"{self.description}: TLS failed: {e}", path=path) from e
        if isinstance(e, aiohttp.ClientConnectorError):
            err = e.os_error
            why = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            return Unreachable(
                f"{what} {path}: cannot connect to {self.description}: {why}", path=path
            )
        if isinstance(e, TimeoutError):
            reason = f"no answer for {self.cfg.timeout:g} s (remote.timeout)"
            return Silent(f"{what} {path}: {self.description}: {reason}", path=path)
        reason = self.scrub(str(e) or type(e).__name__)
        return TransientError(f"{what} {path}: {self.description}: {reason}", path=path)

    def scrub(self, text: str) -> str:
        """``text`` without the URL's password (aiohttp's messages quote the URL whole)."""
        secret = URL(self.cfg.url.replace("{path}", "")).raw_password
        return text.replace(secret, "***") if secret else text


class SyncdRemote(HTTPRemote):
    """`syncd serve`: one-request PUT with Repr-Digest for small files, upload + commit for
    large ones, DELETE, MOVE, and an NDJSON listing with digests. Implements Remote, Mover,
    Marker and StateToken."""

    lists_digests = True

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        token = cfg.token()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def auth_hint(self) -> str:
        if self.cfg.token_file is None:
            return ": the server wants a token; set remote.token_file"
        return f": check the token in {self.cfg.token_file}"

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
                _, stored = await self._request(
                    "PUT",
                    path,
                    "upload",
                    ok=(200, 201, 204),
                    body=body,
                    headers={"Repr-Digest": digest_header(source.sha256)},
                )
            return self._confirm(path, source.sha256, stored)
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
        if status == 404 and _needs_a_witness(path):
            await self._check_gone(path)

    async def _check_gone(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        async for entry in self.list(parent):
            if entry.path == name or entry.path.startswith(name + "/"):
                raise PermanentError(
                    f"delete {path!r}: the server answered 404 but still lists it (it cannot "
                    "address this name; a newer syncd serve can)",
                    path=path,
                    status=404,
                )

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
        _, stored = await self._request(
            "PUT",
            path,
            "write marker",
            ok=(200, 201, 204),
            data=body,
            headers={
                "Repr-Digest": digest_header(sha),
                "Content-Type": "application/json",
            },
            timeout=self.read_timeout,
        )
        self._confirm(path, sha, stored)

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


def _needs_a_witness(path: str) -> bool:
    """Whether a 404 for ``path`` may be the server failing to address the name rather than
    the file being absent: names with a character that is not printable (a newline, a tab,
    another control character), which older servers' routes did not match."""
    return not path.isprintable()
