"""All filesystem work of the server: safe paths, fd-relative access, atomic writes, digests.

Every directory is opened relative to its parent's file descriptor with ``O_NOFOLLOW``, so a
symlink inside ROOT is never followed, whether it was there before a request or swapped in during
it. Nothing here touches the event loop: the blocking functions are meant to run in a worker
thread (``asyncio.to_thread``), except :meth:`Store.iter_listing`, which does that itself.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import logging
import os
import queue
import re
import secrets
import select
import shutil
import socket
import stat
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote_to_bytes

from syncd.errors import InUse, SyncdError
from syncd.faults import crash_point

log = logging.getLogger("syncd.server.store")

RESERVED_PREFIX = ".~syncd-"
"""Names with this prefix belong to the server (temporary files, the lock, mirror markers)."""

MARKER_NAME = ".~syncd-mirror"
"""A mirror's marker (``<prefix>/.~syncd-mirror``): the one reserved name a request may read
and write (GET, HEAD, one-step PUT), never listed."""

LOCK_NAME = ".~syncd-serve.lock"
"""``ROOT/.~syncd-serve.lock``: held (flock) by the server serving ROOT; never reachable."""

_TEMP_SUFFIX = ".tmp"

CHUNK = 1 << 20
"""Bytes written, read or hashed per worker-thread call."""

WRITEBACK = 8 << 20
"""A large upload starts the disk writeback of every this many bytes as soon as they are
written (see :func:`_start_writeback`)."""

_MAX_NAME_BYTES = 255
_DRIVE = re.compile(r"[A-Za-z]:\Z")
_BAD_CHARS = ("/", "\0")

SUPPORTED = (
    hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
)
"""Whether this OS can serve safely (Windows cannot: no openat, no O_NOFOLLOW)."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIR = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_O_READ = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
_O_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
_O_ROOT = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
_FADV_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


# --------------------------------------------------------------------------- errors


class StoreError(SyncdError):
    """A request cannot be served; ``status`` is the HTTP status, ``reason`` one short line."""

    status = 500

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadRequest(StoreError):
    """400: the path, a header or the body is malformed."""

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


class Conflict(StoreError):
    """409: a directory where a file is needed (or the reverse), a digest mismatch at commit."""

    status = 409


class PreconditionFailed(StoreError):
    """412: MOVE with ``Overwrite: F`` onto something that exists."""

    status = 412


class UnsupportedMediaType(StoreError):
    """415: MKCOL with a body."""

    status = 415


class InsufficientStorage(StoreError):
    """507: the disk (or a quota) is full."""

    status = 507


def _os_error(e: OSError, what: str) -> StoreError:
    """Translate an unexpected ``OSError`` about ``what`` into a :class:`StoreError`."""
    code = e.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return InsufficientStorage(f"{what}: no space left on the server")
    if code == errno.ENAMETOOLONG:
        return BadRequest(f"{what}: name too long")
    if code in (errno.EACCES, errno.EPERM):
        return Forbidden(f"{what}: permission denied")
    if code == errno.ELOOP:
        return Forbidden(f"{what}: is a symlink")
    if code == errno.ENOENT:
        return NotFound(f"{what}: not found")
    if code == errno.EISDIR:
        return Conflict(f"{what}: is a directory")
    if code == errno.ENOTDIR:
        return Conflict(f"{what}: a parent is not a directory")
    if code == errno.ENOTEMPTY:
        return Conflict(f"{what}: directory not empty")
    return StoreError(f"{what}: {e.strerror or e}")


# --------------------------------------------------------------------------- paths


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

    def __str__(self) -> str:
        return "/" + self.text


def split_target(target: str) -> tuple[str, str | None]:
    """Split a raw request target into its path and its query (``None`` without ``?``)."""
    path, sep, query = target.partition("?")
    return path, (query if sep else None)


def parse_path(raw: str, *, marker: bool = False) -> RelPath:
    """Check and decode a raw (still percent-encoded) path; raise :class:`BadRequest`.

    With ``marker``, the last segment may be the mirror marker's name (:data:`MARKER_NAME`),
    the one reserved name a request can address; every other reserved name is refused.
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
    if marker and not trailing:
        last = _decode_marker(segments[-1])
        if last is not None:
            return RelPath((*(_decode_segment(s) for s in segments[:-1]), last), False)
    return RelPath(tuple(_decode_segment(s) for s in segments), trailing)


def _decode_marker(raw: str) -> str | None:
    """:data:`MARKER_NAME` if the raw segment spells it (percent-encoded or not), else None."""
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        return None
    return name if name == MARKER_NAME else None


def is_temp_name(name: str) -> bool:
    """Whether a name on disk is one of the server's temporary files (``.~syncd-*.tmp``)."""
    return name.startswith(RESERVED_PREFIX) and name.endswith(_TEMP_SUFFIX)


