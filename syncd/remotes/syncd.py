"""The remote for `syncd serve` (see docs/protocol.md)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import aiohttp
from yarl import URL

from syncd import __version__
from syncd.config import RemoteConfig
from syncd.errors import AuthError, PermanentError, TransientError, Unreachable
from syncd.hashing import Source
from syncd.remotes.base import is_reserved, marker_body, marker_id, marker_path
from syncd.remotes.body import body_of
from syncd.remotes.quickstate import quote_path as quote_path  # re-exported
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.remotes.syncd")

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 507}


def digest_header(sha256_hex: str) -> str:
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


def parse_digest(value: str | None) -> str | None:
    """The sha-256 (hex) of an RFC 9530 ``Repr-Digest``/``Content-Digest`` value, if present."""
    if not value:
        return None
    for item in value.split(","):
        name, _, rest = item.strip().partition("=")
        if name.strip().lower() == "sha-256" and rest.startswith(":") and rest.endswith(":"):
            try:
                return base64.b64decode(rest[1:-1], validate=True).hex()
            except (binascii.Error, ValueError):
                return None
    return None


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


class HTTPRemote:
    """What the HTTP-based remotes share: one session, keep-alive, timeouts, error mapping."""

    lists_digests = False

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
        try:
            async with self.session.head(
                URL(self.base, encoded=True), timeout=self.read_timeout
            ) as r:
                if r.status == 401:
                    await self.fail(r, "/", "ping")
                if r.status >= 500:
                    await self.fail(r, "/", "ping")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, "/", "ping") from e

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
        try:
            async with self.session.get(url, timeout=self.read_timeout) as resp:
                if resp.status in absent:
                    await resp.read()
                    return None
                if resp.status != 200:
                    await self.fail(resp, path, what)
                return await resp.content.read(limit)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, path, what) from e

    def url(self, path: str, query: str = "") -> URL:
        return URL(self.base + quote_path(path) + (f"?{query}" if query else ""), encoded=True)

    @property
    def read_timeout(self) -> aiohttp.ClientTimeout:
        """Per-request timeout for requests whose answer should come promptly."""
        return aiohttp.ClientTimeout(
            total=None,
            connect=self.cfg.timeout,
            sock_connect=self.cfg.timeout,
            sock_read=self.cfg.timeout,
        )

    async def fail(self, resp: aiohttp.ClientResponse, path: str, what: str) -> NoReturn:
        """Raise the syncd error that matches a non-2xx answer."""
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
        if resp.status in TRANSIENT_STATUS or resp.status >= 500:
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
        reason = str(e) or type(e).__name__
        if isinstance(e, TimeoutError):
            reason = "timed out"
        return TransientError(f"{what} {path}: {self.description}: {reason}", path=path)


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
        """One request; returns (status, digest header) or raises the matching syncd error."""
        try:
            async with self.session.request(method, self.url(path, query), **kw) as resp:
                if resp.status not in ok:
                    await self.fail(resp, path, what)
                await resp.read()
                return resp.status, parse_digest(resp.headers.get("Repr-Digest"))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, path, what) from e

    async def put(self, path: str, source: Source) -> str:
        if source.data is not None:
            assert source.sha256 is not None
            _, stored = await self._request(
                "PUT",
                path,
                "upload",
                ok=(200, 201, 204),
                data=source.data,
                headers={"Repr-Digest": digest_header(source.sha256)},
                timeout=self.read_timeout,
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
                    data=body.data,
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
            async with self.session.delete(self.url(path, query), timeout=self.read_timeout):
                pass
        except (aiohttp.ClientError, TimeoutError):
            pass  # the server expires pending uploads by itself

    def _confirm(self, path: str, sent: str, stored: str | None) -> str:
        if stored is None:
            raise TransientError(f"upload {path}: the server did not confirm a digest", path=path)
        if stored != sent:
            raise TransientError(f"upload {path}: the server stored different bytes", path=path)
        return stored

    async def delete(self, path: str) -> None:
        await self._request("DELETE", path, "delete", ok=(200, 204, 404), timeout=self.read_timeout)

    async def move(self, src: str, dst: str) -> None:
        await self._request(
            "MOVE",
            src,
            "move",
            ok=(201, 204),
            headers={"Destination": str(self.url(dst)), "Overwrite": "T"},
            timeout=self.read_timeout,
        )

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        url = URL(self.base + quote_path(prefix) + "/?list", encoded=True)
        try:
            async with self.session.get(url, timeout=self.read_timeout) as resp:
                if resp.status != 200:
                    await self.fail(resp, prefix, "list")
                async for line in resp.content:
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if is_reserved(item["path"]):
                        continue  # an older server: never show syncd's own names
                    yield RemoteEntry(item["path"], int(item["size"]), item.get("sha256"))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, prefix, "list") from e
        except (ValueError, KeyError) as e:
            raise TransientError(f"list {prefix}: unreadable listing: {e}", path=prefix) from e

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
        url = URL(self.base + (quote_path(prefix) + "/" if prefix else "") + "?state", encoded=True)
        data = await self.small_get(url, prefix, "state", absent=(400, 404, 405, 501), limit=4096)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        token = doc.get("state") if isinstance(doc, dict) else None
        return token if isinstance(token, str) and token else None
