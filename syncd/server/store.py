"""All filesystem work of the server: safe paths, fd-relative access, atomic writes, digests.

Every directory is opened relative to its parent's file descriptor with ``O_NOFOLLOW``, so a
symlink inside ROOT is never followed, whether it was there before a request or swapped in during
it (:mod:`.tree`, which also keeps trees of any depth within a few descriptors). Nothing here
touches the event loop: the blocking functions are meant to run in a worker thread
(``asyncio.to_thread``), except :meth:`Store.iter_listing`, which does that itself. Bodies on
their way in are :mod:`.upload`'s; names and request paths :mod:`.paths`'.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path

from syncd.digests import digest_header
from syncd.errors import InUse, SyncdError
from syncd.server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    RequestTimeout,
    StoreError,
    Unavailable,
    UnsupportedMediaType,
    os_error,
)
from syncd.server.paths import (
    LOCK_NAME,
    MARKER_NAME,
    RelPath,
    addressable,
    check_name,
    is_temp_name,
    parse_path,
    split_target,
)
from syncd.server.tree import O_ROOT, Dirs, check_stop, remove_tree, walk
from syncd.server.upload import (
    CHUNK,
    Live,
    Stored,
    Upload,
    lstat_at,
)
from syncd.types import RESERVED_PREFIX

__all__ = [
    "CHUNK",
    "LOCK_NAME",
    "MARKER_NAME",
    "RESERVED_PREFIX",
    "SUPPORTED",
    "BadRequest",
    "Conflict",
    "DigestCache",
    "Forbidden",
    "InsufficientStorage",
    "ListEntry",
    "MethodNotAllowed",
    "NotFound",
    "Opened",
    "PreconditionFailed",
    "Reader",
    "RelPath",
    "RequestTimeout",
    "RootInUse",
    "RootLock",
    "Store",
    "StoreError",
    "Stored",
    "Unavailable",
    "UnsupportedMediaType",
    "Upload",
    "check_name",
    "digest_header",
    "is_temp_name",
    "parse_path",
    "remove_leftover_temps",
    "split_target",
]

log = logging.getLogger("syncd.server.store")

SUPPORTED = (
    hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
)
"""Whether this OS can serve safely (Windows cannot: no openat, no O_NOFOLLOW)."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_READ = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC

LIST_BATCH = 1000
"""A listing hands this many entries at a time from its worker thread to the event loop..."""
LIST_DIRS = 256
"""...or what this many directories hold, whichever comes first."""


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