def _decode_segment(raw: str) -> str:
    if not raw:
        raise BadRequest("empty path segment ('//')")
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        raise BadRequest(f"path segment {raw!r} is not valid UTF-8") from None
    check_name(name)
    return name


def _traversal(text: str) -> bool:
    """Would ``text`` walk out of its directory if '/' or '\\' were taken as separators?"""
    if text in (".", ".."):
        return True
    parts = text.replace("\\", "/").split("/")
    return len(parts) > 1 and (parts[0] == "" or any(p in (".", "..") for p in parts))


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+,=@~ -]{0,254}\Z")
"""Names that pass :func:`check_name` at a glance (every request and every listed file goes
through it): ASCII, at most 255 bytes, no '%', '\\', ':', '/' or NUL, and not starting
with '.' (so neither '.', '..' nor the reserved prefix)."""


def check_name(name: str) -> None:
    """Refuse a decoded file name that must never reach the filesystem (:class:`BadRequest`).

    Ordinary names with '%', '\\' or ':' in them are fine on a POSIX server; what is refused is
    anything that is, or after further percent-decoding becomes, a traversal in any spelling.
    """
    if _PLAIN_NAME.match(name):
        return  # the common case; everything below would accept it
    if name in (".", ".."):
        raise BadRequest(f"path segment {name!r} is not allowed")
    for c in _BAD_CHARS:
        if c in name:
            raise BadRequest(f"path segment {name!r} contains {c!r}")
    if _DRIVE.match(name):
        raise BadRequest(f"path segment {name!r} looks like a drive letter")
    if name.startswith(RESERVED_PREFIX):
        raise BadRequest(f"names starting with {RESERVED_PREFIX!r} are reserved")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeError:
        raise BadRequest(f"path segment {name!r} is not valid UTF-8") from None
    if size > _MAX_NAME_BYTES:
        raise BadRequest(f"path segment is longer than {_MAX_NAME_BYTES} bytes")
    if "\\" in name and _traversal(name):
        raise BadRequest(f"path segment {name!r} is a traversal with backslashes")
    # Whatever decodes it again (a proxy, a careless client, a log viewer) must not see a
    # traversal either: refuse names that become '.', '..' or '../x' when decoded again.
    current = name
    for _ in range(4):
        if "%" not in current:
            break
        decoded = unquote_to_bytes(current).decode("utf-8", "replace")
        if decoded == current:
            break
        if "\x00" in decoded or _traversal(decoded):
            raise BadRequest(f"path segment {name!r} decodes again to a traversal")
        current = decoded


def _addressable(name: str) -> bool:
    """Whether a name found on disk could be named in a request (else it is not listed)."""
    try:
        check_name(name)
    except BadRequest:
        return False
    return True


# --------------------------------------------------------------------------- digests


