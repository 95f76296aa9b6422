"""`syncd serve` keeps what it replaces or deletes in ROOT/.~syncd-versions, read-only, pruned
by age and space; uploads carry the file's mtime and executable bit. Against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from syncd.versioning import VERSIONS_DIR, split_version_path, version_name, versions_path
from tests.conftest import ServerProc, server_temps, start_server
from tests.test_server import digest_of, wait_until
from tests.test_server_hardening import NAMES

V = "/" + quote(VERSIONS_DIR)


def url(srv: ServerProc, path: str) -> URL:
    return URL(srv.url.rstrip("/") + path, encoded=True)


def enc(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


@contextlib.contextmanager
def serving(root: Path, token_file: Path, *extra: str) -> Iterator[ServerProc]:
    srv = start_server(root, token_file, *extra)
    try:
        yield srv
    finally:
        code = srv.stop()
        assert code == 0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "server-root"
    r.mkdir()
    return r


@contextlib.asynccontextmanager
async def client(srv: ServerProc) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=srv.headers()) as s:
        yield s


async def put(
    s: aiohttp.ClientSession,
    srv: ServerProc,
    path: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
) -> int:
    async with s.put(url(srv, path), data=data, headers=headers) as r:
        await r.read()
        return r.status


async def listing(s: aiohttp.ClientSession, srv: ServerProc, path: str) -> list[dict[str, Any]]:
    async with s.get(url(srv, path + "?list")) as r:
        assert r.status == 200, await r.text()
        # (NDJSON lines end at "\n" only: splitlines() would cut at U+0085 in a name too)
        return [json.loads(line) for line in (await r.text()).split("\n") if line]


async def versions(s: aiohttp.ClientSession, srv: ServerProc, path: str = "") -> list[Any]:
    """The versions' listing below ``path`` (a mirror path), read back by versioning.py."""
    lines = await listing(s, srv, V + (enc(*path.split("/")) if path else "") + "/")
    out = []
    for e in lines:
        full = f"{path}/{e['path']}" if path else e["path"]
        vp = split_version_path(full)
        assert vp is not None, full
        out.append((vp, e))
    return sorted(out, key=lambda x: x[0].when_ns)


async def get(s: aiohttp.ClientSession, srv: ServerProc, path: str) -> tuple[int, bytes]:
    async with s.get(url(srv, path)) as r:
        return r.status, await r.read()


async def state(s: aiohttp.ClientSession, srv: ServerProc, path: str) -> str:
    async with s.get(url(srv, path + "?state")) as r:
        assert r.status == 200
        return str((await r.json())["state"])


def version_url(vp_entry: str, inner: str = "") -> str:
    return V + enc(*vp_entry.split("/")) + (enc(*inner.split("/")) if inner else "")


# --------------------------------------------------------------------------- keeping


async def test_three_overwrites_keep_three_versions_with_bytes_and_times(
    root: Path, token_file: Path
) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            bodies = [f"body {i}\n".encode() * (i + 1) for i in range(4)]
            mtimes = [1_600_000_000_000_000_000 + i * 1_000_000_007 for i in range(4)]
            stamps = []
            for body, mtime in zip(bodies, mtimes, strict=True):
                stamps.append(time.time_ns())
                h = {"X-Syncd-Mtime": str(mtime), "Repr-Digest": digest_of(body)}
                assert await put(s, srv, "/docs/a.txt", body, h) in (201, 204)
            stamps.append(time.time_ns())
            kept = await versions(s, srv, "docs")
            assert [vp.why for vp, _ in kept] == ["replaced"] * 3
            assert [vp.path for vp, _ in kept] == ["docs/a.txt"] * 3
            for i, (vp, line) in enumerate(kept):
                # it stopped being current when the next upload replaced it
                assert stamps[i + 1] <= vp.when_ns <= stamps[i + 2]
                assert line["mtime_ns"] == mtimes[i]
                assert line["sha256"] == hashlib.sha256(bodies[i]).hexdigest()
                status, data = await get(s, srv, version_url(vp.entry))
                assert (status, data) == (200, bodies[i])
            # the mirror itself lists only the current file
            assert [e["path"] for e in await listing(s, srv, "/docs/")] == ["a.txt"]
            assert [e["path"] for e in await listing(s, srv, "/")] == ["docs/a.txt"]
            assert (await get(s, srv, "/docs/a.txt"))[1] == bodies[3]


