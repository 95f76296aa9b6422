"""What ``syncd serve`` keeps of the files it replaces or deletes, and for how long.

A file replaced by an upload, a file or directory removed by DELETE, a target replaced by a
MOVE: each goes to ``ROOT/.~syncd-versions/<path>/.~syncd-v<when>-<why>`` (the layout of
:mod:`syncd.versioning`), by ``link`` (a replaced file: the path is never without a file) or
by ``rename`` (a deleted file or directory: one rename, whatever the tree holds), never by a
copy. The filesystem is the only record: a version is its entry, its time is in its name, so
a restart or a crash mid-request finds exactly what is there.

:class:`Pruner` removes what the :class:`Retention` (``retention.py``: the ``--keep`` and
``--keep-space`` flags) no longer allows (older than ``--keep``, then the oldest while the
versions' total is over ``--keep-space``), a bounded slice of work at a time. Every function
blocks: run it in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from syncd.server.errors import StoreError, Unavailable, os_error
from syncd.server.fdio import fsync_quiet, lstat_at
from syncd.server.hashes import DigestCache
from syncd.server.retention import Retention
from syncd.server.tree import Dirs, remove_tree, walk
from syncd.versioning import VERSIONS_DIR, Why, parse_version_name, version_name

log = logging.getLogger("syncd.server")

PRUNE_INTERVAL = 600.0
"""Seconds between two pruning runs."""
PRUNE_BUDGET = 2.0
"""Seconds of work a pruning run does at most (the next one resumes where it stopped)."""

_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP}
"""``link`` failures after which a file is kept by ``rename`` instead."""


# --------------------------------------------------------------------------- keeping


def version_key(parts: tuple[str, ...], entry: str) -> str:
    """The digest cache's key of an entry (its path below ROOT)."""
    return "/".join((VERSIONS_DIR, *parts, entry))


