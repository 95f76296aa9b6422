"""What fits under the inotify watch limit, and polling for the rest.

inotify needs one watch per directory, and a user has ``fs.inotify.max_user_watches`` of them
(``user.max_inotify_watches`` in a user namespace, when lower). A folder with more directories
is watched in part: whole subtrees whose directory count fits under the limit (less a margin
for the user's other programs) go to watchfiles, each watched recursively; the directories
above them are polled for their own entries (``flat``), the subtrees that did not fit are
polled whole (``polled``). Polling is a stat walk of those directories every poll interval,
keeping one 64-bit signature per directory (two flat arrays, not an object per directory):
what changed is handed back as the directories to look at, which the daemon treats as events.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds between polls of the directories inotify cannot watch, at least; longer where one
#: poll costs more than ``POLL_SHARE`` of a core over it; never longer than ``rescan_interval``.
POLL_INTERVAL = 60.0
POLL_SHARE = 0.01

LIMIT_FILES = (
    ("fs.inotify.max_user_watches", "/proc/sys/fs/inotify/max_user_watches"),
    ("user.max_inotify_watches", "/proc/sys/user/max_inotify_watches"),
)

_MASK = (1 << 63) - 1


def poll_interval(rescan_interval: float, cost: float = 0.0) -> float:
    """Every change in a polled directory is mirrored within this: ``POLL_INTERVAL``, or
    longer where a poll takes ``cost`` CPU seconds (idle stays under ``POLL_SHARE`` of a core),
    at most the rescan interval (when rescans are on)."""
    every = max(POLL_INTERVAL, cost / POLL_SHARE)
    return min(every, rescan_interval) if rescan_interval > 0 else every


def read_limits() -> dict[str, int]:
    """The inotify watch limits that apply here, by sysctl name (empty: not Linux)."""
    found = {}
    for name, path in LIMIT_FILES:
        try:
            found[name] = int(Path(path).read_text())
        except (OSError, ValueError):
            continue
    return found


def current_limit() -> int | None:
    limits = read_limits()
    return min(limits.values()) if limits else None


def budget(limit: int) -> int:
    """Watches syncd takes under ``limit``: the rest is left to the user's other programs."""
    return max(0, limit - max(limit // 16, 16))


def suggested_limit(directories: int) -> int:
    """A limit that fits the folder with room to grow: the next power of two above twice its
    directories, at least 524288 (what most distributions' packages of file watchers set)."""
    return max(524288, 1 << (2 * directories).bit_length())


def room_for_one_more(path: Path) -> bool:
    """Can this user add one more inotify watch? (notify adds the watches of new directories
    silently: when the limit is reached it drops them without a word, so it is asked here.)
    True where it cannot be told (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return True
    fd = init(os.O_CLOEXEC)
    if fd < 0:
        return ctypes.get_errno() != errno.EMFILE
    try:
        IN_ATTRIB = 0x4
        return add(fd, os.fsencode(path), IN_ATTRIB) >= 0 or ctypes.get_errno() != errno.ENOSPC
    finally:
        os.close(fd)


@dataclass
class WatchPlan:
    """Which directories inotify watches (``watched``: subtrees, rels), and which are polled
    (``flat``: their own entries; ``polled``: subtrees)."""

    watched: list[str]
    flat: list[str]
    polled: list[str]
    directories: int  # in the whole folder
    watched_dirs: int

    @property
    def polled_dirs(self) -> int:
        return self.directories - self.watched_dirs


def plan_watch(root: Path, watches: int) -> WatchPlan:
    """Subtrees of ``root`` that fit in ``watches`` inotify watches, the largest first, from
    the top down; the rest polled. Walks the directories once (names only, no stat)."""
    rels, first, end, counts = _tree(root)
    total = counts[0]
    if total <= watches:
        return WatchPlan([""], [], [], total, total)
    watched: list[str] = []
    flat: list[str] = []
    polled: list[str] = []
    left = watches
    queue = deque([0])
    while queue:
        d = queue.popleft()
        if left <= 0:
            polled.append(rels[d])
            continue
        flat.append(rels[d])
        for c in sorted(range(first[d], end[d]), key=counts.__getitem__, reverse=True):
            if counts[c] <= left:
                watched.append(rels[c])
                left -= counts[c]
            elif first[c] < end[c]:
                queue.append(c)  # split further, if watches are left by then
            else:
                polled.append(rels[c])
    return WatchPlan(watched, flat, polled, total, watches - left)


def _tree(root: Path) -> tuple[list[str], array[int], array[int], array[int]]:
    """Every directory under ``root`` (breadth first, so each one's children are a range),
    with the number of directories in its subtree (itself included). Symlinks are not
    followed. Held only while a plan is made."""
    rels = [""]
    first = array("l")
    end = array("l")
    parent = array("l", [-1])
    i = 0
    while i < len(rels):
        rel = rels[i]
        first.append(len(rels))
        try:
            with os.scandir(os.path.join(root, rel)) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            rels.append(f"{rel}/{e.name}" if rel else e.name)
                            parent.append(i)
                    except OSError:
                        continue
        except OSError:
            pass
        end.append(len(rels))
        i += 1
    counts = array("l", [1]) * len(rels)
    for j in range(len(rels) - 1, 0, -1):
        counts[parent[j]] += counts[j]
    return rels, first, end, counts


@dataclass
class Poller:
    """Polls the directories of a plan that inotify does not watch. ``poll()`` returns the
    paths to look at again: the changed entries of a ``flat`` directory, and the polled
    directories whose own entries changed (the look scans a directory and all below it).
    Ignored directories are not walked; ignored files count (a change to one costs a look at
    its directory, which finds nothing to do) -- checking every file would cost a third more
    on each poll. ``cost``: CPU seconds the last poll took."""

    root: Path
    flat: list[str]
    polled: list[str]
    ignored: Callable[[str, bool], bool]
    _entries: dict[str, dict[str, int]] = field(default_factory=dict)
    _keys: array[int] = field(default_factory=lambda: array("q"))
    _sigs: array[int] = field(default_factory=lambda: array("q"))

    _primed: bool = False
    cost: float = 0.0

    def poll(self) -> list[str]:
        """Blocking (a stat walk of the polled part): run it in a thread. The first call
        records what is there and returns nothing."""
        first, self._primed = not self._primed, True
        started = time.thread_time()
        changed: list[str] = []
        for d in self.flat:
            now = self._own_entries(d)
            before = self._entries.get(d)
            self._entries[d] = now
            if before is None:
                continue
            for name in now.keys() ^ before.keys() | {
                n for n, s in now.items() if before.get(n, s) != s
            }:
                rel = f"{d}/{name}" if d else name
                changed.append(rel)
                if name in now and now[name] == _dir_sig(name) and rel not in self.polled:
                    self.polled.append(rel)  # a new directory: polled from now on
        pairs: list[tuple[int, int, str]] = []
        for r in self.polled:
            self._walk(r, pairs)
        pairs.sort()
        for key, sig, rel in pairs:
            at = bisect_left(self._keys, key)
            if not first and (
                at == len(self._keys) or self._keys[at] != key or self._sigs[at] != sig
            ):
                changed.append(rel)
        self._keys = array("q", (p[0] for p in pairs))
        self._sigs = array("q", (p[1] for p in pairs))
        self.cost = time.thread_time() - started
        return [] if first else outermost(changed)

    def _own_entries(self, d: str) -> dict[str, int]:
        """A flat directory's entries and their signatures (a directory: its name alone, its
        contents being watched or polled on their own)."""
        out = {}
        for name, sig, _ in self._scan(d):
            out[name] = sig
        return out

    def _walk(self, top: str, pairs: list[tuple[int, int, str]]) -> None:
        stack = [top]
        while stack:
            d = stack.pop()
            total = 0
            for name, sig, is_dir in self._scan(d):
                total = (total + sig) & _MASK
                if is_dir:
                    stack.append(f"{d}/{name}" if d else name)
            pairs.append((hash(d) & _MASK, total, d))

    def _scan(self, d: str) -> Iterable[tuple[str, int, bool]]:
        """(name, signature, is a directory) of the entries of ``d`` that are not ignored."""
        try:
            with os.scandir(os.path.join(self.root, d)) as it:
                entries = list(it)
        except OSError:
            return
        for e in entries:
            rel = f"{d}/{e.name}" if d else e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    if not self.ignored(rel, True):
                        yield e.name, _dir_sig(e.name), True
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            yield e.name, hash((e.name, st.st_size, st.st_mtime_ns, st.st_mode)) & _MASK, False


def _dir_sig(name: str) -> int:
    return hash((name, "/")) & _MASK


def outermost(rels: Iterable[str]) -> list[str]:
    """``rels`` without those below another of them (a look at a directory covers them)."""
    out: list[str] = []
    for rel in sorted(set(rels), key=lambda r: r.split("/")):
        if not out or not (out[-1] == "" or rel.startswith(out[-1] + "/")):
            out.append(rel)
    return out


__all__ = [
    "POLL_INTERVAL",
    "POLL_SHARE",
    "Poller",
    "WatchPlan",
    "budget",
    "current_limit",
    "outermost",
    "plan_watch",
    "poll_interval",
    "read_limits",
    "room_for_one_more",
    "suggested_limit",
]
