"""The Remote protocol: the few things the engine asks of a server.

Every method raises only syncd errors: ``TransientError`` (worth retrying), ``PermanentError``
(not for this path), ``AuthError`` (credentials refused: stop). What a remote can do beyond
put/delete/list/ping is said by ONE record, its ``features`` (rclone's ``fs.Features``); the
methods of each optional ability are a separate protocol (``Mover``, ``Reader``, ``Marker``,
``StateToken``, ``Sizer``). The engine asks ``remote.features``; it never looks at a remote's
type, and the conformance suite checks that every kind's features match its methods.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from syncd.errors import RemoteError
from syncd.hashing import Source
from syncd.resumes import Resumes
from syncd.types import RESERVED_PREFIX, RemoteEntry

MARKER_NAME = ".~syncd-mirror"
"""The mirror marker's name, at ``<prefix>/.~syncd-mirror``."""


def is_reserved(path: str) -> bool:
    """Whether any '/'-separated component of ``path`` starts with :data:`RESERVED_PREFIX`."""
    return RESERVED_PREFIX in path and any(
        part.startswith(RESERVED_PREFIX) for part in path.split("/")
    )


def marker_path(prefix: str) -> str:
    """Where the marker of the mirror at ``prefix`` is stored (relative to the remote)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{MARKER_NAME}" if prefix else MARKER_NAME


def marker_body(mirror_id: str) -> bytes:
    """The marker's bytes: ``{"mirror": "<id>", "created": "<ISO 8601 time, UTC>"}``."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (json.dumps({"mirror": mirror_id, "created": created}) + "\n").encode("utf-8")


def parse_marker(data: bytes) -> str | None:
    """The mirror id in a marker's bytes; None if they are not a marker."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    mirror = doc.get("mirror") if isinstance(doc, dict) else None
    return mirror if isinstance(mirror, str) and mirror else None


def marker_id(data: bytes, path: str) -> str:
    """The mirror id in the marker read at ``path``; PermanentError if it is not a marker."""
    from syncd.errors import PermanentError

    mirror = parse_marker(data)
    if mirror is None:
        raise PermanentError(f"read marker {path}: not a syncd mirror marker", path=path)
    return mirror


@dataclass(frozen=True)
class Features:
    """What one kind of remote can do, declared once by its class (``features = ...``)."""

    #: ``list`` says what the remote holds. False for an upload endpoint: the manifest is the
    #: only record of what was sent, and ``syncd verify`` refuses.
    lists: bool = True
    #: ``list`` gives a sha-256 for every file (verify needs no read-back).
    lists_digests: bool = False
    #: ``Mover``: a rename is a move on the server, not a new upload.
    move: bool = False
    #: ``Reader``: a stored file can be read back (``syncd verify`` hashes it).
    read: bool = False
    #: ``Marker``: a mirror marker names the mirror stored at a prefix.
    mark: bool = False
    #: ``StateToken``: a cheap token tells whether anything under a prefix changed.
    state_token: bool = False
    #: ``Sizer``: one file's size can be asked for (listings that leave names out).
    size_of: bool = False
    #: ``Versions``: what an upload replaces and what a delete removes is kept, and can be
    #: listed, read and put back (syncd serve; S3 with bucket versioning; a ``trash`` prefix).
    versions: bool = False
    #: The local file's mtime is stored with it and listed (``RemoteEntry.mtime_ns``).
    keeps_times: bool = False
    #: The local file's executable bit is stored with it and listed (``executable``).
    keeps_exec: bool = False
    #: ``Stat``: one stored file's size, mtime and exec bit can be asked for (S3, whose
    #: listings carry no metadata: ``verify --times`` asks per file).
    stat: bool = False
    #: ``Batcher``: several small files can go in one request, each checked by its own
    #: digest (syncd serve; ``batch_limits()`` says whether this server takes them).
    batch: bool = False
    #: ``Resumer``: an interrupted upload of a large file goes on from where the server's copy
    #: of it stopped, after a dropped connection or a restart of either end (its records in
    #: ``resumes``: the state dir's ``uploads/``); syncd serve, S3 multipart uploads.
    resumes: bool = False
    #: Changed large files go as deltas: only the chunks the server's copy lacks (syncd serve).
    delta: bool = False


@runtime_checkable
class Remote(Protocol):
    """A place files are mirrored to. Paths are '/'-separated, relative to the remote's root."""

    #: Human-readable "where", for messages (never contains credentials).
    description: str
    #: What it can do beyond these methods.
    features: Features

    async def put(self, path: str, source: Source) -> str:
        """Store ``source`` at ``path`` and return the sha-256 (hex) the remote confirmed.

        The remote must not leave a partial file at ``path``. Raises SourceChanged (from the
        source) if the local file changed while it was read; Transient/Permanent/AuthError.
        """
        ...

    async def delete(self, path: str) -> None:
        """Delete a file (or a directory and all under it). Absent is not an error."""
        ...

    def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Every file under directory ``prefix``, with paths relative to it; never a path with a
        component starting with :data:`RESERVED_PREFIX` (the marker, temps, locks)."""
        ...

    async def ping(self) -> None:
        """Cheap reachability check. Raises Unreachable/TransientError, or AuthError."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Resumer(Protocol):
    """Ability: uploads in progress are recorded in ``resumes`` and resumed from them."""

    resumes: Resumes


