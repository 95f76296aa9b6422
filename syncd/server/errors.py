"""The server's refusals: each a :class:`StoreError` carrying its HTTP status and one line."""

from __future__ import annotations

import errno
import threading

from syncd.errors import SyncdError


class StoreError(SyncdError):
    """A request cannot be served; ``status`` is the HTTP status, ``reason`` one short line."""

    status = 500

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadRequest(StoreError):
    """400: the path, a header or the body is malformed, or the body is not what its digest
    says (a one-step PUT and a commit alike)."""

    status = 400


class Forbidden(StoreError):
    """403: a symlink, the root, a special file, or the OS said no."""

    status = 403


class NotFound(StoreError):
    """404: no such file, directory or pending upload."""

    status = 404


class MethodNotAllowed(StoreError):
    """405: e.g. MKCOL on something that exists."""

    status = 405


class RequestTimeout(StoreError):
    """408: the client stopped sending its body."""

    status = 408


class Conflict(StoreError):
    """409: a directory where a file is needed (or the reverse), a tree that changed while it
    was walked."""

    status = 409


class PreconditionFailed(StoreError):
    """412: MOVE with ``Overwrite: F`` onto something that exists."""

    status = 412


class ContentTooLarge(StoreError):
    """413: a body larger than the request takes (a PROPFIND's XML)."""

    status = 413


class UnsupportedMediaType(StoreError):
    """415: MKCOL with a body, a body with a content coding."""

    status = 415


class NotImplementedHere(StoreError):
    """501: a transfer coding other than chunked."""

    status = 501


class Unavailable(StoreError):
    """503: the server is stopping."""

    status = 503


class InsufficientStorage(StoreError):
    """507: the disk (or a quota) is full."""

    status = 507


def check_stop(stop: threading.Event | None) -> None:
    """Raise :class:`Unavailable` (503) once the server is stopping."""
    if stop is not None and stop.is_set():
        raise Unavailable("the server is stopping; try again")


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x01``), so
    that a name with a newline in it can neither break a log line nor forge one."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_NO_SPACE = (InsufficientStorage, "no space left on the server")
_OS_ERRORS: dict[int, tuple[type[StoreError], str]] = {
    errno.ENOSPC: _NO_SPACE,
    getattr(errno, "EDQUOT", errno.ENOSPC): _NO_SPACE,
    errno.ENAMETOOLONG: (BadRequest, "name too long"),
    errno.EACCES: (Forbidden, "permission denied"),
    errno.EPERM: (Forbidden, "permission denied"),
    errno.EROFS: (Forbidden, "the server's filesystem is read-only"),
    errno.ELOOP: (Forbidden, "is a symlink"),
    errno.ENOENT: (NotFound, "not found"),
    errno.EISDIR: (Conflict, "is a directory"),
    errno.ENOTDIR: (Conflict, "a parent is not a directory"),
    errno.ENOTEMPTY: (Conflict, "directory not empty"),
    errno.EEXIST: (Conflict, "directory not empty"),
    errno.EMLINK: (Conflict, "too many entries in a directory (the filesystem's limit)"),
    errno.EINVAL: (BadRequest, "the filesystem refuses this name or operation"),
    errno.EXDEV: (Conflict, "source and destination are on different filesystems"),
    errno.EMFILE: (Unavailable, "the server has too many files open; try again"),
    errno.ENFILE: (Unavailable, "the server has too many files open; try again"),
}
"""What an unexpected ``OSError`` means for the request: the refusal and its line."""


def os_error(e: OSError, what: str) -> StoreError:
    """Translate an unexpected ``OSError`` about ``what`` into a :class:`StoreError`."""
    known = _OS_ERRORS.get(e.errno) if e.errno is not None else None
    if known is None:
        return StoreError(f"{what}: {e.strerror or e}")
    refusal, reason = known
    return refusal(f"{what}: {reason}")
