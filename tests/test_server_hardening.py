"""`syncd serve` against inputs that a filesystem or an HTTP client really produces (issue 13):
every name Linux allows, content codings, slow bodies, SIGTERM mid-upload, very deep trees.

Each test drives a real `syncd serve` subprocess on 127.0.0.1 and reads its log (stderr) for
tracebacks; names are generated with hypothesis and sent by syncd's own client (`SyncdRemote`),
so what the client puts on the wire is what the server is tested with.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from syncd import config as cfgmod
from syncd.hashing import Source
from syncd.remotes.kinds import KINDS
from syncd.remotes.syncd import SyncdRemote
from syncd.types import LocalFile
from tests.conftest import ServerProc, mirror_config, server_temps, start_server, wait_for

RESERVED = ".~syncd-"


# --------------------------------------------------------------------------- a logged server


@dataclass
class Logged:
    """A `syncd serve` subprocess whose stderr (its log) goes to a file."""

    srv: ServerProc
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_clean_log(self) -> None:
        """No traceback, no 500, and every line one record (a name with a newline in it must
        not break a line in two, nor forge one)."""
        text = self.log()
        assert "Traceback" not in text, text[-6000:]
        assert " 500 " not in text and "Error handling request" not in text, text[-6000:]
        for line in text.splitlines():
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", line), line


def start_logged(
    root: Path, token_file: Path | None, log_path: Path, *, nofile: int | None = None
) -> Logged:
    """`python -m syncd serve` with its log in ``log_path``; waits for the 'listening' line.

    ``nofile``: the soft limit on open files for the server (1024 is the common default; this
    machine's is higher, which would hide a walk that keeps one fd per level).
    """
    prefix = ("prlimit", f"--nofile={nofile}:{nofile}", "--") if nofile is not None else ()
    try:
        srv = start_server(root, token_file, log=log_path, prefix=prefix)
    except RuntimeError as e:
        raise RuntimeError(f"{e}: {log_path.read_text()}") from None
    return Logged(srv, log_path)


@contextlib.contextmanager
def logged_server(
    root: Path, token_file: Path | None, log_path: Path, *, nofile: int | None = None
) -> Iterator[Logged]:
    logged = start_logged(root, token_file, log_path, nofile=nofile)
    try:
        yield logged
    finally:
        logged.srv.stop()


def digest_of(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def raw(
    srv: ServerProc,
    head: str | bytes,
    body: bytes = b"",
    *,
    auth: bool = True,
    timeout: float = 20,
) -> tuple[int, bytes, bytes]:
    """Send one request exactly as written (``head``: request line and headers, without the
    blank line); return (status, head, body) of the answer (the connection is closed)."""
    if isinstance(head, str):
        head = head.encode("utf-8", "surrogateescape")
    if auth and srv.token:
        head += f"\r\nAuthorization: Bearer {srv.token}".encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    answer = b"".join(chunks)
    rhead, _, rbody = answer.partition(b"\r\n\r\n")
    if b"\r\ntransfer-encoding: chunked" in rhead.lower():
        rbody = dechunk(rbody)
    return int(rhead.split(b" ", 2)[1]), rhead, rbody


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (strict: a malformed one fails the test)."""
    out = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        assert data[size : size + 2] == b"\r\n", "malformed chunk"
        data = data[size + 2 :]


def temps_under(root: Path) -> list[Path]:
    return server_temps(root)


# --------------------------------------------------------------------------- 1. every name


@pytest.fixture(scope="module")
def names_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Logged, Path]]:
    base = tmp_path_factory.mktemp("names")
    token = base / "token"
    token.write_text("names-token\n")
    with logged_server(base / "root", token, base / "serve.log") as logged:
        yield logged, base


# Every character a name may hold (not NUL, not '/', no lone surrogates: not UTF-8), with the
# ones that broke things weighted in: C0/C1 controls, DEL, line and paragraph separators,
# and what means something in URLs, in percent-encoding or on another OS.
_SPECIAL = [chr(c) for c in range(1, 32)] + list("\x7f\x85\u2028\u2029\ufeff\u00a0%?#\\:;+& .")
_CHARS = st.one_of(
    st.sampled_from(_SPECIAL), st.characters(codec="utf-8", exclude_characters="\x00/")
)


