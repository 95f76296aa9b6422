"""Hostile tests of resumable uploads (draft-ietf-httpbis-resumable-upload-12) and delta
uploads to `syncd serve` (docs/protocol.md, "Resumable uploads", "Delta upload").

Real processes on 127.0.0.1 (one test runs the app in this process, on a real socket, to
look at its upload registry). Tests marked ``# DEFECT`` in their docstring fail on the
commit under test (2202ff8/fe08e44) and say why; the others pass and guard behaviour worth
keeping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from syncd import chunking
from tests.conftest import ServerProc, mirror_config, run_syncd, start_server, wait_for
from tests.faultproxy import FORWARD, Action, FaultProxy, Seen
from tests.test_resumable import _patched
from tests.test_resumable import _proxy_config as _proxied

MiB = 1 << 20
BIG = 17 * MiB  # just above RESUMABLE_MIN / DELTA_MIN (16 MiB)


def _sha_header(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """One raw HTTP exchange (the request should say Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _create(server: ServerProc, path: str, length: int | None = None) -> str:
    """Careful creation (no content): the upload's path, /.~syncd-uploads/<id>."""
    extra = f"Upload-Length: {length}\r\n" if length is not None else ""
    answer = _raw(
        server.port,
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            f"Upload-Complete: ?0\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert _status(answer) == 201, answer
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    loc = next(ln.split(": ", 1)[1] for ln in head.split("\r\n") if ln.startswith("Location"))
    return str(URL(path).join(URL(loc)))  # (relative to the request's URL)


def _patch_head(server: ServerProc, loc: str, offset: str, complete: str, extra: str = "") -> str:
    return (
        f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/partial-upload\r\nUpload-Offset: {offset}\r\n"
        f"Upload-Complete: {complete}\r\n{extra}Connection: close\r\n"
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "src"
    f.mkdir()
    return f


# --------------------------------------------------------------------------- server: headers


@pytest.mark.parametrize("header", ["Upload-Offset", "Upload-Length"])
def test_a_unicode_digit_in_an_upload_header_is_a_400_not_a_500(
    server: ServerProc, header: str
) -> None:
    """# DEFECT: ``_int`` checks ``str.isdigit()``, which is true for '²' (U+00B2, sent as
    UTF-8), and then ``int('²')`` raises ValueError: a 500 "Server got itself in trouble" and
    a traceback in the server's log instead of the 400 any other garbage gets."""
    loc = _create(server, "/w/a.bin", 10)
    if header == "Upload-Offset":
        req = (
            _patch_head(server, loc, "\u00b2", "?0").encode("utf-8") + b"Content-Length: 0\r\n\r\n"
        )
    else:
        req = (
            f"POST /w/b.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Upload-Complete: ?0\r\nUpload-Length: \u00b2\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
    answer = _raw(server.port, req)
    assert _status(answer) == 400, answer


@pytest.mark.parametrize(
    "offset", ["-1", "+0", " 0x0", "1e3", "99999999999999999999", "0, 0", "", "0.0"]
)
def test_garbage_upload_offsets_are_400_and_change_nothing(server: ServerProc, offset: str) -> None:
    """(passes) Every other spelling of a bad offset is a 400, and the upload is untouched."""
    loc = _create(server, "/w/a.bin", 10)
    answer = _raw(
        server.port,
        _patch_head(server, loc, offset, "?0").encode() + b"Content-Length: 3\r\n\r\nabc",
    )
    assert _status(answer) == 400, answer
    head = _raw(
        server.port,
        f"HEAD {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert b"Upload-Offset: 0\r\n" in head, head


@pytest.mark.parametrize("value", ["?2", "1", "true", "?1;x", "", "?0, ?1"])
def test_garbage_upload_complete_is_400(server: ServerProc, value: str) -> None:
    """(passes) Upload-Complete other than ?0/?1 is a 400 on creation, nothing created."""
    answer = _raw(
        server.port,
        (
            f"POST /w/c.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            f"Upload-Complete: {value}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert _status(answer) == 400, answer
    uploads = server.root / ".~syncd-uploads"
    assert not uploads.exists() or not list(uploads.iterdir())


@pytest.mark.parametrize(
    "tail",
    [
        "../../docs/x",
        "..%2f..%2fetc",
        "ABCDEF0123456789ABCDEF0123456789",
        "0123456789abcdef0123456789abcdef/../x",
        "0123456789abcdef0123456789abcdef.json",
        "0123456789abcdef0123456789abcdef%00",
        "",
    ],
)
def test_upload_ids_that_are_not_ids_are_404(server: ServerProc, tail: str) -> None:
    """(passes) The id in /.~syncd-uploads/<id> is 32 lowercase hex or nothing at all."""
    (server.root / "docs").mkdir()
    (server.root / "docs/x").write_bytes(b"keep")
    for method in ("HEAD", "DELETE", "PATCH"):
        answer = _raw(
            server.port,
            (
                f"{method} /.~syncd-uploads/{tail} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.token}\r\n"
                "Content-Type: application/partial-upload\r\nUpload-Offset: 0\r\n"
                "Upload-Complete: ?1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ).encode(),
        )
        assert _status(answer) in (400, 404), (method, answer)
    assert (server.root / "docs/x").read_bytes() == b"keep"


def test_creation_under_the_versions_or_at_a_symlink_stores_nothing(server: ServerProc) -> None:
    """(passes) A creation under /.~syncd-versions/ is 403 at once; one through a symlinked
    directory is refused at completion (403) and nothing lands outside the root."""
    outside = server.root.parent / "outside"
    outside.mkdir()
    (server.root / "docs").mkdir()
    (server.root / "docs/link").symlink_to(outside)
    answer = _raw(
        server.port,
        (
            "POST /.~syncd-versions/x HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nUpload-Complete: ?0\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert _status(answer) == 403, answer
    body = b"hello"
    answer = _raw(
        server.port,
        (
            "PUT /docs/link/f HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nUpload-Complete: ?1\r\n"
            f"Repr-Digest: {_sha_header(body)}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        ).encode()
        + body,
    )
    assert _status(answer) == 403, answer
    assert list(outside.iterdir()) == []


def test_a_patch_after_completion_is_404_and_the_file_stays(server: ServerProc) -> None:
    """(passes)"""
    data = b"0123456789"
    loc = _create(server, "/w/done.bin", len(data))
    done = _raw(
        server.port,
        _patch_head(server, loc, "0", "?1", f"Repr-Digest: {_sha_header(data)}\r\n").encode()
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data,
    )
    assert _status(done) == 201, done
    again = _raw(
        server.port,
        _patch_head(server, loc, "10", "?1", f"Repr-Digest: {_sha_header(data)}\r\n").encode()
        + b"Content-Length: 3\r\n\r\nabc",
    )
    assert _status(again) == 404, again
    assert (server.root / "w/done.bin").read_bytes() == data


# --------------------------------------------------------------------------- the registry


async def test_the_upload_registry_forgets_what_it_no_longer_has(tmp_path: Path) -> None:
    """# DEFECT: ``Registry.get`` is a ``setdefault``, called for every request to any
    well-formed id (``resource`` calls it before it knows whether the upload exists), and an
    entry (a lock, a sha-256 state) is removed only by DELETE or a completion that got as far
    as the commit. A HEAD of a random id, a 409, an upload dropped for an append past its
    length or a length that differs at completion, one removed by the 24-hour sweep: each
    leaves its entry for the life of the server, so a client probing ids (or a long-running
    server seeing many aborted uploads) grows its memory without bound."""
    from aiohttp.test_utils import TestServer

    from syncd.server import resumable
    from syncd.server.app import make_app

    root = tmp_path / "root"
    root.mkdir()
    app = make_app(root, None)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        async with aiohttp.ClientSession(str(srv.make_url("/"))) as s:
            for i in range(200):  # ids nobody ever created
                async with s.head(f"/.~syncd-uploads/{i:032x}") as r:
                    assert r.status == 404
            # an append past the announced length drops the upload
            async with s.post("/w/x", headers={"Upload-Complete": "?0", "Upload-Length": "2"}) as r:
                loc = str(URL("/w/x").join(URL(r.headers["Location"])))
            async with s.patch(
                loc,
                data=b"abc",
                headers={
                    "Content-Type": "application/partial-upload",
                    "Upload-Offset": "0",
                    "Upload-Complete": "?0",
                },
            ) as r:
                assert r.status == 400
            async with s.head(loc) as r:
                assert r.status == 404
        left = app[resumable.REGISTRY].items
        assert len(left) == 0, f"{len(left)} registry entries for uploads that do not exist"
    finally:
        await srv.close()


# --------------------------------------------------------------------------- client loops


def test_a_conflict_at_completion_is_not_sent_again_whole(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """# DEFECT: the server finds that the target is a directory only at completion (409
    "is a directory", plain text, and it drops the upload), and the client takes every 409 to
    the completing PATCH for "the server has less than was sent": a TransientError, retried
    (5 attempts) with a new upload each time, since the old one is gone. The whole file goes
    five times (a 1 GiB file: 5 GiB) for a failure no retry can change; a small file's PUT
    gets the same 409 once and fails for good."""
    (folder / "big.bin").write_bytes(random.Random(1).randbytes(BIG))
    (server.root / "docs/big.bin").mkdir(parents=True)
    (server.root / "docs/big.bin/inside.txt").write_text("a directory on the server")
    proxy = FaultProxy(server.port, lambda n, m, t: FORWARD).start()
    try:
        r = run_syncd("sync", config=_proxied(tmp_path, server, proxy, folder), timeout=60)
    finally:
        proxy.stop()
    sent = _patched(proxy)
    assert sent <= BIG + MiB, (
        f"{sent / MiB:.0f} MiB appended for one {BIG / MiB:.0f} MiB file; rc={r.returncode}; "
        f"creations: {len(proxy.requests('POST'))}\n{r.stderr[-2000:]}"
    )


def test_a_lost_answer_to_the_completion_does_not_send_the_file_again(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """# DEFECT: the completing PATCH is carried out (the file is stored) but its answer is
    lost (a reset, a proxy timeout). The retry asks the offset (HEAD): the finished upload is
    404, the client takes that for "the server no longer has it" and starts a new upload of
    the whole file, though the server already holds exactly these bytes. A 1 GiB file goes
    twice for one lost 201 (the point of resuming is not to). The client could ask the file's
    digest (HEAD of the path) before it starts again, or the server could answer a finished
    upload's HEAD with Upload-Complete: ?1 for a while."""
    data = random.Random(2).randbytes(BIG)
    (folder / "big.bin").write_bytes(data)
    patches = 0

    def decide(n: int, method: str, target: str) -> Action:
        nonlocal patches
        if method == "PATCH":
            patches += 1
            if patches == 2:  # the empty, completing one
                return Action("drop_response")
        return FORWARD

    proxy = FaultProxy(server.port, decide).start()
    try:
        r = run_syncd("sync", config=_proxied(tmp_path, server, proxy, folder), timeout=60)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert (server.root / "docs/big.bin").read_bytes() == data
    sent = _patched(proxy)
    assert sent <= BIG + MiB, (
        f"{sent / MiB:.0f} MiB appended for one {BIG / MiB:.0f} MiB file: "
        f"{[(s.method, s.headers.get('upload-offset')) for s in proxy.seen]}"
    )


# --------------------------------------------------------------------------- crashes


def _mapped(pid: int, path: Path) -> bool:
    """Does process ``pid`` have ``path`` open (mapped, or as an fd)?"""
    try:
        if str(path) in Path(f"/proc/{pid}/maps").read_text():
            return True
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def test_a_file_truncated_while_it_is_cut_for_a_delta_does_not_kill_syncd(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """# DEFECT: the client cuts a changed large file for a delta through an mmap of it
    (chunking.chunk_fd; hashing.Source.chunk_list). A file truncated meanwhile (rewritten in
    place: ``> file``, an editor or a database doing O_TRUNC) makes every later access to the
    mapping past the new end a SIGBUS: the whole `syncd sync` (or the `syncd run` daemon) dies
    at once, no state saved, no message, where a file read with read() only gets a
    "changed while it was being read" and is retried. (The server's ?chunks maps its copy the
    same way: a file in ROOT truncated by a local process kills `syncd serve`.)"""
    size = 48 * MiB
    big = folder / "big.bin"
    big.write_bytes(random.Random(3).randbytes(size))
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg, timeout=60)
    assert r.returncode == 0, r.stderr
    with big.open("ab") as f:  # changed: the next pass goes as a delta, cut first
        f.write(b"x" * 4096)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sync", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = False
        while proc.poll() is None:
            if _mapped(proc.pid, big):
                os.truncate(big, 4096)  # in place: same inode, now 4 KiB
                seen = True
                break
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, "the file was never mapped (the delta path was not taken?)\n" + err[-2000:]
    assert proc.returncode >= 0, (
        f"syncd sync was killed by signal {-proc.returncode}\n{err[-2000:]}"
    )


def test_chunks_of_a_server_file_truncated_meanwhile_does_not_kill_the_server(
    server: ServerProc,
) -> None:
    """# DEFECT: ``GET ?chunks`` cuts the server's copy through an mmap (chunking.chunk_fd). A
    file in ROOT truncated in place meanwhile (by a local process: ROOT is a plain
    directory) is a SIGBUS in the server: `syncd serve` dies with every upload in flight,
    where a read() would have answered 500 ("the file's size changed") and gone on."""
    (server.root / "d").mkdir()
    f = server.root / "d/big.bin"
    content = random.Random(4).randbytes(128 * MiB)
    caught = 0
    for _attempt in range(3):  # (the cut takes ~60 ms: each try truncates within it or not)
        f.write_bytes(content)
        reply: list[object] = []

        def ask(reply: list[object] = reply) -> None:
            try:
                reply.append(
                    subprocess.run(
                        [
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            "-H",
                            f"Authorization: Bearer {server.token}",
                            server.url + "d/big.bin?chunks",
                        ],
                        capture_output=True,
                        text=True,
                        timeout=30,
                    ).stdout
                )
            except Exception as e:
                reply.append(e)

        t = threading.Thread(target=ask)
        t.start()
        deadline = time.monotonic() + 20
        while t.is_alive() and time.monotonic() < deadline:
            if _mapped(server.proc.pid, f):
                os.truncate(f, 4096)
                caught += 1
                break
        t.join(30)
        if server.proc.poll() is not None:
            break
    assert caught, "the file was never seen mapped"
    assert server.proc.poll() is None, f"syncd serve died: {server.proc.returncode}"


class PrefixProxy(FaultProxy):
    """A reverse proxy serving `syncd serve` under ``/sub/`` (as ``location /sub/ {
    proxy_pass http://127.0.0.1:PORT/; }`` does): ``/sub/x`` goes to ``/x``, anything else
    is 404 (another site lives there)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            length = next(
                (
                    int(ln.split(":", 1)[1])
                    for ln in lines[1:]
                    if ln.lower().startswith("content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length)
            self.seen.append(Seen(0, method, target, "fwd", len(body)))
            if not target.startswith("/sub/"):
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                writer.close()
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            rest = [ln for ln in lines[1:] if ln and not ln.lower().startswith("connection:")]
            first = f"{method} {target[4:]} {version}"
            up_w.write(
                ("\r\n".join([first, *rest, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
                + body
            )
            await up_w.drain()
            answer = await up_r.read()
            up_w.close()
            writer.write(answer)
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()


def test_a_large_file_goes_through_a_reverse_proxy_under_a_path(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """# DEFECT: the creation answers ``Location: /.~syncd-uploads/<id>`` (an absolute path)
    and the client joins it to its base URL: with `syncd serve` behind a reverse proxy under a
    path (url = "https://host/sub/"), the appends go to https://host/.~syncd-uploads/<id>,
    outside the proxy's prefix (404 there, or another site). Every file of 16 MiB and more
    then fails (5 creations, each dropped) where the two-step upload used before this
    feature worked; small files still go. The server could answer a relative reference
    (``../`` per segment of the request path) or the client could take the Location's path
    relative to its base."""
    data = random.Random(5).randbytes(BIG)
    (folder / "big.bin").write_bytes(data)
    (folder / "small.txt").write_bytes(b"small")
    proxy = PrefixProxy(server.port, lambda n, m, t: FORWARD).start()
    try:
        cfg = mirror_config(tmp_path, server, folder)
        cfg.write_text(cfg.read_text().replace(server.url, proxy.url + "sub/"))
        r = run_syncd("sync", config=cfg, timeout=60)
    finally:
        proxy.stop()
    assert (server.root / "docs/small.txt").read_bytes() == b"small"
    assert r.returncode == 0, r.stderr[-2000:]
    assert (server.root / "docs/big.bin").read_bytes() == data


# --------------------------------------------------------------------------- kept behaviour


def test_a_head_while_a_patch_streams_ends_it_and_no_offset_is_outdated(server: ServerProc) -> None:
    """(passes) A HEAD (then a second PATCH from 0) while a PATCH still streams: the running
    append is ended, the HEAD's offset is what is on disk, a stale PATCH gets 409 with that
    offset, and going on from it stores exactly the file."""
    data = random.Random(6).randbytes(6 * MiB)
    loc = _create(server, "/w/s.bin", len(data))
    uid = loc.rsplit("/", 1)[1]
    part = server.root / ".~syncd-uploads" / f"{uid}.part"
    first = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        first.sendall(
            _patch_head(server, loc, "0", "?0").encode()
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: 3 * MiB]
        )
        wait_for(lambda: part.stat().st_size >= MiB, 10, "a first piece on disk")
        head = _raw(
            server.port,
            f"HEAD {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        offset = int(head.split(b"Upload-Offset: ")[1].split(b"\r\n")[0])
        assert 0 < offset <= 3 * MiB and offset == part.stat().st_size, (offset, head)
        # the first request was ended by the server
        first.settimeout(10)  # (a hang here: socket.timeout, the test fails)
        try:
            while first.recv(65536):
                pass
        except ConnectionError:
            pass
    finally:
        first.close()
    stale = _raw(
        server.port,
        _patch_head(server, loc, "0", "?0").encode() + b"Content-Length: 3\r\n\r\nabc",
    )
    assert _status(stale) == 409 and f'"expected-offset": {offset}'.encode() in stale, stale
    done = _raw(
        server.port,
        _patch_head(
            server, loc, str(offset), "?1", f"Repr-Digest: {_sha_header(data)}\r\n"
        ).encode()
        + f"Content-Length: {len(data) - offset}\r\n\r\n".encode()
        + data[offset:],
    )
    assert _status(done) == 201, done
    assert (server.root / "w/s.bin").read_bytes() == data


def test_a_chunked_append_and_a_chunked_creation_are_taken(server: ServerProc) -> None:
    """(passes) Transfer-Encoding: chunked bodies, on creation (?1) and on an append."""
    data = b"chunked body " * 1000
    chunked = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(data[i : i + 777]), data[i : i + 777])
            for i in range(0, len(data), 777)
        )
        + b"0\r\n\r\n"
    )
    answer = _raw(
        server.port,
        (
            "PUT /w/ch.bin HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nUpload-Complete: ?1\r\n"
            f"Repr-Digest: {_sha_header(data)}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + chunked,
    )
    assert _status(answer) == 201, answer
    assert (server.root / "w/ch.bin").read_bytes() == data
    loc = _create(server, "/w/ch2.bin")
    answer = _raw(
        server.port,
        _patch_head(server, loc, "0", "?1", f"Repr-Digest: {_sha_header(data)}\r\n").encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked,
    )
    assert _status(answer) == 201, answer
    assert (server.root / "w/ch2.bin").read_bytes() == data


def test_the_server_killed_while_completing_keeps_the_old_file_whole(
    tmp_path: Path, token_file: Path
) -> None:
    """(passes) SIGKILL at the completion, after the old file is kept as a version and the
    upload's data renamed beside the target, before the rename over it: after a restart the
    old file is still there, whole, no temp is left beside it and the upload's record is
    swept (the client then starts again: a 404)."""
    root = tmp_path / "root"
    (root / "w").mkdir(parents=True)
    old = b"the old file " * 1000
    (root / "w/f.bin").write_bytes(old)
    server = start_server(root, token_file, env={"SYNCD_CRASH_AT": "server-after-keep"})
    new = random.Random(7).randbytes(300_000)
    loc = _create(server, "/w/f.bin", len(new))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                _patch_head(server, loc, "0", "?1", f"Repr-Digest: {_sha_header(new)}\r\n").encode()
                + f"Content-Length: {len(new)}\r\n\r\n".encode()
                + new
            )
            try:
                s.recv(65536)
            except ConnectionError:
                pass
        server.proc.wait(timeout=10)
        assert server.proc.returncode == -9
    finally:
        server.stop()
    assert (root / "w/f.bin").read_bytes() == old
    again = start_server(root, token_file)
    try:
        assert sorted(p.name for p in (root / "w").iterdir()) == ["f.bin"]
        assert (root / "w/f.bin").read_bytes() == old
        uploads = root / ".~syncd-uploads"
        wait_for(lambda: not list(uploads.iterdir()), 10, "the upload's record swept")
        head = _raw(
            again.port,
            f"HEAD {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {again.token}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert _status(head) == 404, head
    finally:
        again.stop()


def test_chunks_of_an_empty_file_a_directory_and_a_symlink(server: ServerProc) -> None:
    """(passes) ?chunks: an empty file is an empty list with the empty sha-256 as ETag; a
    directory and a symlink are refused (no 500, nothing followed)."""
    (server.root / "d/sub").mkdir(parents=True)
    (server.root / "d/empty").write_bytes(b"")
    (server.root / "d/link").symlink_to(server.root / "d/empty")
    h = {"Authorization": f"Bearer {server.token}"}

    async def go() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            async with s.get("/d/empty?chunks", headers=h) as r:
                assert r.status == 200
                assert await r.read() == b""
                assert r.headers["ETag"] == f'"{hashlib.sha256(b"").hexdigest()}"'
            for path, want in (("/d/sub?chunks", (404, 409)), ("/d/link?chunks", (403,))):
                async with s.get(path, headers=h) as r:
                    assert r.status in want, (path, r.status, await r.text())

    asyncio.run(go())


def test_a_delta_of_many_tiny_steps_is_built_right(server: ServerProc) -> None:
    """(passes) 20,000 one-byte copy and literal steps (a 350 KB body for 20 KB of file):
    built right, in bounded time."""
    base = random.Random(8).randbytes(100_000)
    (server.root / "d").mkdir()
    (server.root / "d/f.bin").write_bytes(base)
    step = chunking.STEP.pack
    body = bytearray()
    new = bytearray()
    for i in range(10_000):
        body += step(b"C", i, 1)
        new += base[i : i + 1]
        body += step(b"L", 0, 1) + b"z"
        new += b"z"
    h = {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/x-syncd-delta",
        "If-Match": f'"{hashlib.sha256(base).hexdigest()}"',
        "Repr-Digest": _sha_header(bytes(new)),
        "X-Syncd-Length": str(len(new)),
    }

    async def go() -> None:
        async with (
            aiohttp.ClientSession(server.url) as s,
            s.post(
                "/d/f.bin?delta",
                data=io.BytesIO(bytes(body)),
                headers=h,
                timeout=aiohttp.ClientTimeout(30),
            ) as r,
        ):
            assert r.status == 204, await r.text()

    asyncio.run(go())
    assert (server.root / "d/f.bin").read_bytes() == bytes(new)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"key": "other"}', ""])
def test_a_corrupt_resume_record_starts_the_upload_again(
    tmp_path: Path, server: ServerProc, folder: Path, garbage: str
) -> None:
    """(passes) The client killed mid-upload leaves its record; the record made unreadable
    (or another key's): the next run starts a new upload and stores the file."""
    data = random.Random(9).randbytes(BIG)
    (folder / "big.bin").write_bytes(data)
    cfg = mirror_config(tmp_path, server, folder)
    first = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "mid-body"}, timeout=60)
    assert first.returncode == -9, first.stderr
    records = list((tmp_path / "state" / "uploads").glob("*.json"))
    assert records
    for rec in records:
        rec.write_text(garbage)
    second = run_syncd("sync", config=cfg, timeout=60)
    assert second.returncode == 0, second.stderr
    assert (server.root / "docs/big.bin").read_bytes() == data


def test_a_resume_record_left_behind_is_dropped_in_the_end(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """# DEFECT: the client killed mid-upload leaves its record (state_dir/uploads/); the file
    is then deleted (or renamed) locally, so no upload ever picks the record up again. The
    S3 remote sweeps records older than resumes.MAX_AGE (7 days) at each pass; the syncd
    serve remote never calls Resumes.sweep, so such records stay for ever (and the server's
    upload is never cancelled: it waits for its 24-hour expiry)."""
    big = folder / "big.bin"
    big.write_bytes(random.Random(10).randbytes(BIG))
    cfg = mirror_config(tmp_path, server, folder)
    first = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "mid-body"}, timeout=60)
    assert first.returncode == -9, first.stderr
    records = list((tmp_path / "state" / "uploads").glob("*.json"))
    assert len(records) == 1
    big.unlink()
    (folder / "other.txt").write_text("something else to sync")
    old = time.time() - 8 * 86400
    os.utime(records[0], (old, old))
    second = run_syncd("sync", config=cfg, timeout=60)
    assert second.returncode == 0, second.stderr
    assert not records[0].exists(), "a record 8 days old, for a file that is gone, is still kept"
