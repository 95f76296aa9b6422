"""watchfiles.awatch on a folder, with syncd's own ignore rules instead of watchfiles' defaults.

Yields ``(Change, rel)`` pairs (syncd's own ``Change``: nothing above this module imports
watchfiles); ``rel`` is '' for the folder itself. Where inotify's watch limit does not let
every directory be watched, it watches what fits and polls the rest (syncd.watchlimit), and
says so once, with the sysctl that lifts the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from syncd.watchlimit import (
    Poller,
    WatchPlan,
    budget,
    current_limit,
    plan_watch,
    poll_interval,
    read_limits,
    room_for_one_more,
    suggested_limit,
)

log = logging.getLogger("syncd.watcher")

# Batching inside watchfiles: wait STEP ms after an event for more, at most DEBOUNCE ms in all.
# Kept short: syncd settles each path itself (see debounce.py).
STEP_MS = 10
DEBOUNCE_MS = 100
# Seconds a degraded start may take before the daemon's first scan (which waits 10 s for the
# watches, the failed attempt at all of them included) may have begun without the baseline.
START_WAIT = 5.0


class Change(enum.IntEnum):
    """What happened to a path (watchfiles' own kinds, so that nothing above this module
    needs watchfiles)."""

    added = 1
    modified = 2
    deleted = 3


class UndecodableName(Exception):
    """watchfiles cannot report a path whose name is not UTF-8: the batch holding it is lost.
    (Such a name is not mirrored anyway; the scanner says so.) The caller rescans."""

    def __init__(self, folder: Path, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"a name that is not UTF-8 changed in {folder} ({detail}); it is not mirrored, "
            "and the changes reported with it were lost: rescanning"
        )


def _undecodable(e: BaseException) -> str | None:
    """watchfiles' "Unable to decode path ..." error, inside the task group it comes in."""
    found = [e]
    while found:
        x = found.pop()
        if isinstance(x, BaseExceptionGroup):
            found += x.exceptions
        elif isinstance(x, RuntimeError) and str(x).startswith("Unable to decode path"):
            return str(x).removeprefix("Unable to decode path ").removesuffix(" to string")
    return None


class WatchFilter:
    """Drops events for ignored paths (the folder's ignore rules)."""

    def __init__(self, root: Path, ignored: Callable[[str, bool], bool]) -> None:
        self.root = str(root)
        self.ignored = ignored

    def rel(self, path: str) -> str | None:
        if path == self.root:
            return ""
        if not path.startswith(self.root + os.sep):
            return None
        return path[len(self.root) + 1 :].replace(os.sep, "/")

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        rel = self.rel(path)
        if rel is None:
            return False
        if rel == "":
            return True
        return not (self.ignored(rel, False) or self.ignored(rel, True))


def _watch_limit(e: BaseException) -> bool:
    text = str(e).lower()
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EMFILE)) or (
        "watch limit" in text or "no space left" in text or "too many open files" in text
    )


def _no_instance(e: BaseException) -> bool:
    """Not a watch but an inotify instance is missing (``fs.inotify.max_user_instances``)."""
    return (isinstance(e, OSError) and e.errno == errno.EMFILE) or "too many open" in str(e)


@dataclass(frozen=True)
class Degraded:
    """The folder is watched in part (the inotify limit): what the status document says."""

    watched_dirs: int
    polled_dirs: int
    poll_interval: float
    limit: int | None
    sysctl: str

    def doc(self) -> dict[str, object]:
        return {
            "watched_dirs": self.watched_dirs,
            "polled_dirs": self.polled_dirs,
            "poll_interval": self.poll_interval,
            "limit": self.limit,
            "sysctl": self.sysctl,
        }