def _hash_fd(fd: int, stop: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
        if offset % (64 * CHUNK) == 0:
            check_stop(stop)
    return h.hexdigest()


def _remove(dir_fd: int, name: str, st: os.stat_result, shown: str, stop: threading.Event) -> None:
    """Remove a file, or a directory with everything in it, without following symlinks."""
    try:
        if stat.S_ISDIR(st.st_mode):
            remove_tree(dir_fd, name, stop=stop)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as e:
        raise os_error(e, shown) from e


# --------------------------------------------------------------------------- results


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
        self.live = Live()
        """The uploads whose temp files exist (removed by :meth:`stop` if still there)."""
        self.stopping = threading.Event()
        """Set when the server stops: long work (receiving, hashing, walking) ends soon after."""
        self._changes = 0
        self._changes_lock = threading.Lock()

    def changed(self) -> None:
        """Count a mutation (called after it, whether it succeeded or not)."""
        with self._changes_lock:
            self._changes += 1

    def check_running(self) -> None:
        """Raise :class:`Unavailable` (503) once the server is stopping."""
        check_stop(self.stopping)

    def stop(self) -> int:
        """Stop long work and remove the temp file of every upload still in flight (blocking:
        waits for each one's running write); returns how many were removed."""
        self.stopping.set()
        return self.live.discard_all()

    def state(self, rel: RelPath) -> str:
        """An opaque token that changes whenever anything under directory ``rel`` may have.

        It hashes the start-up id, the count of mutations so far (read first, so that one
        finishing during the walk changes the next token) and the (path, mtime, inode) of every
        directory and the (name, size, mtime, ctime, inode) of every file under ``rel``, so
        that files added, removed or edited behind the server's back change it too (an edit
        with its mtime put back still changes the ctime). Temporary files are left out.
        ``"absent"`` when ``rel`` does not exist. Raises :class:`Conflict` if it is a file and
        :class:`Forbidden` for a symlink, like a listing. A tree moved about while it is walked
        gives a fresh random token: it has changed, whatever it holds now.
        """
        changes = self._changes
        try:
            dirs = Dirs(self.root, rel.parts)
        except NotFound:
            return "absent"
        h = hashlib.sha256(f"{self.boot}:{changes}".encode())
        with dirs:
            try:
                for sub, dir_fd, entries in walk(dirs.last, stop=self.stopping):
                    try:
                        st = os.fstat(dir_fd)
                    except OSError:
                        continue
                    dirpath = "/".join(sub)
                    lines = [f"{dirpath}\0{st.st_mtime_ns}\0{st.st_ino}"]
                    for entry in entries:
                        name = entry.name
                        if is_temp_name(name):
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                continue
                            f = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # gone meanwhile: the directory's mtime says so
                        lines.append(
                            f"{name}\0{f.st_size}\0{f.st_mtime_ns}\0{f.st_ctime_ns}\0{f.st_ino}"
                        )
                    h.update("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
            except Conflict:
                return secrets.token_hex(16)
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
        with Dirs(self.root, rel.parent) as dirs:
            try:
                fd = os.open(rel.name, _O_READ, dir_fd=dirs.last)
            except OSError as e:
                raise os_error(e, str(rel)) from e
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
                hexdigest = _hash_fd(fd, self.stopping)
                self.digests.put(rel.text, st, hexdigest)
            if keep_open:
                return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, Reader(fd))
            os.close(fd)
            return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, None)
        except OSError as e:
            os.close(fd)
            raise os_error(e, str(rel)) from e
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
        with Dirs(self.root, rel.parent) as dirs:
            st = lstat_at(dirs.last, rel.name, str(rel))
            if st is None:
                raise NotFound(f"{rel}: not found")
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{rel}: is a symlink (never followed)")
            try:
                _remove(dirs.last, rel.name, st, str(rel), self.stopping)
            finally:
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
        with Dirs(self.root, src.parent) as sdirs:
            st = lstat_at(sdirs.last, src.name, str(src))
            if st is None:
                raise NotFound(f"{src}: not found")
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{src}: is a symlink (never followed)")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise Forbidden(f"{src}: not a regular file or directory")
            with Dirs(self.root, dst.parent, create=True) as ddirs:
                try:
                    with self.rename_lock:
                        old = lstat_at(ddirs.last, dst.name, str(dst))
                        if old is not None:
                            if stat.S_ISLNK(old.st_mode):
                                raise Forbidden(f"{dst}: is a symlink (never followed)")
                            if not overwrite:
                                raise PreconditionFailed(f"{dst}: exists and Overwrite is F")
                            files = stat.S_ISREG(old.st_mode) and stat.S_ISREG(st.st_mode)
                            if not files:  # file over file is one atomic rename
                                _remove(ddirs.last, dst.name, old, str(dst), self.stopping)
                        try:
                            os.rename(
                                src.name, dst.name, src_dir_fd=sdirs.last, dst_dir_fd=ddirs.last
                            )
                        except OSError as e:
                            raise os_error(e, f"{src} -> {dst}") from e
                except BaseException:
                    ddirs.prune_created()
                    raise
                self.digests.move(src.text, dst.text)
                if stat.S_ISREG(st.st_mode):  # (a directory's files keep their ctime)
                    moved = lstat_at(ddirs.last, dst.name, str(dst))
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
            dirs = Dirs(self.root, rel.parent)
        except NotFound as e:
            raise Conflict(f"{rel}: the parent directory does not exist") from e
        with dirs:
            try:
                os.mkdir(rel.name, 0o755, dir_fd=dirs.last)
            except FileExistsError as e:
                raise MethodNotAllowed(f"{rel}: exists") from e
            except OSError as e:
                raise os_error(e, str(rel)) from e
            _fsync_quiet(dirs.last)

    async def iter_listing(self, rel: RelPath) -> AsyncGenerator[list[ListEntry], None]:
        """Every file under ``rel`` (relative to it), in batches, depth first.

        Raises before the first batch if ``rel`` is a file (409) or a symlink (403); an absent
        directory yields nothing. The walk (:func:`.tree.walk`) runs in worker threads, a batch
        per call; its descriptors are closed when the listing ends, however it ends.
        """
        lister = _Lister(self, rel)
        try:
            if not await asyncio.to_thread(lister.open):
                return
            while (batch := await asyncio.to_thread(lister.next_batch)) is not None:
                if batch:
                    yield batch
        finally:
            lister.close()

    def hash_at(self, dir_fd: int, name: str, key: str) -> tuple[os.stat_result, str] | None:
        """Stat and hash the regular file ``name`` in ``dir_fd``; None if it is not one."""
        try:
            fd = os.open(name, _O_READ, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            hexdigest = _hash_fd(fd, self.stopping)
        except OSError:
            return None
        finally:
            os.close(fd)
        self.digests.put(key, st, hexdigest)
        return st, hexdigest


def _listed(name: str) -> bool:
    return not name.startswith(RESERVED_PREFIX) and addressable(name)


class _Lister:
    """The walk behind a listing, resumed batch by batch from worker threads.

    :meth:`close` may be called from the event loop while a batch runs in a thread: the
    descriptors are then closed by that thread when its batch ends, never under its feet.
    """

    def __init__(self, store: Store, rel: RelPath) -> None:
        self._store = store
        self._rel = rel
        self._dirs: Dirs | None = None
        self._walk: Iterator[tuple[tuple[str, ...], int, list[os.DirEntry[str]]]] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def open(self) -> bool:
        """Open the listed directory (False if absent; StoreError if not a directory)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._dirs = Dirs(self._store.root, self._rel.parts)
            except NotFound:
                return False
            self._walk = walk(self._dirs.last, descend=_listed, stop=self._store.stopping)
        self._close_if_asked()
        return True

    def next_batch(self) -> list[ListEntry] | None:
        """The files of the next few directories; None at the end."""
        with self._lock:
            if self._closed or self._walk is None:
                return None
            batch = self._batch(self._walk)
        self._close_if_asked()
        return batch

    def _batch(
        self, it: Iterator[tuple[tuple[str, ...], int, list[os.DirEntry[str]]]]
    ) -> list[ListEntry] | None:
        store = self._store
        out: list[ListEntry] = []
        key_base = "".join(p + "/" for p in self._rel.parts)
        for _ in range(LIST_DIRS):
            try:
                sub, dir_fd, entries = next(it)
            except StopIteration:
                return out or None
            path_prefix = "".join(p + "/" for p in sub)
            key_prefix = key_base + path_prefix
            for entry in entries:
                name = entry.name
                if not _listed(name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue  # directories, symlinks, fifos, sockets, devices
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = key_prefix + name
                hexdigest = store.digests.get(key, st)
                if hexdigest is None:
                    hashed = store.hash_at(dir_fd, name, key)
                    if hashed is None:
                        continue
                    st, hexdigest = hashed
                out.append(ListEntry(path_prefix + name, st.st_size, hexdigest, st.st_mtime_ns))
            if len(out) >= LIST_BATCH:
                break
        return out

    def close(self) -> None:
        """End the walk and close its descriptors, now or when the running batch ends."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def _close_if_asked(self) -> None:
        if self._closed:
            self.close()

    def _close(self) -> None:
        walk_it, self._walk = self._walk, None
        if walk_it is not None:
            close = getattr(walk_it, "close", None)
            if close is not None:
                close()
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None


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
    markers stay. Symlinks are not followed; a tree of any depth is walked. Call it only while
    holding the root's lock: the temps of a server still running on ``root`` would go too."""
    removed = 0
    try:
        root_fd = os.open(root, O_ROOT)
    except OSError as e:
        raise SyncdError(f"cannot open {root}: {e.strerror or e}") from e
    try:
        for sub, dir_fd, entries in walk(root_fd):
            names = {e.name for e in entries}
            if sub and LOCK_NAME in names:
                holder = _other_holder(dir_fd)  # a server on a directory inside this root
                if holder is not None:
                    raise RootInUse(root.joinpath(*sub), *holder, mine=f"{root} holds")
            for entry in entries:
                if not is_temp_name(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=dir_fd)
                    removed += 1
                except OSError:
                    pass
    except Conflict as e:
        raise SyncdError(f"{root}: {e.reason} (while removing leftover temporary files)") from e
    finally:
        os.close(root_fd)
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
            root_fd = os.open(root, O_ROOT)
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
                    parent_fd = os.open(parent, O_ROOT)
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
