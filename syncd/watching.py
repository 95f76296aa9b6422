"""Keep every folder watched, and hand what the watcher reports to the debouncer.

The watch is restarted (and the folder rescanned) when it breaks, when the folder disappears
and comes back, or when it is replaced by another directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from syncd.debounce import Debouncer
from syncd.outbox import Key
from syncd.scanner import FolderUnavailable
from syncd.uploader import FolderCtx
from syncd.watcher import Change, FolderWatcher, UndecodableName

log = logging.getLogger("syncd.daemon")  # (the name its log lines have always carried)

ROOT_CHECK = 2.0  # seconds between checks of a folder that is unavailable


class Watching:
    def __init__(
        self,
        folders: list[FolderCtx],
        debouncer: Debouncer[Key],
        *,
        wake: Callable[[], None],
        rescan: Callable[[int], None],
        stopping: asyncio.Event,
        rescan_interval: float = 0.0,
    ) -> None:
        """``rescan_interval``: the longest the directories inotify cannot watch (its limit)
        wait between polls (``syncd.watchlimit.poll_interval``)."""
        self.folders = folders
        self.watchers = [
            FolderWatcher(
                ctx.root, _ignorer(ctx), rescan_interval=rescan_interval, on_gap=_gap(rescan, i)
            )
            for i, ctx in enumerate(folders)
        ]
        self.debouncer = debouncer
        self._wake = wake
        self._rescan = rescan
        self._stopping = stopping
        self._undecodable: set[str] = set()  # names watchfiles could not report, warned once

    async def watch(self, i: int) -> None:
        """Keep folder ``i`` watched: restart (and rescan) when the watch breaks, the folder
        disappears and comes back, or is replaced by another directory."""
        ctx = self.folders[i]
        w = self.watchers[i]
        unavailable = False
        while not self._stopping.is_set():
            try:
                ctx.scanner.check_root()
                ident = _identity(ctx.root)
            except (FolderUnavailable, OSError) as e:
                if not unavailable:
                    log.error("folder %s: %s; waiting for it to come back", ctx.root, e)
                unavailable = True
                w.state = f"folder unavailable: {e}"
                w.started.set()
                await self._sleep_or_stop(ROOT_CHECK)
                continue
            if unavailable:
                log.info("folder %s is back; rescanning", ctx.root)
                unavailable = False
                self._rescan(i)
            try:
                async for batch in w.events():
                    self._on_events(i, batch)
                    if _identity(ctx.root) != ident:
                        log.warning("folder %s was replaced; watching it again", ctx.root)
                        break
            except UndecodableName as e:  # once per name: the scanner names it too
                if e.detail not in self._undecodable:
                    self._undecodable.add(e.detail)
                    log.warning("%s", e)
            except Exception as e:  # the watcher broke: say so, rescan, start again
                log.error("watching %s failed: %s; rescanning and watching again", ctx.root, e)
            if self._stopping.is_set():
                return
            w.restarts += 1
            w.state = "restarting"
            self._rescan(i)
            w.stop_event = asyncio.Event()
            await self._sleep_or_stop(0.2)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _on_events(self, i: int, batch: list[tuple[Change, str]]) -> None:
        """The watcher's batch: each path's event to the debouncer; the folder itself, or its
        ignore rules, changed: it is rescanned."""
        if not batch:
            return
        now = time.monotonic()
        for change, rel in batch:
            if rel == "":
                # The folder itself was deleted, replaced or re-created: rescan it.
                self._rescan(i)
                if change == Change.deleted:
                    self.watchers[i].stop()  # watch again when it is back
                continue
            if rel == ".syncdignore":
                self._rescan(i)
            self.debouncer.touch((i, rel), now)
        self._wake()


def _gap(rescan: Callable[[int], None], i: int) -> Callable[[], None]:
    """The watches of folder ``i`` were replaced (part of it polled, or all watched again):
    what changed meanwhile is found by a rescan."""
    return lambda: rescan(i)


def _ignorer(ctx: FolderCtx) -> Callable[[str, bool], bool]:
    # Looked up at each call: the rules are reloaded when .syncdignore changes.
    return lambda rel, is_dir: ctx.scanner.ignorer.ignored(rel, is_dir)


def _identity(path: os.PathLike[str] | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


__all__ = ["Watching"]
