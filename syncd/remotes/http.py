"""The "http" remote: any upload endpoint (``PUT`` of a raw body, or ``POST`` of a raw body or a
multipart form), with the file's relative path in the URL's ``{path}`` placeholder.

Such an endpoint can only receive: it cannot list, verify or move, so ``lists = False`` (the
engine then says plainly that ``verify`` cannot check it, and the manifest is the only record
of what was sent) and this remote has no ``move`` (a rename is a new upload). Deletions are
sent only when ``delete_method`` is set.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from syncd.config import RemoteConfig
from syncd.errors import ConfigError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes.syncd import HTTPRemote, digest_header, parse_digest, quote_path
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.remotes.http")

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_RESERVED_HEADERS = {"content-length", "content-type", "transfer-encoding", "host"}


def read_headers_file(path: Path) -> dict[str, str]:
    """``Name: value`` per line; blank lines and ``#`` comments are skipped. ConfigError names
    the file and the line, never the value (it is usually a secret)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "remote.headers_file", f"cannot read: {e}") from None
    headers: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.match(name):
            raise ConfigError(path, f"line {n}", 'not a header line ("Name: value")')
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigError(path, f"line {n}", f"{name} is set by syncd itself")
        if any(c in value for c in "\r\n\x00"):
            raise ConfigError(path, f"line {n}", "the value contains a control character")
        headers[name] = value
    return headers


def _form_quote(text: str) -> str:
    """A name for a multipart ``Content-Disposition`` parameter, escaped as browsers do."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class HTTPUploadRemote(HTTPRemote):
    """An upload endpoint. Implements Remote (``list`` cannot list: see ``lists``)."""

    lists_digests = False
    #: This remote cannot list what it holds: there is nothing to verify against.
    lists = False

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.template = cfg.url
        u = URL(cfg.url.replace("{path}", "PATH"))
        self.description = str(u.with_user(None).with_password(None).with_query(None)).replace(
            "PATH", "{path}"
        )
        if cfg.headers_file is not None:
            self._headers.update(read_headers_file(cfg.headers_file))
        self._warned_delete = False

    def auth_hint(self) -> str:
        if self.cfg.headers_file is None:
            return ": the endpoint wants credentials; put them in remote.headers_file"
        return f": check the headers in {self.cfg.headers_file}"

    def url(self, path: str, query: str = "") -> URL:
        return URL(self.template.replace("{path}", quote_path(path)), encoded=True)

    def _body(self, path: str, source: Source) -> tuple[Any, dict[str, str]]:
        """The request body and its headers: raw, or one multipart/form-data file field."""
        streamed = source.data is None
        field = self.cfg.form_field
        if self.cfg.method != "POST" or not field:
            headers = {"Content-Type": "application/octet-stream"}
            if streamed:
                headers["Content-Length"] = str(source.size)
                return source.chunks(), headers
            return source.data, headers
        boundary = "syncd-" + uuid.uuid4().hex
        name = path.rsplit("/", 1)[-1]
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{_form_quote(field)}"; '
            f'filename="{_form_quote(name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + source.size + len(tail)),
        }
        if not streamed:
            assert source.data is not None
            return head + source.data + tail, headers

        async def body() -> AsyncIterator[bytes]:
            yield head
            async for chunk in source.chunks():
                yield chunk
            yield tail

        return body(), headers

    async def put(self, path: str, source: Source) -> str:
        """Send the file's bytes; any 2xx is success. Raises SourceChanged if the file changed
        while it was streamed, TransientError/PermanentError/AuthError from the endpoint."""
        data, headers = self._body(path, source)
        if source.sha256 is not None:
            headers["Content-Digest"] = digest_header(source.sha256)
        kw: dict[str, Any] = {} if source.data is None else {"timeout": self.read_timeout}
        try:
            async with self.session.request(
                self.cfg.method, self.url(path), data=data, headers=headers, **kw
            ) as resp:
                if not 200 <= resp.status < 300:
                    await self.fail(resp, path, "upload")
                stored = parse_digest(resp.headers.get("Repr-Digest"))
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, path, "upload") from e
        if source.data is None:
            await source.check_unchanged()
        assert source.sha256 is not None
        if stored is not None and stored != source.sha256:
            raise TransientError(f"upload {path}: the endpoint stored different bytes", path=path)
        return source.sha256

    async def delete(self, path: str) -> None:
        """``delete_method`` on the file's URL (2xx, 404 and 410 are fine); without
        ``delete_method`` nothing is sent."""
        method = self.cfg.delete_method
        if not method:
            if not self._warned_delete:
                self._warned_delete = True
                log.warning(
                    "%s: deletions are not sent (remote.delete_method is not set); "
                    "deleted files stay on the endpoint",
                    self.description,
                )
            return
        try:
            async with self.session.request(
                method, self.url(path), timeout=self.read_timeout
            ) as resp:
                if not (200 <= resp.status < 300 or resp.status in (404, 410)):
                    await self.fail(resp, path, "delete")
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, path, "delete") from e

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Always PermanentError: an upload endpoint cannot say what it holds."""
        raise PermanentError(
            f'{self.description} cannot list what it holds (kind = "http")', path=prefix
        )
        yield  # pragma: no cover - makes this an async generator

    async def ping(self) -> None:
        """Any HTTP answer from the endpoint's host means it is there."""
        origin = URL(self.template.replace("{path}", "")).origin()
        try:
            async with self.session.head(origin, timeout=self.read_timeout) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e, "/", "reach") from e
