"""sha-256 of the files the server holds: hashing a descriptor, and the cache that spares it.

Every function blocks: run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading

from syncd.server.errors import check_stop
from syncd.server.fdio import CHUNK, O_READ


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


def hash_fd(fd: int, stop: threading.Event | None = None) -> str:
    """The hex sha-256 of the whole file ``fd``; :class:`Unavailable` once ``stop`` is set."""
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
        if offset % (64 * CHUNK) == 0:
            check_stop(stop)
    return h.hexdigest()


def hash_at(
    dir_fd: int, name: str, key: str, digests: DigestCache, stop: threading.Event
) -> tuple[os.stat_result, str] | None:
    """Stat and hash the regular file ``name`` in ``dir_fd`` (and cache its digest under
    ``key``); None if it is not one."""
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        hexdigest = hash_fd(fd, stop)
    except OSError:
        return None
    finally:
        os.close(fd)
    digests.put(key, st, hexdigest)
    return st, hexdigest
