"""sha-256 of the files the server holds: hashing a descriptor, and the cache that spares it.

Every function blocks: run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading

from syncd.server.errors import check_stop
from syncd.server.fdio import CHUNK, O_READ

_ID = struct.Struct("<QqqQ")  # size, mtime_ns, ctime_ns, inode: the stat a digest is valid for
_DIGEST = 32  # the sha-256, last in each entry

_Node = dict[str, "bytes | _Node"]


class DigestCache:
    """sha-256 of stored files keyed by relative path, valid while (size, mtime, ctime, inode)
    match: an edit behind the server's back with the mtime put back still changes the ctime.

    Held as a tree of dicts, one per directory, each file's entry one 64-byte value (its stat
    packed, then the digest; a stat too wide to pack is written out): about 200 bytes a file,
    where a dict of full paths to tuples took 450 (a million stored files: 500 MiB); and
    dropping or moving a directory touches that directory only, not every entry."""

    def __init__(self) -> None:
        self._root: _Node = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(st: os.stat_result) -> bytes:
        fields = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        try:
            return _ID.pack(*fields)
        except struct.error:  # a time past 64 bits of nanoseconds (a fuzzer's, or a broken clock)
            return " ".join(map(str, fields)).encode()

    def _chain(self, key: str) -> tuple[list[_Node], list[str], str] | None:
        """The directory nodes from the root down to the one holding ``key``, the names of
        the directories, and ``key``'s name (None: a directory on the way is not cached)."""
        *dirs, name = key.split("/")
        chain = [self._root]
        for d in dirs:
            below = chain[-1].get(d)
            if not isinstance(below, dict):
                return None
            chain.append(below)
        return chain, dirs, name

    def _parent(self, key: str) -> tuple[_Node, str] | None:
        """The directory node holding ``key``, and its name there (None: not cached)."""
        found = self._chain(key)
        return (found[0][-1], found[2]) if found is not None else None

    def _place(self, key: str, value: bytes | _Node) -> None:
        """Put ``value`` at ``key``, making its directories (or replacing a file in the way)."""
        *dirs, name = key.split("/")
        node = self._root
        for d in dirs:
            below = node.get(d)
            if not isinstance(below, dict):
                below = node[d] = {}
            node = below
        node[name] = value

    def get(self, key: str, st: os.stat_result) -> str | None:
        """The cached hex digest of ``key`` if ``st`` still matches it."""
        # Dict lookups and an immutable value: no lock needed.
        found = self._parent(key)
        item = found[0].get(found[1]) if found is not None else None
        if not isinstance(item, bytes) or item[:-_DIGEST] != self._id(st):
            return None
        return item[-_DIGEST:].hex()

    def put(self, key: str, st: os.stat_result, hexdigest: str) -> None:
        """Remember ``key``'s digest for this stat."""
        with self._lock:
            self._place(key, self._id(st) + bytes.fromhex(hexdigest))

    def restat(self, key: str, st: os.stat_result) -> None:
        """``key`` was renamed by the server itself (its ctime changed, not its bytes)."""
        with self._lock:
            found = self._parent(key)
            if found is not None and isinstance(item := found[0].get(found[1]), bytes):
                found[0][found[1]] = self._id(st) + item[-_DIGEST:]

    def drop(self, key: str) -> None:
        """Forget ``key`` and everything below it."""
        with self._lock:
            self._pop(key)

    def move(self, src: str, dst: str) -> None:
        """Carry the entries of ``src`` (and below) over to ``dst``."""
        with self._lock:
            self._pop(dst)
            moved = self._pop(src)
            if moved:  # (an empty directory node is never placed: it holds nothing)
                self._place(dst, moved)

    def _pop(self, key: str) -> bytes | _Node | None:
        """Take ``key`` out, and the directory nodes it leaves empty (the server removes
        emptied directories too: kept, they would add up without bound)."""
        found = self._chain(key)
        if found is None:
            return None
        chain, dirs, name = found
        taken = chain[-1].pop(name, None)
        for parent, d in zip(reversed(chain[:-1]), reversed(dirs), strict=True):
            if parent[d]:
                break
            del parent[d]
        return taken


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
