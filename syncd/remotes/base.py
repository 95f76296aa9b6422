"""The Remote protocol: the few things the engine asks of a server.

Every method raises only syncd errors: ``TransientError`` (worth retrying), ``PermanentError``
(not for this path), ``AuthError`` (credentials refused: stop). Optional abilities are separate
protocols (``Mover``) that the engine checks for with ``isinstance``; it never looks at a
remote's type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from syncd.hashing import Source
from syncd.types import RemoteEntry


@runtime_checkable
class Remote(Protocol):
    """A place files are mirrored to. Paths are '/'-separated, relative to the remote's root."""

    #: Human-readable "where", for messages (never contains credentials).
    description: str
    #: True when ``list`` gives a sha-256 for every file (verify needs no read-back).
    lists_digests: bool

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
        """Every file under directory ``prefix``, with paths relative to it."""
        ...

    async def ping(self) -> None:
        """Cheap reachability check. Raises Unreachable/TransientError, or AuthError."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Mover(Protocol):
    """Ability: move a file or directory on the server without sending it again."""

    async def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (replacing it). PermanentError if ``src`` is absent."""
        ...


@runtime_checkable
class Reader(Protocol):
    """Ability: read a stored file back (``syncd verify`` hashes it where ``list`` gives no
    sha-256). A remote that cannot even list sets ``lists = False``: verify then refuses."""

    def read(self, path: str) -> AsyncIterator[bytes]:
        """The bytes stored at ``path``. PermanentError if absent; Transient/AuthError."""
        ...
