"""``PROPFIND``: the WebDAV view of the tree (RFC 4918), so that any WebDAV client can browse it.

A request body is at most :data:`MAX_BODY` bytes of XML, parsed by expat into an
``xml.etree`` tree with every DOCTYPE and entity declaration refused (no entity expansion, no
external fetch). The answer, a ``207`` multistatus, is built as text by :class:`Finder` in
worker threads and streamed a batch of :data:`BATCH` entries at a time: a directory of any size
is answered in bounded memory (``os.scandir``, unsorted, never the whole directory at once).

Paths under ``/.~syncd-versions/`` are read like any other (their entries' reserved names
listed, see :func:`.paths.listed_name`); outside them reserved names are never shown.
"""

from __future__ import annotations

import email.utils
import os
import stat
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from syncd.server.errors import BadRequest, Forbidden, NotFound
from syncd.server.fdio import O_DIR, lstat_at
from syncd.server.hashes import hash_at
from syncd.server.paths import RelPath, listed_name
from syncd.server.store import Store
from syncd.server.tree import Dirs
from syncd.versioning import VERSIONS_DIR

DAV = "DAV:"
MAX_BODY = 64 << 10
"""The largest PROPFIND body read (a longer one is ``413``)."""
BATCH = 500
"""Entries of a ``Depth: 1`` answer built per worker-thread call (then written out)."""
XML_TYPE = 'application/xml; charset="utf-8"'

HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">\n'
TAIL = b"</D:multistatus>\n"

FINITE_DEPTH = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>\n'
)
"""The body of the ``403`` answer to ``Depth: infinity`` (RFC 4918, 9.1)."""


class InfiniteDepth(Exception):
    """``Depth: infinity`` (or no Depth header, which means it): refused with a 403."""


def parse_depth(value: str | None) -> int:
    """0 or 1 from a PROPFIND's ``Depth``; :class:`InfiniteDepth` for infinity or none."""
    if value is None:
        raise InfiniteDepth
    text = value.strip().lower()
    if text in ("0", "1"):
        return int(text)
    if text == "infinity":
        raise InfiniteDepth
    raise BadRequest("Depth must be 0, 1 or infinity")


# --------------------------------------------------------------------------- request bodies

Name = tuple[str, str]
"""A property's name: (namespace URI, local name)."""


@dataclass(frozen=True)
class PropRequest:
    """What a PROPFIND asks for: every property, their names, or the ones named."""

    kind: Literal["allprop", "propname", "prop"]
    names: tuple[Name, ...] = ()


ALLPROP = PropRequest("allprop")


def _tag(name: str) -> str:
    """expat's ``"<uri> <local>"`` (namespace separator ' ') as ElementTree's ``{uri}local``."""
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


def _refuse_declarations(*_: object) -> int:
    raise BadRequest("XML bodies with a DOCTYPE or entity declarations are refused")