def _fit(name: str) -> str:
    """Cut a name to the 255 bytes (UTF-8) Linux allows, at a character boundary."""
    return name.encode("utf-8")[:255].decode("utf-8", "ignore")


def _allowed(name: str) -> bool:
    return name not in ("", ".", "..") and not name.startswith(RESERVED)


NAMES = st.one_of(
    st.text(_CHARS, min_size=1, max_size=24),
    st.text(_CHARS, min_size=200, max_size=300).map(_fit),  # around the length limit
    st.builds(
        lambda a, b: a + "%2e%2e" + b, st.text(_CHARS, max_size=3), st.text(_CHARS, max_size=3)
    ),
    st.sampled_from(["C:", "c:", "..\\x", "a\\..\\b", "%2e%2e", "%252e", "\n", "\r\n", "\t"]),
).filter(_allowed)


def _remote(base: Path, logged: Logged) -> SyncdRemote:
    folder = base / "unused-folder"
    folder.mkdir(exist_ok=True)
    cfg = cfgmod.load(mirror_config(base, logged.srv, folder), kinds=KINDS)
    return SyncdRemote(cfg.remote, 2)


def _source(rel: str, data: bytes) -> Source:
    local = LocalFile(rel, len(data), 0)
    return Source(Path("/nonexistent"), local, data=data, sha256=hashlib.sha256(data).hexdigest())


_counter = iter(range(1 << 30))


@settings(max_examples=settings().max_examples)
@given(first=NAMES, second=NAMES, dirname=NAMES)
def test_every_linux_name_round_trips(
    names_server: tuple[Logged, Path], first: str, second: str, dirname: str
) -> None:
    """PUT, list, GET, MOVE (both ends), ?state and DELETE with generated names, sent by
    syncd's own client: every name Linux allows (but NUL, '/' and syncd's prefix) works alike."""
    assume(not first == second == dirname)  # a MOVE onto itself is another test's 403
    logged, base = names_server
    root = logged.srv.root
    top = f"ex{next(_counter)}"

    async def run() -> None:
        remote = _remote(base, logged)
        try:
            src = f"{top}/{dirname}/{first}"
            body = f"{first!r}".encode()
            await remote.put(src, _source(src, body))
            assert (root / top / dirname / first).read_bytes() == body
            listed = [e async for e in remote.list(top)]
            assert [(e.path, e.sha256) for e in listed] == [
                (f"{dirname}/{first}", hashlib.sha256(body).hexdigest())
            ]
            assert await remote.state(top) not in (None, "absent")
            async with remote.session.get(remote.url(src)) as r:
                assert r.status == 200 and await r.read() == body
            dst = f"{top}/{second}/{second}"
            await remote.move(src, dst)
            assert (root / top / second / second).read_bytes() == body
            assert [e.path async for e in remote.list(top)] == [f"{second}/{second}"]
            async with remote.session.delete(remote.url(dst)) as r:
                assert r.status == 204, await r.text()  # not 404 "taken as done"
            async with remote.session.delete(remote.url(top)) as r:
                assert r.status in (204, 404), await r.text()
            assert [e async for e in remote.list(top)] == []
            assert not (root / top).exists()
        finally:
            await remote.aclose()

    asyncio.run(run())
    logged.assert_clean_log()


REFUSED = [
    ("%00", "NUL"),
    ("a%00b", "NUL"),
    ("a%2Fb", "'/'"),
    (".", "not allowed"),
    ("..", "not allowed"),
    ("%2e%2e", "not allowed"),
    (".~syncd-x", "reserved"),
    ("%2E~syncd-x", "reserved"),
    ("x" * 256, "longer than 255 bytes"),
    ("%ff", "not valid UTF-8"),
    ("%c0%ae%c0%ae", "not valid UTF-8"),
]


