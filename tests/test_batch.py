"""Small files in batches (``POST /<dir>/?batch``): each file checked by its own digest and
stored atomically, refused alone, never half-written; the client batches what it can and
records a file only once the server confirmed its digest."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import FolderConfig, RemoteConfig, load
from syncd.errors import PermanentError, SourceChanged, TransientError
from syncd.hashing import ReadStats, Source
from syncd.remotes.base import Batcher, BatchLimits
from syncd.remotes.kinds import KINDS
from syncd.remotes.syncd import SyncdRemote
from syncd.retry import RetryPolicy
from syncd.scanner import Scanner
from syncd.server.batch import MAX_BYTES, MAX_PARTS
from syncd.types import LocalFile, Op, OpKind
from syncd.uploader import FolderCtx, Outcome, Throttle, Uploader
from tests.conftest import ServerProc, mirror_config, run_syncd, start_server, write_config
from tests.test_server import tiny_disk as _tiny_disk

tiny_disk = _tiny_disk  # (a fixture: a 2 MiB tmpfs, a real full disk)

TEMP = re.compile(r"\.~syncd-.*\.tmp\Z")


def remote_cfg(tmp_path: Path, srv: ServerProc) -> RemoteConfig:
    (tmp_path / "unused").mkdir(exist_ok=True)
    cfg = write_config(
        tmp_path / "remote.toml",
        f'[remote]\nurl = "{srv.url}"\ntoken_file = "{srv.token_file}"\n'
        f'[[folder]]\npath = "{tmp_path / "unused"}"\n',
    )
    return load(cfg, kinds=KINDS).remote


def source(
    rel: str,
    data: bytes,
    *,
    mtime_ns: int = 1_600_000_000_123_456_789,
    exe: bool = False,
    sha: str | None = None,
) -> Source:
    """A small file's source as the uploader reads it (its bytes and digest in memory)."""
    local = LocalFile(rel, len(data), mtime_ns, executable=exe)
    return Source(
        Path("/nonexistent") / rel, local, data=data, sha256=sha or hashlib.sha256(data).hexdigest()
    )


def temps(root: Path) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if TEMP.match(f)]


# --------------------------------------------------------------------------- the server


_NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", "..") and not n.startswith(".~syncd-") and len(n.encode()) <= 255)


