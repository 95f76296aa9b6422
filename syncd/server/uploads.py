"""One body on its way to a file: a temp file beside the target, hashed while it is written,
checked, fsynced and renamed into place (docs/protocol.md, "Upload in one request").

Every method blocks: run it in a worker thread. :meth:`Upload.receive_some` reads a large body
straight from the socket (:mod:`.ingest`) for a short slice of time at most.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from syncd.digests import digest_header
from syncd.faults import crash_point
from syncd.server.errors import BadRequest, Conflict, Forbidden, NotFound, StoreError, os_error
from syncd.server.fdio import (
    O_NOFOLLOW,
    O_TEMP,
    copy_piece,
    lstat_at,
    start_writeback,
    write_all,
)
from syncd.server.hashes import hash_at
from syncd.server.ingest import receive_into
from syncd.server.paths import TEMP_SUFFIX, RelPath
from syncd.server.store import Store
from syncd.server.tree import Dirs
from syncd.types import RESERVED_PREFIX
from syncd.versioning import Why

log = logging.getLogger("syncd.server.store")  # (the name the server's logs have always shown)

WRITEBACK = 8 << 20
"""A large upload starts the disk writeback of every this many bytes as soon as they are
written (see :func:`.fdio.start_writeback`)."""


@dataclass(frozen=True)
class Stored:
    """What a finished upload holds; ``replaced`` is ``None`` until it is renamed into place."""

    size: int
    digest: bytes
    replaced: bool | None


class Upload:
    """One body on its way to a path: a temp file beside the target, hashed while written.

    Every method blocks (run it in a worker thread) and holds the upload's lock, so
    :meth:`discard` called after a cancelled request waits for a write still running. While
    its temp file exists the upload is registered with the store (``Store.live``), so that a
    stopping server can remove the temps of requests it had to abandon.
    """

    def __init__(self, store: Store, rel: RelPath, *, hashed: bool = True) -> None:
        """A new upload to ``rel`` (nothing touches the disk until its first write).

        Without ``hashed`` the upload does not hash what is written: its caller does (in a
        thread of its own, while this one writes) and names the digest to :meth:`complete`."""
        if not rel.parts or rel.trailing_slash:
            raise BadRequest(f"{rel}: an upload needs a file path, not a directory")
        self._store = store
        self.rel = rel
        self._lock = threading.Lock()
        self._tmp = f"{RESERVED_PREFIX}{secrets.token_hex(16)}{TEMP_SUFFIX}"
        self._hash = hashlib.sha256()
        self._dirs: Dirs | None = None
        self._fd = -1
        self._created = False
        self._made: list[int] = []
        self._stat: os.stat_result | None = None
        self._state = "new"  # new, open, finished, done, discarded
        self.size = 0
        self.digest = b""
        self._written_back = 0  # bytes whose writeback has been started
        self.mtime_ns: int | None = None
        """The mtime to give the file (None: the time it was written)."""
        self.executable: bool | None = None
        """Mode 0755 (True) or 0644 (False); None: 0644 for a new file, else the old one's."""
        self.why: Why = "replaced"
        """What the file it replaces is kept as (a COPY onto a path: ``overwritten``)."""
        self._epoch = 0  # the store's dir_epoch when its directories were opened
        self._mode = 0o644  # the temp's mode now
        self._hashing = hashed

    def set_meta(self, *, mtime_ns: int | None = None, executable: bool | None = None) -> None:
        """What the stored file carries besides its bytes, applied just before the rename
        into place (a value left None keeps what was set before)."""
        with self._lock:
            if mtime_ns is not None:
                self.mtime_ns = mtime_ns
            if executable is not None:
                self.executable = executable

    @property
    def stopping(self) -> bool:
        """Whether the server is stopping (an upload in flight is then given up)."""
        return self._store.stopping.is_set()

    # Callers hold self._lock in everything below.

    def _open(self) -> None:
        for attempt in range(3):
            self._epoch = self._store.dir_epoch  # (before the walk: a move after it counts)
            dirs = Dirs(self._store.root, self.rel.parent, create=True)
            try:
                check_file_target(dirs.last, self.rel)
                mode = 0o755 if self.executable else 0o644
                self._fd = os.open(self._tmp, O_TEMP, mode, dir_fd=dirs.last)
                if mode & ~self._store.umask != mode:
                    os.fchmod(self._fd, mode)
                self._mode = mode
            except FileNotFoundError as e:
                # A directory on the way was pruned by a concurrent DELETE: walk again.
                dirs.close()
                if attempt == 2:
                    raise NotFound(f"{self.rel}: its directory keeps vanishing") from e
                continue
            except OSError as e:
                dirs.prune_created()
                dirs.close()
                raise os_error(e, str(self.rel)) from e
            except BaseException:
                dirs.prune_created()
                dirs.close()
                raise
            self._dirs = dirs
            self._made = list(dirs.created)
            self._created = True
            self._state = "open"
            self._store.live.add(self)
            return

    def _parent_fd(self) -> int:
        if self._dirs is None:
            self._epoch = self._store.dir_epoch
            self._dirs = Dirs(self._store.root, self.rel.parent)
            self._dirs.created = list(self._made)
        return self._dirs.last

    def _ready(self) -> None:
        if self._state == "new":
            self._store.check_running()
            self._open()
        if self._state != "open":
            raise NotFound(f"{self.rel}: the upload was dropped")

    def _write(self, chunks: Sequence[bytes | memoryview]) -> None:
        self._ready()
        try:
            n = write_all(self._fd, chunks)
        except OSError as e:
            raise os_error(e, str(self.rel)) from e
        if self._hashing:
            for c in chunks:
                self._hash.update(c)
        self._wrote(n)

    def _copy_in(self, fd: int, offset: int, length: int) -> None:
        self._ready()
        if self._hashing:
            raise RuntimeError("copy_in is for an upload its caller hashes")
        end = offset + length
        while offset < end:
            want = min(end - offset, WRITEBACK)
            try:
                n = copy_piece(fd, self._fd, offset, want)
            except OSError as e:
                raise os_error(e, str(self.rel)) from e
            if n == 0:
                raise BadRequest(f"{self.rel}: the file copied from shrank while it was copied")
            offset += n
            self._wrote(n)

    def _wrote(self, n: int) -> None:
        self.size += n
        if self.size - self._written_back >= WRITEBACK:
            start_writeback(self._fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size
        crash_point("server-mid-body")

    def _finish(self, durable: bool = True, digest: bytes | None = None) -> None:
        self._ready()
        if self._hashing == (digest is not None):
            raise RuntimeError("an upload hashed by its caller is completed with its digest")
        try:
            if durable:
                os.fsync(self._fd)
            self._stat = os.fstat(self._fd)
        except OSError as e:
            raise os_error(e, str(self.rel)) from e
        finally:
            os.close(self._fd)
            self._fd = -1
        self.digest = self._hash.digest() if digest is None else digest
        self._state = "finished"

    def _commit(self, sync_dir: bool = True) -> bool:
        if self._state != "finished" or self._stat is None:
            raise NotFound(f"{self.rel}: the upload was dropped")
        try:
            parent = self._parent_fd()
        except NotFound as e:
            raise NotFound(f"{self.rel}: the upload is gone ({e.reason})") from e
        store = self._store
        self._apply_meta(parent)
        same = self._same_as_old(parent)
        with store.rename_lock:  # so that concurrent PUTs tell "new" from "replaced" right
            self._check_parent(parent)
            existed = check_file_target(parent, self.rel)
            if existed:
                self._replacing(parent, same)
            try:
                os.rename(self._tmp, self.rel.name, src_dir_fd=parent, dst_dir_fd=parent)
            except FileNotFoundError as e:
                raise NotFound(f"{self.rel}: the upload is gone") from e
            except OSError as e:
                raise os_error(e, str(self.rel)) from e
            finally:
                store.changed(self.rel)
        self._state = "done"
        store.live.discard(self)
        try:  # the rename changed the file's ctime: remember the stat it has now
            st = os.stat(self.rel.name, dir_fd=parent, follow_symlinks=False)
            store.digests.put(self.rel.text, st, self.digest.hex())
        except OSError:
            pass
        try:
            if sync_dir:
                os.fsync(parent)
        except OSError as e:
            raise os_error(e, str(self.rel)) from e
        finally:
            self._close_dirs()
        return existed

    def _same_as_old(self, parent: int) -> tuple[int, int, int, int] | None:
        """The identity (size, mtime, ctime, inode) of the file at the target if it holds
        exactly the bytes received (no version is kept of it then); None otherwise. Hashes
        the old file only when the sizes are equal and the cache does not know it."""
        try:
            st = os.stat(self.rel.name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != self.size:
            return None
        store = self._store
        hexdigest = store.digests.get(self.rel.text, st)
        if hexdigest is None:
            hashed = hash_at(parent, self.rel.name, self.rel.text, store.digests, store.stopping)
            if hashed is None:
                return None
            st, hexdigest = hashed
        if hexdigest != self.digest.hex():
            return None
        return _ident(st)

    def _check_parent(self, parent: int) -> None:
        """The directory held since the upload began must still be the one at its path: a
        DELETE of it meanwhile moved it into the versions, and the upload is then gone."""
        if not self.rel.parent or self._store.dir_epoch == self._epoch:
            return  # (no directory was moved or removed by a request since it was opened)
        try:
            with Dirs(self._store.root, self.rel.parent) as now:
                here = os.fstat(now.last)
            held = os.fstat(parent)
        except (StoreError, OSError) as e:
            raise NotFound(f"{self.rel}: the upload is gone (its directory was removed)") from e
        if (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            raise NotFound(f"{self.rel}: the upload is gone (its directory was removed)")

    def _replacing(self, parent: int, same: tuple[int, int, int, int] | None) -> None:
        """Before the rename over an existing file (under the rename lock): the new file
        takes the old one's executable bit unless the request said, and the old one is kept
        as a version (linked: the path is never without a file) unless its bytes are the
        new ones."""
        old = lstat_at(parent, self.rel.name, str(self.rel))
        if old is None:
            return
        if self.executable is None:
            try:
                mode = 0o755 if old.st_mode & stat.S_IXUSR else 0o644
                os.chmod(self._tmp, mode, dir_fd=parent)
            except OSError as e:
                raise os_error(e, str(self.rel)) from e
        if same is not None and same == _ident(old):
            return
        self._store.keep(parent, self.rel, self.why, link=True)
        crash_point("server-after-keep")

    def _apply_meta(self, parent: int) -> None:
        """Give the temp file its mtime and mode before it is renamed into place."""
        try:
            # (None: 0644 whatever the umask; a replaced file's bit is copied under the lock;
            # the temp was made with the mode asked for then, so only a later change costs)
            mode = 0o755 if self.executable else 0o644
            if mode != self._mode:
                os.chmod(self._tmp, mode, dir_fd=parent)
                self._mode = mode
            if self.mtime_ns is not None:
                ns = self.mtime_ns
                os.utime(self._tmp, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise os_error(e, str(self.rel)) from e

    def _check_digests(self, expected: Sequence[bytes]) -> None:
        """The one digest check, of a one-step PUT, an upload step and a commit alike: every
        sha-256 the request names must be that of the bytes received (else 400)."""
        for want in expected:
            if want != self.digest:
                raise BadRequest(
                    f"digest mismatch: received {digest_header(self.digest)}"
                    f" but the request says {digest_header(want)}"
                )

    def _close_dirs(self) -> None:
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None

    # Public, locked.

    def write(self, chunks: Sequence[bytes]) -> None:
        """Append ``chunks`` to the temp file (created, with its parents, on the first call)."""
        with self._lock:
            self._write(chunks)

    def copy_in(self, fd: int, offset: int, length: int) -> None:
        """Append ``length`` bytes of the file ``fd`` from ``offset`` (an upload made
        without ``hashed``: its caller hashes them); BadRequest if ``fd`` ends before."""
        with self._lock:
            self._copy_in(fd, offset, length)

    def receive_some(self, sock: socket.socket, remaining: int, stop: threading.Event) -> int:
        """Receive up to ``remaining`` bytes of the body straight from ``sock`` (non-blocking;
        the event loop must not be reading it) into the temp file; returns how many came.

        Returns once the client has been silent for :data:`IDLE` (0: nothing came at all),
        after :data:`SLICE`, or when ``stop`` is set or the server stops. Raises BadRequest if
        the client closes early, StoreError if the write fails.
        """
        with self._lock:
            self._ready()
            return receive_into(
                sock,
                self._fd,
                self._hash,
                remaining,
                stop=stop,
                stopping=self._store.stopping,
                wrote=self._wrote,
                shown=str(self.rel),
            )

    def complete(
        self,
        rest: Sequence[bytes],
        *,
        length: int | None,
        expected: Sequence[bytes],
        commit: bool,
        durable: bool = True,
        digest: bytes | None = None,
    ) -> Stored:
        """Write ``rest``, fsync, check length and digests, then rename into place if ``commit``.

        Raises :class:`BadRequest` on a length or digest mismatch; discards the temp on any
        failure. Without ``commit`` the temp stays for :meth:`commit` (dir fds are released).
        Without ``durable`` the temp is not fsynced: the caller flushes it before the commit
        (a batch flushes all of its files at once, :mod:`.batch`). An upload made without
        ``hashed`` is given the ``digest`` of what was written.
        """
        with self._lock:
            try:
                if rest:
                    self._write(rest)
                self._finish(durable, digest)
                if length is not None and self.size != length:
                    raise BadRequest(f"body has {self.size} bytes but Content-Length says {length}")
                self._check_digests(expected)
                replaced = self._commit() if commit else None
                if not commit:
                    self._close_dirs()
                return Stored(self.size, self.digest, replaced)
            except BaseException:
                self._discard()
                raise

    def adopt(self, src_dir: int, name: str, size: int, digest: bytes) -> None:
        """Take the finished, fsynced file ``name`` in ``src_dir`` (a resumable upload's
        data, hashed as it came: ``digest``) as this upload's temp, renamed beside the
        target; :meth:`commit` then puts it in place as it does any upload."""
        with self._lock:
            try:
                self._ready()
                os.close(self._fd)
                self._fd = -1
                parent = self._parent_fd()
                try:
                    os.rename(name, self._tmp, src_dir_fd=src_dir, dst_dir_fd=parent)
                    self._stat = os.stat(self._tmp, dir_fd=parent, follow_symlinks=False)
                except OSError as e:
                    raise os_error(e, str(self.rel)) from e
                self._mode = -1  # (the data's own mode: set to the one asked for at commit)
                self.size = size
                self.digest = digest
                self._state = "finished"
            except BaseException:
                self._discard()
                raise

    def commit(self, expected: Sequence[bytes], *, sync_dir: bool = True) -> bool:
        """Check the digests the commit names (as :meth:`complete` does: 400 on a mismatch),
        then rename a finished upload into place; True if it replaced a file. Discards the
        temp on any failure. Without ``sync_dir`` its directory is not fsynced: the caller
        does it (a batch: once per directory)."""
        with self._lock:
            try:
                self._check_digests(expected)
                return self._commit(sync_dir)
            except BaseException:
                self._discard()
                raise

    def flush(self) -> None:
        """fsync a finished temp file that :meth:`complete` left unsynced (``durable=False``)."""
        with self._lock:
            if self._state != "finished":
                raise NotFound(f"{self.rel}: the upload was dropped")
            try:
                fd = os.open(self._tmp, os.O_RDONLY | O_NOFOLLOW, dir_fd=self._parent_fd())
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise os_error(e, str(self.rel)) from e

    def discard(self) -> None:
        """Remove the temp file and any directory this upload created (idempotent)."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._state in ("done", "discarded"):
            self._close_dirs()
            return
        self._state = "discarded"
        self._store.live.discard(self)
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
            log.warning("cannot remove temporary %s beside %r: %s", self._tmp, str(self.rel), e)
        assert self._dirs is not None
        self._dirs.prune_created()
        self._close_dirs()


def _ident(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def check_file_target(dir_fd: int, rel: RelPath) -> bool:
    """Refuse a target that is a directory (409) or a symlink (403); True if a file is there."""
    st = lstat_at(dir_fd, rel.name, str(rel))
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise Conflict(f"{rel}: is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise Forbidden(f"{rel}: is a symlink (never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise Forbidden(f"{rel}: not a regular file")
    return True
