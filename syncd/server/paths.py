"""Request paths and file names: what a request may name, decoded once, checked once.

Every name a Linux filesystem can hold is a name here, whatever characters it has (newlines
and other control characters, '%', '\\', ':', '?', '#', spaces, any Unicode), with these
exceptions, each refused with a 400 that says which: an empty segment, ``.`` and ``..``, a
name with NUL or '/' (after decoding), longer than 255 bytes, not valid UTF-8 (a listing is
JSON, which cannot carry other bytes), or starting with syncd's reserved prefix ``.~syncd-``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from syncd.server.errors import BadRequest
from syncd.types import RESERVED_PREFIX
from syncd.versioning import VERSIONS_DIR

"""Names with this prefix belong to the server (temporary files, the lock, mirror markers)."""

MARKER_NAME = ".~syncd-mirror"
"""A mirror's marker (``<prefix>/.~syncd-mirror``): the one reserved name a request may read
and write (GET, HEAD, one-step PUT), never listed."""

LOCK_NAME = ".~syncd-serve.lock"
"""``ROOT/.~syncd-serve.lock``: held (flock) by the server serving ROOT; never reachable."""

TEMP_SUFFIX = ".tmp"

MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class RelPath:
    """A checked path below ROOT: its decoded segments, and whether it ended with ``/``."""

    parts: tuple[str, ...]
    trailing_slash: bool = False

    @property
    def text(self) -> str:
        """The path relative to ROOT, ``/``-joined (the digest cache's key)."""
        return "/".join(self.parts)

    @property
    def name(self) -> str:
        """The last segment."""
        return self.parts[-1]

    @property
    def parent(self) -> tuple[str, ...]:
        """Every segment but the last."""
        return self.parts[:-1]

    @property
    def in_versions(self) -> bool:
        """Whether it names the kept versions (``/.~syncd-versions/...``): read-only."""
        return self.parts[:1] == (VERSIONS_DIR,)

    def __str__(self) -> str:
        return "/" + self.text


@dataclass(frozen=True)
class Query:
    """A request's query string: which kind of request on the path (None: the plain one) and,
    for the steps of a two-step upload, its id."""

    kind: str | None  # None, "list", "state", "upload", "commit", "batch"
    uid: str = ""


@dataclass(frozen=True)
class Target:
    """What a handler is given: the path, and the id of a two-step upload ("" for others)."""

    rel: RelPath
    uid: str = ""


_ID = re.compile(r"[0-9a-f]{32}\Z")


def parse_query(query: str | None) -> Query:
    """Check a raw query string (``None``: there was no ``?``); raise :class:`BadRequest`."""
    if not query:
        return Query(None)
    if query in ("list", "list="):
        return Query("list")
    if query in ("state", "state="):
        return Query("state")
    if query in ("batch", "batch="):
        return Query("batch")
    if query in ("chunks", "chunks="):
        return Query("chunks")
    if query in ("delta", "delta="):
        return Query("delta")
    key, sep, value = query.partition("=")
    if key in ("upload", "commit") and sep:
        if not _ID.match(value):
            raise BadRequest(f"?{key}= needs 32 lowercase hex digits")
        return Query(key, value)
    raise BadRequest("unknown query string (a '?' in a name must be sent as %3F)")


def split_target(target: str) -> tuple[str, str | None]:
    """Split a raw request target into its path and its query (``None`` without ``?``)."""
    path, sep, query = target.partition("?")
    return path, (query if sep else None)


def parse_path(raw: str, *, marker: bool = False, versions: bool = False) -> RelPath:
    """Check and decode a raw (still percent-encoded) path; raise :class:`BadRequest`.

    With ``marker``, the last segment may be the mirror marker's name (:data:`MARKER_NAME`),
    the one reserved name a request can address; every other reserved name is refused.
    With ``versions``, a path under ``/.~syncd-versions/`` is accepted, reserved names inside
    it too (the versions' own entries, see syncd/versioning.py), temporary names excepted;
    the caller lets only reads (and a COPY's source) through.
    """
    if not raw.startswith("/"):
        raise BadRequest("the request path must start with '/'")
    if "#" in raw:
        raise BadRequest("a raw '#' in the path (send it as %23)")
    body = raw[1:]
    if not body:
        return RelPath((), True)
    segments = body.split("/")
    trailing = segments[-1] == ""
    if trailing:
        segments.pop()
    if versions and segments and _decoded(segments[0]) == VERSIONS_DIR:
        rest = tuple(_decode_segment(s, reserved=True) for s in segments[1:])
        return RelPath((VERSIONS_DIR, *rest), trailing)
    if marker and not trailing:
        last = _decode_marker(segments[-1])
        if last is not None:
            return RelPath((*(_decode_segment(s) for s in segments[:-1]), last), False)
    return RelPath(tuple(_decode_segment(s) for s in segments), trailing)


def _decoded(raw: str) -> str | None:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        return None


def _decode_marker(raw: str) -> str | None:
    """:data:`MARKER_NAME` if the raw segment spells it (percent-encoded or not), else None."""
    name = _decoded(raw)
    return name if name == MARKER_NAME else None


def is_temp_name(name: str) -> bool:
    """Whether a name on disk is one of the server's temporary files (``.~syncd-*.tmp``)."""
    return name.startswith(RESERVED_PREFIX) and name.endswith(TEMP_SUFFIX)


def _decode_segment(raw: str, *, reserved: bool = False) -> str:
    if not raw:
        raise BadRequest("empty path segment ('//')")
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        raise BadRequest(f"path segment {_shown(raw)} is not valid UTF-8") from None
    check_name(name, reserved=reserved)
    return name


def _shown(name: str) -> str:
    """A name as a refusal shows it: escaped (no control character reaches a log line or an
    answer) and cut to a readable length."""
    text = repr(name)
    return text if len(text) <= 80 else text[:60] + "..." + text[-17:]


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+,=@~ -]{0,254}\Z")
"""Names that pass :func:`check_name` at a glance (every request and every listed file goes
through it): ASCII, at most 255 bytes, no '/' or NUL, and not starting with '.' (so neither
'.', '..' nor the reserved prefix)."""