async def test_identical_reupload_keeps_no_version(root: Path, token_file: Path) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/same.txt", b"same bytes") == 201
            # same bytes: listed (digest cached) and not listed (hashed at the commit)
            await listing(s, srv, "/docs/")
            assert await put(s, srv, "/docs/same.txt", b"same bytes") == 204
            assert await versions(s, srv) == []
            (root / "docs" / "other.txt").write_bytes(b"12345")  # behind the server's back
            assert await put(s, srv, "/docs/other.txt", b"12345") == 204
            assert await versions(s, srv) == []
            # same size, other bytes: kept
            assert await put(s, srv, "/docs/same.txt", b"SAME BYTES") == 204
            kept = await versions(s, srv)
            assert [(vp.path, line["size"]) for vp, line in kept] == [("docs/same.txt", 10)]
            assert (await get(s, srv, version_url(kept[0][0].entry)))[1] == b"same bytes"


async def test_two_step_upload_keeps_the_replaced_file_and_takes_the_commits_meta(
    root: Path, token_file: Path
) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/big.bin", b"old") == 201
            uid = "ab" * 16
            body = b"new contents"
            h = {"X-Syncd-Mtime": "1000000000000000000", "X-Syncd-Executable": "?0"}
            assert await put(s, srv, f"/docs/big.bin?upload={uid}", body, h) == 202
            commit = {
                "Repr-Digest": digest_of(body),
                "X-Syncd-Mtime": "1700000000123456789",
                "X-Syncd-Executable": "?1",
            }
            async with s.post(url(srv, f"/docs/big.bin?commit={uid}"), headers=commit) as r:
                assert r.status == 204, await r.text()
            st = (root / "docs" / "big.bin").stat()
            assert st.st_mtime_ns == 1700000000123456789
            assert st.st_mode & 0o777 == 0o755
            kept = await versions(s, srv)
            assert len(kept) == 1
            assert (await get(s, srv, version_url(kept[0][0].entry)))[1] == b"old"


async def test_deleted_file_and_directory_are_kept_unlisted_and_out_of_state(
    root: Path, token_file: Path
) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            for p in ("a.txt", "sub/b.txt", "sub/deep/c.txt"):
                assert await put(s, srv, f"/docs/{p}", p.encode()) == 201
            assert await put(s, srv, "/docs/.~syncd-mirror", b'{"mirror": "x"}') == 201
            async with s.delete(url(srv, "/docs/a.txt")) as r:
                assert r.status == 204
            async with s.delete(url(srv, "/docs/sub/")) as r:
                assert r.status == 204
            assert await listing(s, srv, "/docs/") == []
            assert await listing(s, srv, "/") == []
            assert sorted(os.listdir(root / "docs")) == [".~syncd-mirror"]
            kept = await versions(s, srv)
            by_path = {vp.path: (vp, line) for vp, line in kept}
            assert set(by_path) == {"docs/a.txt", "docs/sub/b.txt", "docs/sub/deep/c.txt"}
            assert {vp.why for vp, _ in kept} == {"deleted"}
            # the directory went whole, in one rename: one entry holds its tree
            sub_b, sub_c = by_path["docs/sub/b.txt"][0], by_path["docs/sub/deep/c.txt"][0]
            assert sub_b.entry == sub_c.entry and sub_b.entry.startswith("docs/sub/.~syncd-v")
            assert (root / VERSIONS_DIR / sub_b.entry).is_dir()
            status, data = await get(s, srv, version_url(sub_c.entry, "deep/c.txt"))
            assert (status, data) == (200, b"sub/deep/c.txt")
            # The state tokens of the mirrors do not see the versions change.
            before = (await state(s, srv, "/"), await state(s, srv, "/docs/"))
            extra = root / VERSIONS_DIR / "docs" / "a.txt" / version_name(10**18, "deleted")
            extra.write_bytes(b"planted")
            (root / VERSIONS_DIR / "other").mkdir()
            assert (await state(s, srv, "/"), await state(s, srv, "/docs/")) == before
            assert await state(s, srv, V + "/") != "absent"


