"""The status document (docs/status.md, ``version`` 1): what a running daemon is doing.

``StatusBoard.snapshot()`` builds it from the daemon's live state, read through ``LiveView``
(below): the board never imports the daemon or the engine, it names what it reads. The same
document is what ``syncd status --json`` prints, what the control socket and ``/status.json``
serve, and what ``/metrics`` and the sd_notify ``STATUS=`` line summarise. When no daemon
runs, ``manifest_snapshot()`` (status/document.py) builds it from what the manifest knows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, SupportsIndex

from syncd import __version__
from syncd.config import Config
from syncd.manifest import Manifest
from syncd.remotes.kinds import versions_line
from syncd.report import Report
from syncd.status.document import SCHEMA_VERSION, held_by_scope, public_url, totals
from syncd.status.metrics import Metrics
from syncd.types import Op, Problem

log = logging.getLogger("syncd.status")

HELD_MAX_AGE = 10.0  # seconds the light view (STATUS= line) may show old held deletions


# --------------------------------------------------------------------------- what it reads


class FolderView(Protocol):
    """One mirrored folder (the uploader's ``FolderCtx``)."""

    @property
    def root(self) -> Path: ...
    @property
    def remote_path(self) -> str: ...
    @property
    def scope(self) -> str: ...


class TransferView(Protocol):
    """One op a worker is running (the engine's ``Job``)."""

    @property
    def op(self) -> Op: ...
    @property
    def sent(self) -> int: ...  # bytes sent so far
    @property
    def started(self) -> float: ...  # time.monotonic()


class DegradedView(Protocol):
    """A folder watched in part, the rest polled (the inotify limit: ``watcher.Degraded``)."""

    def doc(self) -> dict[str, object]: ...  # the folder's ``watch_degraded`` (docs/status.md)


class WatcherView(Protocol):
    """One folder's watch (``FolderWatcher``)."""

    @property
    def state(self) -> str: ...  # "watching", "degraded", "folder unavailable: ...", ...
    @property
    def restarts(self) -> int: ...
    @property
    def degraded(self) -> DegradedView | None: ...  # None: every directory is watched


class EngineView(Protocol):
    """What the board reads of the daemon's engine."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def manifest(self) -> Manifest: ...
    @property
    def inflight(self) -> Mapping[tuple[str, str], TransferView]: ...  # by (scope, rel)
    @property
    def fatal(self) -> BaseException | None: ...  # why it cannot go on (credentials refused)
    @property
    def bytes_sent(self) -> int: ...


class LiveView(Protocol):
    """A running daemon as status sees it (``syncd.daemon.Daemon`` is one). Read-only, but
    for ``sync_now``: the control socket's ``sync`` (``syncd sync`` beside a daemon)."""

    @property
    def config(self) -> Config: ...
    @property
    def engine(self) -> EngineView: ...
    @property
    def report(self) -> Report: ...  # totals since start (the board keeps ``failed`` bounded)
    @property
    def folders(self) -> Sequence[FolderView]: ...
    @property
    def watchers(self) -> Sequence[WatcherView]: ...  # one per folder, same order
    @property
    def ready(self) -> asyncio.Event: ...  # set once the first reconcile is done
    @property
    def started_at(self) -> float: ...  # time.time()
    @property
    def remote_down_since(self) -> float | None: ...
    @property
    def retention(self) -> str | None: ...  # what the remote said it keeps (None: not asked)
    @property
    def outbox(self) -> Collection[tuple[int, str]]: ...  # (folder index, rel) kept offline

    def pending_keys(self) -> Iterable[tuple[int, str]]: ...  # settling, deferred, queued
    async def sync_now(self, *, force_delete: bool = False) -> Report: ...


# --------------------------------------------------------------------------- the board


class FailedLog(list[Problem]):
    """``report.failed`` of a long-running daemon: hands every problem to the metrics as it
    is added (with the time it happened) and keeps itself bounded."""

    def __init__(self, sink: Callable[[Problem], None]) -> None:
        super().__init__()
        self._sink = sink

    def append(self, p: Problem) -> None:
        self._sink(p)
        super().append(p)
        if len(self) > 200:
            del self[:-100]

    def extend(self, ps: Iterable[Problem]) -> None:
        for p in list(ps):
            self.append(p)

    def insert(self, index: SupportsIndex, p: Problem) -> None:
        self.append(p)

    def __iadd__(self, ps: Iterable[Problem]) -> Self:  # type: ignore[override,misc]
        self.extend(ps)
        return self


class StatusBoard:
    """Builds the status document from the daemon's live state. The status page, once it is
    bound, sets ``status_url``."""

    def __init__(self, live: LiveView) -> None:
        self.live = live
        self.metrics = live.engine.metrics
        live.report.failed = FailedLog(self.metrics.problem)
        self.last_sync: dict[int, float] = {}  # folder index -> last time seen in sync
        self.last_all_sync: float | None = None
        self.status_url: str | None = None
        self._held: dict[str, dict[str, Any]] = {}
        self._held_at: float | None = None

    def held(self, *, cached: bool = False) -> dict[str, dict[str, Any]]:
        """Deletions the guard holds back, by folder scope (the manifest's ``held`` table).

        ``cached``: the answer of up to ``HELD_MAX_AGE`` seconds ago, for the light view
        (every second): ``Manifest.held()`` writes the staged changes first, on this thread.
        """
        now = time.monotonic()
        if not cached or self._held_at is None or now - self._held_at > HELD_MAX_AGE:
            try:
                self._held = held_by_scope(self.live.engine.manifest)
                self._held_at = now
            except Exception:  # a bug or a busy database here must not stop the daemon
                log.exception("cannot read the held deletions")
                self._held_at = now  # not again every second
        return self._held

    def _folder_of(self, name: str) -> tuple[str | None, str]:
        best: str | None = None
        for ctx in self.live.folders:
            rp = ctx.remote_path
            if (name == rp or name.startswith(rp + "/")) and (best is None or len(rp) > len(best)):
                best = rp
        if best is None:
            return None, name
        return best, name[len(best) + 1 :]

    def _error_entry(self, e: dict[str, Any]) -> dict[str, Any]:
        folder, path = self._folder_of(e["name"])
        return {
            "time": e["time"],
            "folder": folder,
            "path": path,
            "kind": e["kind"],
            "reason": e["reason"],
            "current": self.metrics.failing.get(e["name"]) is e,
        }

    def _prune(self) -> None:
        """Current errors of paths that are mirrored now after all (gone locally with no row
        left, or matching their manifest row) are resolved: they are not why a folder is out
        of sync any more."""
        by_folder = {ctx.remote_path: ctx for ctx in self.live.folders}
        for name in list(self.metrics.failing)[:1000]:
            folder, rel = self._folder_of(name)
            ctx = by_folder.get(folder) if folder is not None else None
            if ctx is None or not rel:
                continue
            row = self.live.engine.manifest.rows(ctx.scope).get(rel)
            try:
                st = os.lstat(ctx.root / rel)
            except OSError:
                st = None
            if (st is None and row is None) or (
                st is not None
                and row is not None
                and (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns)
            ):
                del self.metrics.failing[name]

    def _in_flight(self, scope: str) -> list[dict[str, Any]]:
        out = []
        for (s, rel), job in list(self.live.engine.inflight.items()):
            if s != scope:
                continue
            secs = max(1e-6, time.monotonic() - job.started)
            out.append(
                {
                    "path": rel,
                    "op": job.op.kind.value,
                    "bytes_done": job.sent,
                    "bytes_total": job.op.local.size if job.op.local else 0,
                    "rate": job.sent / secs,
                    "seconds": round(secs, 3),
                }
            )
        return out

    def snapshot(self, *, light: bool = False) -> dict[str, Any]:
        """The status document (docs/status.md). ``light`` skips per-file sums (for the tick)."""
        d = self.live
        eng = d.engine
        now = time.time()
        ready = d.ready.is_set()
        self._prune()
        inflight_keys = set(eng.inflight)
        waiting = {*d.pending_keys(), *d.outbox}
        held = self.held(cached=light)
        # "Deletions held back" is current while the manifest holds them: released (by
        # `syncd sync --force-delete`, or a folder that needs them no more), it is resolved.
        # (Only from a fresh read: a cached one may predate a hold made since.)
        scopes = {ctx.remote_path: ctx.scope for ctx in d.folders}
        for name, e in list(self.metrics.failing.items()) if not light else ():
            if e["kind"] == "held_back" and name in scopes and scopes[name] not in held:
                del self.metrics.failing[name]
        current = list(self.metrics.failing.values())
        folders: list[dict[str, Any]] = []
        for i, ctx in enumerate(d.folders):
            pending = sorted(
                rel for (fi, rel) in waiting if fi == i and (ctx.scope, rel) not in inflight_keys
            )
            inflight = self._in_flight(ctx.scope)
            # The light view (the STATUS= line, every second) only counts the rows; the full
            # one sums them in SQLite (committed rows: a second's worth may be missing).
            sums = None if light else eng.manifest.totals(ctx.scope)
            w = d.watchers[i] if i < len(d.watchers) else None
            watcher = w.state if w else "stopped"
            errors = sum(1 for e in current if self._folder_of(e["name"])[0] == ctx.remote_path)
            unavailable = watcher.startswith("folder unavailable")
            hold = held.get(ctx.scope)
            in_sync = not (pending or inflight or errors or unavailable or hold) and ready
            if in_sync and d.remote_down_since is None and eng.fatal is None:
                self.last_sync[i] = now
            if errors or unavailable or hold:
                state = "error"
            elif in_sync:
                state = "in_sync"
            else:
                state = "syncing" if ready else "starting"
            folders.append(
                {
                    "path": str(ctx.root),
                    "remote_path": ctx.remote_path,
                    "state": state,
                    "in_sync": in_sync,
                    "last_sync": self.last_sync.get(i),
                    "files": eng.manifest.count(ctx.scope),
                    "bytes": None if sums is None else sums.bytes,
                    "last_synced_file": None if sums is None else sums.last_synced,
                    "pending": pending[:100],
                    "pending_count": len(pending),
                    "in_flight": inflight,
                    "watcher": watcher,
                    "watcher_restarts": w.restarts if w else 0,
                    "watch_degraded": w.degraded.doc() if w and w.degraded else None,
                    "errors": errors,
                    "unavailable": watcher.split(": ", 1)[-1] if unavailable else None,
                    "held_deletions": hold,
                }
            )
        reachable = d.remote_down_since is None and eng.fatal is None
        all_sync = ready and reachable and all(f["in_sync"] for f in folders)
        if all_sync:
            self.last_all_sync = now
        if not ready:
            state = "starting"
        elif all_sync:
            state = "in_sync"
        elif current or not reachable or any(f["state"] == "error" for f in folders):
            state = "error"
        else:
            state = "syncing"
        if state == "starting" and (
            current or eng.fatal is not None or any(f["held_deletions"] for f in folders)
        ):
            state = "error"
        r = d.report
        m = self.metrics
        return {
            "version": SCHEMA_VERSION,
            "source": "daemon",
            "time": now,
            "state": state,
            "in_sync": all_sync,
            "last_sync": self.last_all_sync,
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "started": d.started_at,
                "ready": ready,
                "status_url": self.status_url,
            },
            "remote": {
                "url": public_url(d.config.remote.url),
                "reachable": reachable,
                "unreachable_since": d.remote_down_since,
                "queued": len(d.outbox),
                "last_transfer": m.last_transfer,
                "error": str(eng.fatal) if eng.fatal else None,
                "versions": d.retention or versions_line(d.config.remote),
            },
            "folders": folders,
            "totals": totals(
                folders,
                light=light,
                uploaded=r.uploaded,
                deleted=r.deleted,
                moved=r.moved,
                bytes_sent=r.bytes_sent + eng.bytes_sent,
                errors=len(current),
                retries=m.retries,
            ),
            "recent": list(m.recent)[:20],
            "errors": [self._error_entry(e) for e in reversed(m.errors)][:20],
        }


__all__ = [
    "DegradedView",
    "EngineView",
    "FailedLog",
    "FolderView",
    "LiveView",
    "StatusBoard",
    "TransferView",
    "WatcherView",
]
