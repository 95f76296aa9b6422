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


def os_error(e: OSError, what: str) -> StoreError:
    """Translate an unexpected ``OSError`` about ``what`` into a :class:`StoreError`."""
    code = e.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return InsufficientStorage(f"{what}: no space left on the server")
    if code == errno.ENAMETOOLONG:
        return BadRequest(f"{what}: name too long")
    if code in (errno.EACCES, errno.EPERM):
        return Forbidden(f"{what}: permission denied")
    if code == errno.EROFS:
        return Forbidden(f"{what}: the server's filesystem is read-only")
    if code == errno.ELOOP:
        return Forbidden(f"{what}: is a symlink")
    if code == errno.ENOENT:
        return NotFound(f"{what}: not found")
    if code == errno.EISDIR:
        return Conflict(f"{what}: is a directory")
    if code == errno.ENOTDIR:
        return Conflict(f"{what}: a parent is not a directory")
    if code in (errno.ENOTEMPTY, errno.EEXIST):
        return Conflict(f"{what}: directory not empty")
    if code == errno.EMLINK:
        return Conflict(f"{what}: too many entries in a directory (the filesystem's limit)")
    if code == errno.EINVAL:
        return BadRequest(f"{what}: the filesystem refuses this name or operation")
    if code == errno.EXDEV:
        return Conflict(f"{what}: source and destination are on different filesystems")
    if code == errno.EMFILE or code == errno.ENFILE:
        return Unavailable(f"{what}: the server has too many files open; try again")
    return StoreError(f"{what}: {e.strerror or e}")
