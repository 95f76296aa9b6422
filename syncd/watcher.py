"""watchfiles.awatch on a folder, with syncd's own ignore rules instead of watchfiles' defaults.

Yields ``(Change, rel)`` pairs (syncd's own ``Change``: nothing above this module imports
watchfiles); ``rel`` is '' for the folder itself. Falls back to polling, once and loudly, when
the OS cannot watch (inotify watch limit reached, a filesystem without events).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import watchfiles

log = logging.getLogger("syncd.watcher")

# Batching inside watchfiles: wait STEP ms after an event for more, at most DEBOUNCE ms in all.
# Kept short: syncd settles each path itself (see debounce.py).
STEP_MS = 10
DEBOUNCE_MS = 100

INOTIFY_HINT = (
    "the inotify watch limit is reached; raise it with "
    "`sudo sysctl fs.inotify.max_user_watches=524288` (and add it to /etc/sysctl.d/ to keep it)"
)


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


class FolderWatcher:
    """Watches one folder. ``started`` is set once the OS watches are in place."""

    def __init__(
        self, root: Path, ignored: Callable[[str, bool], bool], *, force_polling: bool = False
    ) -> None:
        self.root = root
        self.filter = WatchFilter(root, ignored)
        self.force_polling = force_polling
        self.stop_event = asyncio.Event()
        self.started = asyncio.Event()
        self.state = "starting"
        self.restarts = 0

    async def events(self) -> AsyncIterator[list[tuple[Change, str]]]:
        """Batches of (change, rel) until ``stop()``. Raises when the folder cannot be watched."""
        while not self.stop_event.is_set():
            # yield_on_timeout: an empty batch every rust_timeout, after which the daemon
            # checks that the folder was not replaced.
            watch = watchfiles.awatch(
                self.root,
                watch_filter=self.filter,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self.stop_event,
                force_polling=self.force_polling,
                poll_delay_ms=200,
                yield_on_timeout=True,
                rust_timeout=1000,
            )
            try:
                # awatch adds its OS watches (RustNotify) synchronously, before its first
                # await. Its first step runs as a task, scheduled before the sleep(0) below
                # resumes us (the event loop runs callbacks in order): after it, the watches
                # are in place -- or adding them failed -- and "started" is true without
                # waiting for a first batch (which takes up to ``rust_timeout``).
                first = asyncio.ensure_future(anext(watch))
                try:
                    await asyncio.sleep(0)
                except BaseException:
                    first.cancel()
                    raise
                if not first.done() or first.exception() is None:
                    self.state = "polling" if self.force_polling else "watching"
                    self.started.set()
                try:
                    changes = await first
                except StopAsyncIteration:
                    return
                yield self._batch(changes)
                async for changes in watch:
                    yield self._batch(changes)
                return
            except Exception as e:
                if (detail := _undecodable(e)) is not None:
                    raise UndecodableName(self.root, detail) from None
                if self.force_polling or not _watch_limit(e):
                    raise
                log.error("cannot watch %s: %s; %s. Polling instead.", self.root, e, INOTIFY_HINT)
                self.force_polling = True
                self.restarts += 1

    def _batch(self, changes: set[tuple[watchfiles.Change, str]]) -> list[tuple[Change, str]]:
        batch = []
        for change, path in changes:
            rel = self.filter.rel(path)
            if rel is not None:
                batch.append((Change(int(change)), rel))
        return batch

    def stop(self) -> None:
        self.stop_event.set()
