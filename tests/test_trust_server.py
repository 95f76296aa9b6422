"""What lets a client trust `syncd serve`: one server per root (the lock), an upload the
server lost is sent again, the mirror marker, and the state token (server side, the aiohttp
client and the stdlib fast path). Every server here is a real `syncd serve` process."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from syncd import config as cfgmod
from syncd.config import RemoteConfig
from syncd.errors import PermanentError
from syncd.remotes.base import Marker, StateToken
from syncd.remotes.kinds import KINDS
from syncd.remotes.quickstate import fetch_state
from syncd.remotes.syncd import SyncdRemote
from tests.conftest import ServerProc, mirror_config, run_syncd, start_server, write_config
from tests.faultproxy import FORWARD, Action, FaultProxy

LOCK = ".~syncd-serve.lock"
MARKER = ".~syncd-mirror"


# --------------------------------------------------------------------------- helpers


def request(
    srv: ServerProc | str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (the target is sent exactly as given)."""
    url = srv if isinstance(srv, str) else srv.url
    m = re.match(r"http://(\[[^\]]+\]|[^:/]+):(\d+)/", url)
    assert m, url
    conn = http.client.HTTPConnection(m.group(1).strip("[]"), int(m.group(2)), timeout=30)
    try:
        all_headers = dict(srv.headers()) if isinstance(srv, ServerProc) else {}
        all_headers.update(headers or {})
        conn.request(method, target, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def listing(srv: ServerProc, target: str) -> list[str]:
    status, _, body = request(srv, "GET", target)
    assert status == 200, body
    return [json.loads(line)["path"] for line in body.splitlines() if line.strip()]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".~syncd-*.tmp")]


@pytest.fixture
def srv(tmp_path: Path, token_file: Path) -> Iterator[ServerProc]:
    root = tmp_path / "root"
    root.mkdir()
    s = start_server(root, token_file)
    try:
        yield s
    finally:
        s.stop()


def remote_cfg(tmp_path: Path, srv: ServerProc, url: str = "") -> RemoteConfig:
    folder = tmp_path / "cfg-folder"
    folder.mkdir(exist_ok=True)
    cfg = cfgmod.load(mirror_config(tmp_path, srv, folder), kinds=KINDS)
    return replace(cfg.remote, url=url) if url else cfg.remote


