"""`syncd serve` against the real subprocess: protocol, atomicity, and hostile requests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from syncd.server import make_app
from tests.conftest import ServerProc, mirror_config, run_syncd, start_server

TEMP_PREFIX = ".~syncd-"


# --------------------------------------------------------------------------- helpers


def url(srv: ServerProc, path: str) -> URL:
    """The server URL for an already percent-encoded path, sent exactly as written."""
    return URL(srv.url.rstrip("/") + path, encoded=True)


def enc(*segments: str) -> str:
    """Percent-encode each segment completely (as the syncd client does)."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def digest_of(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def walk(top: Path) -> list[str]:
    """Every entry below ``top`` (relative, sorted), without following symlinks; not the
    versions in ``top/.~syncd-versions``."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel = Path(dirpath).relative_to(top)
        if rel == Path("."):  # (the kept versions are not the mirrors': test_server_versions)
            dirnames[:] = [d for d in dirnames if d != ".~syncd-versions"]
        # (the server's own lock, which stays while it runs, is not an entry of the mirrors)
        found += [str(rel / n) for n in dirnames + filenames if n != ".~syncd-serve.lock"]
    return sorted(found)


def temps(top: Path) -> list[str]:
    return [p for p in walk(top) if Path(p).name.startswith(TEMP_PREFIX)]


async def wait_until(cond: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def raw_request(
    srv: ServerProc,
    method: str,
    target: bytes | str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, bytes]:
    """Send one request exactly as written (no client normalisation); return status and body."""
    if isinstance(target, str):
        target = target.encode("ascii")
    lines = [
        b"%s %s HTTP/1.1" % (method.encode(), target),
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Length: %d" % len(body),
    ]
    all_headers = {**(srv.headers() if auth else {}), **(headers or {})}
    lines += [f"{k}: {v}".encode() for k, v in all_headers.items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


@contextlib.contextmanager
def running(srv: ServerProc) -> Iterator[ServerProc]:
    """Stop the server at the end (it must exit 0) and close its stdout pipe."""
    try:
        yield srv
    finally:
        code = srv.stop()
        assert srv.proc.stdout is not None
        srv.proc.stdout.close()
    assert code == 0


@pytest.fixture
async def session(server: ServerProc) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=server.headers()) as s:
        yield s


async def put(
    s: aiohttp.ClientSession,
    srv: ServerProc,
    path: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, str | None]:
    body = io.BytesIO(data)
    async with s.put(url(srv, path), data=body, headers=headers, ssl=tls or True) as r:
        await r.read()
        return r.status, r.headers.get("Repr-Digest")


async def listing(s: aiohttp.ClientSession, srv: ServerProc, path: str) -> list[dict[str, Any]]:
    async with s.get(url(srv, path + "?list")) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        text = await r.text()
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- uploads and reads

ODD_NAMES = [
    "with space.txt",
    "hash#tag.txt",
    "100%.txt",
    "what?.txt",
    "a&b=c.txt",
    "plus+sign.txt",
    "semi;colon.txt",
    "quote\"s'.txt",
    "[brackets]{braces}.txt",
    unicodedata.normalize("NFC", "café.txt"),
    unicodedata.normalize("NFD", "café.txt"),
    "emoji 😀.txt",
    ".hidden",
    "..leading-dots",
    "...",
]


async def test_put_get_head_round_trip_with_odd_names(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    for i, name in enumerate(ODD_NAMES):
        body = f"{i}: {name}\n".encode()
        path = enc("docs", "sub dir#1", name)
        status, repr_digest = await put(
            session, server, path, body, {"Repr-Digest": digest_of(body)}
        )
        assert (status, repr_digest) == (201, digest_of(body)), name
        assert (server.root / "docs" / "sub dir#1" / name).read_bytes() == body
        async with session.get(url(server, path)) as r:
            assert r.status == 200
            assert await r.read() == body
            assert r.headers["Repr-Digest"] == digest_of(body)
        async with session.head(url(server, path)) as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == str(len(body))
            assert r.headers["Repr-Digest"] == digest_of(body)
    # NFC and NFD spellings are different names and stay different files.
    assert sorted(os.listdir(server.root / "docs" / "sub dir#1")) == sorted(ODD_NAMES)


@pytest.mark.parametrize(
    "size",
    [
        3 * 1024 * 1024 + 17,  # through aiohttp's stream, 1 MiB per thread hop
        9 * 1024 * 1024 + 5,  # from 8 MiB: straight from the socket, then Connection: close
    ],
)
async def test_large_file_round_trip_and_head(
    server: ServerProc, session: aiohttp.ClientSession, size: int
) -> None:
    body = os.urandom(size)
    status, repr_digest = await put(session, server, "/docs/big.bin", body)
    assert (status, repr_digest) == (201, digest_of(body))
    async with session.get(url(server, "/docs/big.bin")) as r:
        assert r.headers["Content-Length"] == str(len(body))
        assert r.headers["Repr-Digest"] == digest_of(body)
        assert await r.read() == body
    async with session.head(url(server, "/docs/big.bin")) as r:
        assert r.headers["Content-Length"] == str(len(body))
        assert await r.read() == b""


async def test_plain_put_like_curl_then_replace(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    # What `curl -T` sends: Content-Length, Expect: 100-continue, no digest.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        head = (
            "PUT /docs/plain.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\n"
            f"Authorization: Bearer {server.token}\r\nExpect: 100-continue\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 100")
        writer.write(b"first\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert b"HTTP/1.1 201" in reply
    assert digest_of(b"first\n").encode() in reply
    assert (server.root / "docs" / "plain.txt").read_bytes() == b"first\n"

    status, repr_digest = await put(session, server, "/docs/plain.txt", b"second, longer\n")
    assert (status, repr_digest) == (204, digest_of(b"second, longer\n"))
    async with session.get(url(server, "/docs/plain.txt")) as r:
        assert await r.read() == b"second, longer\n"


async def test_digest_mismatch_stores_nothing(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    for header in ("Repr-Digest", "Content-Digest"):
        status, _ = await put(
            session, server, "/docs/new/bad.txt", b"payload", {header: digest_of(b"other")}
        )
        assert status == 400, header
    status, _ = await put(
        session, server, "/docs/new/bad.txt", b"x", {"Repr-Digest": "sha-256=:not base64!:"}
    )
    assert status == 400
    assert walk(server.root) == []  # no file, no temp, no directory left behind
    # A digest for another algorithm only is ignored; a right one is accepted.
    status, _ = await put(
        session,
        server,
        "/docs/ok.txt",
        b"fine",
        {"Repr-Digest": "sha-512=:AAAA:, " + digest_of(b"fine")},
    )
    assert status == 201


async def test_truncated_body_leaves_nothing(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    auth = f"Authorization: Bearer {server.token}\r\n".encode()
    # Small: 10 of 1000 declared bytes, then the client hangs up.
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"PUT /docs/short.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        + auth
        + b"\r\n0123456789"
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with session.get(url(server, "/docs/short.txt")) as r:
        assert r.status == 404

    # Large: the first MiB reaches a temp file before the client hangs up.
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"PUT /docs/fresh/dir/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n"
        + auth
        + b"\r\n"
        + b"x" * (3 * 1024 * 1024)
    )
    await writer.drain()
    await wait_until(lambda: bool(temps(server.root)), "a temp file is being written")
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: not temps(server.root), "the temp file is removed")
    assert not (server.root / "docs" / "fresh" / "dir" / "big.bin").exists()
    # The directories that upload created are gone again.
    await wait_until(lambda: walk(server.root) == [], "the created directories are pruned")


async def test_large_body_digest_mismatch_and_short_body(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    """Bodies read straight from the socket get the same checks as the others."""
    body = os.urandom(9 << 20)
    status, _ = await put(
        session, server, "/docs/big/bad.bin", body, {"Repr-Digest": digest_of(b"x")}
    )
    assert status == 400
    assert walk(server.root) == []
    # Fewer bytes than Content-Length, then the client stops sending and closes: nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"PUT /docs/big/short.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {20 << 20}\r\n"
        f"Authorization: Bearer {server.token}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    assert b" 20" not in reply[:16], reply[:100]  # no 2xx (a half-closed client gets no answer)
    await wait_until(lambda: walk(server.root) == [], "the temp and its directories are gone")
    # The server is fine afterwards, on new connections.
    status, repr_digest = await put(session, server, "/docs/big/ok.bin", body)
    assert (status, repr_digest) == (201, digest_of(body))


def test_stop_while_a_large_body_arrives(tmp_path: Path, token_file: Path) -> None:
    """SIGTERM while a client is silent in the middle of a large body: the server stops in
    seconds (not after the 60 s body timeout) and leaves no temp file."""
    root = tmp_path / "root"
    srv = start_server(root, token_file)
    with running(srv), socket.create_connection(("127.0.0.1", srv.port)) as conn:
        conn.sendall(
            f"PUT /docs/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n"
            f"Authorization: Bearer {srv.token}\r\n\r\n".encode()
            + bytes(10 << 20)
        )
        deadline = time.monotonic() + 20
        while not temps(root) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temps(root), "the body is being written"
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    assert temps(root) == []
    assert not (root / "docs" / "big.bin").exists()


async def test_concurrent_puts_last_wins_never_mixed(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    bodies = [bytes([65 + i]) * (2 * 1024 * 1024) for i in range(6)]
    results = await asyncio.gather(*(put(session, server, "/docs/race.bin", b) for b in bodies))
    assert sorted(status for status, _ in results) == [201] + [204] * 5
    assert (server.root / "docs" / "race.bin").read_bytes() in bodies
    assert temps(server.root) == []


async def test_put_refusals(server: ServerProc, session: aiohttp.ClientSession) -> None:
    await put(session, server, "/docs/file.txt", b"x")
    (server.root / "docs" / "adir").mkdir()
    assert (await put(session, server, "/docs/adir", b"x"))[0] == 409
    assert (await put(session, server, "/docs/file.txt/child", b"x"))[0] == 409
    assert (await put(session, server, "/docs/trailing/", b"x"))[0] == 400
    assert (await put(session, server, "/docs/q.txt?foo=1", b"x"))[0] == 400
    async with session.get(url(server, "/docs/adir")) as r:
        assert r.status == 409
    async with session.get(url(server, "/docs/missing")) as r:
        assert r.status == 404
    assert walk(server.root) == ["docs", "docs/adir", "docs/file.txt"]


# --------------------------------------------------------------------------- two-step uploads


async def test_two_step_upload_commit_mismatch_and_abort(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    body = os.urandom(1500 * 1024)
    uid = "0123456789abcdef0123456789abcdef"
    async with session.put(
        url(server, f"/docs/two/big.bin?upload={uid}"), data=io.BytesIO(body)
    ) as r:
        assert r.status == 202
        assert r.headers["Repr-Digest"] == digest_of(body)
    assert not (server.root / "docs" / "two" / "big.bin").exists()
    assert len(temps(server.root)) == 1
    assert await listing(session, server, "/docs/") == []  # a pending upload is not listed

    commit = url(server, f"/docs/two/big.bin?commit={uid}")
    async with session.post(commit, headers={"Repr-Digest": digest_of(body)}) as r:
        assert r.status == 201
        assert r.headers["Repr-Digest"] == digest_of(body)
    assert (server.root / "docs" / "two" / "big.bin").read_bytes() == body
    assert temps(server.root) == []
    async with session.post(commit, headers={"Repr-Digest": digest_of(body)}) as r:
        assert r.status == 404  # used up

    # The client read something else than it sent: 400 (as a one-step PUT's mismatch),
    # nothing stored, temp gone.
    uid2 = "f" * 32
    async with session.put(url(server, f"/docs/two/changed.bin?upload={uid2}"), data=b"v1"):
        pass
    # A commit naming another path does not touch it.
    async with session.post(
        url(server, f"/docs/two/other.bin?commit={uid2}"), headers={"Repr-Digest": digest_of(b"v1")}
    ) as r:
        assert r.status == 404
    async with session.post(
        url(server, f"/docs/two/changed.bin?commit={uid2}"),
        headers={"Repr-Digest": digest_of(b"v2")},
    ) as r:
        assert r.status == 400
        assert "digest mismatch" in await r.text()
    assert not (server.root / "docs" / "two" / "changed.bin").exists()
    assert temps(server.root) == []

    # Abort drops the temp; a later commit is 404.
    uid3 = "a" * 32
    async with session.put(url(server, f"/docs/two/dropped.bin?upload={uid3}"), data=b"zz"):
        pass
    assert len(temps(server.root)) == 1
    async with session.delete(url(server, f"/docs/two/dropped.bin?upload={uid3}")) as r:
        assert r.status == 204
    assert temps(server.root) == []
    async with session.post(
        url(server, f"/docs/two/dropped.bin?commit={uid3}"),
        headers={"Repr-Digest": digest_of(b"zz")},
    ) as r:
        assert r.status == 404
    async with session.put(url(server, "/docs/x?upload=NOTHEX"), data=b"") as r:
        assert r.status == 400
    assert walk(server.root) == ["docs", "docs/two", "docs/two/big.bin"]

    # A pending upload's temp is removed when the server stops.
    async with session.put(url(server, f"/docs/two/pending.bin?upload={uid3}"), data=b"p") as r:
        assert r.status == 202
    assert len(temps(server.root)) == 1
    assert server.stop() == 0
    assert temps(server.root) == []


async def test_pending_uploads_expire(tmp_path: Path) -> None:
    app = make_app(tmp_path, None, upload_ttl=1.5)  # long enough to see it pending first
    uid = "b" * 32
    async with TestServer(app, host="127.0.0.1") as ts, aiohttp.ClientSession() as s:
        async with s.put(ts.make_url(f"/x/y.bin?upload={uid}"), data=b"late") as r:
            assert r.status == 202
        assert len(temps(tmp_path)) == 1
        await wait_until(lambda: not temps(tmp_path), "the expired upload is dropped")
        async with s.post(
            ts.make_url(f"/x/y.bin?commit={uid}"), headers={"Repr-Digest": digest_of(b"late")}
        ) as r:
            assert r.status == 404
    await wait_until(lambda: walk(tmp_path) == [], "its directory is pruned too")


# --------------------------------------------------------------------------- listing


async def test_listing(server: ServerProc, session: aiohttp.ClientSession) -> None:
    files = {"a.txt": b"alpha", "sub/b.txt": b"bravo!", "sub/deeper/c d#.txt": b"", ".dot": b"."}
    for rel, body in files.items():
        assert (await put(session, server, enc("docs", *rel.split("/")), body))[0] == 201
    (server.root / "docs" / "sub" / ".~syncd-0123.tmp").write_bytes(b"temp")
    (server.root / "docs" / "empty-dir").mkdir()
    outside = server.root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (server.root / "docs" / "link.txt").symlink_to(outside / "secret.txt")
    (server.root / "docs" / "link-dir").symlink_to(outside)

    entries = await listing(session, server, "/docs/")
    by_path = {e["path"]: e for e in entries}
    assert sorted(by_path) == sorted(files)
    for rel, body in files.items():
        entry = by_path[rel]
        assert entry["size"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        mtime = os.stat(server.root / "docs" / rel).st_mtime
        assert isinstance(entry["mtime"], float)
        assert abs(entry["mtime"] - mtime) < 0.001

    # Relative to the listed directory; also without the trailing slash.
    assert {e["path"] for e in await listing(session, server, "/docs/sub")} == {
        "b.txt",
        "deeper/c d#.txt",
    }
    assert {e["path"] for e in await listing(session, server, "/")} == {
        "docs/" + rel for rel in files
    }
    assert await listing(session, server, "/absent/") == []

    # A file changed behind the server's back is hashed again.
    changed = server.root / "docs" / "a.txt"
    changed.write_bytes(b"changed behind its back")
    entry = {e["path"]: e for e in await listing(session, server, "/docs/")}["a.txt"]
    assert entry["sha256"] == hashlib.sha256(b"changed behind its back").hexdigest()
    async with session.get(url(server, "/docs/a.txt")) as r:
        assert r.headers["Repr-Digest"] == digest_of(b"changed behind its back")

    async with session.get(url(server, "/docs/a.txt?list")) as r:
        assert r.status == 409


# --------------------------------------------------------------------------- delete, move, mkcol


async def test_delete_file_prunes_empty_parents(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    await put(session, server, "/docs/a/b/c.txt", b"c")
    await put(session, server, "/docs/keep.txt", b"k")
    await put(session, server, "/solo/x/y.txt", b"y")
    async with session.delete(url(server, "/docs/a/b/c.txt")) as r:
        assert r.status == 204
    async with session.delete(url(server, "/solo/x/y.txt")) as r:
        assert r.status == 204
    # Empty parents go, up to but not including the first segment.
    assert walk(server.root) == ["docs", "docs/keep.txt", "solo"]
    async with session.delete(url(server, "/docs/a/b/c.txt")) as r:
        assert r.status == 404
    async with session.delete(url(server, "/")) as r:
        assert r.status == 403
    assert walk(server.root) == ["docs", "docs/keep.txt", "solo"]


async def test_delete_directory_subtree(server: ServerProc, session: aiohttp.ClientSession) -> None:
    for rel in ("sub/a.txt", "sub/x/b.txt", "sub/x/y/c.txt", "other.txt"):
        await put(session, server, "/docs/" + rel, b"data")
    async with session.delete(url(server, "/docs/sub")) as r:
        assert r.status == 204
    assert walk(server.root) == ["docs", "docs/other.txt"]
    assert await listing(session, server, "/docs/sub/") == []


async def test_move_file_and_directory(server: ServerProc, session: aiohttp.ClientSession) -> None:
    await put(session, server, "/docs/from/one.txt", b"one")
    await put(session, server, "/docs/two.txt", b"two")

    async def move(src: str, dest: str, overwrite: str | None = None) -> int:
        headers = {"Destination": dest}
        if overwrite is not None:
            headers["Overwrite"] = overwrite
        async with session.request("MOVE", url(server, src), headers=headers) as r:
            return r.status

    # Absolute URL destination, parents created, empty source parent pruned.
    assert await move("/docs/from/one.txt", server.url + "docs/to/deep/one%20moved.txt") == 201
    assert (server.root / "docs" / "to" / "deep" / "one moved.txt").read_bytes() == b"one"
    assert not (server.root / "docs" / "from").exists()
    async with session.get(url(server, "/docs/to/deep/one%20moved.txt")) as r:
        assert r.headers["Repr-Digest"] == digest_of(b"one")

    assert await move("/docs/two.txt", "/docs/to/deep/one%20moved.txt", "F") == 412
    assert (server.root / "docs" / "two.txt").read_bytes() == b"two"
    assert await move("/docs/two.txt", "/docs/to/deep/one%20moved.txt") == 204
    assert (server.root / "docs" / "to" / "deep" / "one moved.txt").read_bytes() == b"two"
    assert not (server.root / "docs" / "two.txt").exists()

    # A directory, by path destination.
    assert await move("/docs/to", "/archive/2024/to") == 201
    assert walk(server.root) == [
        "archive",
        "archive/2024",
        "archive/2024/to",
        "archive/2024/to/deep",
        "archive/2024/to/deep/one moved.txt",
        "docs",
    ]
    assert [e["path"] for e in await listing(session, server, "/archive/")] == [
        "2024/to/deep/one moved.txt"
    ]
    assert await move("/docs/absent.txt", "/docs/x.txt") == 404
    assert await move("/archive/2024", "/archive/2024/to/inside") == 409
    assert await move("/archive/2024", "/../escaped") == 400
    assert await move("/archive/2024", "/a%2F..%2F..%2Fescaped") == 400
    assert not (server.root.parent / "escaped").exists()


async def test_mkcol(server: ServerProc, session: aiohttp.ClientSession) -> None:
    async with session.request("MKCOL", url(server, "/docs")) as r:
        assert r.status == 201
    async with session.request("MKCOL", url(server, "/docs")) as r:
        assert r.status == 405
    async with session.request("MKCOL", url(server, "/nope/child")) as r:
        assert r.status == 409
    assert walk(server.root) == ["docs"]


# --------------------------------------------------------------------------- auth


async def test_wrong_or_missing_token_is_401(server: ServerProc) -> None:
    (server.root / "docs").mkdir()
    (server.root / "docs" / "kept.txt").write_bytes(b"kept")
    before = walk(server.root)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.put(url(server, "/docs/new.txt"), data=b"x") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(url(server, "/docs/kept.txt")) as r:
                assert r.status == 401
                assert b"kept" not in await r.read()
            async with s.delete(url(server, "/docs/kept.txt")) as r:
                assert r.status == 401
            async with s.get(url(server, "/docs/?list")) as r:
                assert r.status == 401
    assert walk(server.root) == before


# --------------------------------------------------------------------------- hostile paths

HOSTILE = [
    "/../sentinel/x",
    "/%2e%2e/sentinel/x",
    "/%2E%2E/sentinel/x",
    "/a%2F..%2F..%2Fsentinel%2Fx",
    "/a%2f%2e%2e%2f%2e%2e%2fsentinel%2fx",
    "/a/%00",
    "/a/x%00.txt",
    "//etc/passwd",
    "/a//x",
    "/./x",
    "/a/./x",
    "/a/%c0%ae%c0%ae/x",
    "/a/%e0%80%ae/x",
    "/a/%ff",
    "/.~syncd-x",
    "/a/.~syncd-0123.tmp",
    "/a/%2E~syncd-x",
    "/a#b",
    "http://127.0.0.1/x",
]

# Names that only look like traversals elsewhere: on the server they are names like any other
# (docs/protocol.md, "Paths"), stored under ROOT as spelled, decoded once.
LITERAL = {
    "/%252e%252e/sentinel/x": ("%2e%2e", "sentinel", "x"),
    "/%25252e%25252e/sentinel/x": ("%252e%252e", "sentinel", "x"),
    "/a%5C..%5C..%5Csentinel%5Cx": ("a\\..\\..\\sentinel\\x",),
    "/C:/x": ("C:", "x"),
    "/c%3A/x": ("c:", "x"),
}


async def test_expect_100_continue_answers_before_the_body(server: ServerProc) -> None:
    """`curl -T` sends Expect: 100-continue: with a wrong token the 401 comes before any body
    byte is sent (not after a gigabyte); with the right one, 100 Continue."""
    for token, first in (("wrong", b"HTTP/1.1 401"), (server.token, b"HTTP/1.1 100 Continue")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(
                f"PUT /docs/expect.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n"
                f"Authorization: Bearer {token}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            assert line.startswith(first), line
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    await wait_until(lambda: temps(server.root) == [], "the abandoned upload is dropped")


async def test_traversal_in_every_spelling_is_refused(server: ServerProc) -> None:
    sentinel = server.root.parent / "sentinel"
    sentinel.mkdir()
    (server.root / "a").mkdir()
    (server.root / "a" / "inside.txt").write_bytes(b"inside")
    before = walk(server.root)
    for target in HOSTILE:
        for method in ("PUT", "GET", "DELETE", "MKCOL"):
            status, body = await raw_request(server, method, target, body=b"evil")
            assert 400 <= status < 500, (method, target, status, body)
            assert b"root:" not in body
        if not target.startswith("http"):  # an absolute URL is a fine Destination
            status, _ = await raw_request(
                server, "MOVE", "/a/inside.txt", headers={"Destination": target}
            )
            assert 400 <= status < 500, ("MOVE", target, status)
            dest = "http://127.0.0.1" + target
            status, _ = await raw_request(
                server, "MOVE", "/a/inside.txt", headers={"Destination": dest}
            )
            assert 400 <= status < 500, ("MOVE", dest, status)
        status, _ = await raw_request(server, "GET", target + "?list")
        assert 400 <= status < 500, ("GET ?list", target, status)
    for dest in ("http://[::1/x", "http://127.0.0.1:99999/x", "http://h:port/x"):
        status, _ = await raw_request(
            server, "MOVE", "/a/inside.txt", headers={"Destination": dest}
        )
        assert status == 400, ("MOVE to a broken URL", dest, status)  # it moved to ROOT/x
    assert walk(sentinel) == []
    assert walk(server.root) == before
    assert (server.root / "a" / "inside.txt").read_bytes() == b"inside"

    for target, parts in LITERAL.items():
        status, _ = await raw_request(server, "PUT", target, body=b"literal")
        assert status == 201, target
        assert server.root.joinpath(*parts).read_bytes() == b"literal"
        status, body = await raw_request(server, "GET", target)
        assert (status, body) == (200, b"literal")
        status, _ = await raw_request(server, "DELETE", target)
        assert status == 204
        if len(parts) > 1:  # (a DELETE keeps the first segment, see "Other requests")
            status, _ = await raw_request(server, "DELETE", "/" + target.split("/")[1])
            assert status == 204
    assert walk(sentinel) == []
    assert walk(server.root) == before


async def test_symlinks_inside_root_are_never_followed(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    outside = server.root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    docs = server.root / "docs"
    docs.mkdir()
    (docs / "file-link").symlink_to(outside / "secret.txt")
    (docs / "dir-link").symlink_to(outside)
    (server.root / "top-link").symlink_to(outside)

    for path in ("/docs/file-link", "/docs/dir-link/secret.txt", "/top-link/secret.txt"):
        async with session.get(url(server, path)) as r:
            assert r.status == 403, path
            assert b"secret" not in await r.read()
        async with session.head(url(server, path)) as r:
            assert r.status == 403, path
    for path in ("/docs/file-link", "/docs/dir-link/new.txt", "/top-link/sub/new.txt"):
        assert (await put(session, server, path, b"overwritten"))[0] == 403, path
    for path in ("/docs/file-link", "/docs/dir-link", "/docs/dir-link/secret.txt"):
        async with session.delete(url(server, path)) as r:
            assert r.status == 403, path
    for path in ("/docs/dir-link/", "/top-link/"):
        async with session.get(url(server, path + "?list")) as r:
            assert r.status == 403, path
    async with session.request(
        "MOVE", url(server, "/docs/dir-link"), headers={"Destination": "/docs/moved"}
    ) as r:
        assert r.status == 403
    async with session.request(
        "MOVE", url(server, "/docs/file-link"), headers={"Destination": "/top-link/stolen"}
    ) as r:
        assert r.status == 403
    assert await listing(session, server, "/") == []
    assert walk(outside) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"

    # Deleting a directory that holds symlinks removes the links, never what they point to.
    async with session.delete(url(server, "/docs")) as r:
        assert r.status == 204
    assert not docs.exists()
    assert walk(outside) == ["secret.txt"]


# --------------------------------------------------------------------------- start and stop


def test_leftover_temps_removed_at_start_and_clean_stop(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / ".~syncd-aaaa.tmp").write_bytes(b"1")
    (root / "docs" / "deep" / ".~syncd-bbbb.tmp").write_bytes(b"2")
    (root / "docs" / "keep.txt").write_bytes(b"keep")
    with running(start_server(root, None)):
        assert temps(root) == []
        assert walk(root) == ["docs", "docs/deep", "docs/keep.txt"]


def test_root_is_created_and_port_reported(tmp_path: Path) -> None:
    root = tmp_path / "new" / "root"
    with running(start_server(root, None)) as srv:
        assert root.is_dir()
        assert srv.port > 0


def test_non_loopback_host_without_token_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "syncd", "serve", "--root", str(root), "--port", "0"]
    proc = subprocess.run([*cmd, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--host" in proc.stderr
    assert "listening" not in proc.stdout


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    with running(start_server(tmp_path / "root", None)) as srv:
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(timeout=10) == 0


def test_port_in_use_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "syncd", "serve", "--root", str(tmp_path / "r")]
        proc = subprocess.run(
            [*cmd, "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


async def test_tls(tmp_path: Path, token_file: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    root = tmp_path / "root"
    with running(
        start_server(root, token_file, "--tls-cert", str(cert), "--tls-key", str(key))
    ) as srv:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(headers=srv.headers()) as s:
            status, repr_digest = await put(s, srv, "/docs/secure.txt", b"tls", tls=ctx)
            assert (status, repr_digest) == (201, digest_of(b"tls"))
        assert (root / "docs" / "secure.txt").read_bytes() == b"tls"


def test_sync_over_tls_with_ca_file(
    tmp_path: Path, token_file: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    root = tmp_path / "root"
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "secret.txt").write_text("over TLS")
    big = os.urandom((33 << 20) + 5)  # sendfile-sized, but TLS: read and written in chunks
    (folder / "big.bin").write_bytes(big)
    with running(
        start_server(root, token_file, "--tls-cert", str(cert), "--tls-key", str(key))
    ) as srv:
        cfg = mirror_config(tmp_path, srv, folder)
        text = cfg.read_text().replace("http://", "https://")
        cfg.write_text(text)
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 1 and "certificate" in r.stderr.lower()  # not trusted by default
        cfg.write_text(text.replace("[[folder]]", f'ca_file = "{cert}"\n[[folder]]'))
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 0, r.stderr
    assert (root / "docs" / "secret.txt").read_text() == "over TLS"
    assert (root / "docs" / "big.bin").read_bytes() == big


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real full disk (needs root, as CI and these machines have)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_507_temp_removed_and_retried(
    tmp_path: Path, token_file: Path, tiny_disk: Path
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "fits.txt").write_text("small enough")
    (folder / "huge.bin").write_bytes(os.urandom(3 << 20))
    (folder / "huger.bin").write_bytes(os.urandom(9 << 20))  # received past aiohttp's stream
    with running(start_server(tiny_disk, token_file)) as srv:
        cfg = mirror_config(tmp_path, srv, folder)
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 1
        assert "huge.bin" in r.stderr and "507" in r.stderr
        assert "huger.bin" in r.stderr
        assert r.stderr.count("retry") >= 1, "a full disk is transient: retried with backoff"
        assert (tiny_disk / "docs" / "fits.txt").read_text() == "small enough"
        assert not (tiny_disk / "docs" / "huge.bin").exists()
        assert list(tiny_disk.rglob(".~syncd-*.tmp")) == []


async def test_empty_bodies_in_a_row_then_data(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    """Regression: aiohttp shares one empty reader between body-less requests; a body loop
    that only waited for "end of chunk" spun forever on the second empty PUT."""
    for i in range(3):
        status, digest = await asyncio.wait_for(put(session, server, f"/docs/empty{i}", b""), 10)
        assert (status, digest) == (201, digest_of(b""))
    status, _ = await asyncio.wait_for(put(session, server, "/docs/after", b"data" * 1000), 10)
    assert status == 201
    assert (server.root / "docs" / "after").read_bytes() == b"data" * 1000
