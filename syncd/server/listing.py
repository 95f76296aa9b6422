"""``GET /<dir>/?list``: every file under a directory with its size, sha-256 and mtime.

The walk (:func:`.tree.walk`) runs in worker threads, resumed a batch at a time, so that a
listing of a large tree streams while it is walked and its descriptors are closed when the
listing ends, however it ends.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

from syncd.server.errors import NotFound
from syncd.server.hashes import hash_at
from syncd.server.paths import RelPath, listed_name
from syncd.server.store import Store
from syncd.server.tree import Dirs, walk

LIST_BATCH = 1000
"""A listing hands this many entries at a time from its worker thread to the event loop..."""
LIST_DIRS = 256
"""...or what this many directories hold, whichever comes first."""


@dataclass(frozen=True)
class ListEntry:
    """One file of a listing, its path relative to the listed directory."""

    path: str
    size: int
    sha256: str
    mtime_ns: int
    executable: bool = False


async def iter_listing(store: Store, rel: RelPath) -> AsyncGenerator[list[ListEntry], None]:
    """Every file under ``rel`` (relative to it), in batches, depth first.

    Raises before the first batch if ``rel`` is a file (409) or a symlink (403); an absent
    directory yields nothing.
    """
    lister = _Lister(store, rel)
    try:
        if not await asyncio.to_thread(lister.open):
            return
        while (batch := await asyncio.to_thread(lister.next_batch)) is not None:
            if batch:
                yield batch
    finally:
        lister.close()


def _listed(name: str) -> bool:
    return listed_name(name)


def _listed_version(name: str) -> bool:
    return listed_name(name, versions=True)


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
        # In the mirrors, reserved names are never listed (nor the versions); inside
        # /.~syncd-versions/ the versions' entries are (temps never).
        self._listed = _listed_version if rel.in_versions else _listed

    def open(self) -> bool:
        """Open the listed directory (False if absent; StoreError if not a directory)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._dirs = Dirs(self._store.root, self._rel.parts)
            except NotFound:
                return False
            self._walk = walk(self._dirs.last, descend=self._listed, stop=self._store.stopping)
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
        listed = self._listed
        for _ in range(LIST_DIRS):
            try:
                sub, dir_fd, entries = next(it)
            except StopIteration:
                return out or None
            path_prefix = "".join(p + "/" for p in sub)
            key_prefix = key_base + path_prefix
            for entry in entries:
                name = entry.name
                if not listed(name):
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
                    hashed = hash_at(dir_fd, name, key, store.digests, store.stopping)
                    if hashed is None:
                        continue
                    st, hexdigest = hashed
                out.append(
                    ListEntry(
                        path_prefix + name,
                        st.st_size,
                        hexdigest,
                        st.st_mtime_ns,
                        bool(st.st_mode & stat.S_IXUSR),
                    )
                )
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
