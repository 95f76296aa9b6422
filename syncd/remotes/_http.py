"""What the HTTP-based remotes share: one aiohttp session, timeouts, the URL of a path, and
one mapping of every failure (an answer's status, the transport's error) to a syncd error.

A new HTTP remote subclasses :class:`HTTPRemote` and sends through :meth:`HTTPRemote.request`;
it overrides ``protocol``/``protocol_hint``, ``auth_hint``, ``foreign_page`` or
``wrong_protocol`` where its servers answer differently.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
from yarl import URL

from syncd import __version__
from syncd.errors import (
    AuthError,
    PermanentError,
    RemoteError,
    Silent,
    SourceError,
    TransientError,
    Unreachable,
    WrongProtocol,
)
from syncd.remotes.base import marker_id, marker_path
from syncd.remotes.body import StreamBody, UploadBody
from syncd.remotes.quickstate import quote_path
from syncd.remotes.silence import silence_limit

if TYPE_CHECKING:
    from syncd.config import RemoteConfig

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


def needs_a_witness(path: str) -> bool:
    """Whether a 404 for ``path`` may be the server failing to address the name rather than
    the file being absent: names with a character that is not printable (a newline, a tab,
    another control character), which older servers' routes did not match. Their parent's
    listing is the witness (``HTTPRemote.check_gone``)."""
    return not path.isprintable()


class HTTPRemote:
    """What the HTTP-based remotes share: one session, keep-alive, timeouts, error mapping.

    Timeouts: connecting is bounded by ``timeout``; a request without a body by ``timeout``
    seconds of silence while its answer is awaited or read (aiohttp's ``sock_read``); a request
    with a body (``request(..., body=...)``) by ``timeout`` seconds in which no byte of the body
    was accepted and no answer came (``silence_limit``: a slow server that keeps reading is
    fine). Either way: a TransientError that names the timeout.
    """

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
        body: UploadBody | StreamBody | None = None,
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
        wait = retry_after(resp.headers.get("Retry-After"))
        raise self.status_error(resp.status, f"{what} {path}: {detail}", path, wait)

    def status_error(
        self, status: int, msg: str, path: str, wait: float | None = None
    ) -> RemoteError:
        """The syncd error a non-2xx ``status`` means (an answer's, or one file's in a batch):
        AuthError for 401, TransientError for what a retry may change, else PermanentError."""
        if status == 401:
            return AuthError(
                f"{self.description} refused the credentials (401){self.auth_hint()}",
                path=path,
                status=401,
            )
        if status in TRANSIENT_STATUS or (status >= 500 and status not in PERMANENT_5XX):
            return TransientError(msg, path=path, status=status, retry_after=wait)
        return PermanentError(msg, path=path, status=status)

    def auth_hint(self) -> str:
        return ""

    async def check_gone(self, path: str, listed: AsyncIterator[str], hint: str = "") -> None:
        """After a 404 to deleting ``path`` (see ``needs_a_witness``): PermanentError if its
        parent's listing (``listed``: names relative to the parent) still shows it."""
        name = path.rpartition("/")[2]
        async for there in listed:
            if there == name or there.startswith(name + "/"):
                raise PermanentError(
                    f"delete {path!r}: the server answered 404 but still lists it (it cannot "
                    f"address this name{hint})",
                    path=path,
                    status=404,
                )

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
