"""The files under ROOT, as requests change and read them: fd-relative access, the state
token, reads with their digest, deletes, moves, directories.

Every directory is opened relative to its parent's file descriptor with ``O_NOFOLLOW``, so a
symlink inside ROOT is never followed, whether it was there before a request or swapped in during
it (:mod:`.tree`, which also keeps trees of any depth within a few descriptors). Nothing here
touches the event loop: the methods block and are meant for a worker thread
(``asyncio.to_thread``). Bodies on their way in are :mod:`.uploads`'; listings
:mod:`.listing`'s; names and request paths :mod:`.paths`'.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from syncd.server.errors import (
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    StoreError,
    check_stop,
    os_error,
)
from syncd.server.fdio import O_READ, fsync_quiet, lstat_at, read_all
from syncd.server.hashes import DigestCache, hash_fd
from syncd.server.paths import MARKER_NAME, RelPath, is_temp_name
from syncd.server.tree import Dirs, remove_tree, walk
from syncd.server.versions import Keeper, Retention
from syncd.versioning import VERSIONS_DIR, Why

log = logging.getLogger("syncd.server.store")

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class Opened:
    """A file opened for reading: the whole body (``data``) when small, else a :class:`Reader`."""

    size: int
    mtime_ns: int
    sha256: str
    data: bytes | None
    reader: Reader | None
    executable: bool = False
    """The owner's executable bit (``X-Syncd-Executable``)."""


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

    def fileno(self) -> int:
        """The fd (for a whole-file read in one call: chunking maps it)."""
        if self._fd < 0:
            raise NotFound("the file was closed")
        return self._fd

    def close(self) -> None:
        """Close the fd once no read is running (idempotent, blocking)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class InFlight(Protocol):
    """What :class:`Live` holds: an upload whose temp file exists."""

    def discard(self) -> None:
        """Remove the temp file (blocking; waits for a write still running)."""


class Live:
    """The uploads whose temp files exist, for a stopping server to remove (thread-safe)."""

    def __init__(self) -> None:
        self._items: set[InFlight] = set()
        self._lock = threading.Lock()

    def add(self, up: InFlight) -> None:
        with self._lock:
            self._items.add(up)

    def discard(self, up: InFlight) -> None:
        with self._lock:
            self._items.discard(up)

    def __len__(self) -> int:
        return len(self._items)

    def discard_all(self) -> int:
        """Discard every upload still registered (each waits for its running write, which
        returns quickly once the server is stopping); returns how many there were."""
        with self._lock:
            items = list(self._items)
        for up in items:
            up.discard()
        return len(items)


def _mutation(
    method: Callable[Concatenate[Store, _P], _R],
) -> Callable[Concatenate[Store, _P], _R]:
    """A :class:`Store` method that changes the tree: counted (:meth:`Store.changed`, for the
    paths it was given) once it has run, whether it succeeded or not, so that the next state
    token of what it touched differs."""

    @functools.wraps(method)
    def counted(self: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.changed(*(a for a in args if isinstance(a, RelPath)))

    return counted


class Store:
    """The files under ROOT. Blocking methods are meant for worker threads."""

    def __init__(self, root: Path, retention: Retention | None = None) -> None:
        self.root = root
        self.digests = DigestCache()
        self.keeper = Keeper(root, retention or Retention(), self.digests)
        """Keeps what requests replace or delete in ``ROOT/.~syncd-versions``."""
        self.rename_lock = threading.Lock()
        self.dir_epoch = 0
        """Bumped before a request moves or removes a directory: an upload whose epoch is
        still this one knows its directory is where it was (no walk from ROOT to check)."""
        self.umask = _read_umask()
        """The process's umask, read once (at start, before any worker thread)."""
        """Held from "does the target exist" to the rename that replaces it."""
        self.boot = secrets.token_hex(16)
        """Made at start: every state token of this server's life includes it."""
        self.live = Live()
        """The uploads whose temp files exist (removed by :meth:`stop` if still there)."""
        self.stopping = threading.Event()
        """Set when the server stops: long work (receiving, hashing, walking) ends soon after."""
        self._changes = 0  # every mutation: the token of ROOT itself
        self._changes_anywhere = 0  # those whose path is not known: every token
        self._changes_under: dict[str, int] = {}  # by top-level directory (a mirror)
        self._changes_lock = threading.Lock()

    def changed(self, *paths: RelPath) -> None:
        """Count a mutation of ``paths`` (called after it, whether it succeeded or not): the
        next state token of a directory in the same top-level directory differs, and that of
        ROOT; another mirror's stays (two machines' folders on one server do not make each
        other's no-op pass list everything). No path: every token differs."""
        with self._changes_lock:
            self._changes += 1
            if not paths or not all(p.parts for p in paths):
                self._changes_anywhere += 1
                return
            # (the versions too: any mutation may keep what it replaces there)
            for top in {p.parts[0] for p in paths} | {VERSIONS_DIR}:
                self._changes_under[top] = self._changes_under.get(top, 0) + 1

    def _changes_of(self, rel: RelPath) -> tuple[int, int]:
        """The counts a state token of ``rel`` includes."""
        if not rel.parts:
            return self._changes, 0
        return self._changes_anywhere, self._changes_under.get(rel.parts[0], 0)

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

        It hashes the start-up id, the count of mutations so far in ``rel``'s top-level
        directory (all of them for ROOT; read first, so that one finishing during the walk
        changes the next token) and the (path, mtime, inode) of every
        directory and the (name, size, mtime, ctime, inode) of every file under ``rel``, so
        that files added, removed or edited behind the server's back change it too (an edit
        with its mtime put back still changes the ctime). Temporary files are left out.
        ``"absent"`` when ``rel`` does not exist. Raises :class:`Conflict` if it is a file and
        :class:`Forbidden` for a symlink, like a listing. A tree moved about while it is walked
        gives a fresh random token: it has changed, whatever it holds now.
        """
        anywhere, under = self._changes_of(rel)
        try:
            dirs = Dirs(self.root, rel.parts)
        except NotFound:
            return "absent"
        h = hashlib.sha256(f"{self.boot}:{anywhere}:{under}".encode())
        # The versions (ROOT/.~syncd-versions) are not the mirrors': keeping or pruning one
        # changes no mirror's token.
        descend = None if rel.in_versions else _not_versions
        with dirs:
            try:
                for sub, dir_fd, entries in walk(dirs.last, descend=descend, stop=self.stopping):
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

    def open_file(self, rel: RelPath, *, small: int, keep_open: bool) -> Opened:
        """Open a file for GET/HEAD with its digest (hashed now if the cache is stale).

        Files up to ``small`` bytes come back as ``data``; larger ones as a :class:`Reader`
        when ``keep_open`` (the caller closes it), else with neither.
        """
        if not rel.parts:
            raise Conflict("/: is a directory (list it with ?list)")
        with Dirs(self.root, rel.parent) as dirs:
            try:
                fd = os.open(rel.name, O_READ, dir_fd=dirs.last)
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
                data = read_all(fd, st.st_size)
                if hexdigest is None or len(data) != st.st_size:
                    hexdigest = hashlib.sha256(data).hexdigest()
                    self.digests.put(rel.text, st, hexdigest)
                os.close(fd)
                return Opened(len(data), st.st_mtime_ns, hexdigest, data, None, _exec(st))
            if hexdigest is None:
                hexdigest = hash_fd(fd, self.stopping)
                self.digests.put(rel.text, st, hexdigest)
            if keep_open:
                return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, Reader(fd), _exec(st))
            os.close(fd)
            return Opened(st.st_size, st.st_mtime_ns, hexdigest, None, None, _exec(st))
        except OSError as e:
            os.close(fd)
            raise os_error(e, str(rel)) from e
        except BaseException:
            os.close(fd)
            raise

    @_mutation
    def delete(self, rel: RelPath, *, why: Why = "deleted") -> bool:
        """Remove a file or a whole directory, then prune empty parents; True for a directory.
        What it removes is kept as a version, ``why`` ("overwritten": a COPY's target).

        With versions kept, it is one rename into ``ROOT/.~syncd-versions`` (a directory
        whole, whatever it holds), instead of a walk that removes every file; ``why`` is
        what it is kept as (``overwritten`` for a COPY's target removed first).
        """
        if not rel.parts:
            raise Forbidden("/: refusing to delete the server root")
        with Dirs(self.root, rel.parent) as dirs:
            st = _existing(dirs.last, rel)
            try:
                with self.rename_lock:  # (an upload's commit checks its directory under it)
                    if stat.S_ISDIR(st.st_mode):
                        self.dir_epoch += 1
                    moved = self.keep(dirs.last, rel, why, link=False)
                if not moved:
                    _remove(dirs.last, rel.name, st, str(rel), self.stopping)
            finally:
                self.digests.drop(rel.text)
            fsync_quiet(dirs.last)
            dirs.prune()
        return stat.S_ISDIR(st.st_mode)

    @_mutation
    def move(self, src: RelPath, dst: RelPath, *, overwrite: bool) -> bool:
        """Rename a file or directory (creating the destination's parents); True if replaced."""
        if not src.parts or not dst.parts:
            raise Forbidden("cannot move the server root")
        if src.parts == dst.parts:
            raise Forbidden(f"{src}: source and destination are the same")
        if dst.parts[: len(src.parts)] == src.parts:
            raise Conflict(f"{src}: cannot move into itself")
        if src.parts[: len(dst.parts)] == dst.parts:
            raise Conflict(f"{dst}: cannot move onto a parent of the source")
        with Dirs(self.root, src.parent) as sdirs:
            st = _existing(sdirs.last, src)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise Forbidden(f"{src}: not a regular file or directory")
            with Dirs(self.root, dst.parent, create=True) as ddirs:
                try:
                    with self.rename_lock:
                        old = lstat_at(ddirs.last, dst.name, str(dst))
                        dirs_move = stat.S_ISDIR(st.st_mode)
                        if dirs_move or (old is not None and stat.S_ISDIR(old.st_mode)):
                            self.dir_epoch += 1
                        if old is not None:
                            if stat.S_ISLNK(old.st_mode):
                                raise Forbidden(f"{dst}: is a symlink (never followed)")
                            if not overwrite:
                                raise PreconditionFailed(f"{dst}: exists and Overwrite is F")
                            files = stat.S_ISREG(old.st_mode) and stat.S_ISREG(st.st_mode)
                            # (file over file: the old one is linked into the versions,
                            # then one atomic rename replaces it)
                            gone = self.keep(ddirs.last, dst, "overwritten", link=files)
                            if not gone and not files:
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
                fsync_quiet(ddirs.last)
            fsync_quiet(sdirs.last)
            sdirs.prune()
        return old is not None

    def keep(self, dir_fd: int, rel: RelPath, why: Why, *, link: bool) -> bool:
        """Keep what ``rel`` names (in ``dir_fd``) as a version, by ``link`` (a file stays
        at its path) or by rename; True if it was moved away into the versions, False if it
        is still at its path (linked, or not kept: versions off, the mirror marker, or on
        another filesystem mounted inside ROOT, which is logged). The caller holds
        :attr:`rename_lock`."""
        if not self.keeper.on or rel.name == MARKER_NAME or rel.in_versions:
            return False
        try:
            stays = self.keeper.keep(dir_fd, rel.name, rel.parts, why, link=link)
        except StoreError as e:
            cause = e.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EXDEV:
                log.warning("%s: not kept as a version (another filesystem): %s", rel, e.reason)
                return False
            raise
        return not stays

    @_mutation
    def mkcol(self, rel: RelPath) -> None:
        """Create one directory; its parent must exist (409), it must not (405)."""
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
            fsync_quiet(dirs.last)


def _not_versions(name: str) -> bool:
    return name != VERSIONS_DIR


def _exec(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_IXUSR)


def _read_umask() -> int:
    umask = os.umask(0o077)  # (it can only be read by setting it: never to something wider)
    os.umask(umask)
    return umask


def _existing(dir_fd: int, rel: RelPath) -> os.stat_result:
    """``lstat`` of what ``rel`` names in its directory ``dir_fd``: 404 if absent, 403 for a
    symlink (never followed)."""
    st = lstat_at(dir_fd, rel.name, str(rel))
    if st is None:
        raise NotFound(f"{rel}: not found")
    if stat.S_ISLNK(st.st_mode):
        raise Forbidden(f"{rel}: is a symlink (never followed)")
    return st


def _remove(dir_fd: int, name: str, st: os.stat_result, shown: str, stop: threading.Event) -> None:
    """Remove a file, or a directory with everything in it, without following symlinks."""
    try:
        if stat.S_ISDIR(st.st_mode):
            remove_tree(dir_fd, name, stop=stop)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as e:
        raise os_error(e, shown) from e