class FolderWatcher:
    """Watches one folder. ``started`` is set once the OS watches are in place.

    Where inotify cannot watch every directory (its limit), the subtrees that fit are watched
    and the rest is polled (every ``watchlimit.poll_interval``, at most ``rescan_interval``):
    the polled directories that changed come as ``modified`` events. ``on_gap`` is called once
    the watches are replaced while running (what changed meanwhile is found by a rescan)."""

    def __init__(
        self,
        root: Path,
        ignored: Callable[[str, bool], bool],
        *,
        rescan_interval: float = 0.0,
        on_gap: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = root
        self.ignored = ignored
        self.filter = WatchFilter(root, ignored)
        self.rescan_interval = rescan_interval
        self.poll_every = poll_interval(rescan_interval)
        self.on_gap = on_gap
        self.stop_event = asyncio.Event()
        self.started = asyncio.Event()
        self.state = "starting"
        self.restarts = 0
        self.degraded: Degraded | None = None
        self._plan: WatchPlan | None = None
        self._poller: Poller | None = None
        self._next_poll = 0.0
        self._again: str | None = None  # "replan", "full": watch otherwise, at once
        self._gap = False
        self._told = False

    async def events(self) -> AsyncIterator[list[tuple[Change, str]]]:
        """Batches of (change, rel) until ``stop()``. Raises when the folder cannot be watched.
        Each call tries to watch the whole folder first: a restart (the folder replaced, the
        watch broken) plans again, for the tree as it is now."""
        self._plan = self._poller = self.degraded = None
        while not self.stop_event.is_set():
            self._again = None
            paths = (
                [self.root] if self._plan is None else [self.root / r for r in self._plan.watched]
            )
            try:
                batches = self._watch(paths) if paths else self._poll_only()
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        yield batch
            except Exception as e:
                if (detail := _undecodable(e)) is not None:
                    raise UndecodableName(self.root, detail) from None
                if not _watch_limit(e):
                    raise
                await self._degrade(e)
                continue
            if self._again == "replan":
                await self._degrade(None)
            elif self._again == "full":
                self._plan = self._poller = self.degraded = None
                self._gap = True
            else:
                return

    async def _watch(self, paths: list[Path]) -> AsyncGenerator[list[tuple[Change, str]]]:
        # yield_on_timeout: an empty batch every rust_timeout, after which the daemon
        # checks that the folder was not replaced (and a poll may be due).
        watch = watchfiles.awatch(
            *paths,
            watch_filter=self.filter,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self.stop_event,
            yield_on_timeout=True,
            rust_timeout=1000,
        )
        async with contextlib.aclosing(watch):
            # awatch adds its OS watches (RustNotify) synchronously, before its first await.
            # Its first step runs as a task, scheduled before the sleep(0) below resumes us
            # (the event loop runs callbacks in order): after it, the watches are in place --
            # or adding them failed -- and "started" is true without waiting for a first
            # batch (which takes up to ``rust_timeout``).
            first = asyncio.ensure_future(anext(watch))
            try:
                await asyncio.sleep(0)
            except BaseException:
                first.cancel()
                raise
            if not first.done() or first.exception() is None:
                self._in_place()
            try:
                changes = await first
            except StopAsyncIteration:
                return
            while True:
                batch = self._batch(changes)
                yield batch
                if self._new_dirs(batch) and not room_for_one_more(self.root):
                    log.warning(
                        "new directories in %s reached the inotify watch limit: polling more of it",
                        self.root,
                    )
                    self._again = "replan"
                    return
                if (polled := await self._poll_due()) is not None:
                    yield polled
                    if self._again:
                        return
                try:
                    changes = await anext(watch)
                except StopAsyncIteration:
                    return

    async def _poll_only(self) -> AsyncGenerator[list[tuple[Change, str]]]:
        """No inotify watch at all: the folder is polled whole."""
        self._in_place()
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 1.0)
            yield []
            if (polled := await self._poll_due()) is not None:
                yield polled
                if self._again:
                    return

    def _in_place(self) -> None:
        self.state = "watching" if self._plan is None else "degraded"
        self.started.set()
        if self._gap:
            self._gap = False
            self.on_gap()

    async def _poll_due(self) -> list[tuple[Change, str]] | None:
        """When a poll is due: the polled paths that changed (or, once the limit allows it,
        ``_again`` is "full" and nothing is polled)."""
        if self._poller is None or self._plan is None or time.monotonic() < self._next_poll:
            return None
        self._next_poll = time.monotonic() + self.poll_every
        limit = current_limit()
        if limit is not None and budget(limit) > self._plan.directories:
            log.info(
                "the inotify watch limit is now %d: watching all of %s with inotify again",
                limit,
                self.root,
            )
            self._again = "full"
            return []
        rels = await asyncio.to_thread(self._poller.poll)
        self._every(self._poller.cost)
        if rels:
            log.debug(
                "polling %s: %d path(s) changed: %s%s",
                self.root,
                len(rels),
                ", ".join(rels[:5]),
                ", ..." if len(rels) > 5 else "",
            )
        return [(Change.modified, rel) for rel in rels]

    def _every(self, cost: float) -> None:
        """The poll interval, for what the last poll cost."""
        self.poll_every = poll_interval(self.rescan_interval, cost)
        if self.degraded is not None and self.degraded.poll_interval != self.poll_every:
            self.degraded = dataclasses.replace(self.degraded, poll_interval=self.poll_every)

    def _new_dirs(self, batch: list[tuple[Change, str]]) -> bool:
        return any(c == Change.added and os.path.isdir(self.root / rel) for c, rel in batch)

    async def _degrade(self, e: BaseException | None) -> None:
        """Watch what fits under the limit, poll the rest; say so once. ``e``: adding the
        watches failed (with a plan already: the user's other programs took more watches
        meanwhile, and half as many are tried); None: new directories reached the limit."""
        began = time.monotonic()
        limit = current_limit()
        if e is not None and _no_instance(e):
            watches = 0
        elif e is not None and self._plan is not None:
            watches = self._plan.watched_dirs // 2
        else:
            watches = budget(limit) if limit is not None else 0
        plan = await asyncio.to_thread(plan_watch, self.root, watches)
        if plan.polled_dirs == 0:  # it should all fit, yet it did not: others hold watches
            plan = await asyncio.to_thread(plan_watch, self.root, plan.directories // 2)
        poller = Poller(self.root, plan.flat, list(plan.polled), self.ignored)
        await asyncio.to_thread(poller.poll)  # what is there now, before the watches start
        self.poll_every = poll_interval(self.rescan_interval, poller.cost)
        self._next_poll = time.monotonic() + self.poll_every
        # Replaced while running, or so slow at the start that the daemon's first scan did not
        # wait for the baseline (START_WAIT): what changed meanwhile is found by a rescan.
        self._gap = self._gap or self.started.is_set() or time.monotonic() - began > START_WAIT
        instances = e is not None and _no_instance(e)
        knob = "fs.inotify.max_user_instances" if instances else "fs.inotify.max_user_watches"
        value = 1024 if instances else suggested_limit(plan.directories)
        sysctl = f"sudo sysctl {knob}={value}"
        self._plan, self._poller = plan, poller
        self.degraded = Degraded(
            plan.watched_dirs, plan.polled_dirs, self.poll_every, limit, sysctl
        )
        if self._told:
            log.info(
                "watching %d of the %d directories of %s, polling the other %d",
                plan.watched_dirs,
                plan.directories,
                self.root,
                plan.polled_dirs,
            )
            return
        self._told = True
        limits = ", ".join(f"{k} = {v}" for k, v in read_limits().items())
        log.error(
            "cannot watch all of %s with inotify: it has %d directories, and the limit is %s "
            "(%s)%s; watching %d of them, polling the other %d every %g s (a change there is "
            "mirrored within that). To watch them all: `%s`, and to keep it: "
            "`echo %s=%d | sudo tee /etc/sysctl.d/90-syncd.conf`; syncd watches them all again "
            "at its next poll once the limit allows it",
            self.root,
            plan.directories,
            "unknown" if limit is None else limit,
            limits or "no limit found in /proc/sys",
            " (no inotify instance left)" if instances else "",
            plan.watched_dirs,
            plan.polled_dirs,
            self.poll_every,
            sysctl,
            knob,
            value,
        )

    def _batch(self, changes: set[tuple[watchfiles.Change, str]]) -> list[tuple[Change, str]]:
        batch = []
        for change, path in changes:
            rel = self.filter.rel(path)
            if rel is not None:
                batch.append((Change(int(change)), rel))
        return batch

    def stop(self) -> None:
        self.stop_event.set()
