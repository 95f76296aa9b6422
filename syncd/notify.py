"""sd_notify: tell systemd (``Type=notify``) how the daemon is doing, over ``$NOTIFY_SOCKET``.

- ``READY=1`` once the first reconcile has finished (not when the process starts);
- ``STATUS=...`` a one-line summary whenever it changes (shown by ``systemctl status``);
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=``, sent
  from the event loop, so that a stuck loop is noticed and restarted;
- ``STOPPING=1`` when a signal (or a fatal error) starts the shutdown.

The protocol is one datagram per message on a Unix socket, a path or, when the address starts
with ``@``, an abstract socket. Without ``$NOTIFY_SOCKET`` (not under systemd, or on Windows)
every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("syncd.notify")


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
    from syncd.logs import REDACTOR, escape

    return "STATUS=" + escape(" ".join(REDACTOR.scrub(text).split()))[:500]


__all__ = ["Notifier"]