def check_name(name: str, *, reserved: bool = False) -> None:
    """Refuse a decoded file name that cannot be stored as a file (:class:`BadRequest`).
    With ``reserved``, a name with the reserved prefix passes, unless it is a temp's."""
    if _PLAIN_NAME.match(name):
        return  # the common case; everything below would accept it
    if name in ("", ".", ".."):
        raise BadRequest(f"path segment {_shown(name)} is not allowed (not a file name)")
    if "\x00" in name:
        raise BadRequest(f"path segment {_shown(name)} contains NUL")
    if "/" in name:
        raise BadRequest(f"path segment {_shown(name)} contains '/' (sent as %2F)")
    if name.startswith(RESERVED_PREFIX) and (not reserved or is_temp_name(name)):
        raise BadRequest(f"names starting with {RESERVED_PREFIX!r} are reserved")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeError:
        raise BadRequest(f"path segment {_shown(name)} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise BadRequest(f"path segment is longer than {MAX_NAME_BYTES} bytes ({size})")


def addressable(name: str, *, reserved: bool = False) -> bool:
    """Whether a name found on disk could be named in a request (else it is not listed);
    ``reserved``: inside ``/.~syncd-versions/``, where the versions' entries may be named."""
    try:
        check_name(name, reserved=reserved)
    except BadRequest:
        return False
    return True


def listed_name(name: str, *, versions: bool = False) -> bool:
    """Whether a name on disk is shown in a listing (``?list``, PROPFIND): outside the
    versions, never a reserved name; inside them (``versions``), the versions' entries too,
    never a temp."""
    if name.startswith(RESERVED_PREFIX) and not versions:
        return False
    return addressable(name, reserved=versions)