@settings(
    max_examples=min(10, settings().max_examples),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    files=st.dictionaries(
        st.lists(_NAME, min_size=1, max_size=3).map("/".join),
        st.tuples(st.integers(0, 70_000), st.booleans(), st.integers(0, 2**40)),
        min_size=1,
        max_size=12,
    )
)
def test_a_batch_lands_byte_exact_with_times_and_modes(
    tmp_path: Path, server: ServerProc, files: dict[str, tuple[int, bool, int]]
) -> None:
    # (one name may be another's directory: those are refused alone, 409, as a PUT would be)
    items = []
    for i, (rel, (size, exe, t)) in enumerate(sorted(files.items())):
        data = hashlib.sha256(f"{rel}{i}".encode()).digest() * (size // 32 + 1)
        items.append((rel, source(rel, data[:size], mtime_ns=t * 1000 + 7, exe=exe)))
    prefix = f"ex{os.urandom(4).hex()}"

    async def go() -> list[object]:
        async with SyncdRemote(remote_cfg(tmp_path, server), 2) as remote:
            assert isinstance(remote, Batcher)
            assert await remote.batch_limits() == BatchLimits(MAX_PARTS, MAX_BYTES, 1 << 20)
            return list(await remote.put_batch(prefix, items))

    answers = asyncio.run(go())
    for (rel, src), answer in zip(items, answers, strict=True):
        target = server.root / prefix / rel
        if isinstance(answer, PermanentError):
            assert answer.status == 409, answer  # a file where another needs a directory
            continue
        assert answer == src.sha256
        assert target.read_bytes() == src.data
        st_ = target.lstat()
        assert st_.st_mtime_ns == src.local.mtime_ns
        assert bool(st_.st_mode & stat.S_IXUSR) == src.local.executable
    assert not temps(server.root)


def test_a_wrong_digest_refuses_that_file_alone(tmp_path: Path, server: ServerProc) -> None:
    good = [source(f"g{i}.txt", f"good {i}\n".encode()) for i in range(3)]
    bad = source("bad.txt", b"what was sent", sha="00" * 32)
    items = [(s.rel, s) for s in (good[0], bad, good[1], good[2])]

    async def go() -> list[object]:
        async with SyncdRemote(remote_cfg(tmp_path, server), 2) as remote:
            return list(await remote.put_batch("d", items))

    answers = asyncio.run(go())
    assert isinstance(answers[1], PermanentError) and answers[1].status == 400
    assert "digest mismatch" in str(answers[1])
    assert [answers[i] for i in (0, 2, 3)] == [s.sha256 for s in good]
    assert not (server.root / "d" / "bad.txt").exists()
    assert sorted(os.listdir(server.root / "d")) == ["g0.txt", "g1.txt", "g2.txt"]
    assert not temps(server.root)


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("a/../../escape", "not allowed"),
        ("..", "not allowed"),
        ("/etc/passwd", "empty path segment"),
        (".~syncd-mirror", "reserved"),
        ("x/.~syncd-abc.tmp", "reserved"),
        ("nul\x00name", "contains NUL"),
        ("dir/", "not a directory"),
    ],
)
def test_a_hostile_part_path_is_refused_alone(
    tmp_path: Path, server: ServerProc, rel: str, why: str
) -> None:
    ok = source("fine.txt", b"fine\n")
    items = [("fine.txt", ok), (rel, source("h", b"hostile\n"))]

    async def go() -> list[object]:
        async with SyncdRemote(remote_cfg(tmp_path, server), 2) as remote:
            return list(await remote.put_batch("m", items))

    answers = asyncio.run(go())
    assert answers[0] == ok.sha256
    assert isinstance(answers[1], PermanentError) and answers[1].status == 400, answers[1]
    assert why in str(answers[1])
    found = sorted(str(p.relative_to(server.root)) for p in server.root.rglob("*"))
    assert [f for f in found if not f.startswith(".~syncd-")] == ["m", "m/fine.txt"]


