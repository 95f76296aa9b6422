"""What a running daemon is doing: the status document, metrics, and the ways they are served.

- ``StatusBoard.snapshot()`` builds the status document (schema: docs/status.md, ``version``
  1). The same document is what ``syncd status --json`` prints, what the control socket and
  ``/status.json`` serve, and what ``/metrics`` and the sd_notify ``STATUS=`` line summarise.
- ``Metrics`` (status/metrics.py) holds the counters the document cannot read from the
  daemon's state (retries, errors by kind, upload durations, recent transfers). The engine owns
  one and hands it to the retry policy; the board reads the daemon's engine's.
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
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, SupportsIndex

from syncd import __version__
from syncd.errors import SyncdError
from syncd.statelock import AlreadyRunning
from syncd.types import Problem

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.daemon import Daemon
    from syncd.manifest import Manifest
    from syncd.notify import Notifier
    from syncd.report import Report

log = logging.getLogger("syncd.status")

SCHEMA_VERSION = 1
SOCKET_NAME = "syncd.sock"
HAS_UNIX = hasattr(socket, "AF_UNIX") and hasattr(asyncio, "start_unix_server")
TICK = 1.0  # seconds between looks at the daemon (STATUS= line, "last in sync" times)
HELD_MAX_AGE = 10.0  # seconds the light view (STATUS= line) may show old held deletions


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


# --------------------------------------------------------------------------- the board


class StatusBoard:
    """Builds the status document from the daemon's live state, and keeps the service manager
    (sd_notify) and the status endpoint fed while the daemon runs (``serving()``)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.metrics = daemon.engine.metrics
        daemon.report.failed = FailedLog(self.metrics.problem)
        self.last_sync: dict[int, float] = {}  # folder index -> last time seen in sync
        self.last_all_sync: float | None = None
        self.status_url: str | None = None
        self.notifier: Notifier | None = None
        self._stopping = False
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
                self._held = held_by_scope(self.daemon.engine.manifest)
                self._held_at = now
            except Exception:  # a bug or a busy database here must not stop the daemon
                log.exception("cannot read the held deletions")
                self._held_at = now  # not again every second
        return self._held

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
                "held_deletions": sum((f["held_deletions"] or {}).get("count", 0) for f in folders),
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


FORCE_DELETE = "syncd sync --force-delete"  # what releases held deletions


