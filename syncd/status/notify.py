"""sd_notify: tell systemd (``Type=notify``) how the daemon is doing, over ``$NOTIFY_SOCKET``.

- ``READY=1`` once the first reconcile has finished (not when the process starts);
- ``STATUS=...`` a one-line summary whenever it changes (shown by ``systemctl status``);
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=``, sent
  from the event loop, so that a stuck loop is noticed and restarted;
- ``STOPPING=1`` when a signal (or a fatal error) starts the shutdown.

``Notifier`` speaks the protocol; ``Lifecycle`` is the daemon's side of it: it looks at the
status board every ``TICK`` and sends the ``summary()`` line when it changed.

The protocol is one datagram per message on a Unix socket, a path or, when the address starts
with ``@``, an abstract socket. Without ``$NOTIFY_SOCKET`` (not under systemd, or on Windows)
every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from syncd.logs import REDACTOR, escape
from syncd.status.board import StatusBoard

log = logging.getLogger("syncd.notify")

TICK = 1.0  # seconds between looks at the daemon (STATUS= line, "last in sync" times)
FORCE_DELETE = "syncd sync --force-delete"  # what releases held deletions


def _address(value: str) -> str | None:
    if not value or not hasattr(socket, "AF_UNIX"):
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # an abstract socket (Linux)
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not supported


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # the watchdog is meant for another process
    return usec / 2 / 1e6


class Notifier:
    """Sends sd_notify messages; a no-op when ``$NOTIFY_SOCKET`` is not set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        #: Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None.
        self.watchdog_interval = _watchdog_interval(env) if self.address else None
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) as one message. Never raises; False if not sent."""
        if self.address is None:
            return False
        msg = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)  # a full receive queue drops a message, never blocks
                self._sock = sock
            self._sock.sendto(msg, self.address)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify the service manager at $NOTIFY_SOCKET: %s", e)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status is not None:
            fields.append(_status(status))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(_status(text))

    def stopping(self) -> bool:
        return self.send("STOPPING=1", _status("stopping: finishing transfers in flight"))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the event loop until cancelled."""
        if self.watchdog_interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    """One line (names escaped, no secret the log knows), as systemd shows it."""
    return "STATUS=" + escape(" ".join(REDACTOR.scrub(text).split()))[:500]


class Lifecycle:
    """Keeps the service manager told while the daemon runs (``running()``): STATUS= when
    the summary changes, WATCHDOG=1, READY=1 (``ready()``) and STOPPING=1 (``stopping()``)."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board
        self.notifier: Notifier | None = None
        self._stopping = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.notifier = Notifier()
        tasks = [asyncio.create_task(self._tick(), name="syncd-status-tick")]
        if self.notifier.watchdog_interval is not None:
            tasks.append(asyncio.create_task(self.notifier.watchdog_loop(), name="syncd-watchdog"))
        try:
            yield
        finally:
            self.stopping()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.notifier.close()

    def ready(self) -> None:
        """The first reconcile is done: tell the service manager (READY=1)."""
        if self.notifier is not None:
            self.notifier.ready(summary(self.board.snapshot(light=True)))

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
                    line = summary(self.board.snapshot(light=True))
                except Exception:  # a bug here must not stop the daemon
                    log.exception("cannot build the status summary")
                    line = last
                if line != last and self.notifier is not None:
                    self.notifier.status(line)
                    last = line
            await asyncio.sleep(TICK)


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


__all__ = ["Lifecycle", "Notifier", "summary"]