def test_refused_names_say_why(names_server: tuple[Logged, Path]) -> None:
    """NUL, '/', '.', '..', syncd's prefix, over 255 bytes, not UTF-8: 400 with one line saying
    which, on every route."""
    logged, _ = names_server
    srv = logged.srv
    for segment, why in REFUSED:
        for method, target, headers in [
            ("PUT", f"/r/{segment}", ""),
            ("GET", f"/r/{segment}", ""),
            ("HEAD", f"/r/{segment}", ""),
            ("DELETE", f"/r/{segment}", ""),
            ("MKCOL", f"/r/{segment}", ""),
            ("GET", f"/r/{segment}/?list", ""),
            ("GET", f"/r/{segment}/?state", ""),
            ("MOVE", "/r/src.txt", f"\r\nDestination: /r/{segment}"),
            ("MOVE", f"/r/{segment}", "\r\nDestination: /r/dst.txt"),
        ]:
            status, _, text = raw(srv, f"{method} {target} HTTP/1.1\r\nHost: x{headers}", b"")
            assert status == 400, (method, target, status, text)
            if method != "HEAD":
                assert why in text.decode(), (method, target, text)
                assert text.count(b"\n") == 1, text
    assert not (srv.root / "r").exists()
    logged.assert_clean_log()


# --------------------------------------------------------------------------- 2. content codings


@pytest.mark.parametrize(
    "coding", ["gzip", "deflate", "br", "zstd", "x-gzip", "compress", "foo", "identity, gzip"]
)
def test_content_coding_is_refused_never_decoded(
    tmp_path: Path, token_file: Path, coding: str
) -> None:
    """A body with a content coding is refused (415, one line), never stored decoded and never
    a 500; the same bytes without the header (or with ``identity``) are stored as sent."""
    import gzip

    payload = b"A" * (20 << 10)
    body = gzip.compress(payload) if "gzip" in coding else os.urandom(300)
    root = tmp_path / "root"
    with logged_server(root, token_file, tmp_path / "serve.log") as logged:
        srv = logged.srv
        for target in ("/d/one.bin", "/d/two.bin?upload=" + "a" * 32):
            head = (
                f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                f"\r\nContent-Encoding: {coding}"
            )
            status, _, text = raw(srv, head, body)
            assert status == 415, (target, status, text)
            assert "Content-Encoding" in text.decode() and text.count(b"\n") == 1, text
        assert not (root / "d").exists()
        # Chunked, and a large body (read straight from the socket): refused all the same.
        big = os.urandom(9 << 20)
        status, _, _ = raw(
            srv,
            f"PUT /d/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n"
            f"Content-Encoding: {coding}",
            big,
        )
        assert status == 415
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        status, _, _ = raw(
            srv,
            f"PUT /d/chunked.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Encoding: {coding}",
            chunked,
        )
        assert status == 415
        assert not (root / "d").exists()
        # identity is no coding at all: stored exactly as sent, digest checked on those bytes.
        status, _, _ = raw(
            srv,
            f"PUT /d/plain.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Content-Encoding: identity\r\nRepr-Digest: {digest_of(body)}",
            body,
        )
        assert status == 201
        assert (root / "d" / "plain.bin").read_bytes() == body
        wait_for(lambda: temps_under(root) == [], 10, "no temp left")
        logged.assert_clean_log()


# --------------------------------------------------------------------------- 3. slow bodies


