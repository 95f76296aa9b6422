"""What a running daemon is doing, for ``syncd status``: a control socket in the state dir.

The daemon listens on ``<state_dir>/syncd.sock`` (mode 0600). A client sends one line
(``status``) and reads one JSON document. Where Unix sockets are not available (Windows),
``syncd status`` falls back to the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.errors import SyncdError

if TYPE_CHECKING:
    from syncd.daemon import Daemon

log = logging.getLogger("syncd.status")

SOCKET_NAME = "syncd.sock"
HAS_UNIX = hasattr(socket, "AF_UNIX") and hasattr(asyncio, "start_unix_server")


class AlreadyRunning(SyncdError):
    """Another daemon owns this state dir (the manifest has one writer)."""


def _short(path: Path) -> tuple[str, int | None]:
    """A path to bind/connect that fits in sun_path (108 bytes): via /proc/self/fd if needed."""
    full = str(path)
    if len(full.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
        return full, None
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"/proc/self/fd/{fd}/{path.name}", fd


class StatusBoard:
    """Builds the status document from the daemon's live state."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.errors: deque[dict[str, Any]] = deque(maxlen=50)
        self._seen_failed = 0

    def _collect_errors(self) -> None:
        failed = self.daemon.report.failed
        for p in failed[self._seen_failed :]:
            self.errors.append({"path": p.path, "reason": p.reason, "time": time.time()})
        # Keep the report's list bounded in a long-running daemon.
        if len(failed) > 200:
            del failed[:-50]
        self._seen_failed = len(failed)

    def snapshot(self) -> dict[str, Any]:
        d = self.daemon
        eng = d.engine
        self._collect_errors()
        folders = []
        for i, ctx in enumerate(d.folders):
            pending = sorted(rel for (fi, rel) in d.pending_keys() if fi == i)
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
                    }
                )
            rows = eng.manifest.rows(ctx.scope)
            w = d.watchers[i] if i < len(d.watchers) else None
            folders.append(
                {
                    "path": str(ctx.root),
                    "remote_path": ctx.remote_path,
                    "files": len(rows),
                    "bytes": sum(r.size for r in rows.values()),
                    "pending": pending[:100],
                    "pending_count": len(pending),
                    "in_flight": inflight,
                    "watcher": w.state if w else "stopped",
                    "in_sync": d.ready.is_set() and not pending and not inflight,
                }
            )
        r = d.report
        return {
            "daemon": {"pid": os.getpid(), "started": d.started_at, "ready": d.ready.is_set()},
            "remote": {
                "url": d.config.remote.url,
                "reachable": d.remote_down_since is None,
                "unreachable_since": d.remote_down_since,
                "queued": len(d.outbox),
                "error": str(eng.fatal) if eng.fatal else None,
            },
            "folders": folders,
            "totals": {
                "uploaded": r.uploaded,
                "deleted": r.deleted,
                "moved": r.moved,
                "bytes_sent": r.bytes_sent + eng.bytes_sent,
                "failed": len(self.errors),
            },
            "errors": list(self.errors)[-20:],
        }


class ControlServer:
    """Serves the status document on a Unix socket in the state dir (async context manager)."""

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
    """Ask a running daemon for its status; None if none answers."""
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