def second_serve(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "serve", "--root", str(root), "--port", "0", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------- 2. the lock


def test_second_server_on_the_same_root_is_refused_and_the_first_keeps_its_uploads(
    srv: ServerProc,
) -> None:
    body = os.urandom(3 << 20)
    uid = uuid.uuid4().hex
    status, _, _ = request(srv, "PUT", f"/docs/big.bin?upload={uid}", body)
    assert status == 202
    assert len(temp_files(srv.root)) == 1

    second = second_serve(srv.root)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"{srv.root} is already served by PID {srv.proc.pid} ({srv.url})" in lines[0]
    assert "listening" not in second.stdout

    # The refused server touched nothing: the pending upload's temp is still there...
    assert len(temp_files(srv.root)) == 1
    # ...and the first server commits it.
    status, headers, _ = request(
        srv, "POST", f"/docs/big.bin?commit={uid}", headers={"Repr-Digest": digest(body)}
    )
    assert status == 201
    assert headers["repr-digest"] == digest(body)
    assert (srv.root / "docs" / "big.bin").read_bytes() == body

    lock = (srv.root / LOCK).read_text().splitlines()
    assert lock == [str(srv.proc.pid), srv.url]


def test_a_server_inside_or_around_a_served_root_is_refused(
    tmp_path: Path, token_file: Path
) -> None:
    """A root nested in a served one, or holding one, would share its files and remove its
    temps: refused as well, naming the server that runs."""
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    srv = start_server(root, token_file)
    try:
        uid = uuid.uuid4().hex
        status, _, _ = request(srv, "PUT", f"/docs/big.bin?upload={uid}", os.urandom(3 << 20))
        assert status == 202
        for other in (root / "docs", tmp_path):
            r = second_serve(other)
            assert r.returncode == 2, r.stderr
            assert f"already served by PID {srv.proc.pid}" in r.stderr, r.stderr
            assert len(temp_files(root)) == 1  # the upload in flight is untouched
    finally:
        srv.stop()


def test_the_lock_goes_with_the_server(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    first = start_server(root, token_file)
    port = first.port
    assert first.stop() == 0
    again = start_server(root, token_file, port=port)  # a clean stop released it
    try:
        assert (root / LOCK).read_text().splitlines()[0] == str(again.proc.pid)
    finally:
        again.proc.kill()  # no clean stop: the lock dies with the process all the same
        again.stop()
    third = start_server(root, token_file)
    assert third.stop() == 0


def test_the_lock_file_is_never_listed_nor_reachable(srv: ServerProc) -> None:
    assert request(srv, "PUT", "/docs/a.txt", b"a")[0] == 201
    assert listing(srv, "/?list") == ["docs/a.txt"]
    for method, target, body in [
        ("GET", f"/{LOCK}", None),
        ("HEAD", f"/{LOCK}", None),
        ("PUT", f"/{LOCK}", b"x"),
        ("DELETE", f"/{LOCK}", None),
        ("GET", "/%2E~syncd-serve.lock", None),
        ("PUT", f"/{LOCK}?upload={uuid.uuid4().hex}", b"x"),
    ]:
        status, _, _ = request(srv, method, target, body)
        assert status == 400, (method, target, status)
    headers = {"Destination": f"{srv.url}{LOCK}"}
    assert request(srv, "MOVE", "/docs/a.txt", headers=headers)[0] == 400
    assert (srv.root / LOCK).read_text().splitlines()[0] == str(srv.proc.pid)


def test_leftover_temps_go_at_start_but_markers_and_the_lock_stay(
    tmp_path: Path, token_file: Path
) -> None:
    root = tmp_path / "root"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / ".~syncd-0123456789abcdef0123456789abcdef.tmp").write_bytes(b"old")
    (root / "docs" / "deep" / ".~syncd-x.tmp").write_bytes(b"old")
    (root / "docs" / MARKER).write_text('{"mirror": "m1", "created": "2024-01-01T00:00:00+00:00"}')
    s = start_server(root, token_file)
    try:
        assert temp_files(root) == []
        assert (root / "docs" / MARKER).exists()
        assert (root / LOCK).exists()
    finally:
        assert s.stop() == 0


# --------------------------------------------------------------------------- 3. upload gone


def test_commit_of_an_upload_the_server_lost_sends_the_file_again(
    tmp_path: Path, token_file: Path
) -> None:
    """The server restarts between the upload and its commit (so the pending upload is
    gone: 404 on commit); `syncd sync` sends the whole file again and exits 0."""
    root = tmp_path / "root"
    servers = [start_server(root, token_file)]
    restarted: list[str] = []

    def decide(n: int, method: str, target: str) -> Action:
        if method == "POST" and "?commit=" in target and not restarted:
            restarted.append(target)
            assert servers[-1].stop() == 0  # drops its pending uploads
            servers.append(start_server(root, token_file))
            proxy.upstream_port = servers[-1].port
        return FORWARD

    proxy = FaultProxy(servers[0].port, decide).start()
    try:
        folder = tmp_path / "Documents"
        folder.mkdir()
        big = os.urandom(5 << 20)
        (folder / "big.bin").write_bytes(big)
        (folder / "small.txt").write_text("small")
        cfg = mirror_config(tmp_path, servers[0], folder)
        write_config(cfg, cfg.read_text().replace(servers[0].url, proxy.url))
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 0, r.stderr
        assert restarted, "the commit never went through the proxy"
        assert (root / "docs" / "big.bin").read_bytes() == big
        assert (root / "docs" / "small.txt").read_text() == "small"
        uploads = [s for s in proxy.requests("PUT") if "?upload=" in s.target]
        commits = proxy.requests("POST")
        assert len(uploads) == 2 and len(commits) == 2  # the whole file was sent again
        assert temp_files(root) == []
        r = run_syncd("verify", config=cfg)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        proxy.stop()
        for s in servers:
            s.stop()


# --------------------------------------------------------------------------- 4. the marker


def test_the_marker_is_the_one_reserved_name_a_client_may_use(srv: ServerProc) -> None:
    doc = b'{"mirror": "abc", "created": "2024-01-01T00:00:00+00:00"}\n'
    assert request(srv, "GET", f"/docs/{MARKER}")[0] == 404
    status, headers, _ = request(
        srv, "PUT", f"/docs/{MARKER}", doc, headers={"Repr-Digest": digest(doc)}
    )
    assert status == 201 and headers["repr-digest"] == digest(doc)
    assert request(srv, "PUT", "/docs/a/b.txt", b"b")[0] == 201
    status, _, body = request(srv, "GET", f"/docs/{MARKER}")
    assert (status, body) == (200, doc)
    assert request(srv, "HEAD", "/docs/%2E~syncd-mirror")[0] == 200
    assert (srv.root / "docs" / MARKER).read_bytes() == doc
    # never listed, at any level
    assert listing(srv, "/docs/?list") == ["a/b.txt"]
    assert listing(srv, "/?list") == ["docs/a/b.txt"]
    # other reserved names, and the marker's name used in any other way, stay refused
    for method, target, body_ in [
        ("PUT", "/docs/.~syncd-other", b"x"),
        ("PUT", "/docs/.~syncd-mirrorx", b"x"),
        ("PUT", f"/docs/{MARKER}/x", b"x"),
        ("PUT", f"/docs/{MARKER}?upload={uuid.uuid4().hex}", b"x"),
        ("GET", f"/docs/{MARKER}/", None),
        ("GET", f"/docs/{MARKER}/?list", None),
        ("DELETE", f"/docs/{MARKER}", None),
        ("MKCOL", f"/docs/{MARKER}", None),
    ]:
        status, _, _ = request(srv, method, target, body_)
        assert status == 400, (method, target, status)
    for src, dst in [(f"/docs/{MARKER}", "/docs/m"), ("/docs/a/b.txt", f"/docs/{MARKER}")]:
        status, _, _ = request(srv, "MOVE", src, headers={"Destination": dst})
        assert status == 400, (src, dst, status)
    assert (srv.root / "docs" / MARKER).read_bytes() == doc
    # deleting the mirror takes its marker with it
    assert request(srv, "DELETE", "/docs/")[0] == 204
    assert not (srv.root / "docs").exists()


async def test_syncd_remote_marker_and_reserved_names_in_listings(
    tmp_path: Path, srv: ServerProc
) -> None:
    remote = SyncdRemote(remote_cfg(tmp_path, srv), 2)
    assert isinstance(remote, Marker) and isinstance(remote, StateToken)
    async with remote:
        assert await remote.read_marker("my docs/ü") is None
        await remote.write_marker("my docs/ü", "id-1")
        assert await remote.read_marker("my docs/ü") == "id-1"
        assert (srv.root / "my docs" / "ü" / MARKER).exists()
        assert [e async for e in remote.list("my docs")] == []
        (srv.root / "my docs" / "not-a-marker").mkdir()
        (srv.root / "my docs" / "not-a-marker" / MARKER).write_text("garbage")
        with pytest.raises(PermanentError, match="not a syncd mirror marker"):
            await remote.read_marker("my docs/not-a-marker")


# --------------------------------------------------------------------------- 5. state token


def test_state_token_follows_every_change(tmp_path: Path, srv: ServerProc) -> None:
    cfg = remote_cfg(tmp_path, srv)

    def state(prefix: str = "docs") -> str:
        token = fetch_state(cfg, prefix, 10)
        assert token is not None
        return token

    assert state() == "absent"
    assert state("no/such/dir") == "absent"
    assert request(srv, "PUT", "/docs/a.txt", b"a")[0] == 201
    assert request(srv, "PUT", "/docs/sub/b.txt", b"b")[0] == 201
    seen = [state()]
    assert state() == seen[0]  # stable while nothing changes...
    listing(srv, "/docs/?list")
    assert request(srv, "GET", "/docs/a.txt")[0] == 200
    assert state() == seen[0]  # ...and reading changes nothing

    def changed(what: str) -> None:
        now = state()
        assert now not in seen, f"the token did not change after {what}"
        seen.append(now)
        assert state() == now, f"the token is not stable after {what}"

    assert request(srv, "PUT", "/docs/a.txt", b"a2")[0] == 204  # a replace, same directory
    changed("a PUT")
    uid = uuid.uuid4().hex
    assert request(srv, "PUT", f"/docs/big.bin?upload={uid}", b"x" * 1000)[0] == 202
    request(
        srv, "POST", f"/docs/big.bin?commit={uid}", headers={"Repr-Digest": digest(b"x" * 1000)}
    )
    changed("a two-step upload")
    assert request(srv, "DELETE", "/docs/big.bin")[0] == 204
    changed("a DELETE")
    assert request(srv, "MOVE", "/docs/a.txt", headers={"Destination": "/docs/c.txt"})[0] == 201
    changed("a MOVE")
    assert request(srv, "MKCOL", "/docs/empty/")[0] == 201
    changed("a MKCOL")
    # Another mirror's changes leave this one's token as it is (but not ROOT's); a MOVE or a
    # COPY from there into this mirror changes it.
    root_before = state("")
    assert request(srv, "PUT", "/other/x.txt", b"x")[0] == 201
    assert request(srv, "PUT", "/other/y.txt", b"y")[0] == 201
    assert request(srv, "DELETE", "/other/y.txt")[0] == 204
    assert request(srv, "MKCOL", "/other/d/")[0] == 201
    assert state() == seen[-1], "another mirror's PUT, DELETE or MKCOL changed this one's token"
    assert state("") != root_before, "ROOT's token did not change after a PUT below it"
    assert request(srv, "MOVE", "/other/x.txt", headers={"Destination": "/docs/x.txt"})[0] == 201
    changed("a MOVE from another mirror")
    assert request(srv, "COPY", "/docs/x.txt", headers={"Destination": "/other/x2.txt"})[0] == 201
    assert state() == seen[-1], "a COPY out of this mirror changed its token"
    assert request(srv, "COPY", "/other/x2.txt", headers={"Destination": "/docs/x2.txt"})[0] == 201
    changed("a COPY from another mirror")
    (srv.root / "docs" / "sub" / "b.txt").unlink()  # behind the server's back
    changed("rm on the server's disk")
    (srv.root / "docs" / "sub" / "b.txt").write_bytes(b"b")
    changed("a file restored on the server's disk")
    shutil.rmtree(srv.root / "docs" / "sub")
    changed("rm -rf of a directory on the server's disk")


def test_state_token_changes_after_a_restart(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    first = start_server(root, token_file)
    try:
        assert request(first, "PUT", "/docs/a.txt", b"a")[0] == 201
        cfg = remote_cfg(tmp_path, first)
        before = fetch_state(cfg, "docs", 10)
        assert before is not None and before == fetch_state(cfg, "docs", 10)
    finally:
        assert first.stop() == 0
    second = start_server(root, token_file, port=first.port)
    try:
        after = fetch_state(cfg, "docs", 10)
        assert after is not None and after != before
    finally:
        second.stop()


async def test_state_from_aiohttp_and_stdlib_agree(tmp_path: Path, srv: ServerProc) -> None:
    prefix = "my docs/ü 100%/#?;"
    cfg = remote_cfg(tmp_path, srv)
    remote = SyncdRemote(cfg, 2)
    async with remote:
        assert await remote.state(prefix) == "absent"
        assert await remote.state("") == fetch_state(cfg, "", 10)
        quoted = "/my%20docs/%C3%BC%20100%25/%23%3F%3B/x.txt"
        assert request(srv, "PUT", quoted, b"x")[0] == 201
        token = await remote.state(prefix)
        assert token not in (None, "absent")
        assert fetch_state(cfg, prefix, 10) == token
        assert fetch_state(cfg, "/" + prefix + "/", 10) == token


def test_fetch_state_gives_none_on_any_failure(
    tmp_path: Path, srv: ServerProc, token_file: Path
) -> None:
    cfg = remote_cfg(tmp_path, srv)
    assert request(srv, "PUT", "/docs/a.txt", b"a")[0] == 201
    assert fetch_state(cfg, "docs", 10) is not None
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    assert (
        fetch_state(replace(cfg, options={**cfg.options, "token_file": wrong}), "docs", 10) is None
    )
    assert (
        fetch_state(replace(cfg, options={**cfg.options, "token_file": None}), "docs", 10) is None
    )
    assert (
        fetch_state(
            replace(cfg, options={**cfg.options, "token_file": tmp_path / "gone"}), "docs", 10
        )
        is None
    )
    assert fetch_state(replace(cfg, kind="webdav"), "docs", 10) is None
    assert fetch_state(replace(cfg, kind="s3", url="s3://b/p/"), "docs", 10) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert fetch_state(replace(cfg, url=f"http://127.0.0.1:{free}/"), "docs", 2) is None
    assert fetch_state(replace(cfg, url=f"https://127.0.0.1:{srv.port}/"), "docs", 2) is None
    assert fetch_state(replace(cfg, url="http://127.0.0.1:99999/"), "docs", 2) is None
    assert fetch_state(cfg, "docs/a.txt", 10) is None  # a file, not a directory: 409


def test_fetch_state_does_not_import_aiohttp(tmp_path: Path, srv: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    cfg = mirror_config(tmp_path, srv, folder)
    assert request(srv, "PUT", "/docs/a.txt", b"a")[0] == 201
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from syncd.config import load\n"
        "from syncd.remotes.kinds import KINDS\n"
        "from syncd.remotes.quickstate import fetch_state\n"
        f"token = fetch_state(load(Path({str(cfg)!r}), kinds=KINDS).remote, 'docs', 10)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('aiohttp', 'yarl', 'multidict', 'asyncio'))\n"
        "print(token, heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    token, heavy = r.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert token == fetch_state(remote_cfg(tmp_path, srv), "docs", 10)


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no IPv6 loopback here")
def test_fetch_state_over_ipv6(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "syncd", "serve", "--root", str(root), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--host", "::1", "--token-file", str(token_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\[::1\]:\d+/)", line)
        assert m, line
        url = m.group(1)
        status, _, _ = request(
            url,
            "PUT",
            "/docs/a.txt",
            b"a",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        )
        assert status == 201
        folder = tmp_path / "f"
        folder.mkdir()
        p = write_config(
            tmp_path / "c.toml",
            f'[remote]\nurl = "{url}"\ntoken_file = "{token_file}"\n'
            f'[[folder]]\npath = "{folder}"\n',
        )
        token = fetch_state(cfgmod.load(p, kinds=KINDS).remote, "docs", 10)
        assert token is not None and token != "absent"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_fetch_state_over_tls(
    tmp_path: Path, token_file: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    root = tmp_path / "root"
    s = start_server(root, token_file, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        (root / "docs").mkdir()
        cfg = replace(remote_cfg(tmp_path, s), url=f"https://127.0.0.1:{s.port}/")
        assert fetch_state(cfg, "docs", 10) is None  # the self-signed cert is not trusted
        trusted = fetch_state(replace(cfg, ca_file=cert), "docs", 10)
        assert trusted is not None and trusted != "absent"
        assert fetch_state(replace(cfg, verify_tls=False), "docs", 10) == trusted
    finally:
        s.stop()


def test_state_is_stable_for_a_big_tree(tmp_path: Path, srv: ServerProc) -> None:
    """10,000 files in 100 directories: the token comes back unchanged while nothing changes
    (how fast is the bench's business, not a test's)."""
    for d in range(100):
        sub = srv.root / "docs" / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}.txt").write_bytes(b"")
    cfg = remote_cfg(tmp_path, srv)
    first = fetch_state(cfg, "docs", 10)
    assert first is not None and fetch_state(cfg, "docs", 10) == first