@runtime_checkable
class Mover(Protocol):
    """Ability: move a file or directory on the server without sending it again."""

    async def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (replacing it). PermanentError if ``src`` is absent."""
        ...


@runtime_checkable
class Reader(Protocol):
    """Ability: read a stored file back (``syncd verify`` hashes it where ``list`` gives no
    sha-256). A remote that cannot even list has ``features.lists = False``: verify refuses."""

    def read(self, path: str) -> AsyncIterator[bytes]:
        """The bytes stored at ``path``. PermanentError if absent; Transient/AuthError."""
        ...


@runtime_checkable
class Marker(Protocol):
    """Ability: a small marker file at ``<prefix>/.~syncd-mirror`` (see :func:`marker_body`)
    naming the mirror stored there, so a mirror is known by its id, not by the URL's spelling.
    The marker is never listed."""

    async def read_marker(self, prefix: str) -> str | None:
        """The mirror id stored at ``prefix``; None if there is no marker. PermanentError if
        what is there is not a marker; Transient/AuthError."""
        ...

    async def write_marker(self, prefix: str, mirror_id: str) -> None:
        """Store (or replace) the marker at ``prefix``, atomically where the remote can (a
        reader sees the old marker or the new one). Transient/Permanent/AuthError."""
        ...


@runtime_checkable
class StateToken(Protocol):
    """Ability: a cheap token that changes whenever anything under a prefix may have changed
    (a no-op sync compares it with the last one instead of listing everything)."""

    async def state(self, prefix: str) -> str | None:
        """The server's token for ``prefix``; None if the server offers none. Transient/
        AuthError."""
        ...


@dataclass(frozen=True)
class Version:
    """One kept version of one file, as a ``Versions`` remote lists it."""

    #: The file's path relative to the remote's root (as ``put`` was given it).
    path: str
    #: When it stopped being current (replaced or deleted), Unix ns.
    when_ns: int
    #: ``"replaced"``, ``"deleted"`` or ``"overwritten"`` (see syncd/versioning.py).
    why: str
    size: int
    sha256: str | None = None
    mtime_ns: int | None = None
    executable: bool | None = None
    #: Where the remote keeps it (opaque to everyone but the remote that listed it).
    ref: str = ""


@runtime_checkable
class Versions(Protocol):
    """Ability: earlier versions and deleted files are kept, and can be given back."""

    def versions(self, prefix: str) -> AsyncIterator[Version]:
        """Every kept version of every file at ``prefix`` or under it (``prefix`` names a file
        or a directory, relative to the remote's root, like ``Version.path``), in any order.
        Nothing kept yields nothing. Transient/Permanent/AuthError."""
        ...

    def read_version(self, version: Version) -> AsyncIterator[bytes]:
        """The bytes of a version this remote listed. PermanentError if it is gone."""
        ...

    async def restore_version(self, version: Version, path: str) -> None:
        """Make ``version`` the current file at ``path`` on the server, without sending it
        again (a server-side copy; what ``path`` held is kept as a version in turn)."""
        ...

    async def retention(self) -> str:
        """One line for people: how long and how much the remote keeps ("syncd serve keeps
        versions for 30 days, up to 10% of its disk"). Transient/AuthError."""
        ...


@runtime_checkable
class Stat(Protocol):
    """Ability: one stored file as a listing would show it, with the mtime and exec bit
    the listing leaves out (metadata read per file)."""

    async def stat(self, path: str) -> RemoteEntry | None:
        """The stored file at ``path``, None if absent; Transient/Permanent/AuthError."""
        ...


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold, as the server says."""

    parts: int
    bytes: int
    #: The largest file a batch may hold.
    part: int


BatchAnswer = str | RemoteError | None
"""Per file of a batch: the sha-256 the remote stored (hex), the error that file met, or None
(not tried: send it alone)."""


@runtime_checkable
class Batcher(Protocol):
    """Ability: several small files in one request, each stored atomically and checked by its
    own digest (the answer says per file what became of it)."""

    async def batch_limits(self) -> BatchLimits | None:
        """What this server takes in one batch; None if it takes no batches (an older server).
        Asked once; Transient/AuthError."""
        ...

    async def put_batch(self, prefix: str, items: list[tuple[str, Source]]) -> list[BatchAnswer]:
        """Store every ``(path relative to prefix, source)`` (each source's ``data`` and
        ``sha256`` read already); one answer per item, in order. Raises for the whole batch:
        TransientError (send it again), AuthError, WrongProtocol."""
        ...


@runtime_checkable
class Sizer(Protocol):
    """Ability: tell one stored file's size. For servers whose listings leave some names
    out (nginx's WebDAV hides dot files): a row the listing does not show is asked for."""

    async def size_of(self, path: str) -> int | None:
        """The stored size of ``path``, None if absent; Transient/Permanent/AuthError."""
        ...
