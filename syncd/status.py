"""What a running daemon is doing: the status document, metrics, and the ways they are served.

- ``StatusBoard.snapshot()`` builds the status document (schema: docs/status.md, ``version``
  1). The same document is what ``syncd status --json`` prints, what the control socket and
  ``/status.json`` serve, and what ``/metrics`` and the sd_notify ``STATUS=`` line summarise.
- ``METRICS`` holds the counters the document cannot read from the daemon's state (retries,
  errors by kind, upload durations, recent transfers). The engine, uploader and retry policy
  feed it with one-line calls; there is one daemon per process, so one instance.
- The daemon listens on ``<state_dir>/syncd.sock`` (mode 0600): a client sends one line
  (``status``) and reads one JSON document. Where Unix sockets are not available (Windows),
  ``syncd status`` asks the status endpoint (``[status] listen``) instead, or falls back to the
  manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, SupportsIndex

from syncd import __version__
from syncd.errors import (
    AuthError,
    RemoteError,
    SourceChanged,
    SyncdError,
    TransientError,
    Unreachable,
)
from syncd.types import Problem

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.daemon import Daemon
    from syncd.engine import Job
    from syncd.manifest import Manifest
    from syncd.notify import Notifier

log = logging.getLogger("syncd.status")

SCHEMA_VERSION = 1
SOCKET_NAME = "syncd.sock"
HAS_UNIX = hasattr(socket, "AF_UNIX") and hasattr(asyncio, "start_unix_server")
TICK = 1.0  # seconds between looks at the daemon (STATUS= line, "last in sync" times)

#: Upper bounds (seconds) of the upload duration histogram's buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

#: Error kinds, as in ``syncd_errors_total{kind=...}`` and the status document's errors.
ERROR_KINDS = (
    "local",  # a local file could not be read (permissions, vanished, not a regular file)
    "changed",  # a file kept changing while it was sent
    "remote",  # the remote refused this path (4xx other than 401)
    "transient",  # the remote failed after every retry (5xx, timeouts, resets)
    "unreachable",  # the remote could not be reached at all
    "auth",  # the remote refused the credentials
    "folder",  # a folder is missing, unmounted or unreadable
    "held_back",  # deletions held back (a folder that suddenly became empty)
)


class AlreadyRunning(SyncdError):
    """Another daemon owns this state dir (the manifest has one writer)."""


def error_kind(e: BaseException) -> str:
    """The kind of error ``e`` is, for the metrics and the status document."""
    if isinstance(e, AuthError):
        return "auth"
    if isinstance(e, Unreachable):
        return "unreachable"
    if isinstance(e, TransientError):
        return "transient"
    if isinstance(e, RemoteError):
        return "remote"
    if isinstance(e, SourceChanged):
        return "changed"
    return "local"  # SourceError: the file could not be read


# --------------------------------------------------------------------------- metrics


class Histogram:
    """A Prometheus-style histogram: cumulative counts per upper bound, sum and count."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class Metrics:
    """Counters fed by one-line calls from the engine, the uploader and the retry policy.

    Also the daemon's error log: every problem is recorded with its time and kind, and stays
    *current* until the same path is mirrored, or a full rescan of its folder starts over.
    """

    def __init__(self) -> None:
        self.retries = 0
        self.errors_total: Counter[str] = Counter()
        self.upload_seconds = Histogram(DURATION_BUCKETS)
        self.last_transfer: float | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.errors: deque[dict[str, Any]] = deque(maxlen=100)
        self.failing: dict[str, dict[str, Any]] = {}
        self._kinds: dict[str, str] = {}

    # -- calls from the pipeline ------------------------------------------------------------
    def retry(self) -> None:
        """One more try of a transient failure (retry.py)."""
        self.retries += 1

    def error(self, kind: str, name: str) -> None:
        """A failure of ``kind`` for ``name`` ("remote_path/rel", or a folder's remote_path).

        Counted here; its reason is recorded when the problem reaches the daemon's report.
        """
        self.errors_total[kind] += 1
        if len(self._kinds) > 1000:  # one-shot passes never hand their problems to a board
            self._kinds.clear()
        self._kinds[name] = kind

    def done(self, job: Job, outcome: str) -> None:
        """``job`` succeeded: ``outcome`` is uploaded, refreshed, adopted, deleted or moved."""
        ctx, op = job.ctx, job.op
        name = f"{ctx.remote_path}/{op.rel}"
        self._resolve(name)
        if op.dest is not None:
            self._resolve(f"{ctx.remote_path}/{op.dest}")
        if outcome in ("refreshed", "adopted"):
            return  # nothing was transferred
        now = time.time()
        seconds = max(0.0, time.monotonic() - job.started) if job.started else 0.0
        if outcome == "uploaded":
            self.upload_seconds.observe(seconds)
        self.last_transfer = now
        self.recent.appendleft(
            {
                "time": now,
                "folder": ctx.remote_path,
                "path": op.rel,
                "op": outcome,
                "to": op.dest,
                "bytes": op.local.size if op.local is not None and outcome == "uploaded" else 0,
                "seconds": round(seconds, 3),
            }
        )

    def scanned(self, folder: str) -> None:
        """A full scan of ``folder`` (its remote_path) starts: what still fails is found again."""
        prefix = folder + "/"
        for name in [n for n in self.failing if n == folder or n.startswith(prefix)]:
            del self.failing[name]

    def problem(self, p: Problem) -> None:
        """A problem reached the daemon's report (see ``FailedLog``)."""
        kind = self._kinds.pop(p.path, None)
        if kind is None:  # found by a scan, not by a transfer: counted here
            kind = "local"
            self.errors_total[kind] += 1
        entry = {"time": time.time(), "name": p.path, "kind": kind, "reason": p.reason}
        self.errors.append(entry)
        self.failing[p.path] = entry
        if len(self.failing) > 10_000:
            del self.failing[next(iter(self.failing))]

    def _resolve(self, name: str) -> None:
        self.failing.pop(name, None)
        if self.failing:
            prefix = name + "/"  # a directory deleted or moved as a whole
            for n in [n for n in self.failing if n.startswith(prefix)]:
                del self.failing[n]