async def test_move_over_a_target_keeps_it_as_overwritten(root: Path, token_file: Path) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/src.txt", b"source") == 201
            assert await put(s, srv, "/docs/dst.txt", b"target") == 201
            assert await put(s, srv, "/docs/d1/x.txt", b"x1") == 201
            assert await put(s, srv, "/docs/d2/y.txt", b"y2") == 201
            for src, dst in (("/docs/src.txt", "/docs/dst.txt"), ("/docs/d1", "/docs/d2")):
                h = {"Destination": dst, "Overwrite": "T"}
                async with s.request("MOVE", url(srv, src), headers=h) as r:
                    assert r.status == 204, await r.text()
            assert (root / "docs" / "dst.txt").read_bytes() == b"source"
            kept = await versions(s, srv)
            assert [(vp.path, vp.why) for vp, _ in kept] == [
                ("docs/dst.txt", "overwritten"),
                ("docs/d2/y.txt", "overwritten"),
            ]
            assert (await get(s, srv, version_url(kept[0][0].entry)))[1] == b"target"
            assert (await get(s, srv, version_url(kept[1][0].entry, "y.txt")))[1] == b"y2"
            assert sorted(e["path"] for e in await listing(s, srv, "/docs/")) == [
                "d2/x.txt",
                "dst.txt",
            ]


async def test_versions_survive_a_restart_and_stale_temps_in_them_go(
    root: Path, token_file: Path
) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/a.txt", b"one") == 201
            assert await put(s, srv, "/docs/a.txt", b"two") == 204
            async with s.delete(url(srv, "/docs/a.txt")) as r:
                assert r.status == 204
            before = await versions(s, srv)
    assert len(before) == 2
    stale = root / VERSIONS_DIR / "docs" / "a.txt" / ".~syncd-0123456789abcdef0123456789abcdef.tmp"
    stale.write_bytes(b"half a body")
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            after = await versions(s, srv)
            assert [(vp, line["sha256"]) for vp, line in after] == [
                (vp, line["sha256"]) for vp, line in before
            ]
            assert [(await get(s, srv, version_url(vp.entry)))[1] for vp, _ in after] == [
                b"one",
                b"two",
            ]
    assert not stale.exists()
    assert server_temps(root) == []


async def test_a_server_killed_between_keeping_and_replacing_loses_nothing(
    root: Path, token_file: Path
) -> None:
    """SIGKILL after the old file was kept, before the new one was renamed over it: the path
    still holds the old bytes (whole), the version is a second copy of them, no temp is left
    after the restart, and the upload sent again replaces it as usual."""
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/a.txt", b"old bytes") == 201
    srv = start_server(root, token_file, env={"SYNCD_CRASH_AT": "server-after-keep"})
    async with client(srv) as s:
        with pytest.raises(aiohttp.ClientError):
            await put(s, srv, "/docs/a.txt", b"new bytes")
    assert srv.stop() == -9
    assert (root / "docs" / "a.txt").read_bytes() == b"old bytes"
    kept = list((root / VERSIONS_DIR / "docs" / "a.txt").iterdir())
    assert [p.read_bytes() for p in kept] == [b"old bytes"]
    with serving(root, token_file) as srv:
        assert server_temps(root) == []
        async with client(srv) as s:
            assert await put(s, srv, "/docs/a.txt", b"new bytes") == 204
            assert (await get(s, srv, "/docs/a.txt"))[1] == b"new bytes"
            got = sorted(
                [(await get(s, srv, version_url(vp.entry)))[1] for vp, _ in await versions(s, srv)]
            )
            assert got == [b"old bytes", b"old bytes"]


# --------------------------------------------------------------------------- read-only


async def test_versions_are_read_only(root: Path, token_file: Path) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/a.txt", b"one") == 201
            assert await put(s, srv, "/docs/a.txt", b"two") == 204
            ((vp, _),) = await versions(s, srv)
            entry = version_url(vp.entry)
            async with s.head(url(srv, entry)) as r:
                assert r.status == 200 and r.headers["Content-Length"] == "3"
            attempts = [
                ("PUT", entry, {}),
                ("PUT", V + "/docs/new.txt", {}),
                ("PUT", entry + "?upload=" + "cd" * 16, {}),
                ("DELETE", entry, {}),
                ("DELETE", V + "/", {}),
                ("MKCOL", V + "/docs/newdir", {}),
                ("MOVE", entry, {"Destination": "/docs/back.txt"}),
                ("MOVE", "/docs/a.txt", {"Destination": V + "/docs/a.txt"}),
                ("POST", entry + "?commit=" + "cd" * 16, {"Repr-Digest": digest_of(b"")}),
            ]
            for method, path, headers in attempts:
                async with s.request(method, url(srv, path), data=b"", headers=headers) as r:
                    text = await r.text()
                    assert r.status == 403, (method, path, r.status, text)
                    assert "versions are read-only" in text
            assert (root / "docs" / "a.txt").read_bytes() == b"two"
            assert [v.entry for v, _ in await versions(s, srv)] == [vp.entry]
            async with s.options(url(srv, "/")) as r:
                keep, space = r.headers["X-Syncd-Versions"].split("; ")
                assert keep == "keep=2592000" and int(space.removeprefix("space=")) > 0


