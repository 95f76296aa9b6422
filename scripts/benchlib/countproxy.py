"""A counting TCP proxy on 127.0.0.1: what crosses the wire, counted outside the tool measured.

``CountProxy(upstream_port)`` listens on a free 127.0.0.1 port and forwards every connection
to ``127.0.0.1:upstream_port``, counting the bytes of each direction, per connection and in
total: ``up`` is client -> server (what a client sends), ``down`` server -> client. A byte is
counted when the proxy takes it from the sender's socket. Nothing here asks the tool measured
what it sent.

It can also play a link that fails or is slow, for the uploads in between:

- ``reset_at(n)``: once the total ``up`` reaches ``n``, the connection carrying that byte is
  reset (``SO_LINGER`` 0, then close: an RST to both the client and the server) -- once: the
  connections after it go through. The byte count stops exactly at ``n``.
- ``stall_at(n)``: once ``up`` reaches ``n``, nothing more is taken from any client (the
  returned event is set) until ``release()``; the bench kills the client meanwhile, so that
  what it sent before it died is exactly ``n`` bytes.
- ``rate``: client -> server is paced to this many bytes/s, shared by every connection (one
  link), 0 for unpaced. Server -> client is never paced.

One thread per connection moves both directions with ``splice(2)`` through a pipe (no copy
into Python), non-blocking sockets and ``poll``; where ``os.splice`` is missing, through a
buffer. ``close()`` (or leaving the ``with`` block) ends every connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CAP = 1 << 20  # bytes in flight per direction (a pipe of this size, or a buffer)
BURST = 0.010  # seconds of credit a paced link keeps when the proxy wakes up late
TICK = 0.2  # longest poll: how soon a connection notices close() or release()
_SPLICE = hasattr(os, "splice")
_FLAGS = (getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)) if _SPLICE else 0
_RD = select.POLLIN | select.POLLHUP | select.POLLERR


@dataclass
class Conn:
    """One proxied connection: bytes each way, and how it ended."""

    n: int  # 0, 1, 2 ... in the order accepted
    up: int = 0  # client -> server
    down: int = 0  # server -> client
    reset: bool = False  # reset by the proxy (reset_at)
    error: str = ""  # what ended it otherwise, if not a clean close
    kill: bool = False  # abort_open() asked for its end (an RST both ways)
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None


@dataclass(frozen=True)
class Counts:
    """The totals at one moment (``CountProxy.counts()``); subtract two for what went between."""

    up: int
    down: int
    conns: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.up - other.up, self.down - other.down, self.conns - other.conns)


class _Flow:
    """One direction of a connection: bytes taken from ``src``, held, then given to ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.eof = False  # src said it sends no more
        self.shut = False  # ... and dst has been told (shutdown SHUT_WR) once all was given
        self.pending = 0
        self.cap = CAP
        self.r = self.w = -1
        self.buf: bytearray | None = None
        if _SPLICE:
            self.r, self.w = os.pipe()
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, CAP)
            with contextlib.suppress(OSError):
                self.cap = fcntl.fcntl(self.w, fcntl.F_GETPIPE_SZ)
            os.set_blocking(self.r, False)
            os.set_blocking(self.w, False)
        else:
            self.buf = bytearray(CAP)
            self.head = 0  # the next byte to give is buf[head]

    @property
    def done(self) -> bool:
        return self.shut

    def room(self) -> int:
        return self.cap - self.pending

    def fill(self, limit: int) -> int:
        """Take up to ``limit`` bytes from src; the count taken (0: src ended), -1: none now."""
        try:
            if self.buf is None:
                n = os.splice(self.src.fileno(), self.w, limit, flags=_FLAGS)
            else:
                if self.pending == 0:
                    self.head = 0
                end = self.head + self.pending
                if end >= len(self.buf):  # room only before head: move what is held there
                    self.buf[: self.pending] = self.buf[self.head : end]
                    self.head, end = 0, self.pending
                with memoryview(self.buf) as view:
                    n = self.src.recv_into(view[end : end + min(limit, len(self.buf) - end)])
        except (BlockingIOError, InterruptedError):
            return -1
        if n == 0:
            self.eof = True
        self.pending += n
        return n

    def drain(self) -> None:
        """Give dst what it takes now; tell it of the end once everything was given."""
        while self.pending:
            try:
                if self.buf is None:
                    n = os.splice(self.r, self.dst.fileno(), self.pending, flags=_FLAGS)
                else:
                    with memoryview(self.buf) as view:
                        n = self.dst.send(view[self.head : self.head + self.pending])
                    self.head += n
            except (BlockingIOError, InterruptedError):
                return
            if n == 0:
                return
            self.pending -= n
        if self.eof and not self.shut:
            self.shut = True
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for fd in (self.r, self.w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.r = self.w = -1


class CountProxy:
    """A TCP proxy from a free 127.0.0.1 port to ``127.0.0.1:upstream_port`` (see the module)."""

    def __init__(self, upstream_port: int, *, rate: float = 0.0, name: str = "proxy") -> None:
        self.upstream = (HOST, upstream_port)
        self.name = name
        self.rate = rate  # client -> server bytes/s; 0: unpaced (may be changed at any time)
        self.up = 0
        self.down = 0
        self.conns: list[Conn] = []
        self._lock = threading.Lock()
        self._reset_at: int | None = None
        self._stall_at: int | None = None
        self._stalled = threading.Event()
        self._link_next = 0.0  # when the paced link may take its next bytes (time.monotonic)
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self._listener.settimeout(TICK)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    # ------------------------------------------------------------------ what the bench asks

    def counts(self) -> Counts:
        with self._lock:
            return Counts(self.up, self.down, len(self.conns))

    def reset_at(self, total_up: int | None) -> None:
        """Reset the connection that brings the total ``up`` to ``total_up`` (once); None:
        no reset."""
        with self._lock:
            self._reset_at = total_up

    def stall_at(self, total_up: int) -> threading.Event:
        """Take nothing more from any client once ``up`` reaches ``total_up``; the event is
        set when it has. ``release()`` lifts it."""
        with self._lock:
            self._stall_at = total_up
            self._stalled.clear()
            if self.up >= total_up:
                self._stalled.set()
            return self._stalled

    def release(self) -> None:
        with self._lock:
            self._stall_at = None

    def abort_open(self) -> int:
        """Reset every connection still open (their bytes in flight are dropped, never given
        to the server); how many there were."""
        with self._lock:
            live = [c for c in self.conns if c.closed is None]
            for c in live:
                c.kill = True
        return len(live)

    def open_conns(self) -> int:
        with self._lock:
            return sum(c.closed is None for c in self.conns)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every connection has ended (the client exited); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.open_conns():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self._closing = True
        self._acceptor.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        for t in list(self._threads):
            t.join(5)

    def __enter__(self) -> CountProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the connections

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                conn = Conn(len(self.conns))
                self.conns.append(conn)
            t = threading.Thread(
                target=self._serve, args=(client, conn), name=f"{self.name}-{conn.n}", daemon=True
            )
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket, conn: Conn) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError as e:
            conn.error = f"upstream: {e}"
            _abort(client)
            conn.closed = time.monotonic()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        up, down = _Flow(client, upstream), _Flow(upstream, client)
        try:
            self._pump(conn, client, upstream, up, down)
        except OSError as e:  # a reset from either end, a broken pipe: pass the abort on
            conn.error = f"{type(e).__name__}: {e}"
            _abort(client)
            _abort(upstream)
        finally:
            up.close()
            down.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            conn.closed = time.monotonic()

    def _up_limit(self, flow: _Flow) -> tuple[int, float]:
        """How many bytes the client -> server flow may take now, and if none, how long until
        it may (the link's pace, a stall)."""
        limit = flow.room()
        with self._lock:
            if self._stall_at is not None:
                if self.up >= self._stall_at:
                    self._stalled.set()
                    return 0, TICK / 4
                limit = min(limit, self._stall_at - self.up)
            if self._reset_at is not None and self.up < self._reset_at:
                limit = min(limit, self._reset_at - self.up)
            rate = self.rate
            if rate > 0:
                wait = self._link_next - time.monotonic()
                if wait > 0:
                    return 0, wait
                limit = min(limit, max(16384, int(rate * 0.004)))  # ~4 ms of the link a read
        return limit, 0.0

    def _took_up(self, conn: Conn, n: int) -> bool:
        """Count ``n`` bytes client -> server; True if this connection is to be reset now."""
        with self._lock:
            self.up += n
            conn.up += n
            if self.rate > 0:
                now = time.monotonic()
                self._link_next = max(self._link_next, now - BURST) + n / self.rate
            if self._stall_at is not None and self.up >= self._stall_at:
                self._stalled.set()
            if self._reset_at is not None and self.up >= self._reset_at:
                self._reset_at = None
                return True
        return False

    def _pump(
        self, conn: Conn, client: socket.socket, upstream: socket.socket, up: _Flow, down: _Flow
    ) -> None:
        poller = select.poll()
        cfd, ufd = client.fileno(), upstream.fileno()
        while not (up.done and down.done):
            if self._closing or conn.kill:
                raise ConnectionAbortedError("proxy closed" if self._closing else "aborted")
            timeout = TICK
            want_up, wait = (0, 0.0) if up.eof else self._up_limit(up)
            if not up.eof and not want_up:
                timeout = min(timeout, max(wait, 0.0005))
            want_down = 0 if down.eof else down.room()
            poller.register(
                cfd, (select.POLLIN if want_up else 0) | (select.POLLOUT if down.pending else 0)
            )
            poller.register(
                ufd, (select.POLLIN if want_down else 0) | (select.POLLOUT if up.pending else 0)
            )
            before = (conn.up, conn.down, up.pending, down.pending, up.shut, down.shut)
            events = dict(poller.poll(timeout * 1000))
            cev, uev = events.get(cfd, 0), events.get(ufd, 0)
            if want_up and cev & _RD:
                n = up.fill(want_up)
                if n > 0 and self._took_up(conn, n):
                    conn.reset = True
                    _abort(client)
                    _abort(upstream)
                    return
            if (up.pending and uev & (select.POLLOUT | select.POLLERR)) or (up.eof and not up.shut):
                up.drain()
            if want_down and uev & _RD:
                n = down.fill(want_down)
                if n > 0:
                    with self._lock:
                        self.down += n
                        conn.down += n
            if (down.pending and cev & (select.POLLOUT | select.POLLERR)) or (
                down.eof and not down.shut
            ):
                down.drain()
            after = (conn.up, conn.down, up.pending, down.pending, up.shut, down.shut)
            if events and after == before:
                # An end (HUP, ERR) reported on a socket nothing is wanted from now (a stalled
                # client that went away, the paced link): don't spin on it.
                time.sleep(min(timeout, 0.002))


def _abort(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (SO_LINGER on, 0 s)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def proxying(upstream_port: int, *, rate: float = 0.0, name: str = "proxy") -> Iterator[CountProxy]:
    """A ``CountProxy`` for the time of the block."""
    proxy = CountProxy(upstream_port, rate=rate, name=name)
    try:
        yield proxy
    finally:
        proxy.close()
