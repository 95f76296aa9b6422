"""Delta uploads of changed large files to `syncd serve`: only the chunks the server's copy
lacks go on the wire (counted by the fault proxy), the server builds the new file from its old
one and shows it only once its digest matched; a base that differs falls back to a whole
upload; shrunk, grown and rewritten files; the chunk list kept in the manifest; hostile
delta bodies; and the plan itself against generated edits."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import chunking
from tests.conftest import ServerProc, mirror_config, run_syncd
from tests.faultproxy import FORWARD, Action, FaultProxy

MiB = 1 << 20
SIZE = 24 * MiB


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "src"
    f.mkdir()
    (f / "big.bin").write_bytes(_random(SIZE, 1))
    return f


def _synced(tmp_path: Path, server: ServerProc, folder: Path) -> tuple[Path, FaultProxy]:
    proxy = FaultProxy(server.port, lambda n, m, t: FORWARD).start()
    cfg = mirror_config(tmp_path, server, folder)
    cfg.write_text(cfg.read_text().replace(server.url, proxy.url))
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    proxy.seen.clear()
    return cfg, proxy


def _sent(proxy: FaultProxy) -> int:
    return sum(s.body for s in proxy.seen)


def _insert(data: bytes) -> bytes:
    return data[: 10 * MiB] + _random(4096, 2) + data[10 * MiB :]


EDITS: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    # name: (the edit, whether it goes as a delta)
    "inserted 4 KiB at 10 MiB": (_insert, True),
    "1 MiB appended": (lambda d: d + _random(MiB, 3), True),
    "shrank by 3 MiB at the end": (lambda d: d[: -3 * MiB], True),
    "grew by 1 MiB at the start": (lambda d: _random(MiB, 4) + d, True),
    "3 MiB cut from the middle": (lambda d: d[: 5 * MiB] + d[8 * MiB :], True),
    "rewritten entirely": (lambda d: _random(len(d), 5), False),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_changed_large_file_sends_only_what_changed(
    tmp_path: Path, server: ServerProc, folder: Path, edit: str
) -> None:
    change, as_delta = EDITS[edit]
    cfg, proxy = _synced(tmp_path, server, folder)
    try:
        before = (folder / "big.bin").read_bytes()
        after = change(before)
        (folder / "big.bin").write_bytes(after)
        r = run_syncd("sync", config=cfg)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert (server.root / "docs/big.bin").read_bytes() == after
    deltas = [s for s in proxy.seen if s.target.endswith("?delta")]
    if as_delta:
        assert len(deltas) == 1 and "sent as a delta" in r.stderr, r.stderr
        changed = max(len(after) - len(before), 0) + 4096
        # what changed, the chunks around it, the steps and the chunk list of the base
        assert _sent(proxy) <= changed + 4 * (256 << 10) + 64 * 1024, _sent(proxy)
    else:
        assert not deltas
        assert _sent(proxy) >= len(after)
    # the old bytes were kept as a version, as any replaced file is
    kept = list((server.root / ".~syncd-versions/docs/big.bin").iterdir())
    assert [p.read_bytes() == before for p in kept] == [True]


READ_COUNTED = """\
import atexit, sys
def said():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    sys.stderr.write(f"RCHAR {int(io['rchar'])}\\n")
atexit.register(said)
from syncd.cli import main
sys.argv[0] = "syncd"
sys.exit(main())
"""


def _sync_counting_reads(cfg: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`syncd sync` and the bytes the process read (rchar: every read and pread)."""
    r = subprocess.run(
        [sys.executable, "-c", READ_COUNTED, "sync", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    counted = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("RCHAR ")]
    assert counted, r.stderr
    return r, counted[-1]


@pytest.mark.parametrize("edit", ["4 KiB rewritten in place", "touched, bytes unchanged"])
def test_a_same_size_change_of_a_large_file_is_read_once(
    tmp_path: Path, server: ServerProc, folder: Path, edit: str
) -> None:
    """The compare with the manifest (same size: is it the same bytes?) cuts the file while
    it hashes it; the delta then sends from that list and does not read the file again. A
    touch goes as a delta too (the new mtime is stored with the file): no byte of it sent."""
    cfg, proxy = _synced(tmp_path, server, folder)
    path = folder / "big.bin"
    data = path.read_bytes()
    if edit.startswith("touched"):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        want = data
    else:
        with path.open("r+b") as f:
            f.seek(10 * MiB)
            f.write(_random(4096, 9))
        want = path.read_bytes()
    try:
        r, read = _sync_counting_reads(cfg)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert (server.root / "docs/big.bin").read_bytes() == want
    assert len([s for s in proxy.seen if s.target.endswith("?delta")]) == 1, r.stderr
    assert _sent(proxy) < 4096 + 2 * (256 << 10) + 64 * 1024, _sent(proxy)
    if want == data:
        assert "sent as a delta: 0 of" in r.stderr, r.stderr
        assert os.stat(server.root / "docs/big.bin").st_mtime_ns == path.stat().st_mtime_ns
    # read once by the cut and once by the whole file's hash (two threads, side by side),
    # plus what starting Python and reading the config and manifest take; not a third time
    assert 2 * SIZE <= read < 2 * SIZE + SIZE // 2, read


def test_the_chunk_list_is_kept_in_the_manifest_and_used_next_time(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    cfg, proxy = _synced(tmp_path, server, folder)
    try:
        data = _insert((folder / "big.bin").read_bytes())
        (folder / "big.bin").write_bytes(data)
        assert run_syncd("sync", config=cfg).returncode == 0
        asked = [s for s in proxy.seen if s.target.endswith("?chunks")]
        assert len(asked) == 1  # the first delta: the list of the server's copy was asked for
        proxy.seen.clear()
        data = data + b"tail" * 1000
        (folder / "big.bin").write_bytes(data)
        r = run_syncd("sync", config=cfg)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert not [s for s in proxy.seen if s.target.endswith("?chunks")]
    assert [s for s in proxy.seen if s.target.endswith("?delta")]
    assert (server.root / "docs/big.bin").read_bytes() == data
    with sqlite3.connect(tmp_path / "state" / "manifest.sqlite3") as db:
        (sha,) = db.execute("SELECT sha256 FROM chunks WHERE path = 'big.bin'").fetchone()
    assert sha == hashlib.sha256(data).hexdigest()


def test_a_server_copy_that_is_not_the_base_falls_back_to_a_whole_upload(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    cfg, proxy = _synced(tmp_path, server, folder)
    other = _random(SIZE, 9)

    def decide(n: int, method: str, target: str) -> Action:
        if target.endswith("?delta"):
            # behind syncd's back, between its look at the server and its delta: the
            # server's copy is no longer the base it names
            (server.root / "docs/big.bin").write_bytes(other)
        return FORWARD

    proxy.decide = decide
    try:
        data = _insert((folder / "big.bin").read_bytes())
        (folder / "big.bin").write_bytes(data)
        r = run_syncd("sync", config=cfg)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert (server.root / "docs/big.bin").read_bytes() == data
    assert [s.action for s in proxy.seen if s.target.endswith("?delta")] == ["forward"]
    assert "no delta taken (412)" in r.stderr, r.stderr
    assert _sent(proxy) >= len(data)  # sent whole, after the 412
    # what the server held meanwhile was kept as a version, never mixed into the new file
    kept = [p.read_bytes() for p in (server.root / ".~syncd-versions/docs/big.bin").iterdir()]
    assert other in kept


# --------------------------------------------------------------------------- the server


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


async def test_hostile_delta_bodies_change_nothing(server: ServerProc) -> None:
    base = _random(300_000, 7)
    (server.root / "d").mkdir()
    (server.root / "d/f.bin").write_bytes(base)
    etag = f'"{hashlib.sha256(base).hexdigest()}"'
    new = base[:1000] + b"new" + base[1000:]
    h = {
        **server.headers(),
        "Content-Type": "application/x-syncd-delta",
        "If-Match": etag,
        "X-Syncd-Length": str(len(new)),
    }
    step = chunking.STEP.pack
    good = step(b"C", 0, 1000) + step(b"L", 0, 3) + b"new" + step(b"C", 1000, len(base) - 1000)
    bad_bodies = {
        "copy past the end": step(b"C", 0, len(base) + 1),
        "unknown step": struct.pack(">cQQ", b"X", 0, 1),
        "literal cut short": step(b"L", 0, 100) + b"abc",
        "head cut short": good[:-5],
        "more than X-Syncd-Length": good + step(b"C", 0, 10),
        "less than X-Syncd-Length": good[: -chunking.STEP.size],
        "a D step not last": step(b"D", 0, 32) + hashlib.sha256(new).digest() + good,
    }
    async with aiohttp.ClientSession(server.url) as s:
        for name, body in bad_bodies.items():
            async with s.post(
                "/d/f.bin?delta", data=body, headers={**h, "Repr-Digest": _digest(new)}
            ) as r:
                assert r.status == 400, (name, r.status, await r.text())
        async with s.post(
            "/d/f.bin?delta", data=good, headers={**h, "Repr-Digest": _digest(b"other")}
        ) as r:
            assert r.status == 400  # the digest of what it built is not the one named
        other = {**h, "If-Match": f'"{"0" * 64}"', "Repr-Digest": _digest(new)}
        async with s.post("/d/f.bin?delta", data=good, headers=other) as r:
            assert r.status == 412
        async with s.post("/d/nothing?delta", data=good, headers=other) as r:
            assert r.status == 412
        assert (server.root / "d/f.bin").read_bytes() == base
        assert not [p for p in (server.root / "d").iterdir() if p.name != "f.bin"]
        async with s.post(
            "/d/f.bin?delta", data=good, headers={**h, "Repr-Digest": _digest(new)}
        ) as r:
            assert r.status == 204, await r.text()
        assert (server.root / "d/f.bin").read_bytes() == new
        async with s.get("/d/f.bin?chunks", headers=server.headers()) as r:
            assert r.status == 200
            assert r.headers["ETag"] == f'"{hashlib.sha256(new).hexdigest()}"'
            blob = await r.read()
        assert chunking.valid_blob(blob)
        assert chunking.Chunks(blob, "").size == len(new)


# --------------------------------------------------------------------------- the plan


def _apply(plan: chunking.Plan, base: bytes, new: bytes) -> bytes:
    out = bytearray()
    for kind, start, length in plan.steps:
        out += (base if kind == "C" else new)[start : start + length]
    return bytes(out)


def _chunks(data: bytes, tmp: Path) -> chunking.Chunks:
    tmp.write_bytes(data)
    return chunking.chunk_path(tmp)


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.floats(0, 1),
        st.integers(1, 200_000),
    ),
    max_size=4,
)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 3 * MiB), changes=edits)
def test_a_plan_rebuilds_the_new_file_from_the_base(
    tmp_path_factory: pytest.TempPathFactory, seed: int, size: int, changes: list
) -> None:
    tmp = tmp_path_factory.mktemp("plan")
    base = _random(size, seed)
    new = base
    for kind, where, n in changes:
        at = int(where * len(new))
        if kind == "insert":
            new = new[:at] + _random(n, seed + n) + new[at:]
        elif kind == "delete":
            new = new[:at] + new[at + n :]
        else:
            new = new[:at] + _random(min(n, len(new) - at), seed ^ n) + new[at + n :]
    a, b = _chunks(base, tmp / "base"), _chunks(new, tmp / "new")
    assert a.sha256 == hashlib.sha256(base).hexdigest()
    assert b.size == len(new)
    plan = chunking.delta_plan(b, a)
    assert _apply(plan, base, new) == new
    assert plan.size == len(new)
    assert plan.literal == sum(n for k, _, n in plan.steps if k == "L")
    # an unchanged file copies everything, in one step
    if new == base and base:
        assert plan.steps == [("C", 0, len(base))]
    os.remove(tmp / "base")