def _post(srv: ServerProc, body: bytes, *, length: int | None = None) -> tuple[int, bytes]:
    """POST /b/?batch with ``body`` (and a Content-Length that may lie) over a raw socket."""
    head = (
        f"POST /b/?batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {srv.token}\r\n"
        f"Content-Type: multipart/mixed; boundary=BB\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head + body)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    status = int(got.split(b" ", 2)[1])
    return status, got.partition(b"\r\n\r\n")[2]


def _part(rel: str, data: bytes) -> bytes:
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    return (
        (
            f"--BB\r\nX-Syncd-Path: {rel}\r\nContent-Length: {len(data)}\r\n"
            f"Repr-Digest: {digest}:\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def test_a_batch_over_the_limits_is_413_and_stores_nothing(server: ServerProc) -> None:
    status, _ = _post(server, b"", length=MAX_BYTES + 1)  # refused before the body is read
    assert status == 413
    many = b"".join(_part(f"f{i}", b"") for i in range(MAX_PARTS + 1)) + b"--BB--\r\n"
    status, body = _post(server, many)
    assert status == 413 and b"at most" in body
    assert not (server.root / "b").exists() or not any((server.root / "b").iterdir())
    assert not temps(server.root)
    status, body = _post(server, _part("one", b"1") + b"--BB--\r\n")
    assert status == 200 and b'"status": 201' in body


def test_a_body_cut_off_commits_nothing(server: ServerProc) -> None:
    body = b"".join(_part(f"f{i}", b"x" * 1000) for i in range(5))
    head = (
        f"POST /cut/?batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}"
        f"\r\nContent-Type: multipart/mixed; boundary=BB\r\nContent-Length: {len(body) + 500}"
        "\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head + body)  # ... and the client goes away before the end
    # The server notices at once; it is checked by a request that comes after it.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"OPTIONS / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + (server.token or "").encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        while s.recv(65536):
            pass
    for _ in range(200):
        if not temps(server.root):
            break
        time.sleep(0.05)
    assert not temps(server.root)
    assert not (server.root / "cut").exists() or not any((server.root / "cut").iterdir())


# --------------------------------------------------------------------------- the client


class _Rows:
    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def sent(self, scope: str, local: LocalFile, sha: str) -> None:
        self.rows[local.rel] = sha

    def moved(self, scope: str, src: str, dst: str, local: LocalFile | None, *, tree: bool) -> None:
        raise AssertionError("no moves here")

    def deleted(self, scope: str, rel: str, *, tree: bool) -> int:
        raise AssertionError("no deletes here")


def test_a_file_changed_while_read_is_not_recorded(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(f"{name}\n")
    scanner = Scanner(
        FolderConfig(
            path=folder, remote_path="docs", ignore=(), use_default_ignores=False, delete=True
        )
    )
    ctx = FolderCtx(folder, "docs", "scope", scanner)
    seen: dict[str, int] = {}

    def stat_now(rel: str) -> LocalFile | None:
        """The folder as it is, but b.txt edited just after it was read (its second look)."""
        seen[rel] = seen.get(rel, 0) + 1
        if rel == "b.txt" and seen[rel] == 2:
            (folder / "b.txt").write_text("edited meanwhile\n")
            os.utime(folder / "b.txt", ns=(1, 1))
        return scanner.stat(rel)

    ctx.stat = stat_now
    rows = _Rows()

    async def go() -> tuple[list[object], list[object]]:
        async with SyncdRemote(remote_cfg(tmp_path, server), 2) as remote:
            up = Uploader(
                remote, rows, RetryPolicy(attempts=2, base=0.01), ReadStats(), Throttle(0)
            )
            ops = [
                (Op(OpKind.UPLOAD, n, local=scanner.stat(n)), None)
                for n in ("a.txt", "b.txt", "c.txt")
            ]
            first = list(await up.upload_batch(ctx, ops))
            # ... and it is sent again (the pool does it: alone, as any changed file)
            again = [await up.upload(ctx, ops[1][0]._replace(local=scanner.stat("b.txt")))]
            return first, again

    first, again = asyncio.run(go())
    assert first[0] == Outcome.UPLOADED and first[2] == Outcome.UPLOADED
    assert isinstance(first[1], SourceChanged)
    assert again == [Outcome.UPLOADED]
    assert (server.root / "docs" / "b.txt").read_text() == "edited meanwhile\n"
    assert rows.rows["b.txt"] == hashlib.sha256(b"edited meanwhile\n").hexdigest()
    assert set(rows.rows) == {"a.txt", "b.txt", "c.txt"}


def _tree(folder: Path, n: int) -> None:
    for i in range(n):
        p = folder / f"d{i % 7}" / f"file {i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{i}\n".encode() * (i % 50 + 1))


def _batch_lines(log: Path) -> list[int]:
    return [
        int(m.group(1))
        for m in re.finditer(r"stored (\d+) of \d+ files in a batch", log.read_text())
    ]


def test_sync_of_many_small_files_goes_in_batches(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    log = tmp_path / "server.log"
    srv = start_server(root, token_file, log=log)
    try:
        folder = tmp_path / "folder"
        _tree(folder, 2000)
        cfg = mirror_config(tmp_path, srv, folder)
        r = run_syncd("sync", config=cfg, timeout=300)
        assert r.returncode == 0, r.stderr
        batches = _batch_lines(log)
        # (the first few go alone, while the client asks whether the server takes batches)
        singles = re.findall(r"stored '/docs/d[^']*' \(", log.read_text())
        assert len(singles) <= 2 * 4
        assert sum(batches) + len(singles) == 2000
        assert len(batches) <= 2000 // 10  # (requests, not files)
        v = run_syncd("verify", config=cfg, timeout=300)
        assert v.returncode == 0, v.stdout + v.stderr
    finally:
        srv.stop()


def test_an_older_server_gets_one_put_per_file(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    log = tmp_path / "server.log"
    srv = start_server(root, token_file, "--no-batch", log=log)
    try:
        folder = tmp_path / "folder"
        _tree(folder, 40)
        cfg = mirror_config(tmp_path, srv, folder)
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 0, r.stderr
        assert _batch_lines(log) == []
        assert len(re.findall(r"stored '/docs/d\d/file \d+\.txt'", log.read_text())) == 40
        assert run_syncd("verify", config=cfg).returncode == 0
    finally:
        srv.stop()


def test_server_killed_mid_batch_leaves_no_temp_and_the_next_pass_completes(
    tmp_path: Path, token_file: Path
) -> None:
    root = tmp_path / "root"
    folder = tmp_path / "folder"
    _tree(folder, 60)
    srv = start_server(root, token_file, env={"SYNCD_CRASH_AT": "server-mid-batch"})
    cfg = mirror_config(tmp_path, srv, folder)
    r = run_syncd("sync", config=cfg, timeout=300)
    assert srv.proc.wait(timeout=30) == -signal.SIGKILL
    assert r.returncode != 0
    # whatever is at a path is a whole file: one of the folder's
    for p in (root / "docs").rglob("*"):
        if p.is_file() and not TEMP.match(p.name) and not p.name.startswith(".~syncd-"):
            assert p.read_bytes() == (folder / p.relative_to(root / "docs")).read_bytes()
    srv.stop()
    srv = start_server(root, token_file, port=srv.port)
    try:
        assert not temps(root)
        r = run_syncd("sync", config=cfg, timeout=300)
        assert r.returncode == 0, r.stderr
        assert run_syncd("verify", config=cfg).returncode == 0
    finally:
        srv.stop()


def test_the_remote_asks_once_and_an_older_server_says_no(tmp_path: Path, token_file: Path) -> None:
    srv = start_server(tmp_path / "root", token_file, "--no-batch")
    try:

        async def go() -> tuple[object, list[object]]:
            async with SyncdRemote(remote_cfg(tmp_path, srv), 2) as remote:
                limits = await remote.batch_limits()
                # a client that tries anyway is told to send the files alone
                return limits, list(await remote.put_batch("x", [("a", source("a", b"a"))]))

        limits, answers = asyncio.run(go())
        assert limits is None and answers == [None]
        assert not (tmp_path / "root" / "x").exists()
    finally:
        srv.stop()


def test_disk_full_mid_batch_is_507_for_the_rest_no_temp_left(
    tmp_path: Path, token_file: Path, tiny_disk: Path
) -> None:
    srv = start_server(tiny_disk, token_file)
    try:
        sizes = {"a": 1000, "b": 900_000, "c": 900_000, "d": 900_000, "e": 1000}
        items = [(rel, source(rel, os.urandom(n))) for rel, n in sizes.items()]

        async def go() -> list[object]:
            async with SyncdRemote(remote_cfg(tmp_path, srv), 2) as remote:
                return list(await remote.put_batch("full", items))

        answers = asyncio.run(go())
        assert answers[:3] == [src.sha256 for _, src in items[:3]]
        for answer in answers[3:]:
            assert isinstance(answer, TransientError) and answer.status == 507, answer
        assert sorted(os.listdir(tiny_disk / "full")) == ["a", "b", "c"]
        assert not temps(tiny_disk)
    finally:
        srv.stop()
