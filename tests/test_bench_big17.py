"""The bench's counting proxy (scripts/benchlib/countproxy.py) against a tiny real HTTP server on
127.0.0.1: the bytes it counts each way, per connection and in total, are the bytes that were
sent; a reset at N bytes stops the count at exactly N, reaches the client as a reset, and
happens once; a stall holds the client at N until the connection is aborted; pacing changes
nothing of what arrives. Behaviour only: no timing is asserted."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import countproxy  # noqa: E402
from benchlib.countproxy import CountProxy  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the bench runs on Linux")


class Store:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.failed = 0
        self.lock = threading.Lock()


@pytest.fixture
def http_server() -> Iterator[tuple[int, Store]]:
    """PUT stores the body and answers its sha-256; a body cut short is counted as failed."""
    store = Store()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            left = int(self.headers["Content-Length"])
            got = bytearray()
            try:
                while left:
                    b = self.rfile.read(min(left, 1 << 16))
                    if not b:
                        raise ConnectionError("short body")
                    got += b
                    left -= len(b)
            except (ConnectionError, OSError):
                with store.lock:
                    store.failed += 1
                self.close_connection = True
                return
            with store.lock:
                store.bodies.append(bytes(got))
            answer = hashlib.sha256(got).hexdigest().encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1], store
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["splice", "buffer"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of moving bytes: splice(2) through a pipe, and the buffer where it is missing."""
    if request.param == "buffer":
        monkeypatch.setattr(countproxy, "_SPLICE", False)
    elif not countproxy._SPLICE:
        pytest.skip("no os.splice here")
    return str(request.param)


def put_request(body: bytes, path: str = "/f") -> bytes:
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` whole, then read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = bytearray()
        while b := s.recv(1 << 16):
            out += b
        return bytes(out)


def test_counts_each_direction_per_connection_and_in_total(
    http_server: tuple[int, Store], mode: str
) -> None:
    port, store = http_server
    one, two = os.urandom(3 * 1024 * 1024 + 17), os.urandom(1000)
    with CountProxy(port) as proxy:
        req1, req2 = put_request(one), put_request(two)
        ans1 = exchange(proxy.port, req1)
        ans2 = exchange(proxy.port, req2)
        assert proxy.wait_idle(10)
        assert hashlib.sha256(one).hexdigest().encode() in ans1
        assert hashlib.sha256(two).hexdigest().encode() in ans2
        assert store.bodies == [one, two]
        c1, c2 = proxy.conns
        assert (c1.up, c1.down) == (len(req1), len(ans1))
        assert (c2.up, c2.down) == (len(req2), len(ans2))
        assert not c1.reset and not c2.reset and not c1.error and not c2.error
        counts = proxy.counts()
        assert (counts.up, counts.down, counts.conns) == (
            len(req1) + len(req2),
            len(ans1) + len(ans2),
            2,
        )


def test_reset_at_n_bytes_once(http_server: tuple[int, Store], mode: str) -> None:
    port, store = http_server
    body = os.urandom(8 * 1024 * 1024)
    req = put_request(body)
    with CountProxy(port) as proxy:
        start = proxy.counts()
        cut = start.up + len(req) // 2 + 12345
        proxy.reset_at(cut)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            exchange(proxy.port, req)
        assert proxy.wait_idle(10)
        first = proxy.conns[0]
        assert first.reset
        assert first.up == proxy.counts().up == cut  # exactly N, never past it
        # Once: the next connection goes through whole.
        answer = exchange(proxy.port, req)
        assert hashlib.sha256(body).hexdigest().encode() in answer
        assert proxy.wait_idle(10)
        assert not proxy.conns[1].reset
        assert proxy.counts().up == cut + len(req)
    assert store.bodies == [body]
    assert store.failed == 1  # the server saw the first body cut short


def test_stall_holds_the_client_at_n_until_aborted(http_server: tuple[int, Store]) -> None:
    port, store = http_server
    body = os.urandom(6 * 1024 * 1024)
    req = put_request(body)
    with CountProxy(port) as proxy:
        stalled = proxy.stall_at(len(req) // 3)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                exchange(proxy.port, req)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send)
        t.start()
        assert stalled.wait(30)
        assert proxy.counts().up == len(req) // 3
        assert proxy.open_conns() == 1
        assert proxy.abort_open() == 1
        t.join(30)
        assert proxy.wait_idle(10)
        assert errors and isinstance(errors[0], ConnectionResetError | BrokenPipeError)
        assert proxy.counts().up == len(req) // 3  # what the client had in flight: dropped
        proxy.release()
        answer = exchange(proxy.port, req)
        assert hashlib.sha256(body).hexdigest().encode() in answer
    assert store.bodies == [body]


def test_pacing_delivers_every_byte(http_server: tuple[int, Store], mode: str) -> None:
    port, store = http_server
    body = os.urandom(2 * 1024 * 1024 + 5)
    req = put_request(body)
    with CountProxy(port, rate=100e6) as proxy:
        answer = exchange(proxy.port, req)
        assert proxy.wait_idle(10)
        assert proxy.conns[0].up == len(req)
        assert proxy.conns[0].down == len(answer)
    assert store.bodies == [body]


def test_upstream_down_is_a_reset(mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with CountProxy(port) as proxy:
        with pytest.raises((ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            exchange(proxy.port, put_request(b"x" * 100))
        assert proxy.wait_idle(10)
        assert proxy.conns[0].error.startswith("upstream")


def test_insert_and_the_rows_floors(tmp_path: Path) -> None:
    """The bench's edit of the large file, and a resume row's floors (its figures' units)."""
    from benchlib.bigfile_rig import Wire, insert, ratio_row
    from benchlib.report import fmt

    data = os.urandom(100_000)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    insert(p, 40_000, b"new bytes")
    assert p.read_bytes() == data[:40_000] + b"new bytes" + data[40_000:]

    size = 1_000_000
    once = Wire(1_001_000, 500, 1, 1.0, [0])
    twice = Wire(600_000, 300, 1, 0.5, [-9]) + Wire(1_000_000, 300, 1, 1.0, [0])
    assert (twice.up, twice.codes) == (1_600_000, [-9, 0])
    row = ratio_row("x", "x", twice, once, "peer", size, ok=True)
    assert row.passed is False and row.syncd == 1.6 and row.peer == 1.001
    assert ratio_row("x", "x", once, None, "peer", size, ok=True).passed is True
    assert ratio_row("x", "x", once, None, "peer", size, ok=False).passed is False
    assert fmt(1.0015, "× size") == "1.002 × size"
    assert fmt(0.007, "% of size") == "0.007 % of size"