class Trickle:
    """Open ``count`` authenticated uploads of ``size`` bytes and send them a few bytes at a
    time from a thread, until stopped."""

    def __init__(self, srv: ServerProc, targets: list[str], size: int) -> None:
        self.socks: list[socket.socket] = []
        for target in targets:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(
                f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                f"Authorization: Bearer {srv.token}\r\n\r\n".encode()
                + b"x" * 1000
            )
            self.socks.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.send(b"y" * 16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()


async def test_slow_large_uploads_do_not_starve_other_requests(
    tmp_path: Path, token_file: Path
) -> None:
    """40 slow uploads trickling in (large bodies read from the socket, medium ones through the
    stream, two-step ones) while other requests must still answer: the issue's bound is 1 s;
    5 s here so that a loaded 2-core CI machine cannot fail it, while a starved server (the
    requests queue behind the trickles until those end) fails it every time."""
    root = tmp_path / "root"
    with logged_server(root, token_file, tmp_path / "serve.log") as logged:
        srv = logged.srv
        (root / "docs").mkdir()
        (root / "docs" / "old.txt").write_bytes(b"old")
        targets = [f"/slow/big{i}.bin" for i in range(30)]
        targets += [f"/slow/two{i}.bin?upload={i:032x}" for i in range(5)]
        trickle_big = Trickle(srv, targets, 64 << 20)
        trickle_mid = Trickle(srv, [f"/slow/mid{i}.bin" for i in range(5)], 4 << 20)
        try:
            # Give the server the chance to take every slow upload in hand (the large ones
            # have their temps at once; the medium ones only after their first MiB).
            with contextlib.suppress(AssertionError):
                wait_for(lambda: len(temps_under(root)) >= 35, 10, "35 temps")
            async with aiohttp.ClientSession(headers=srv.headers()) as s:

                async def timed(method: str, path: str, **kw: object) -> tuple[int, float]:
                    started = time.monotonic()
                    url = URL(srv.url.rstrip("/") + path, encoded=True)
                    async with asyncio.timeout(5):
                        async with s.request(method, url, **kw) as r:
                            await r.read()
                            return r.status, time.monotonic() - started

                uid = "f" * 32
                checks = [
                    ("PUT", "/docs/five.txt", {"data": b"hello"}, 201),
                    ("GET", "/docs/?list", {}, 200),
                    ("GET", "/docs/?state", {}, 200),
                    ("GET", "/docs/old.txt", {}, 200),
                    ("PUT", f"/docs/step.txt?upload={uid}", {"data": b"two-step"}, 202),
                    (
                        "POST",
                        f"/docs/step.txt?commit={uid}",
                        {"headers": {"Repr-Digest": digest_of(b"two-step")}},
                        201,
                    ),
                    ("MOVE", "/docs/five.txt", {"headers": {"Destination": "/docs/5.txt"}}, 201),
                    ("DELETE", "/docs/5.txt", {}, 204),
                ]
                for method, path, kw, want in checks:
                    status, took = await timed(method, path, **kw)
                    assert status == want, (method, path, status)
                    assert took < 5, (method, path, took)
        finally:
            trickle_big.close()
            trickle_mid.close()
        # The abandoned uploads leave nothing behind.
        wait_for(lambda: temps_under(root) == [], 20, "every temp removed")
        logged.assert_clean_log()


# --------------------------------------------------------------------------- 4. SIGTERM

DRAIN_LIMIT = 7.0
"""docs/protocol.md: running requests get 5 s after SIGTERM, and the server is gone 7 s after
the signal at the latest."""
FORCE_LIMIT = 2.0
"""docs/protocol.md: after a second signal the server is gone within 2 s."""


@pytest.mark.parametrize("second_signal", [False, True])
def test_sigterm_with_uploads_in_flight_stops_in_time_and_leaves_no_temp(
    tmp_path: Path, token_file: Path, second_signal: bool
) -> None:
    """One SIGTERM: running requests get their 5 s, then are cancelled; a second signal stops
    at once. Either way: exit 0 within the documented time, no temp file left, no traceback."""
    root = tmp_path / "root"
    logged = start_logged(root, token_file, tmp_path / "serve.log")
    srv = logged.srv
    socks: list[socket.socket] = []
    try:
        # Large bodies read from the socket, stalled mid-body; medium ones through the stream,
        # stalled too; two-step uploads in flight and pending; a fast one that never ends.
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(
                f"PUT /d/big{i}.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n"
                f"Authorization: Bearer {srv.token}\r\n\r\n".encode()
                + bytes(10 << 20)
            )
            socks.append(s)
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(
                f"PUT /d/mid{i}.bin?upload={i:032x} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {6 << 20}\r\nAuthorization: Bearer {srv.token}\r\n\r\n".encode()
                + bytes(3 << 20)
            )
            socks.append(s)
        for i in range(2):
            status, _, _ = raw(
                srv,
                f"PUT /d/pending{i}.bin?upload={i + 100:032x} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 10",
                b"p" * 10,
            )
            assert status == 202
        fast = socket.create_connection(("127.0.0.1", srv.port))
        socks.append(fast)
        fast.sendall(
            f"PUT /d/endless.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 40}\r\n"
            f"Authorization: Bearer {srv.token}\r\n\r\n".encode()
        )
        stop_fast = threading.Event()

        def send_fast() -> None:
            block = bytes(1 << 20)
            with contextlib.suppress(OSError):
                while not stop_fast.is_set():
                    fast.sendall(block)

        sender = threading.Thread(target=send_fast, daemon=True)
        sender.start()
        wait_for(lambda: len(temps_under(root)) >= 11, 30, "every upload has its temp")
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        if second_signal:  # once the first one has been handled
            wait_for(lambda: "SIGTERM: stopping" in logged.log(), 10, "the first signal")
            srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(timeout=60)
        finally:
            took = time.monotonic() - started
            stop_fast.set()
        assert code == 0
        # A margin of 3 s over the documented bound for a loaded machine; the server's own
        # timers decide, so this does not depend on how fast the machine is.
        assert took < (FORCE_LIMIT if second_signal else DRAIN_LIMIT) + 3, took
        assert temps_under(root) == [], temps_under(root)
        logged.assert_clean_log()
    finally:
        for s in socks:
            s.close()
        srv.stop()


# --------------------------------------------------------------------------- 5. deep trees

DEPTH = 2000  # beyond Python's recursion limit (1000) and, with 3-byte steps, PATH_MAX (4096)


def make_deep(top: Path, depth: int, name: str = "dd") -> None:
    """``top/dd/dd/.../dd`` ``depth`` levels deep, with a file every 100 levels, made with
    fd-relative calls (the path is longer than PATH_MAX)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if level % 100 == 99:
                f = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, b"level %d" % level)
                os.close(f)
    finally:
        os.close(fd)


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    """A server root that may hold trees deeper than Python's recursion limit: removed with
    rm(1) afterwards, whatever happened (pytest's own clean-up recurses, and would fail on
    it in a later run)."""
    root = tmp_path / "root"
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_very_deep_tree_lists_states_and_deletes(
    tmp_path: Path, token_file: Path, deep_root: Path
) -> None:
    """2,000 levels: the server starts on it, lists it, gives its state, stores a file at the
    bottom of a new chain as deep, and deletes both, with the usual 1,024 open files."""
    root = deep_root
    make_deep(root / "docs" / "deep", DEPTH)
    with logged_server(root, token_file, tmp_path / "serve.log", nofile=1024) as logged:
        srv = logged.srv
        status, _, body = raw(srv, "GET /docs/?list HTTP/1.1\r\nHost: x", timeout=120)
        assert status == 200, body[:300]
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert len(lines) == DEPTH // 100
        assert lines[-1]["path"] == "deep/" + "dd/" * DEPTH + "f.txt"
        status, _, body = raw(srv, "GET /docs/?state HTTP/1.1\r\nHost: x", timeout=120)
        assert status == 200 and b"state" in body, body[:300]
        # A file at the bottom of a new chain as deep (the request line holds 4,000 bytes).
        deep_path = "/docs/new/" + "e/" * DEPTH + "bottom.txt"
        head = f"PUT {deep_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3"
        status, _, body = raw(srv, head, b"end")
        assert status == 201, body
        status, _, body = raw(srv, f"GET {deep_path} HTTP/1.1\r\nHost: x")
        assert (status, body) == (200, b"end")
        # Deleting the deep file prunes the 2,000 directories left empty, up to /docs (each
        # level above the 16 kept open is reopened through "..").
        for target in (deep_path, "/docs/deep"):
            status, _, body = raw(srv, f"DELETE {target} HTTP/1.1\r\nHost: x", timeout=120)
            assert status == 204, (target, status, body)
        assert list((root / "docs").iterdir()) == []  # (a DELETE keeps the first segment)
        logged.assert_clean_log()
    # and the start-up walk (leftover temps) copes with a deep tree too
    make_deep(root / "again", DEPTH)
    with logged_server(root, token_file, tmp_path / "serve2.log", nofile=1024) as logged:
        status, _, body = raw(logged.srv, "DELETE /again HTTP/1.1\r\nHost: x", timeout=120)
        assert status == 204, body
        logged.assert_clean_log()


def test_deep_request_path_beyond_the_line_limit_is_a_clear_4xx(
    tmp_path: Path, token_file: Path
) -> None:
    """A request path longer than the server takes (aiohttp: 8,190 bytes a request line) is
    refused with a 4xx, never a 500 or a traceback."""
    with logged_server(tmp_path / "root", token_file, tmp_path / "serve.log") as logged:
        status, _, _ = raw(logged.srv, "PUT /" + "e/" * 5000 + "x HTTP/1.1\r\nHost: x", b"")
        assert 400 <= status < 500
        logged.assert_clean_log()