class DigestCache:
    """sha-256 of stored files keyed by relative path, valid while (size, mtime, ctime, inode)
    match: an edit behind the server's back with the mtime put back still changes the ctime."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[int, int, int, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def get(self, key: str, st: os.stat_result) -> str | None:
        """The cached hex digest of ``key`` if ``st`` still matches it."""
        item = self._items.get(key)  # one dict lookup of an immutable tuple: no lock needed
        if item is None or item[:4] != self._id(st):
            return None
        return item[4]

    def put(self, key: str, st: os.stat_result, hexdigest: str) -> None:
        """Remember ``key``'s digest for this stat."""
        with self._lock:
            self._items[key] = (*self._id(st), hexdigest)

    def restat(self, key: str, st: os.stat_result) -> None:
        """``key`` was renamed by the server itself (its ctime changed, not its bytes)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items[key] = (*self._id(st), item[4])

    def drop(self, key: str) -> None:
        """Forget ``key`` and everything below it."""
        with self._lock:
            self._drop(key)

    def move(self, src: str, dst: str) -> None:
        """Carry the entries of ``src`` (and below) over to ``dst``."""
        prefix = src + "/"
        with self._lock:
            self._drop(dst)
            for k in [k for k in self._items if k == src or k.startswith(prefix)]:
                self._items[dst + k[len(src) :]] = self._items.pop(k)

    def _drop(self, key: str) -> None:
        prefix = key + "/"
        self._items.pop(key, None)
        for k in [k for k in self._items if k.startswith(prefix)]:
            del self._items[k]


def _hash_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- directories


class _Dirs:
    """Directory fds from ROOT down a path: ``fds[i]`` is the directory holding ``parts[i]``."""

    def __init__(self, root: Path, parts: Sequence[str], *, create: bool = False) -> None:
        self.parts = tuple(parts)
        self.fds: list[int] = []
        self.created: list[int] = []
        try:
            try:
                self.fds.append(os.open(root, _O_ROOT))
            except OSError as e:
                raise _os_error(e, "the server root") from e
            for i, name in enumerate(self.parts):
                self.fds.append(self._open_child(i, name, create))
        except BaseException:
            self.close()
            raise

    def _open_child(self, i: int, name: str, create: bool) -> int:
        parent = self.fds[-1]
        shown = "/" + "/".join(self.parts[: i + 1])
        try:
            try:
                return os.open(name, _O_DIR, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                self.created.append(i)
            except FileExistsError:
                pass
            return os.open(name, _O_DIR, dir_fd=parent)
        except FileNotFoundError as e:
            raise NotFound(f"{shown}: no such directory") from e
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _not_a_dir(parent, name, shown) from e
            raise _os_error(e, shown) from e

    @property
    def last(self) -> int:
        """The fd of the deepest directory."""
        return self.fds[-1]

    def prune(self, keep: int = 1) -> None:
        """Remove directories left empty, deepest first, keeping the first ``keep`` segments."""
        for i in range(len(self.parts) - 1, keep - 1, -1):
            try:
                os.rmdir(self.parts[i], dir_fd=self.fds[i])
            except OSError:
                return

    def prune_created(self) -> None:
        """Remove the directories this walk created, if they are still empty."""
        for i in reversed(self.created):
            try:
                os.rmdir(self.parts[i], dir_fd=self.fds[i])
            except OSError:
                return
        self.created.clear()

    def close(self) -> None:
        """Close every fd (idempotent)."""
        while self.fds:
            os.close(self.fds.pop())

    def __enter__(self) -> _Dirs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _not_a_dir(parent: int, name: str, shown: str) -> StoreError:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return Conflict(f"{shown}: not a directory")
    if stat.S_ISLNK(st.st_mode):
        return Forbidden(f"{shown}: is a symlink (never followed)")
    return Conflict(f"{shown}: not a directory")


def _lstat(dir_fd: int, name: str, shown: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _os_error(e, shown) from e


def _remove(dir_fd: int, name: str, st: os.stat_result, shown: str) -> None:
    """Remove a file, or a directory with everything in it, without following symlinks."""
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as e:
        raise _os_error(e, shown) from e


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Stored:
    """What a finished upload holds; ``replaced`` is ``None`` until it is renamed into place."""

    size: int
    digest: bytes
    replaced: bool | None


@dataclass(frozen=True)
class ListEntry:
    """One file of a listing, its path relative to the listed directory."""

    path: str
    size: int
    sha256: str
    mtime_ns: int


@dataclass
class Opened:
    """A file opened for reading: the whole body (``data``) when small, else a :class:`Reader`."""

    size: int
    mtime_ns: int
    sha256: str
    data: bytes | None
    reader: Reader | None


class Reader:
    """A file descriptor read in chunks from worker threads; close it from any thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (blocking)."""
        with self._lock:
            if self._fd < 0:
                raise NotFound("the file was closed")
            return os.pread(self._fd, size, offset)

    def close(self) -> None:
        """Close the fd once no read is running (idempotent, blocking)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# --------------------------------------------------------------------------- uploads