async def test_keep_zero_keeps_nothing(root: Path, token_file: Path) -> None:
    with serving(root, token_file, "--keep", "0") as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/a.txt", b"one") == 201
            assert await put(s, srv, "/docs/a.txt", b"two") == 204
            async with s.delete(url(srv, "/docs/")) as r:
                assert r.status == 204
            async with s.options(url(srv, "/docs/")) as r:
                assert r.headers["X-Syncd-Versions"] == "off"
            assert await versions(s, srv) == []


# --------------------------------------------------------------------------- metadata


async def test_metadata_headers_set_mtime_and_exec_and_come_back(
    root: Path, token_file: Path
) -> None:
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            h = {"X-Syncd-Mtime": "1234567890987654321", "X-Syncd-Executable": "?1"}
            assert await put(s, srv, "/docs/run.sh", b"#!/bin/sh\n", h) == 201
            assert await put(s, srv, "/docs/plain.txt", b"plain") == 201
            oc = {"X-OC-Mtime": "1700000000.25"}
            async with s.put(url(srv, "/docs/oc.txt"), data=b"oc", headers=oc) as r:
                assert r.status == 201 and r.headers["X-OC-Mtime"] == "accepted"
            st = (root / "docs" / "run.sh").stat()
            assert (st.st_mtime_ns, st.st_mode & 0o777) == (1234567890987654321, 0o755)
            assert (root / "docs" / "plain.txt").stat().st_mode & 0o777 == 0o644
            assert (root / "docs" / "oc.txt").stat().st_mtime_ns == 1700000000250000000
            for method in ("GET", "HEAD"):
                async with s.request(method, url(srv, "/docs/run.sh")) as r:
                    assert r.headers["X-Syncd-Mtime"] == "1234567890987654321"
                    assert r.headers["X-Syncd-Executable"] == "?1"
                async with s.request(method, url(srv, "/docs/plain.txt")) as r:
                    assert r.headers["X-Syncd-Executable"] == "?0"
            lines = {e["path"]: e for e in await listing(s, srv, "/docs/")}
            assert lines["run.sh"]["mtime_ns"] == 1234567890987654321
            assert lines["run.sh"]["mtime"] == 1234567890987654321 / 1e9
            assert lines["run.sh"]["executable"] is True
            assert lines["plain.txt"]["executable"] is False
            # a replacement that says nothing of the bit keeps it
            assert await put(s, srv, "/docs/run.sh", b"#!/bin/sh\nexit 0\n") == 204
            assert (root / "docs" / "run.sh").stat().st_mode & 0o777 == 0o755
            assert await put(s, srv, "/docs/run.sh", b"x", {"X-Syncd-Executable": "?0"}) == 204
            assert (root / "docs" / "run.sh").stat().st_mode & 0o777 == 0o644
            bad = [
                ({"X-Syncd-Mtime": "soon"}, "X-Syncd-Mtime"),
                ({"X-Syncd-Mtime": "1.5"}, "X-Syncd-Mtime"),
                ({"X-Syncd-Executable": "true"}, "X-Syncd-Executable"),
                ({"X-OC-Mtime": "yesterday"}, "X-OC-Mtime"),
            ]
            for headers, name in bad:
                async with s.put(url(srv, "/docs/bad.txt"), data=b"b", headers=headers) as r:
                    assert r.status == 400 and name in await r.text()
            assert not (root / "docs" / "bad.txt").exists()


# --------------------------------------------------------------------------- retention


def _plant(root: Path, path: str, when_ns: int, data: bytes) -> Path:
    p = root / VERSIONS_DIR / versions_path(path, when_ns, "replaced")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