def held_by_scope(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """``Manifest.held()`` as the status document's ``held_deletions`` entries, by scope."""
    return {
        scope: {"count": count, "reason": reason, "since": since}
        for scope, count, reason, since in manifest.held()
        if count
    }


def folder_problem(path: Path) -> str | None:
    """Why a configured folder cannot be mirrored now (missing, not a directory,
    unreadable), or None. For the manifest's view: a daemon has its watcher's word."""
    try:
        if not path.is_dir():
            return "not a directory" if path.exists() else "folder does not exist"
        os.scandir(path).close()
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    return None


def manifest_snapshot(config: Config, manifest: Manifest) -> dict[str, Any]:
    """The status document when no daemon runs: what the manifest knows (``source`` is
    ``"manifest"``; what only a daemon can know is null). A folder that is missing, or whose
    deletions are held back, has the state ``"error"``; the others ``"stopped"``."""
    from syncd.manifest import scope_of

    queued: dict[str, list[str]] = {}
    for scope, rel, *_ in manifest.outbox():
        queued.setdefault(scope, []).append(rel)
    held = held_by_scope(manifest)
    folders: list[dict[str, Any]] = []
    for f in config.folders:
        scope = scope_of(config, f)
        t = manifest.totals(scope)
        pending = sorted(queued.get(scope, []))
        problem = folder_problem(f.path)
        hold = held.get(scope)
        folders.append(
            {
                "path": str(f.path),
                "remote_path": f.remote_path,
                "state": "error" if problem or hold else "stopped",
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
                "unavailable": problem,
                "held_deletions": hold,
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
            "url": public_url(config.remote.url),
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
            "held_deletions": sum((f["held_deletions"] or {}).get("count", 0) for f in folders),
        },
        "recent": [],
        "errors": [],
    }


def public_url(url: str) -> str:
    """``url`` as it may be shown: without userinfo (``user:password@``, a token as the
    user name). Config refuses credentials in URLs; this is defence in depth."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
    held = [f for f in doc["folders"] if f.get("held_deletions")]
    if held:
        n = sum(f["held_deletions"]["count"] for f in held)
        where = ", ".join(f["remote_path"] for f in held)
        return f"{_count(n, 'deletion')} held back ({where}; {FORCE_DELETE} releases); {busy}"
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
        self._handlers: set[asyncio.Task[Any]] = set()

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
        # A `sync` request may be waiting for a pass the stopping daemon will not finish: its
        # client sees the socket close without an answer.
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: ``status`` (the status document), ``sync`` or
        ``sync force`` (reconcile every folder now, ``--force-delete`` for the latter; the
        answer, when the pass is done, is ``report_doc``)."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).split()
            if line == [b"status"]:
                writer.write(_scrubbed(self.board.snapshot()) + b"\n")
                await writer.drain()
            elif line in ([b"sync"], [b"sync", b"force"]):
                answer = await self._sync(force_delete=len(line) == 2)
                writer.write(_scrubbed(answer) + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _sync(self, *, force_delete: bool) -> dict[str, Any]:
        """``syncd sync`` while this daemon runs: reconcile now, in the daemon, and answer
        with what the pass did (the same summary ``syncd sync`` prints)."""
        d = self.board.daemon
        log.info("`syncd sync%s` asked for a pass", " --force-delete" if force_delete else "")
        try:
            await d.ready.wait()  # the start-up reconcile first: then one more pass, now
            report = await d.sync_now(force_delete=force_delete)
        except SyncdError as e:
            return {"version": 1, "pid": os.getpid(), "error": str(e)}
        return report_doc(report)


def _scrubbed(doc: dict[str, Any]) -> bytes:
    """A document for the control socket, without any secret the log knows (it has none;
    defence in depth) and in ASCII JSON."""
    from syncd.logs import REDACTOR

    return REDACTOR.scrub(json.dumps(doc)).encode()


def report_doc(report: Report) -> dict[str, Any]:
    """What a pass did (``syncd.report.Report``), as JSON: the answer to ``sync``.
    ``outcome`` is the one line of a pass that was stopped (``Report.outcome``), or null."""
    return {
        "version": 1,
        "pid": os.getpid(),
        "summary": report.summary(),
        "outcome": report.outcome(),
        "not_sent": report.not_sent,
        "failed": [{"path": p.path, "reason": p.reason} for p in report.failed],
        "uploaded": report.uploaded,
        "deleted": report.deleted,
        "moved": report.moved,
        "unchanged": report.unchanged + report.refreshed + report.adopted,
        "bytes_sent": report.bytes_sent,
        "seconds": report.seconds,
    }


SYNC_WAIT = 3600.0  # seconds `syncd sync` waits for the daemon's pass (it can take a while)


async def _exchange(state_dir: Path, request: bytes, connect: float, wait: float) -> bytes | None:
    """Send one request line on the control socket and read the whole answer. None when no
    daemon answers (no socket, or it cannot be connected to); after connecting, OSError and
    TimeoutError (no answer within ``wait``) reach the caller."""
    if not HAS_UNIX:
        return None
    path = state_dir / SOCKET_NAME
    if not path.exists():
        return None
    where, fd = _short(path)
    try:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(where), connect)
        except (OSError, TimeoutError):
            return None
        try:
            writer.write(request)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), wait)
        finally:
            writer.close()
    finally:
        if fd is not None:
            os.close(fd)


async def ask_sync(
    state_dir: Path, *, force_delete: bool = False, wait: float = SYNC_WAIT, connect: float = 5
) -> dict[str, Any] | None:
    """Ask a running daemon to reconcile every folder now; its ``report_doc`` once done.

    None when no daemon answers on the control socket (none runs, or no Unix sockets).
    Raises SyncdError when one answered but closed the connection without a result (it is
    stopping) or did not finish within ``wait`` seconds.
    """
    request = b"sync force\n" if force_delete else b"sync\n"
    try:
        data = await _exchange(state_dir, request, connect, wait)
    except TimeoutError:
        raise SyncdError(
            f"the daemon did not finish the pass within {wait:.0f} s; it goes on with it"
        ) from None
    except OSError as e:
        raise SyncdError(f"lost the connection to the daemon: {e}") from e
    if data is None:
        return None
    if not data.strip():
        raise SyncdError("the daemon closed the connection before the pass was done")
    try:
        doc: dict[str, Any] = json.loads(data)
    except ValueError as e:
        raise SyncdError(f"the daemon's answer is not JSON: {e}") from e
    return doc


async def query(state_dir: Path, wait: float = 5) -> dict[str, Any] | None:
    """Ask a running daemon for its status over the control socket; None if none answers."""
    try:
        data = await _exchange(state_dir, b"status\n", wait, wait)
        if data is None:
            return None
        doc: dict[str, Any] = json.loads(data)
        return doc
    except (OSError, TimeoutError, ValueError):
        return None


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
    "SCHEMA_VERSION",
    "SYNC_WAIT",
    "AlreadyRunning",
    "ControlServer",
    "FailedLog",
    "StatusBoard",
    "ask_sync",
    "folder_problem",
    "held_by_scope",
    "manifest_snapshot",
    "public_url",
    "query",
    "query_http",
    "report_doc",
    "summary",
]