class Upload:
    """One body on its way to a path: a temp file beside the target, hashed while written.

    Every method blocks (run it in a worker thread) and holds the upload's lock, so
    :meth:`discard` called after a cancelled request waits for a write still running.
    """

    def __init__(self, store: Store, rel: RelPath) -> None:
        self._store = store
        self.rel = rel
        self._lock = threading.Lock()
        self._tmp = f"{RESERVED_PREFIX}{secrets.token_hex(16)}{_TEMP_SUFFIX}"
        self._hash = hashlib.sha256()
        self._dirs: _Dirs | None = None
        self._fd = -1
        self._created = False
        self._made: list[int] = []
        self._stat: os.stat_result | None = None
        self._state = "new"  # new, open, finished, done, discarded
        self.size = 0
        self.digest = b""
        self._written_back = 0  # bytes whose writeback has been started

    # Callers hold self._lock in everything below.

    def _open(self) -> None:
        for attempt in range(3):
            dirs = _Dirs(self._store.root, self.rel.parent, create=True)
            try:
                _check_file_target(dirs.last, self.rel)
                self._fd = os.open(self._tmp, _O_TEMP, 0o644, dir_fd=dirs.last)
            except FileNotFoundError as e:
                # A directory on the way was pruned by a concurrent DELETE: walk again.
                dirs.close()
                if attempt == 2:
                    raise NotFound(f"{self.rel}: its directory keeps vanishing") from e
                continue
            except OSError as e:
                dirs.prune_created()
                dirs.close()
                raise _os_error(e, str(self.rel)) from e
            except BaseException:
                dirs.prune_created()
                dirs.close()
                raise
            self._dirs = dirs
            self._made = list(dirs.created)
            self._created = True
            self._state = "open"
            return

    def _parent_fd(self) -> int:
        if self._dirs is None:
            self._dirs = _Dirs(self._store.root, self.rel.parent)
            self._dirs.created = list(self._made)
        return self._dirs.last

    def _write(self, chunks: Sequence[bytes]) -> None:
        if self._state == "new":
            self._open()
        if self._state != "open":
            raise NotFound(f"{self.rel}: the upload was dropped")
        try:
            n = _write_all(self._fd, chunks)
        except OSError as e:
            raise _os_error(e, str(self.rel)) from e
        for c in chunks:
            self._hash.update(c)
        self.size += n
        if self.size - self._written_back >= WRITEBACK:
            _start_writeback(self._fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size
        crash_point("server-mid-body")

    def _finish(self) -> None:
        if self._state == "new":
            self._open()
        if self._state != "open":
            raise NotFound(f"{self.rel}: the upload was dropped")
        try:
            os.fsync(self._fd)
            self._stat = os.fstat(self._fd)
        except OSError as e:
            raise _os_error(e, str(self.rel)) from e
        finally:
            os.close(self._fd)
            self._fd = -1
        self.digest = self._hash.digest()
        self._state = "finished"

    def _commit(self) -> bool:
        if self._state != "finished" or self._stat is None:
            raise NotFound(f"{self.rel}: the upload was dropped")
        try:
            parent = self._parent_fd()
        except NotFound as e:
            raise NotFound(f"{self.rel}: the upload is gone ({e.reason})") from e
        with self._store.rename_lock:  # so that concurrent PUTs tell "new" from "replaced" right
            existed = _check_file_target(parent, self.rel)
            try:
                os.rename(self._tmp, self.rel.name, src_dir_fd=parent, dst_dir_fd=parent)
            except FileNotFoundError as e:
                raise NotFound(f"{self.rel}: the upload is gone") from e
            except OSError as e:
                raise _os_error(e, str(self.rel)) from e
            finally:
                self._store.changed()
        self._state = "done"
        try:  # the rename changed the file's ctime: remember the stat it has now
            st = os.stat(self.rel.name, dir_fd=parent, follow_symlinks=False)
            self._store.digests.put(self.rel.text, st, self.digest.hex())
        except OSError:
            pass
        try:
            os.fsync(parent)
        except OSError as e:
            raise _os_error(e, str(self.rel)) from e
        finally:
            self._close_dirs()
        return existed

    def _close_dirs(self) -> None:
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None

    # Public, locked.

    def write(self, chunks: Sequence[bytes]) -> None:
        """Append ``chunks`` to the temp file (created, with its parents, on the first call)."""
        with self._lock:
            self._write(chunks)

    def receive(
        self, sock: socket.socket, remaining: int, *, timeout: float, stop: threading.Event
    ) -> None:
        """Receive the next ``remaining`` bytes of the body straight from ``sock`` into the
        temp file (blocking: run it in a worker thread; the event loop must not be reading
        ``sock``). See :func:`_receive_from`."""
        with self._lock:
            if self._state == "new":
                self._open()
            if self._state != "open":
                raise NotFound(f"{self.rel}: the upload was dropped")
            _receive_from(self, sock, remaining, timeout, stop)

    def complete(
        self,
        rest: Sequence[bytes],
        *,
        length: int | None,
        expected: Sequence[bytes],
        commit: bool,
    ) -> Stored:
        """Write ``rest``, fsync, check length and digests, then rename into place if ``commit``.

        Raises :class:`BadRequest` on a length or digest mismatch; discards the temp on any
        failure. Without ``commit`` the temp stays for :meth:`commit` (dir fds are released).
        """
        with self._lock:
            try:
                if rest:
                    self._write(rest)
                self._finish()
                if length is not None and self.size != length:
                    raise BadRequest(f"body has {self.size} bytes but Content-Length says {length}")
                for want in expected:
                    if want != self.digest:
                        raise BadRequest(
                            f"digest mismatch: received {digest_header(self.digest)}"
                            f" but the request says {digest_header(want)}"
                        )
                replaced = self._commit() if commit else None
                if not commit:
                    self._close_dirs()
                return Stored(self.size, self.digest, replaced)
            except BaseException:
                self._discard()
                raise

    def commit(self) -> bool:
        """Rename a finished upload into place; True if it replaced a file."""
        with self._lock:
            try:
                return self._commit()
            except BaseException:
                self._discard()
                raise

    def discard(self) -> None:
        """Remove the temp file and any directory this upload created (idempotent)."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._state in ("done", "discarded"):
            self._close_dirs()
            return
        self._state = "discarded"
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._created:
            self._close_dirs()
            return
        try:
            parent = self._parent_fd()
        except StoreError:
            return  # the directory is gone, and the temp with it
        try:
            os.unlink(self._tmp, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove temporary %s beside %s: %s", self._tmp, self.rel, e)
        assert self._dirs is not None
        self._dirs.prune_created()
        self._close_dirs()


class BodyTimeout(StoreError):
    """408: the client stopped sending the body."""

    status = 408


RECV_BUF = 1 << 20  # bytes per receive buffer; RECV_BUFS of them per upload
RECV_BUFS = 4
_POLL_SLICE = 0.25  # seconds between checks of ``stop`` while the client is silent


def _receive_from(
    up: Upload, sock: socket.socket, remaining: int, timeout: float, stop: threading.Event
) -> None:
    """The body's bytes from a (non-blocking) socket to ``up``'s temp file, without the event
    loop: this thread receives into a few reused 1 MiB buffers and writes them; a second thread
    hashes each buffer once written. Per GiB that is one copy in (recv), one out (write) and
    the hash, in two threads that release the GIL for all three; through aiohttp's stream the
    same body costs ~2.5 s of CPU per GiB on loopback (a chunk per event, a thread hop per MiB).

    Raises BadRequest if the client closes early, BodyTimeout after ``timeout`` s of silence,
    StoreError on a write failure; returns early (the caller discards) once ``stop`` is set.
    """
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    for _ in range(RECV_BUFS):
        free.put(bytearray(RECV_BUF))
    failed: list[BaseException] = []

    def hasher() -> None:
        try:
            while (item := full.get()) is not None:
                buf, n = item
                up._hash.update(memoryview(buf)[:n])
                free.put(buf)
        except BaseException as e:  # pragma: no cover - hashlib does not fail
            failed.append(e)
            free.put(bytearray(RECV_BUF))

    poller = select.poll()
    poller.register(sock, select.POLLIN)
    thread = threading.Thread(target=hasher, name="syncd-hash", daemon=True)
    thread.start()
    try:
        while remaining > 0 and not stop.is_set():
            buf = free.get()
            if failed:
                raise failed[0]
            view = memoryview(buf)
            want = min(len(buf), remaining)
            got = 0
            silent = 0.0
            while got < want and not stop.is_set():
                try:
                    n = sock.recv_into(view[got:want])
                except BlockingIOError:
                    if got:
                        break  # write what is here; more arrives meanwhile
                    if not poller.poll(_POLL_SLICE * 1000):
                        silent += _POLL_SLICE
                        if silent >= timeout:
                            raise BodyTimeout(f"no body data for {timeout:.0f} s") from None
                    continue
                except InterruptedError:
                    continue
                except OSError as e:
                    raise BadRequest(f"the body ended early ({e.strerror})") from None
                if n == 0:
                    raise BadRequest("the body ended early (client disconnected)")
                got += n
            if not got:
                free.put(buf)
                break
            try:
                _write_all(up._fd, [view[:got]])
            except OSError as e:
                raise _os_error(e, str(up.rel)) from e
            full.put((buf, got))
            remaining -= got
            up.size += got
            if up.size - up._written_back >= WRITEBACK:
                _start_writeback(up._fd, up._written_back, up.size - up._written_back)
                up._written_back = up.size
            crash_point("server-mid-body")
    finally:
        full.put(None)
        thread.join()
    if failed:
        raise failed[0]


def _write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Write every chunk, in order, with as few system calls as possible; returns the bytes."""
    views = [memoryview(c) for c in chunks if c]
    total = sum(len(v) for v in views)
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]
    return total


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the file to disk now, without waiting for it (a hint).

    Left alone, the kernel holds a large upload in dirty pages, throttles the writer once too
    many pile up, and leaves most of the writing to the final fsync. POSIX_FADV_DONTNEED makes
    Linux start the writeback of the range at once (and drop the pages once clean): the disk
    works while the body arrives and the fsync before the rename has little left to do.
    Measured on a 1 GiB body: write + hash + fsync 2.6-3.7 s without, 1.4-1.5 s with.
    The fsync is still what makes the file durable; this changes only when the work happens.
    """
    if _FADV_DONTNEED is None:
        return
    try:
        os.posix_fadvise(fd, offset, length, _FADV_DONTNEED)
    except OSError:
        pass


def _check_file_target(dir_fd: int, rel: RelPath) -> bool:
    """Refuse a target that is a directory (409) or a symlink (403); True if a file is there."""
    st = _lstat(dir_fd, rel.name, str(rel))
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise Conflict(f"{rel}: is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise Forbidden(f"{rel}: is a symlink (never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise Forbidden(f"{rel}: not a regular file")
    return True


def digest_header(digest: bytes) -> str:
    """RFC 9530 value for a sha-256 digest: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