def parse_xml(data: bytes) -> ET.Element:
    """A request body's XML as an ``xml.etree`` element; :class:`BadRequest` if it is not
    well-formed namespace-correct XML or declares a DOCTYPE or entities."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_declarations
    parser.EntityDeclHandler = _refuse_declarations
    parser.UnparsedEntityDeclHandler = _refuse_declarations
    parser.ExternalEntityRefHandler = _refuse_declarations
    parser.StartElementHandler = lambda name, attrs: builder.start(
        _tag(name), {_tag(k): v for k, v in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(_tag(name))
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        reason = expat.ErrorString(e.code) if e.code is not None else str(e)
        raise BadRequest(f"the XML body is not well-formed: {reason} (line {e.lineno})") from None
    return builder.close()


def parse_propfind(data: bytes) -> PropRequest:
    """A PROPFIND body (empty: allprop); :class:`BadRequest` if it is not one."""
    if not data.strip():
        return ALLPROP
    root = parse_xml(data)
    if root.tag != f"{{{DAV}}}propfind":
        raise BadRequest("a PROPFIND body must be a DAV: propfind element")
    for child in root:
        if child.tag == f"{{{DAV}}}allprop":
            return ALLPROP  # (an <include> asks for nothing more than allprop gives here)
        if child.tag == f"{{{DAV}}}propname":
            return PropRequest("propname")
        if child.tag == f"{{{DAV}}}prop":
            return PropRequest("prop", tuple(_split(p.tag) for p in child))
    raise BadRequest("a PROPFIND body needs allprop, propname or prop")


def _split(tag: str) -> Name:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return "", tag


# --------------------------------------------------------------------------- answers


@dataclass
class Resource:
    """One file or directory of an answer, and where to read its digest if it is asked for."""

    href: str
    name: str
    is_dir: bool
    st: os.stat_result
    digest: Callable[[], str | None]
    """Its hex sha-256 (from the digest cache, else hashed now); None if it is not a file."""


_XML_BAD = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0xFFFE, 0xFFFF}


def xml_text(text: str) -> str | None:
    """``text`` escaped for XML element content; None if XML 1.0 cannot carry it at all."""
    if any(ord(c) in _XML_BAD for c in text):
        return None
    return escape(text).replace("\r", "&#13;")


def href_of(parts: tuple[str, ...], is_dir: bool) -> str:
    """The absolute path naming ``parts``, every byte but the unreserved ones percent-encoded
    (so any name survives any client), with a trailing ``/`` for a directory."""
    path = "/" + "/".join(quote(p, safe="") for p in parts)
    return path + "/" if is_dir and parts else path


def _http_date(ns: int) -> str:
    return email.utils.formatdate(ns / 1e9, usegmt=True)


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def _resourcetype(r: Resource) -> str | None:
    return "<D:collection/>" if r.is_dir else ""


def _contentlength(r: Resource) -> str | None:
    return None if r.is_dir else str(r.st.st_size)


def _lastmodified(r: Resource) -> str | None:
    return _http_date(r.st.st_mtime_ns)


def _creationdate(r: Resource) -> str | None:
    return _rfc3339(r.st.st_mtime_ns)  # (Linux gives no portable birth time: the mtime)


def _etag(r: Resource) -> str | None:
    if r.is_dir:
        return None
    hexdigest = r.digest()
    return None if hexdigest is None else f'"{hexdigest}"'


def _contenttype(r: Resource) -> str | None:
    return None if r.is_dir else "application/octet-stream"


def _displayname(r: Resource) -> str | None:
    return xml_text(r.name)


PROPS: dict[str, Callable[[Resource], str | None]] = {
    "resourcetype": _resourcetype,
    "getcontentlength": _contentlength,
    "getlastmodified": _lastmodified,
    "getetag": _etag,
    "getcontenttype": _contenttype,
    "displayname": _displayname,
    "creationdate": _creationdate,
}
"""The DAV: properties served, each from a resource (None: it has none)."""

_OK = "<D:status>HTTP/1.1 200 OK</D:status>"
_MISSING = "<D:status>HTTP/1.1 404 Not Found</D:status>"


def _element(name: Name, value: str) -> str:
    uri, local = name
    if uri == DAV:
        return f"<D:{local}>{value}</D:{local}>" if value else f"<D:{local}/>"
    return f"<{local} xmlns={quoteattr(uri)}/>" if not value else ""


def response_xml(r: Resource, req: PropRequest) -> str:
    """One ``<D:response>`` for ``r``: its properties found (200) and those missing (404)."""
    found: list[str] = []
    missing: list[str] = []
    if req.kind == "prop":
        for name in req.names:
            getter = PROPS.get(name[1]) if name[0] == DAV else None
            value = getter(r) if getter is not None else None
            if value is None:
                missing.append(_element(name, ""))
            else:
                found.append(_element(name, value))
    else:
        for local, getter in PROPS.items():
            if req.kind == "propname":
                if local == "getetag" and not r.is_dir:
                    found.append("<D:getetag/>")  # (not hashed just to say it exists)
                elif getter(r) is not None:
                    found.append(f"<D:{local}/>")
            else:
                value = getter(r)
                if value is not None:
                    found.append(_element((DAV, local), value))
    out = [f"<D:response><D:href>{escape(r.href)}</D:href>"]
    if found or not missing:
        out.append(f"<D:propstat><D:prop>{''.join(found)}</D:prop>{_OK}</D:propstat>")
    if missing:
        out.append(f"<D:propstat><D:prop>{''.join(missing)}</D:prop>{_MISSING}</D:propstat>")
    out.append("</D:response>\n")
    return "".join(out)


# --------------------------------------------------------------------------- the walk


class Finder:
    """The answer to one PROPFIND, built in worker threads a batch at a time.

    :meth:`start` answers for the path itself (raising 404/403 before anything is sent);
    :meth:`next_chunk` then gives the entries of a directory asked with ``Depth: 1``, then the
    multistatus' end, then None. :meth:`close` may be called from the event loop at any time.
    """

    def __init__(self, store: Store, rel: RelPath, req: PropRequest, depth: int) -> None:
        self._store = store
        self._rel = rel
        self._req = req
        self._depth = depth
        self._lock = threading.Lock()
        self._dirs: Dirs | None = None
        self._dir_fd = -1
        self._entries: Iterator[os.DirEntry[str]] | None = None
        self._done = False
        self._closed = False

    def start(self) -> bytes:
        """The multistatus' head and the path's own response (StoreError: nothing to send)."""
        with self._lock:
            try:
                return self._start()
            except BaseException:
                self._close()
                raise
            finally:
                if self._closed:  # closed from the event loop meanwhile (a cancelled request)
                    self._close()

    def _start(self) -> bytes:
        rel = self._rel
        store = self._store
        self._dirs = Dirs(store.root, rel.parent)
        empty = False  # the versions' directory before anything was kept: shown empty
        if rel.parts:
            st = lstat_at(self._dirs.last, rel.name, str(rel))
            if st is None and rel.parts == (VERSIONS_DIR,):
                st, empty = os.fstat(self._dirs.last), True
            if st is None:
                raise NotFound(f"{rel}: not found")
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{rel}: is a symlink (never followed)")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise Forbidden(f"{rel}: not a regular file or directory")
            name = rel.name
        else:
            st = os.fstat(self._dirs.last)
            name = ""
        is_dir = stat.S_ISDIR(st.st_mode)
        parent_fd = self._dirs.last
        own = self._resource(parent_fd, rel.parts, name, is_dir, st)
        text = HEAD + response_xml(own, self._req).encode("utf-8")
        if is_dir and self._depth >= 1 and not empty:
            try:
                self._dir_fd = (
                    os.open(rel.name, O_DIR, dir_fd=parent_fd) if rel.parts else os.dup(parent_fd)
                )
                self._entries = os.scandir(self._dir_fd)
            except OSError as e:
                raise Forbidden(f"{rel}: cannot be read ({e.strerror})") from e
        else:
            self._done = True
            self._close()
            text += TAIL
        return text

    def _resource(
        self, dir_fd: int, parts: tuple[str, ...], name: str, is_dir: bool, st: os.stat_result
    ) -> Resource:
        store = self._store
        key = "/".join(parts)

        def digest() -> str | None:
            known = store.digests.get(key, st)
            if known is not None:
                return known
            hashed = hash_at(dir_fd, name, key, store.digests, store.stopping)
            return None if hashed is None else hashed[1]

        return Resource(href_of(parts, is_dir), name, is_dir, st, digest)

    def next_chunk(self) -> bytes | None:
        """The next batch of entries (the multistatus' end after the last); None when done."""
        with self._lock:
            if self._done or self._closed:
                self._close()
                return None
            try:
                return self._batch()
            except BaseException:
                self._close()
                raise
            finally:
                if self._closed:
                    self._close()

    def _batch(self) -> bytes:
        assert self._entries is not None
        rel = self._rel
        versions = rel.in_versions
        out: list[str] = []
        count = 0
        for entry in self._entries:
            self._store.check_running()
            name = entry.name
            if not listed_name(name, versions=versions):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISDIR(st.st_mode):
                is_dir = True
            elif stat.S_ISREG(st.st_mode):
                is_dir = False
            else:
                continue  # symlinks, fifos, sockets, devices: never shown
            r = self._resource(self._dir_fd, (*rel.parts, name), name, is_dir, st)
            out.append(response_xml(r, self._req))
            count += 1
            if count >= BATCH:
                return "".join(out).encode("utf-8")
        self._done = True
        self._close()
        return "".join(out).encode("utf-8") + TAIL

    def close(self) -> None:
        """Release the descriptors, now or when the running batch ends."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def _close(self) -> None:
        entries, self._entries = self._entries, None
        if entries is not None:
            close = getattr(entries, "close", None)
            if close is not None:
                close()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None