METRICS = Metrics()


class FailedLog(list[Problem]):
    """``report.failed`` of a long-running daemon: hands every problem to ``METRICS`` as it
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


# --------------------------------------------------------------------------- the board


class StatusBoard:
    """Builds the status document from the daemon's live state, and keeps the service manager
    (sd_notify) and the status endpoint fed while the daemon runs (``serving()``)."""

    def __init__(self, daemon: Daemon, metrics: Metrics | None = None) -> None:
        self.daemon = daemon
        self.metrics = metrics or METRICS
        daemon.report.failed = FailedLog(self.metrics.problem)
        self.last_sync: dict[int, float] = {}  # folder index -> last time seen in sync
        self.last_all_sync: float | None = None
        self.status_url: str | None = None
        self.notifier: Notifier | None = None
        self._stopping = False

    # -- the document -----------------------------------------------------------------------
    def _folder_of(self, name: str) -> tuple[str | None, str]:
        best: str | None = None
        for ctx in self.daemon.folders:
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
        by_folder = {ctx.remote_path: ctx for ctx in self.daemon.folders}
        for name in list(self.metrics.failing)[:1000]:
            folder, rel = self._folder_of(name)
            ctx = by_folder.get(folder) if folder is not None else None
            if ctx is None or not rel:
                continue
            row = self.daemon.engine.manifest.rows(ctx.scope).get(rel)
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

    def snapshot(self, *, light: bool = False) -> dict[str, Any]:
        """The status document (docs/status.md). ``light`` skips per-file sums (for the tick)."""
        d = self.daemon
        eng = d.engine
        now = time.time()
        ready = d.ready.is_set()
        self._prune()
        inflight_keys = {(scope, rel) for scope, rel in eng.inflight}
        waiting = {*d.pending_keys(), *d.outbox}
        current = list(self.metrics.failing.values())
        folders: list[dict[str, Any]] = []
        for i, ctx in enumerate(d.folders):
            pending = sorted(
                rel for (fi, rel) in waiting if fi == i and (ctx.scope, rel) not in inflight_keys
            )
            inflight = []
            for (scope, rel), job in list(eng.inflight.items()):
                if scope != ctx.scope:
                    continue
                secs = max(1e-6, time.monotonic() - job.started)
                inflight.append(
                    {
                        "path": rel,
                        "op": job.op.kind.value,
                        "bytes_done": job.sent,
                        "bytes_total": job.op.local.size if job.op.local else 0,
                        "rate": job.sent / secs,
                        "seconds": round(secs, 3),
                    }
                )
            # The light view (the STATUS= line, every second) counts the rows without loading
            # them: a folder found in sync at start-up may never need them.
            rows = None if light else eng.manifest.rows(ctx.scope)
            w = d.watchers[i] if i < len(d.watchers) else None
            watcher = w.state if w else "stopped"
            errors = sum(1 for e in current if self._folder_of(e["name"])[0] == ctx.remote_path)
            unavailable = watcher.startswith("folder unavailable")
            in_sync = ready and not pending and not inflight and not errors and not unavailable
            if in_sync and d.remote_down_since is None and eng.fatal is None:
                self.last_sync[i] = now
            if errors or unavailable:
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
                    "files": eng.manifest.count(ctx.scope) if rows is None else len(rows),
                    "bytes": None if rows is None else sum(r.size for r in rows.values()),
                    "last_synced_file": None
                    if rows is None
                    else max((r.synced_at for r in rows.values()), default=None),
                    "pending": pending[:100],
                    "pending_count": len(pending),
                    "in_flight": inflight,
                    "watcher": watcher,
                    "watcher_restarts": w.restarts if w else 0,
                    "errors": errors,
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
        if state == "starting" and (current or eng.fatal is not None):
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
                "url": d.config.remote.url,
                "reachable": reachable,
                "unreachable_since": d.remote_down_since,
                "queued": len(d.outbox),
                "last_transfer": m.last_transfer,
                "error": str(eng.fatal) if eng.fatal else None,
            },
            "folders": folders,
            "totals": {
                "files": sum(f["files"] for f in folders),
                "bytes": None if light else sum(f["bytes"] for f in folders),
                "pending": sum(f["pending_count"] for f in folders),
                "in_flight": sum(len(f["in_flight"]) for f in folders),
                "uploaded": r.uploaded,
                "deleted": r.deleted,
                "moved": r.moved,
                "bytes_sent": r.bytes_sent + eng.bytes_sent,
                "errors": len(current),
                "retries": m.retries,
            },
            "recent": list(m.recent)[:20],
            "errors": [self._error_entry(e) for e in reversed(m.errors)][:20],
        }

    # -- the daemon's life ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the daemon runs: sd_notify (STATUS=, WATCHDOG=1) and the status endpoint."""
        from syncd.notify import Notifier

        self.notifier = Notifier()
        tasks = [asyncio.create_task(self._tick(), name="syncd-status-tick")]
        if self.notifier.watchdog_interval is not None:
            tasks.append(asyncio.create_task(self.notifier.watchdog_loop(), name="syncd-watchdog"))
        site = None
        listen = self.daemon.config.status.listen
        try:
            if listen:
                from syncd.web import StatusSite

                site = StatusSite(self, listen)
                await site.start()
            yield
        finally:
            self.stopping()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if site is not None:
                await site.stop()
            self.notifier.close()

    def ready(self) -> None:
        """The first reconcile is done: tell the service manager (READY=1)."""
        if self.notifier is not None:
            self.notifier.ready(summary(self.snapshot(light=True)))

    def stopping(self) -> None:
        """A signal (or a fatal error) is stopping the daemon: STOPPING=1, once."""
        if self._stopping:
            return
        self._stopping = True
        if self.notifier is not None:
            self.notifier.stopping()

    async def _tick(self) -> None:
        last = ""
        while True:
            if not self._stopping:
                try:
                    line = summary(self.snapshot(light=True))
                except Exception:  # a bug here must not stop the daemon
                    log.exception("cannot build the status summary")
                    line = last
                if line != last and self.notifier is not None:
                    self.notifier.status(line)
                    last = line
            await asyncio.sleep(TICK)