# --------------------------------------------------------------------------- the store


class Store:
    """The files under ROOT. Blocking methods are meant for worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests = DigestCache()
        self.rename_lock = threading.Lock()
        """Held from "does the target exist" to the rename that replaces it."""
        self.boot = secrets.token_hex(16)
        """Made at start: every state token of this server's life includes it."""
        self._changes = 0
        self._changes_lock = threading.Lock()

    def changed(self) -> None:
        """Count a mutation (called after it, whether it succeeded or not)."""
        with self._changes_lock:
            self._changes += 1

    def state(self, rel: RelPath) -> str:
        """An opaque token that changes whenever anything under directory ``rel`` may have.

        It hashes the start-up id, the count of mutations so far (read first, so that one
        finishing during the walk changes the next token) and the (path, mtime, inode) of every
        directory and the (name, size, mtime, ctime, inode) of every file under ``rel``, so
        that files added, removed or edited behind the server's back change it too (an edit
        with its mtime put back still changes the ctime). Temporary files are left out.
        ``"absent"`` when ``rel`` does not exist. Raises :class:`Conflict` if it is a file and
        :class:`Forbidden` for a symlink, like a listing.
        """
        changes = self._changes
        try:
            dirs = _Dirs(self.root, rel.parts)
        except NotFound:
            return "absent"
        h = hashlib.sha256(f"{self.boot}:{changes}".encode())
        with dirs:
            walk = os.fwalk(".", dir_fd=dirs.last, follow_symlinks=False)
            for dirpath, dirnames, files, dir_fd in walk:
                dirnames.sort()
                try:
                    st = os.fstat(dir_fd)
                except OSError:
                    continue
                lines = [f"{dirpath}\0{st.st_mtime_ns}\0{st.st_ino}"]
                for name in sorted(files):
                    if is_temp_name(name):
                        continue
                    try:
                        f = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except OSError:
                        continue  # gone meanwhile: the directory's mtime says so
                    lines.append(
                        f"{name}\0{f.st_size}\0{f.st_mtime_ns}\0{f.st_ctime_ns}\0{f.st_ino}"
                    )
                h.update("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
        return h.hexdigest()[:32]

    def upload(self, rel: RelPath) -> Upload:
        """A new upload to ``rel`` (nothing touches the disk until its first write)."""
        if not rel.parts or rel.trailing_slash:
            raise BadRequest(f"{rel}: an upload needs a file path, not a directory")
        return Upload(self, rel)

    def open_file(self, rel: RelPath, *, small: int, keep_open: bool) -> Opened:
        """Open a file for GET/HEAD with its digest (hashed now if the cache is stale).

        Files up to ``small`` bytes come back as ``data``; larger ones as a :class:`Reader`
        when ``keep_open`` (the caller closes it), else with neither.
        """
        if not rel.parts:
            raise Conflict("/: is a directory (list it with ?list)")
        with _Dirs(self.root, rel.parent) as dirs:
            try:
                fd = os.open(rel.name, _O_READ, dir_fd=dirs.last)
            except OSError as e:
                raise _os_error(e, str(rel)) from e
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise Conflict(f"{rel}: is a directory (list it with ?list)")
            if not stat.S_ISREG(st.st_mode):
                raise Forbidden(f"{rel}: not a regular file")
            hexdigest = self.digests.get(rel.text, st)
            if st.st_size <= small:
                data = _read_all(fd, st.st_size)
                if hexdigest is None or len(data) != st.st_size:
                    hexdigest = hashlib.sha256(data).hexdigest()
                    self.digests.put(rel.text, st, hexdigest)
                os.close(fd)
                return Opened(len(data), st.st_mtime_ns, hexdigest, data, None)
            if hexdigest is None:
                hexdigest = _hash_fd(fd)
                self.digests.put(rel.text, st, hexdigest)
            if keep_open:
                return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, Reader(fd))
            os.close(fd)
            return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, None)
        except OSError as e:
            os.close(fd)
            raise _os_error(e, str(rel)) from e
        except BaseException:
            os.close(fd)
            raise

    def delete(self, rel: RelPath) -> bool:
        """Remove a file or a whole directory, then prune empty parents; True for a directory."""
        try:
            return self._delete(rel)
        finally:
            self.changed()

    def _delete(self, rel: RelPath) -> bool:
        if not rel.parts:
            raise Forbidden("/: refusing to delete the server root")
        with _Dirs(self.root, rel.parent) as dirs:
            st = _lstat(dirs.last, rel.name, str(rel))
            if st is None:
                raise NotFound(f"{rel}: not found")
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{rel}: is a symlink (never followed)")
            _remove(dirs.last, rel.name, st, str(rel))
            self.digests.drop(rel.text)
            _fsync_quiet(dirs.last)
            dirs.prune()
        return stat.S_ISDIR(st.st_mode)

    def move(self, src: RelPath, dst: RelPath, *, overwrite: bool) -> bool:
        """Rename a file or directory (creating the destination's parents); True if replaced."""
        try:
            return self._move(src, dst, overwrite=overwrite)
        finally:
            self.changed()

    def _move(self, src: RelPath, dst: RelPath, *, overwrite: bool) -> bool:
        if not src.parts or not dst.parts:
            raise Forbidden("cannot move the server root")
        if src.parts == dst.parts:
            raise Forbidden(f"{src}: source and destination are the same")
        if dst.parts[: len(src.parts)] == src.parts:
            raise Conflict(f"{src}: cannot move into itself")
        if src.parts[: len(dst.parts)] == dst.parts:
            raise Conflict(f"{dst}: cannot move onto a parent of the source")
        with _Dirs(self.root, src.parent) as sdirs:
            st = _lstat(sdirs.last, src.name, str(src))
            if st is None:
                raise NotFound(f"{src}: not found")
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{src}: is a symlink (never followed)")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise Forbidden(f"{src}: not a regular file or directory")
            with _Dirs(self.root, dst.parent, create=True) as ddirs:
                try:
                    with self.rename_lock:
                        old = _lstat(ddirs.last, dst.name, str(dst))
                        if old is not None:
                            if stat.S_ISLNK(old.st_mode):
                                raise Forbidden(f"{dst}: is a symlink (never followed)")
                            if not overwrite:
                                raise PreconditionFailed(f"{dst}: exists and Overwrite is F")
                            files = stat.S_ISREG(old.st_mode) and stat.S_ISREG(st.st_mode)
                            if not files:  # file over file is one atomic rename
                                _remove(ddirs.last, dst.name, old, str(dst))
                        try:
                            os.rename(
                                src.name, dst.name, src_dir_fd=sdirs.last, dst_dir_fd=ddirs.last
                            )
                        except OSError as e:
                            raise _os_error(e, f"{src} -> {dst}") from e
                except BaseException:
                    ddirs.prune_created()
                    raise
                self.digests.move(src.text, dst.text)
                if stat.S_ISREG(st.st_mode):  # (a directory's files keep their ctime)
                    moved = _lstat(ddirs.last, dst.name, str(dst))
                    if moved is not None:
                        self.digests.restat(dst.text, moved)
                _fsync_quiet(ddirs.last)
            _fsync_quiet(sdirs.last)
            sdirs.prune()
        return old is not None

    def mkcol(self, rel: RelPath) -> None:
        """Create one directory; its parent must exist (409), it must not (405)."""
        try:
            self._mkcol(rel)
        finally:
            self.changed()

    def _mkcol(self, rel: RelPath) -> None:
        if not rel.parts:
            raise MethodNotAllowed("/: exists")
        try:
            dirs = _Dirs(self.root, rel.parent)
        except NotFound as e:
            raise Conflict(f"{rel}: the parent directory does not exist") from e
        with dirs:
            try:
                os.mkdir(rel.name, 0o755, dir_fd=dirs.last)
            except FileExistsError as e:
                raise MethodNotAllowed(f"{rel}: exists") from e
            except OSError as e:
                raise _os_error(e, str(rel)) from e
            _fsync_quiet(dirs.last)

    async def iter_listing(self, rel: RelPath) -> AsyncGenerator[list[ListEntry], None]:
        """Every file under ``rel`` (relative to it), one batch per directory, depth first.

        Raises before the first batch if ``rel`` is a file (409) or a symlink (403); an absent
        directory yields nothing. Each directory is reopened from ROOT with ``O_NOFOLLOW`` in a
        worker thread, so no fd outlives a thread call.
        """
        stack: list[tuple[str, ...]] = [()]
        while stack:
            sub = stack.pop()
            found = await asyncio.to_thread(self._scan, rel, sub)
            if found is None:
                continue
            entries, subdirs = found
            stack.extend((*sub, d) for d in reversed(subdirs))
            if entries:
                yield entries

    def _scan(self, rel: RelPath, sub: tuple[str, ...]) -> tuple[list[ListEntry], list[str]] | None:
        parts = rel.parts + sub
        try:
            dirs = _Dirs(self.root, parts)
        except NotFound:
            return None
        except StoreError:
            if not sub:
                raise
            return None  # swapped for a symlink or a file since its parent was read
        with dirs:
            try:
                with os.scandir(dirs.last) as it:
                    found = sorted(it, key=lambda e: e.name)
            except OSError as e:
                raise _os_error(e, "/" + "/".join(parts)) from e
            entries: list[ListEntry] = []
            subdirs: list[str] = []
            key_prefix = "".join(p + "/" for p in parts)
            path_prefix = "".join(p + "/" for p in sub)
            for entry in found:
                name = entry.name
                if name.startswith(RESERVED_PREFIX) or not _addressable(name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue  # symlinks, fifos, sockets, devices
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = key_prefix + name
                hexdigest = self.digests.get(key, st)
                if hexdigest is None:
                    hashed = self._hash_at(dirs.last, name, key)
                    if hashed is None:
                        continue
                    st, hexdigest = hashed
                entries.append(ListEntry(path_prefix + name, st.st_size, hexdigest, st.st_mtime_ns))
        return entries, subdirs

    def _hash_at(self, dir_fd: int, name: str, key: str) -> tuple[os.stat_result, str] | None:
        try:
            fd = os.open(name, _O_READ, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            hexdigest = _hash_fd(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        self.digests.put(key, st, hexdigest)
        return st, hexdigest


def _read_all(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _fsync_quiet(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        log.warning("fsync of a directory failed: %s", e)


def remove_leftover_temps(root: Path) -> int:
    """Remove every temporary file (``.~syncd-*.tmp``) under ``root``; the lock and mirror
    markers stay. Symlinks are not followed. Call it only while holding the root's lock: the
    temps of a server still running on ``root`` would go too."""
    removed = 0
    for dirpath, _dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        if LOCK_NAME in filenames and os.path.normpath(dirpath) != os.path.normpath(root):
            holder = _other_holder(dir_fd)  # a server on a directory inside this root
            if holder is not None:
                raise RootInUse(Path(dirpath), *holder, mine=f"{root} holds")
        for name in filenames:
            if is_temp_name(name):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


# --------------------------------------------------------------------------- the root's lock


class RootInUse(InUse):
    """Another server holds ROOT's lock."""

    def __init__(self, root: Path, pid: int | None, url: str, *, mine: str = "") -> None:
        """``root``: the directory a server runs on; ``mine``: how this server's ROOT stands
        to it, e.g. "/srv/mirror/docs is inside" ("": it is the same)."""
        self.root = root
        self.pid = pid
        self.url = url
        who = f"PID {pid}" if pid is not None else "another process"
        what = f"{mine} {root}, which" if mine else f"{root}"
        super().__init__(f"{what} is already served by {who} ({url or 'still starting'})")


class RootLock:
    """``ROOT/.~syncd-serve.lock``, held with an exclusive ``flock`` while a server runs.

    The file holds the server's PID on its first line and, once it listens, its URL on the
    second. It is never removed (removing it would let two servers lock two files of one
    name); the lock dies with the process, however it ends.
    """

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self._fd = fd
        self._write("")

    @classmethod
    def acquire(cls, root: Path) -> RootLock:
        """Take the lock without waiting; :class:`RootInUse` names the holder if another
        server has it, :class:`SyncdError` if the lock file cannot be used."""
        import fcntl

        try:
            root_fd = os.open(root, _O_ROOT)
        except OSError as e:
            raise SyncdError(f"cannot open {root}: {e.strerror or e}") from e
        try:
            fd = os.open(
                LOCK_NAME, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, 0o644, dir_fd=root_fd
            )
        except OSError as e:
            raise SyncdError(
                f"cannot open the lock file {root / LOCK_NAME}: {e.strerror or e}"
            ) from e
        finally:
            os.close(root_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SyncdError(f"{root / LOCK_NAME} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, url = _read_holder(fd)
                raise RootInUse(root, pid, url) from None
            except OSError as e:
                raise SyncdError(f"cannot lock {root / LOCK_NAME}: {e.strerror or e}") from e
            for parent in root.resolve().parents:  # a server on a directory that holds ROOT
                try:
                    parent_fd = os.open(parent, _O_ROOT)
                except OSError:
                    continue
                try:
                    holder = _other_holder(parent_fd)
                finally:
                    os.close(parent_fd)
                if holder is not None:
                    raise RootInUse(parent, *holder, mine=f"{root} is inside")
            return cls(root, fd)
        except BaseException:
            os.close(fd)
            raise

    def _write(self, url: str) -> None:
        text = f"{os.getpid()}\n" + (f"{url}\n" if url else "")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode("utf-8"), 0)

    def set_url(self, url: str) -> None:
        """Record the URL the server listens on (for a second server's message)."""
        self._write(url)

    def release(self) -> None:
        """Empty the file and let the lock go (idempotent)."""
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1


def _other_holder(dir_fd: int) -> tuple[int | None, str] | None:
    """(PID, URL) of a server whose lock is in the directory ``dir_fd``; None if none runs."""
    import fcntl

    try:
        fd = os.open(LOCK_NAME, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> tuple[int | None, str]:
    """(PID, URL) from a lock file held by another server (None, "" where not written yet)."""
    try:
        lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        return None, ""
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    url = lines[1].strip() if len(lines) > 1 else ""
    return pid, url
