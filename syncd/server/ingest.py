"""A large body straight from the socket, in a body thread: received, written and hashed.

:func:`receive_into` reads for at most a short slice of time and returns as soon as the client
goes quiet, so a slow client never holds a thread while it is silent: the event loop waits for
its socket instead (see :mod:`syncd.server.receive`). Per byte: one copy in (recv), one out
(write) and the hash; for a fast body the hash runs in a second thread on the buffer just
written, in parallel with the next receive.
"""

from __future__ import annotations

import hashlib
import queue
import select
import socket
import threading
import time
from collections.abc import Callable

from syncd.server.errors import BadRequest, os_error
from syncd.server.fdio import write_all

RECV_BUF = 1 << 20
"""Bytes per receive buffer; at most :data:`RECV_BUFS` of them per upload being received."""
RECV_BUFS = 4
IDLE = 0.005
"""Seconds of silence after which :func:`receive_into` hands the socket back to the event
loop (a fast body rarely pauses this long; a slow one never holds a thread)."""
SLICE = 1.0
"""Seconds after which :func:`receive_into` returns even while data keeps coming, so that the
body threads are shared fairly between the uploads waiting for them."""


class _Buffers:
    """Receive buffers shared by every upload: a few are kept for reuse, the rest freed."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def get(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(RECV_BUF)

    def put(self, buf: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)


_BUFFERS = _Buffers(keep=16)


class _Hasher:
    """A thread hashing full buffers in order while the next one is received and written.

    Started only for a body that arrives fast (a full buffer at a time); a slow one is hashed
    in the receiving thread, which costs no thread and no hand-off.
    """

    def __init__(self, h: hashlib._Hash) -> None:
        self._h = h
        self.full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="syncd-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.full.get()) is not None:
            buf, n = item
            try:
                if self.failed is None:
                    self._h.update(memoryview(buf)[:n])
            except BaseException as e:  # pragma: no cover - hashlib does not fail
                self.failed = e
            self.free.put(buf)

    def finish(self) -> None:
        self.full.put(None)
        self._thread.join()


def receive_into(
    sock: socket.socket,
    fd: int,
    h: hashlib._Hash,
    remaining: int,
    *,
    stop: threading.Event,
    stopping: threading.Event,
    wrote: Callable[[int], None],
    shown: str,
) -> int:
    """Receive up to ``remaining`` bytes from the non-blocking ``sock`` into the file ``fd``,
    updating ``h`` and calling ``wrote(n)`` after each write; returns how many came.

    Returns once the client has been silent for :data:`IDLE` (0: nothing came at all), after
    :data:`SLICE`, or when ``stop`` or ``stopping`` is set. Raises BadRequest if the client
    closes early, StoreError (about ``shown``) if the write fails.
    """
    deadline = time.monotonic() + SLICE
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    local: list[bytearray] = []
    taken = 0
    hasher: _Hasher | None = None
    total = 0

    def take() -> bytearray:
        nonlocal taken
        if local:
            return local.pop()
        if hasher is not None:
            try:
                return hasher.free.get_nowait()
            except queue.Empty:
                pass
        if taken < RECV_BUFS:
            taken += 1
            return _BUFFERS.get()
        assert hasher is not None  # every buffer not here is with the hasher
        return hasher.free.get()

    try:
        while remaining > 0 and not (stop.is_set() or stopping.is_set()):
            buf = take()
            view = memoryview(buf)
            want = min(len(buf), remaining)
            got = 0
            quiet = False
            while got < want:
                try:
                    n = sock.recv_into(view[got:want])
                except BlockingIOError:
                    if got or not poller.poll(IDLE * 1000):
                        quiet = not got
                        break  # write what is here, or hand the socket back when silent
                    continue
                except InterruptedError:
                    continue
                except OSError as e:
                    raise BadRequest(f"the body ended early ({e.strerror})") from None
                if n == 0:
                    raise BadRequest("the body ended early (client disconnected)")
                got += n
            if not got:
                local.append(buf)
                if quiet:
                    break
                continue
            try:
                write_all(fd, [view[:got]])
            except OSError as e:
                raise os_error(e, shown) from e
            if hasher is None and got == len(buf):
                hasher = _Hasher(h)
            if hasher is not None:
                hasher.full.put((buf, got))
            else:
                h.update(view[:got])
                local.append(buf)
            remaining -= got
            total += got
            wrote(got)
            if time.monotonic() >= deadline:
                break
    finally:
        if hasher is not None:
            hasher.finish()
            while True:
                try:
                    local.append(hasher.free.get_nowait())
                except queue.Empty:
                    break
        for buf in local:
            _BUFFERS.put(buf)
    if hasher is not None and hasher.failed is not None:
        raise hasher.failed
    return total