def manifest_snapshot(config: Config, manifest: Manifest) -> dict[str, Any]:
    """The status document when no daemon runs: what the manifest knows (``source`` is
    ``"manifest"``; what only a daemon can know is null)."""
    from syncd.manifest import scope_of

    queued: dict[str, list[str]] = {}
    for scope, rel, _since in manifest.outbox():
        queued.setdefault(scope, []).append(rel)
    folders: list[dict[str, Any]] = []
    for f in config.folders:
        scope = scope_of(config, f)
        t = manifest.totals(scope)
        pending = sorted(queued.get(scope, []))
        folders.append(
            {
                "path": str(f.path),
                "remote_path": f.remote_path,
                "state": "stopped",
                "in_sync": None,
                "last_sync": None,
                "files": t.files,
                "bytes": t.bytes,
                "last_synced_file": t.last_synced,
                "pending": pending[:100],
                "pending_count": len(pending),
                "in_flight": [],
                "watcher": "stopped",
                "watcher_restarts": 0,
                "errors": None,
            }
        )
    return {
        "version": SCHEMA_VERSION,
        "source": "manifest",
        "time": time.time(),
        "state": "stopped",
        "in_sync": None,
        "last_sync": None,
        "daemon": None,
        "remote": {
            "url": config.remote.url,
            "reachable": None,
            "unreachable_since": None,
            "queued": sum(len(v) for v in queued.values()),
            "last_transfer": None,
            "error": None,
        },
        "folders": folders,
        "totals": {
            "files": sum(f["files"] for f in folders),
            "bytes": sum(f["bytes"] for f in folders),
            "pending": sum(f["pending_count"] for f in folders),
            "in_flight": 0,
            "uploaded": None,
            "deleted": None,
            "moved": None,
            "bytes_sent": None,
            "errors": None,
            "retries": None,
        },
        "recent": [],
        "errors": [],
    }


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(doc: dict[str, Any]) -> str:
    """One line for ``STATUS=`` (``systemctl status``): state, figures, and why if not in sync."""
    t = doc["totals"]
    folders = _count(len(doc["folders"]), "folder")
    files = _count(t["files"], "file")
    busy = f"{t['pending']} pending, {t['in_flight']} in flight"
    remote = doc["remote"]
    if remote["error"]:
        return f"error: {remote['error']}"
    if not remote["reachable"]:
        since = time.strftime("%H:%M:%S", time.localtime(remote["unreachable_since"] or 0))
        return f"remote unreachable since {since}; {_count(remote['queued'], 'change')} queued"
    if doc["state"] == "starting":
        return f"first scan and upload: {busy}; {files} mirrored"
    if doc["state"] == "in_sync":
        return f"in sync: {folders}, {files}; {t['uploaded']} sent since start"
    errors = [e for e in doc["errors"] if e["current"]]
    if errors:
        e = errors[0]
        where = "/".join(p for p in (e["folder"], e["path"]) if p)
        return f"{_count(t['errors'], 'error')} (latest: {where}: {e['reason']}); {busy}"
    bad = [f for f in doc["folders"] if f["state"] == "error"]
    if bad:
        return f"folder {bad[0]['path']}: {bad[0]['watcher']}; {busy}"
    return f"syncing: {busy}; {files} mirrored"


