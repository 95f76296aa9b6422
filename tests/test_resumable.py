"""Resumable uploads of large files to `syncd serve` (draft-ietf-httpbis-resumable-upload-12),
with real processes: resets through the fault proxy at several offsets, a SIGKILL of the server
and of the client mid-upload, a file changed between two appends; and the protocol itself on
the wire (creation, offset, append, offset mismatch, cancellation, the digest check, the 104)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import ServerProc, mirror_config, run_syncd, start_server, wait_for
from tests.faultproxy import FORWARD, Action, FaultProxy

MiB = 1 << 20
SIZE = 24 * MiB  # above RESUMABLE_MIN (16 MiB)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "src"
    f.mkdir()
    (f / "big.bin").write_bytes(os.urandom(SIZE))
    return f


def _proxy_config(tmp_path: Path, server: ServerProc, proxy: FaultProxy, folder: Path) -> Path:
    cfg = mirror_config(tmp_path, server, folder)
    cfg.write_text(cfg.read_text().replace(server.url, proxy.url))
    return cfg


def _patched(proxy: FaultProxy) -> int:
    """Bytes of append bodies the server was sent."""
    return sum(s.body for s in proxy.requests("PATCH"))


def _no_leftovers(server: ServerProc, tmp_path: Path) -> None:
    uploads = server.root / ".~syncd-uploads"
    assert not uploads.exists() or not list(uploads.iterdir()), list(uploads.iterdir())
    records = tmp_path / "state" / "uploads"
    assert not records.exists() or not list(records.iterdir()), list(records.iterdir())


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_a_reset_connection_resumes_from_the_servers_offset(
    tmp_path: Path, server: ServerProc, folder: Path, cut: float
) -> None:
    nbytes = int(SIZE * cut)
    resets = iter([Action("reset_after", nbytes=nbytes)])

    def decide(n: int, method: str, target: str) -> Action:
        return next(resets, FORWARD) if method == "PATCH" else FORWARD

    proxy = FaultProxy(server.port, decide).start()
    try:
        r = run_syncd("sync", config=_proxy_config(tmp_path, server, proxy, folder))
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert (server.root / "docs/big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    patches = proxy.requests("PATCH")
    assert len(patches) == 3, [(s.method, s.headers.get("upload-offset")) for s in patches]
    # the second append starts where the server's copy stopped, not at 0
    resumed_at = int(patches[1].headers["upload-offset"])
    assert 0 < resumed_at <= nbytes
    assert any(s.method == "HEAD" for s in proxy.seen)
    assert _patched(proxy) <= SIZE + 2 * MiB, _patched(proxy)
    _no_leftovers(server, tmp_path)


def test_the_server_killed_mid_upload_is_resumed_after_its_restart(
    tmp_path: Path, token_file: Path, folder: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, token_file, env={"SYNCD_CRASH_AT": "server-mid-append"})
    port = server.port
    cfg = mirror_config(tmp_path, server, folder)
    proxy = FaultProxy(port, lambda n, m, t: FORWARD).start()
    cfg.write_text(cfg.read_text().replace(server.url, proxy.url))
    sync = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sync", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    again: ServerProc | None = None
    try:
        server.proc.wait(timeout=30)  # it killed itself after its first appended piece
        assert server.proc.returncode == -9
        part = next((root / ".~syncd-uploads").glob("*.part"))
        assert part.stat().st_size > 0
        again = start_server(root, token_file, port=port)
        _out, err = sync.communicate(timeout=90)
        assert sync.returncode == 0, err
    finally:
        if sync.poll() is None:
            sync.kill()
        proxy.stop()
        server.stop()
        if again is not None:
            again.stop()
    assert (root / "docs/big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    offsets = [int(s.headers["upload-offset"]) for s in proxy.requests("PATCH")]
    assert offsets[0] == 0 and offsets[1] > 0, offsets
    # (what was in the socket buffers when it died is sent again: a few MiB)
    assert _patched(proxy) <= SIZE + 12 * MiB, _patched(proxy)


def test_the_client_killed_mid_upload_resumes_when_run_again(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    proxy = FaultProxy(server.port, lambda n, m, t: FORWARD).start()
    try:
        cfg = _proxy_config(tmp_path, server, proxy, folder)
        first = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "mid-body"})
        assert first.returncode == -9, first.stderr
        assert list((tmp_path / "state" / "uploads").glob("*.json"))  # the record outlived it
        sent_before = _patched(proxy)
        assert SIZE // 4 <= sent_before < SIZE
        second = run_syncd("sync", config=cfg)
    finally:
        proxy.stop()
    assert second.returncode == 0, second.stderr
    assert "resuming the upload at byte" in second.stderr
    assert (server.root / "docs/big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    # both runs together sent the file about once
    assert _patched(proxy) <= SIZE * 1.05, (sent_before, _patched(proxy))
    _no_leftovers(server, tmp_path)


def test_an_upload_is_resumed_under_another_spelling_of_the_url(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    cfg = mirror_config(tmp_path, server, folder)
    first = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "mid-body"})
    assert first.returncode == -9, first.stderr
    # the same server, spelled otherwise: localhost, no trailing slash
    cfg.write_text(cfg.read_text().replace(server.url, f"http://localhost:{server.port}"))
    second = run_syncd("sync", config=cfg)
    assert second.returncode == 0, second.stderr
    assert "resuming the upload at byte" in second.stderr, second.stderr
    assert (server.root / "docs/big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    _no_leftovers(server, tmp_path)


def test_a_file_changed_between_two_appends_starts_again_and_no_mix_is_shown(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    proxy = FaultProxy(server.port, lambda n, m, t: FORWARD).start()
    try:
        cfg = _proxy_config(tmp_path, server, proxy, folder)
        first = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "mid-body"})
        assert first.returncode == -9
        assert not (server.root / "docs/big.bin").exists()  # nothing half-sent is visible
        new = os.urandom(SIZE)
        (folder / "big.bin").write_bytes(new)  # same size, new bytes, new mtime and ctime
        second = run_syncd("sync", config=cfg)
    finally:
        proxy.stop()
    assert second.returncode == 0, second.stderr
    assert "resuming" not in second.stderr
    assert (server.root / "docs/big.bin").read_bytes() == new
    # the stale upload was cancelled, not left to expire
    assert any(s.method == "DELETE" and ".~syncd-uploads" in s.target for s in proxy.seen)
    _no_leftovers(server, tmp_path)


# --------------------------------------------------------------------------- the protocol


@pytest.fixture
def session_headers(server: ServerProc) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}", "Upload-Draft-Interop-Version": "8"}


def _resolved(target: str, location: str) -> str:
    """A Location (relative to the request's URL) as an absolute path."""
    return str(URL(target).join(URL(location)))


def _sha_header(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


async def test_the_protocol_on_the_wire(
    server: ServerProc, session_headers: dict[str, str]
) -> None:
    data = os.urandom(300_017)
    h = session_headers
    async with aiohttp.ClientSession(server.url) as s:
        async with s.options("/", headers=h) as r:
            assert "max-age=" in r.headers["Upload-Limit"]
        async with s.post(
            "/w/f.bin", headers={**h, "Upload-Complete": "?0", "Upload-Length": str(len(data))}
        ) as r:
            assert r.status == 201, await r.text()
            assert r.headers["Upload-Complete"] == "?0"
            assert r.headers["Location"].startswith("../.~syncd-uploads/")  # (relative)
            loc = _resolved("/w/f.bin", r.headers["Location"])
        assert loc.startswith("/.~syncd-uploads/")
        patch = {**h, "Content-Type": "application/partial-upload"}
        async with s.patch(
            loc, data=data[:1000], headers={**patch, "Upload-Offset": "0", "Upload-Complete": "?0"}
        ) as r:
            assert r.status == 204
        async with s.head(loc, headers=h) as r:
            assert r.status == 204
            assert r.headers["Upload-Offset"] == "1000"
            assert r.headers["Upload-Length"] == str(len(data))
            assert r.headers["Cache-Control"] == "no-store"
        async with s.patch(
            loc, data=data[5:], headers={**patch, "Upload-Offset": "5", "Upload-Complete": "?1"}
        ) as r:
            assert r.status == 409
            problem = await r.json(content_type=None)
            assert problem["type"].endswith("#mismatching-upload-offset")
            assert problem["expected-offset"] == 1000 and problem["provided-offset"] == 5
        assert not (server.root / "w/f.bin").exists()
        # a wrong whole digest: refused, nothing shown, the upload gone
        wrong = {**patch, "Upload-Offset": "1000", "Upload-Complete": "?1"}
        async with s.patch(
            loc, data=data[1000:], headers={**wrong, "Repr-Digest": _sha_header(b"other")}
        ) as r:
            assert r.status == 400
        assert not (server.root / "w/f.bin").exists()
        async with s.head(loc, headers=h) as r:
            assert r.status == 404
        # again, right this time, in one creation request with its content
        async with s.put(
            "/w/f.bin",
            data=data,
            headers={**h, "Upload-Complete": "?1", "Repr-Digest": _sha_header(data)},
        ) as r:
            assert r.status == 201, await r.text()
            assert r.headers["Upload-Complete"] == "?1"
        assert (server.root / "w/f.bin").read_bytes() == data
        # cancellation
        async with s.post("/w/g.bin", headers={**h, "Upload-Complete": "?0"}) as r:
            loc = _resolved("/w/g.bin", r.headers["Location"])
        async with s.delete(loc, headers=h) as r:
            assert r.status == 204
        async with s.head(loc, headers=h) as r:
            assert r.status == 404
        # an append past the length announced
        async with s.post(
            "/w/h.bin", headers={**h, "Upload-Complete": "?0", "Upload-Length": "10"}
        ) as r:
            loc = _resolved("/w/h.bin", r.headers["Location"])
        async with s.patch(
            loc, data=b"x" * 11, headers={**patch, "Upload-Offset": "0", "Upload-Complete": "?0"}
        ) as r:
            assert r.status == 400
            assert (await r.json(content_type=None))["type"].endswith("#inconsistent-upload-length")
        # a wrong token sees nothing
        async with s.head(loc, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


def test_a_creation_with_content_gets_the_104_first(server: ServerProc) -> None:
    body = b"hello resumable"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /w/i.txt HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.token}\r\n"
                "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n"
                f"Repr-Digest: {_sha_header(body)}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.1 104 Upload Resumption Supported\r\n"), text
    interim, _, final = text.partition("\r\n\r\n")
    assert "Location: ../.~syncd-uploads/" in interim
    assert final.startswith("HTTP/1.1 201"), final
    assert (server.root / "w/i.txt").read_bytes() == body


def test_uploads_survive_a_restart_and_expire(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, token_file)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                (
                    "POST /w/j.bin HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {server.token}\r\n"
                    "Upload-Complete: ?0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            head = sock.recv(65536).decode()
        loc = next(ln.split(": ", 1)[1] for ln in head.split("\r\n") if ln.startswith("Location"))
        loc = _resolved("/w/j.bin", loc)
    finally:
        server.stop()
    uid = loc.rsplit("/", 1)[1]
    part = root / ".~syncd-uploads" / f"{uid}.part"
    assert part.exists()
    again = start_server(root, token_file)
    try:
        out = subprocess.run(
            [
                "curl",
                "-s",
                "-I",
                "-H",
                f"Authorization: Bearer {again.token}",
                again.url[:-1] + loc,
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert "204" in out.splitlines()[0] and "Upload-Offset: 0" in out, out
    finally:
        again.stop()
    old = 2 * 24 * 3600
    st = part.stat()
    os.utime(part, (st.st_atime - old, st.st_mtime - old))
    third = start_server(root, token_file)  # sweeps at start
    try:
        wait_for(lambda: not part.exists(), 10, "the expired upload removed")
        assert not (root / ".~syncd-uploads" / f"{uid}.json").exists()
    finally:
        third.stop()
