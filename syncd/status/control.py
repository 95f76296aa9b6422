"""The control socket: the daemon's side (``ControlServer``).

The daemon listens on ``<state_dir>/syncd.sock`` (mode 0600); a client (``status/client.py``)
sends one line — ``status``, ``sync``, ``sync force`` — and reads one JSON document, or
``restore``: ``syncd restore`` beside the running daemon, JSON lines after the first, each
answered by one: ``{"op": "hold", "scope", "paths"}`` (the daemon leaves those paths alone),
``{"op": "record", "scope", "files"}`` (each ``[rel, size, mtime_ns, ctime_ns, inode,
executable, sha256]`` as restore wrote it: recorded as sent), ``{"op": "release"}``. A
connection that closes releases its paths too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from syncd.errors import SyncdError
from syncd.logs import REDACTOR
from syncd.report import Report
from syncd.statelock import AlreadyRunning
from syncd.status.board import StatusBoard
from syncd.status.client import HAS_UNIX, SOCKET_NAME, query, short_path
from syncd.types import LocalFile

log = logging.getLogger("syncd.status")


@runtime_checkable
class Restores(Protocol):
    """The daemon's side of ``syncd restore`` (``syncd.daemon.Daemon`` is one)."""

    async def hold_paths(self, owner: object, scope: str, rels: Sequence[str]) -> None: ...
    async def record_restored(
        self, owner: object, scope: str, files: Sequence[tuple[LocalFile, str]]
    ) -> int: ...
    async def release_paths(self, owner: object) -> None: ...


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
        where, self._fd = short_path(self.path)
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
            elif line == [b"restore"]:
                await self._restore(reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _restore(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``syncd restore`` writing into the folders: hold, record, release (one connection
        per restore; its end releases whatever it still holds)."""
        d = self.board.live
        if not isinstance(d, Restores):
            return
        owner = object()
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    op = req["op"]
                    answer: dict[str, Any] = {"ok": True}
                    if op == "hold":
                        await d.hold_paths(owner, str(req["scope"]), [str(p) for p in req["paths"]])
                    elif op == "record":
                        files = [
                            (LocalFile(str(r), int(sz), int(m), int(c), int(ino), bool(x)), str(h))
                            for r, sz, m, c, ino, x, h in req["files"]
                        ]
                        answer["recorded"] = await d.record_restored(
                            owner, str(req["scope"]), files
                        )
                    elif op == "release":
                        await d.release_paths(owner)
                    else:
                        answer = {"ok": False, "error": f"unknown op {op!r}"}
                except SyncdError as e:
                    answer = {"ok": False, "error": str(e)}
                except (ValueError, KeyError, TypeError) as e:
                    answer = {"ok": False, "error": f"bad request: {e}"}
                writer.write(_scrubbed(answer) + b"\n")
                await writer.drain()
                if answer.get("ok") and req.get("op") == "release":
                    return
        finally:
            await d.release_paths(owner)

    async def _sync(self, *, force_delete: bool) -> dict[str, Any]:
        """``syncd sync`` while this daemon runs: reconcile now, in the daemon, and answer
        with what the pass did (the same summary ``syncd sync`` prints)."""
        d = self.board.live
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


__all__ = ["ControlServer", "Restores", "report_doc"]
