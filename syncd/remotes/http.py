"""The "http" remote: any upload endpoint (``PUT`` of a raw body, or ``POST`` of a raw body or a
multipart form), with the file's relative path in the URL's ``{path}`` placeholder.

Such an endpoint can only receive: it cannot list, verify or move (``features.lists`` is False: the
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

import aiohttp
from yarl import URL

from syncd.config import RemoteConfig
from syncd.digests import digest_header, parse_digest
from syncd.errors import ConfigError, PermanentError, TransientError, WrongProtocol
from syncd.hashing import Source
from syncd.remotes._http import HTTPRemote
from syncd.remotes.base import Features
from syncd.remotes.body import body_of
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
    """An upload endpoint. Implements Remote (``list`` cannot list: see ``features``)."""

    #: It cannot list what it holds: there is nothing to verify against.
    features = Features(lists=False)

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.template = cfg.url
        u = URL(cfg.url.replace("{path}", "PATH"))
        self.description = str(u.with_user(None).with_password(None).with_query(None)).replace(
            "PATH", "{path}"
        )
        self.headers_file: Path | None = cfg.options["headers_file"]
        self.method: str = cfg.options["method"]
        self.form_field: str = cfg.options["form_field"]
        self.delete_method: str = cfg.options["delete_method"]
        if self.headers_file is not None:
            self._headers.update(read_headers_file(self.headers_file))
        self._warned_delete = False

    def auth_hint(self) -> str:
        if self.headers_file is None:
            return ": the endpoint wants credentials; put them in remote.headers_file"
        return f": check the headers in {self.headers_file}"

    def url(self, path: str, query: str = "") -> URL:
        return URL(self.template.replace("{path}", self.quoted(path)), encoded=True)

    def wrong_protocol(self, resp: aiohttp.ClientResponse, expected: str = "") -> WrongProtocol:
        target = resp.url.raw_path_qs
        return WrongProtocol(
            f"{self.description} does not accept {resp.method} uploads ({resp.method} {target} "
            f"answered {resp.status} {resp.reason or ''}".rstrip()
            + "); check remote.url and remote.method",
            path=target,
            status=resp.status,
        )

    def foreign_page(self, resp: aiohttp.ClientResponse) -> bool:
        return False  # an upload endpoint may answer anything it likes

    def _framing(self, path: str, source: Source) -> tuple[bytes, bytes, dict[str, str]]:
        """What goes around the file's bytes, and the headers: nothing (a raw body), or one
        multipart/form-data file field."""
        field = self.form_field
        if self.method != "POST" or not field:
            headers = {"Content-Type": "application/octet-stream"}
            if source.data is None:
                headers["Content-Length"] = str(source.size)
            return b"", b"", headers
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
        return head, tail, headers

    async def put(self, path: str, source: Source) -> str:
        """Send the file's bytes; any 2xx is success. Raises SourceChanged if the file changed
        while it was streamed, TransientError/PermanentError/AuthError from the endpoint,
        WrongProtocol if it refuses the method itself (405, 501)."""
        head, tail, headers = self._framing(path, source)
        if source.sha256 is not None:
            headers["Content-Digest"] = digest_header(source.sha256)
        url = self.url(path)
        async with (
            body_of(source, head, tail) as body,
            self.request(self.method, url, path, "upload", body=body, headers=headers) as resp,
        ):
            if not 200 <= resp.status < 300:
                await self.fail(resp, path, "upload")
            stored = parse_digest(resp.headers.get("Repr-Digest"))
            await resp.read()
        sha = await body.digest()
        if stored is not None and stored != sha:
            raise TransientError(f"upload {path}: the endpoint stored different bytes", path=path)
        return sha

    async def delete(self, path: str) -> None:
        """``delete_method`` on the file's URL (2xx, 404 and 410 are fine); without
        ``delete_method`` nothing is sent."""
        method = self.delete_method
        if not method:
            if not self._warned_delete:
                self._warned_delete = True
                log.warning(
                    "%s: deletions are not sent (remote.delete_method is not set); "
                    "deleted files stay on the endpoint",
                    self.description,
                )
            return
        async with self.request(method, self.url(path), path, "delete") as resp:
            if not (200 <= resp.status < 300 or resp.status in (404, 410)):
                await self.fail(resp, path, "delete")
            await resp.read()

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Always PermanentError: an upload endpoint cannot say what it holds."""
        raise PermanentError(
            f'{self.description} cannot list what it holds (kind = "http")', path=prefix
        )
        yield  # pragma: no cover - makes this an async generator

    async def ping(self) -> None:
        """Any HTTP answer from the endpoint's host means it is there."""
        origin = URL(self.template.replace("{path}", "")).origin()
        async with self.request("HEAD", origin, "/", "reach") as resp:
            await resp.read()
