"""How the CLI reaches a running daemon: the control socket's clients, and ``/status.json``.

- ``query`` (``syncd status``) and ``ask_sync`` (``syncd sync`` beside a running daemon): one
  request line on ``<state_dir>/syncd.sock``, one JSON document back (``status/control.py``
  is the daemon's side);
- ``RestoreSession``: ``syncd restore`` beside a running daemon, JSON lines after the first
  (``hold``, ``record``, ``release``), each answered by one;
- ``query_http``: where Unix sockets are not available (Windows), ``syncd status`` asks the
  status endpoint (``[status] listen``, status/web.py) for ``/status.json`` instead, with
  asyncio streams: no HTTP client library is imported.

It imports nothing of the daemon's, so a command that only asks pays for none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from syncd.errors import SyncdError
from syncd.types import LocalFile

SOCKET_NAME = "syncd.sock"
HAS_UNIX = hasattr(socket, "AF_UNIX") and hasattr(asyncio, "start_unix_server")


def short_path(path: Path) -> tuple[str, int | None]:
    """A path to bind/connect that fits in sun_path (108 bytes): via /proc/self/fd if needed."""
    full = str(path)
    if len(full.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
        return full, None
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"/proc/self/fd/{fd}/{path.name}", fd


HOLD_BATCH = 32 * 1024  # bytes of paths per `hold` request of a restore
SYNC_WAIT = 3600.0  # seconds `syncd sync` waits for the daemon's pass (it can take a while)


async def _exchange(state_dir: Path, request: bytes, connect: float, wait: float) -> bytes | None:
    """Send one request line on the control socket and read the whole answer. None when no
    daemon answers (no socket, or it cannot be connected to); after connecting, OSError and
    TimeoutError (no answer within ``wait``) reach the caller."""
    streams = await open_socket(state_dir, connect)
    if streams is None:
        return None
    reader, writer = streams
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


async def open_socket(
    state_dir: Path, connect: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to the control socket of ``state_dir``; None when no daemon answers (no
    socket, no Unix sockets, or it cannot be connected to within ``connect`` seconds)."""
    if not HAS_UNIX:
        return None
    path = state_dir / SOCKET_NAME
    if not path.exists():
        return None
    where, fd = short_path(path)
    try:
        return await asyncio.wait_for(asyncio.open_unix_connection(where), connect)
    except (OSError, TimeoutError):
        return None
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


class RestoreSession:
    """``syncd restore``'s side of the control socket's ``restore`` (a ``restore.Keeper``):
    the running daemon holds the paths being written and records them as sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._lost: SyncdError | None = None

    @classmethod
    async def open(cls, state_dir: Path, connect: float = 5) -> RestoreSession | None:
        """A session with the daemon of ``state_dir``; None if none answers."""
        streams = await open_socket(state_dir, connect)
        if streams is None:
            return None
        reader, writer = streams
        writer.write(b"restore\n")
        await writer.drain()
        return cls(reader, writer)

    async def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            if self._lost is not None:
                raise self._lost  # (one message, however many files were on their way)
            try:
                self._writer.write(json.dumps(req).encode() + b"\n")
                await self._writer.drain()
                line = await self._reader.readline()
            except OSError as e:
                line = b""
                why = f"lost the connection to the running daemon ({e})"
            else:
                why = "the running daemon closed the connection (is it stopping?)"
            if not line:
                self._lost = SyncdError(
                    f"{why}; what was restored so far is on disk: run the same restore "
                    "again to finish (with the daemon running again, or with none)"
                )
                raise self._lost
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise SyncdError(f"the running daemon: {answer.get('error')}")
        return answer

    async def hold(self, scope: str, rels: list[str]) -> None:
        """In requests of at most ~32 KiB (a line the daemon reads is at most 64 KiB)."""
        batch: list[str] = []
        size = 0
        for rel in rels:
            if batch and size > HOLD_BATCH:
                await self._ask({"op": "hold", "scope": scope, "paths": batch})
                batch, size = [], 0
            batch.append(rel)
            size += len(json.dumps(rel)) + 2
        if batch:
            await self._ask({"op": "hold", "scope": scope, "paths": batch})

    async def record(self, scope: str, local: LocalFile, sha256: str) -> None:
        row = [local.rel, local.size, local.mtime_ns, local.ctime_ns, local.inode]
        await self._ask(
            {"op": "record", "scope": scope, "files": [[*row, local.executable, sha256]]}
        )

    async def release(self) -> None:
        try:
            if self._lost is None and not self._writer.is_closing():
                await self._ask({"op": "release"})
        finally:
            await self.aclose()

    async def adopt(self, scope: str, mirror: str) -> None:
        return None  # (a running daemon knows its mirrors)

    async def aclose(self) -> None:
        """End the session without a release (the daemon releases what it held, as when a
        restore is killed)."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


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
    "HAS_UNIX",
    "HOLD_BATCH",
    "SOCKET_NAME",
    "SYNC_WAIT",
    "RestoreSession",
    "ask_sync",
    "open_socket",
    "query",
    "query_http",
    "short_path",
    "split_listen",
]