# --------------------------------------------------------------------------- control socket


def _short(path: Path) -> tuple[str, int | None]:
    """A path to bind/connect that fits in sun_path (108 bytes): via /proc/self/fd if needed."""
    full = str(path)
    if len(full.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
        return full, None
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"/proc/self/fd/{fd}/{path.name}", fd


class ControlServer:
    """Serves the status document on a Unix socket in the state dir (async context manager).

    Without Unix sockets (Windows) it does nothing: ``syncd status`` then asks the status
    endpoint, if one is configured, or reads the manifest.
    """

    def __init__(self, board: StatusBoard, state_dir: Path) -> None:
        self.board = board
        self.path = state_dir / SOCKET_NAME
        self._server: asyncio.AbstractServer | None = None
        self._fd: int | None = None

    async def __aenter__(self) -> ControlServer:
        if not HAS_UNIX:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            if await query(self.path.parent, wait=2) is not None:
                raise AlreadyRunning(f"another `syncd run` is using {self.path.parent}")
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        where, self._fd = _short(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, where)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.strip() == b"status":
                writer.write(json.dumps(self.board.snapshot()).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def query(state_dir: Path, wait: float = 5) -> dict[str, Any] | None:
    """Ask a running daemon for its status over the control socket; None if none answers."""
    if not HAS_UNIX:
        return None
    path = state_dir / SOCKET_NAME
    if not path.exists():
        return None
    where, fd = _short(path)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(where), wait)
        writer.write(b"status\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), wait)
        writer.close()
        doc: dict[str, Any] = json.loads(data)
        return doc
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if fd is not None:
            os.close(fd)


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8384"`` -> ("127.0.0.1", 8384); ``"[::1]:8384"`` -> ("::1", 8384);
    ``":8384"`` -> ("127.0.0.1", 8384): loopback unless an address is given."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def query_http(listen: str, wait: float = 5) -> dict[str, Any] | None:
    """Ask a running daemon's status endpoint for ``/status.json``; None if none answers.

    A plain HTTP/1.0 request over asyncio streams, so that ``syncd status`` needs no HTTP
    client library; used where there is no control socket (Windows).
    """
    host, port = split_listen(listen)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
        hostname = f"[{host}]" if ":" in host else host
        writer.write(
            f"GET /status.json HTTP/1.0\r\nHost: {hostname}:{port}\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), wait)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or head.split()[1] != b"200":
            return None
        doc: dict[str, Any] = json.loads(body)
        return doc
    except (OSError, TimeoutError, ValueError, IndexError):
        return None


__all__ = [
    "METRICS",
    "SCHEMA_VERSION",
    "AlreadyRunning",
    "ControlServer",
    "FailedLog",
    "Metrics",
    "StatusBoard",
    "error_kind",
    "manifest_snapshot",
    "query",
    "query_http",
    "summary",
]