async def test_retention_by_age_prunes_old_versions_at_start_and_while_running(
    root: Path, token_file: Path
) -> None:
    now = time.time_ns()
    old = _plant(root, "docs/deep/a.txt", now - 31 * 86400 * 10**9, b"old")
    fresh = _plant(root, "docs/b.txt", now - 29 * 86400 * 10**9, b"fresh")
    with serving(root, token_file, "--prune-interval", "0.2") as srv:
        deep = root / VERSIONS_DIR / "docs" / "deep"
        await wait_until(lambda: not deep.exists(), "the old version is pruned")
        assert not old.exists() and fresh.exists()
        assert not deep.exists()  # the directories it left empty go with it
        # planted while it runs: the next run removes it
        later = _plant(root, "docs/c.txt", now - 40 * 86400 * 10**9, b"later")
        await wait_until(lambda: not later.exists(), "the next run prunes it")
        assert not later.exists() and fresh.exists()
        async with client(srv) as s:
            assert [vp.path for vp, _ in await versions(s, srv)] == ["docs/b.txt"]
    with serving(root, token_file, "--keep", "1h") as srv:
        await asyncio.sleep(0.5)
    assert not fresh.exists()
    assert (root / VERSIONS_DIR).is_dir()  # the versions' directory itself stays


async def test_retention_by_space_prunes_the_oldest_first(root: Path, token_file: Path) -> None:
    with serving(root, token_file, "--keep-space", "100", "--prune-interval", "0.2") as srv:
        async with client(srv) as s:
            async with s.options(url(srv, "/")) as r:
                assert r.headers["X-Syncd-Versions"] == "keep=2592000; space=100"
            for i in range(4):  # three versions of 40 bytes: 120 > 100
                assert await put(s, srv, "/docs/a.bin", bytes([i]) * 40) in (201, 204)
            for _ in range(200):
                if len(await versions(s, srv)) <= 2:
                    break
                await asyncio.sleep(0.05)
            kept = await versions(s, srv)
            assert [(await get(s, srv, version_url(vp.entry)))[1] for vp, _ in kept] == [
                bytes([1]) * 40,
                bytes([2]) * 40,
            ]


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("--keep", "soon"), "--keep"),
        (("--keep", "30x"), "--keep"),
        (("--keep-space", "lots"), "--keep-space"),
        (("--keep-space", "200%"), "--keep-space"),
    ],
)
def test_bad_retention_options_are_refused(
    root: Path, token_file: Path, args: tuple[str, ...], word: str
) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "syncd", "serve", "--root", str(root), "--port", "0", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert word in done.stderr


# --------------------------------------------------------------------------- names


@pytest.fixture(scope="module")
def names_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("versions-names")
    tok = base / "token"
    tok.write_text("versions-names-token\n")
    (base / "root").mkdir()
    with serving(base / "root", tok) as srv:
        yield srv


_seq = iter(range(1 << 30))


@settings(max_examples=min(settings().max_examples, 25))
@given(dirname=NAMES, name=NAMES)
def test_versions_of_any_name_are_kept_and_read_back(
    names_srv: ServerProc, dirname: str, name: str
) -> None:
    srv = names_srv
    top = f"ex{next(_seq)}"

    async def run() -> None:
        async with client(srv) as s:
            path = enc(top, dirname, name)
            assert await put(s, srv, path, b"first") == 201
            assert await put(s, srv, path, b"second") == 204
            async with s.delete(url(srv, enc(top, dirname) + "/")) as r:
                assert r.status == 204
            kept = await versions(s, srv, top)
            assert [(vp.path, vp.why) for vp, _ in kept] == [
                (f"{top}/{dirname}/{name}", "replaced"),
                (f"{top}/{dirname}/{name}", "deleted"),
            ]
            replaced, deleted = kept[0][0], kept[1][0]
            assert (await get(s, srv, version_url(replaced.entry)))[1] == b"first"
            assert (await get(s, srv, version_url(deleted.entry, name)))[1] == b"second"

    asyncio.run(run())


async def test_an_upload_into_a_directory_deleted_meanwhile_is_gone_not_stored_in_versions(
    root: Path, token_file: Path
) -> None:
    """A DELETE moves the directory into the versions whole: an upload still receiving its
    body inside it must not land there (nor in the mirror): 404, and no temp is left."""
    with serving(root, token_file) as srv:
        async with client(srv) as s:
            assert await put(s, srv, "/docs/sub/old.txt", b"old") == 201
            started = asyncio.Event()
            release = asyncio.Event()

            async def body() -> AsyncIterator[bytes]:
                yield b"x" * (3 << 20)  # (more than the server reads ahead: a temp exists)
                started.set()
                await release.wait()
                yield b"second half"

            async def upload() -> int:
                async with s.put(url(srv, "/docs/sub/new.txt"), data=body()) as r:
                    await r.read()
                    return r.status

            task = asyncio.create_task(upload())
            await asyncio.wait_for(started.wait(), 10)
            await wait_until(lambda: bool(server_temps(root)), "the upload's temp exists")
            async with (
                aiohttp.ClientSession(headers=srv.headers()) as other,
                other.delete(url(srv, "/docs/sub/")) as r,
            ):
                assert r.status == 204
            release.set()
            assert await asyncio.wait_for(task, 10) == 404
            assert not (root / "docs" / "sub").exists()
            kept = await versions(s, srv)
            assert [vp.path for vp, _ in kept] == ["docs/sub/old.txt"]
            assert server_temps(root) == []