class Keeper:
    """Puts what a request replaces or deletes into ``ROOT/.~syncd-versions`` (thread-safe).

    The callers hold ``Store.rename_lock`` (nothing else changes the path meanwhile); the
    keeper's own ``lock`` orders its entries against the pruner's removals.
    """

    def __init__(
        self,
        root: Path,
        retention: Retention,
        digests: DigestCache,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self.retention = retention
        self.digests = digests
        self.clock = clock
        self.lock = threading.Lock()

    @property
    def on(self) -> bool:
        return not self.retention.off

    def keep(self, dir_fd: int, name: str, parts: tuple[str, ...], why: Why, *, link: bool) -> bool:
        """Keep the file or directory ``name`` in ``dir_fd`` (mirror path ``parts``) as a
        version; True if it is still at its path (kept by ``link``), False if it was moved
        (``rename``: always for a directory and without ``link``; for a file where the
        filesystem refuses a link). Raises StoreError when it cannot be kept."""
        shown = "/" + "/".join(parts)
        st = lstat_at(dir_fd, name, shown)
        if st is None:
            raise os_error(FileNotFoundError(errno.ENOENT, "gone"), shown)
        is_dir = stat.S_ISDIR(st.st_mode)
        key = "/".join(parts)
        hexdigest = None if is_dir else self.digests.get(key, st)
        with self.lock:
            vdirs = Dirs(self.root, (VERSIONS_DIR, *parts), create=True)
            try:
                when = self.clock()
                while True:  # two versions of one path in one nanosecond: the later one bumps
                    entry = version_name(when, why)
                    if lstat_at(vdirs.last, entry, shown) is None:
                        break
                    when += 1
                stays = link and not is_dir
                try:
                    if stays:
                        try:
                            os.link(
                                name,
                                entry,
                                src_dir_fd=dir_fd,
                                dst_dir_fd=vdirs.last,
                                follow_symlinks=False,
                            )
                        except OSError as e:
                            if e.errno not in _LINK_FALLBACK:
                                raise
                            stays = False
                    if not stays:
                        os.rename(name, entry, src_dir_fd=dir_fd, dst_dir_fd=vdirs.last)
                except OSError as e:
                    vdirs.prune_created()
                    raise os_error(e, f"{shown} (keeping it as a version)") from e
                vkey = version_key(parts, entry)
                if is_dir:
                    self.digests.move(key, vkey)
                elif hexdigest is not None:
                    kept = lstat_at(vdirs.last, entry, shown)
                    if kept is not None:
                        self.digests.put(vkey, kept, hexdigest)
                fsync_quiet(vdirs.last)
            finally:
                vdirs.close()
        return stays


# --------------------------------------------------------------------------- pruning


@dataclass(frozen=True)
class Kept:
    """One entry found in the versions: where (its parts below V), when, and its bytes."""

    parts: tuple[str, ...]
    when_ns: int
    size: int


def _tree_size(dir_fd: int, name: str, stop: threading.Event) -> int:
    total = 0
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return 0
    try:
        for _sub, _fd, entries in walk(fd, stop=stop):
            for e in entries:
                try:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except StoreError:
        pass
    finally:
        os.close(fd)
    return total


class Pruner:
    """Removes the versions the retention no longer allows, at most ``budget`` seconds of
    work per :meth:`run`, resuming where the last run stopped.

    A pass walks the versions (counting every entry's when and size), then removes the
    entries older than ``keep`` and, while the rest is over the space limit, the oldest.
    """

    def __init__(
        self,
        keeper: Keeper,
        stop: threading.Event,
        *,
        budget: float = PRUNE_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keeper = keeper
        self.stop = stop
        self.budget = budget
        self.clock = clock
        self._dirs: Dirs | None = None
        self._walk: Iterator[tuple[tuple[str, ...], int, list[os.DirEntry[str]]]] | None = None
        self._found: list[Kept] = []
        self._doomed: list[Kept] | None = None
        self.removed = 0
        self.removed_bytes = 0

    def run(self) -> bool:
        """One bounded slice of pruning; True when a whole pass is done."""
        deadline = self.clock() + self.budget
        try:
            if self._doomed is None and not self._scan(deadline):
                return False
            return self._remove(deadline)
        except StoreError as e:
            self._reset()
            if not isinstance(e, Unavailable):
                log.warning("pruning the versions stopped (to be tried again): %s", e.reason)
            return True

    def _reset(self) -> None:
        self._walk = None
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None
        self._found = []
        self._doomed = None

    def close(self) -> None:
        self._reset()

    def _scan(self, deadline: float) -> bool:
        if self._walk is None:
            try:
                self._dirs = Dirs(self.keeper.root, (VERSIONS_DIR,))
            except StoreError:
                self._reset()
                self._doomed = []
                return True  # no versions at all
            self._found = []
            self._walk = walk(self._dirs.last, descend=_descend, stop=self.stop)
        for sub, dir_fd, entries in self._walk:
            for e in entries:
                parsed = parse_version_name(e.name)
                if parsed is None or not sub:
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    size = _tree_size(dir_fd, e.name, self.stop)
                elif stat.S_ISREG(st.st_mode):
                    size = st.st_size
                else:
                    continue
                self._found.append(Kept((*sub, e.name), parsed[0], size))
            if self.clock() >= deadline:
                return False
        found, self._found = self._found, []
        self._walk = None
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None
        self._doomed = self._choose(found)
        return True

    def _choose(self, found: list[Kept]) -> list[Kept]:
        """What goes: older than keep, then the oldest while the rest is over the limit."""
        ret = self.keeper.retention
        found.sort(key=lambda k: (k.when_ns, k.parts))
        doomed: list[Kept] = []
        rest: list[Kept] = []
        if ret.keep_s is None:
            rest = found
        else:
            cutoff = self.keeper.clock() - ret.keep_s * 1_000_000_000
            for k in found:
                (doomed if k.when_ns <= cutoff or ret.keep_s == 0 else rest).append(k)
        limit = ret.space_limit(self.keeper.root)
        total = sum(k.size for k in rest)
        for k in rest:
            if total <= limit:
                break
            doomed.append(k)
            total -= k.size
        doomed.reverse()  # popped from the end: oldest first
        return doomed

    def _remove(self, deadline: float) -> bool:
        doomed = self._doomed or []
        while doomed:  # (at least one step per run, however little time is left)
            self._remove_one(doomed.pop())
            if doomed and self.clock() >= deadline:
                return False
        self._doomed = None
        return True

    def _remove_one(self, k: Kept) -> None:
        """Remove one entry (a large deleted tree may take a while: no lock is held for it,
        as no request writes inside an entry), then, under the keeper's lock, the directories
        it leaves empty (a version being kept meanwhile may be entering them)."""
        keeper = self.keeper
        try:
            dirs = Dirs(keeper.root, (VERSIONS_DIR, *k.parts[:-1]))
        except StoreError:
            return  # gone meanwhile
        with dirs:
            name = k.parts[-1]
            shown = "/" + version_key(k.parts[:-1], name)
            st = lstat_at(dirs.last, name, shown)
            if st is None:
                return
            try:
                if stat.S_ISDIR(st.st_mode):
                    remove_tree(dirs.last, name, stop=self.stop)
                else:
                    os.unlink(name, dir_fd=dirs.last)
            except OSError as e:
                raise os_error(e, shown) from e
            keeper.digests.drop(version_key(k.parts[:-1], name))
            self.removed += 1
            self.removed_bytes += k.size
            fsync_quiet(dirs.last)
            with keeper.lock:
                dirs.prune(keep=1)  # the versions' directory itself stays


def _descend(name: str) -> bool:
    """The pruner walks the directories named after paths, not into the entries."""
    return parse_version_name(name) is None


class PruneThread(threading.Thread):
    """Runs the pruner at start and every ``interval`` seconds (sooner while a pass is not
    done), until :meth:`finish` or the server stops."""

    def __init__(self, pruner: Pruner, *, interval: float = PRUNE_INTERVAL) -> None:
        super().__init__(name="syncd-prune", daemon=True)
        self.pruner = pruner
        self.interval = interval
        self._done = threading.Event()
        self.passes = 0

    def run(self) -> None:
        pruner = self.pruner
        try:
            while not self._done.is_set() and not pruner.stop.is_set():
                try:
                    finished = pruner.run()
                except Exception:
                    log.exception("pruning the versions failed")
                    finished = True
                if finished:
                    self.passes += 1
                    if pruner.removed:
                        log.info(
                            "pruned %d version(s) (%d bytes) from %s",
                            pruner.removed,
                            pruner.removed_bytes,
                            pruner.keeper.root / VERSIONS_DIR,
                        )
                    pruner.removed = pruner.removed_bytes = 0
                self._done.wait(self.interval if finished else 5 * pruner.budget)
        finally:
            pruner.close()

    def finish(self) -> None:
        self._done.set()


# (``Retention`` is the store's and the app's too: one import of the versions' rooms)
__all__ = ["PRUNE_BUDGET", "PRUNE_INTERVAL", "Keeper", "Kept", "PruneThread", "Pruner", "Retention"]