def test_pruner_is_bounded_per_run_and_resumes_oldest_first(tmp_path: Path) -> None:
    """The pruner in-process, with its clocks injected: a run with no time left does one step
    and stops; later runs go on where it stopped, and space removes the oldest first."""
    from syncd.server.paths import RelPath
    from syncd.server.retention import Retention
    from syncd.server.store import Store
    from syncd.server.uploads import Upload
    from syncd.server.versions import Pruner

    root = tmp_path / "root"
    root.mkdir()
    fake_now = [1_800_000_000 * 10**9]
    store = Store(root, Retention(keep_s=3600, space_share=None, space_bytes=25))
    store.keeper.clock = lambda: fake_now[0]
    rel = RelPath(("docs", "a.txt"))
    for i in range(6):  # five versions of 10 bytes, one a second
        up = Upload(store, rel)
        up.complete([bytes([i]) * 10], length=10, expected=[], commit=True)
        fake_now[0] += 10**9
    vdir = root / VERSIONS_DIR / "docs" / "a.txt"
    assert len(os.listdir(vdir)) == 5
    ticks = iter(range(10**6))
    pruner = Pruner(store.keeper, store.stopping, budget=0.5, clock=lambda: next(ticks))
    runs = 0
    while not pruner.run():
        runs += 1
        assert runs < 50
    assert runs >= 2  # not all in one run
    left = sorted(os.listdir(vdir))
    # 25 bytes allow two of the five: the two newest stay
    assert [(vdir / n).read_bytes() for n in left] == [bytes([3]) * 10, bytes([4]) * 10]
    # an hour later they are older than keep: both go
    fake_now[0] += 3601 * 10**9
    pruner.budget = 10**6
    assert pruner.run()
    assert not (root / VERSIONS_DIR / "docs").exists()
    assert (root / VERSIONS_DIR).is_dir()


def test_versions_kept_in_the_same_nanosecond_get_bumped_names(tmp_path: Path) -> None:
    from syncd.server.paths import RelPath
    from syncd.server.store import Store
    from syncd.server.uploads import Upload
    from syncd.versioning import parse_version_name

    root = tmp_path / "root"
    root.mkdir()
    store = Store(root)
    store.keeper.clock = lambda: 1_800_000_000_000_000_000  # a clock that never moves
    rel = RelPath(("docs", "a.txt"))
    for i in range(4):
        Upload(store, rel).complete([b"v%d" % i], length=2, expected=[], commit=True)
    vdir = root / VERSIONS_DIR / "docs" / "a.txt"
    names = sorted(os.listdir(vdir))
    assert [parse_version_name(n) for n in names] == [
        (1_800_000_000_000_000_000 + i, "replaced") for i in range(3)
    ]
    assert [(vdir / n).read_bytes() for n in names] == [b"v0", b"v1", b"v2"]


@given(
    n=st.integers(min_value=1, max_value=10**6),
    unit=st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800)]),
    size=st.integers(min_value=0, max_value=10**15),
    share=st.integers(min_value=0, max_value=100),
)
def test_retention_options_parse(n: int, unit: tuple[str, int], size: int, share: int) -> None:
    from syncd.server.retention import Retention, parse_keep, parse_space

    assert parse_keep(f"{n}{unit[0]}") == n * unit[1]
    assert parse_keep("forever") is None and parse_keep("0") == 0
    assert parse_space(str(size)) == (None, size)
    assert parse_space(f"{size}KiB") == (None, size * 1024)
    assert parse_space(f"{share}%") == (share / 100, None)
    ret = Retention(n * unit[1], None, size)
    assert ret.header(Path("/")) == f"keep={n * unit[1]}; space={size}"
    with pytest.raises(ValueError, match="30d"):
        parse_keep(f"{n}{unit[0]}s")
