"""The remotes' times, exec bits and kept versions, against real servers (tests/remote_servers.py):
S3 (moto_server) with bucket versioning and with a trash prefix, WebDAV (nginx, wsgidav) with a
trash collection, and `syncd serve`. Each remote is driven directly (put, delete, versions,
read_version, restore_version) and what the server stores is read back without syncd."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import RemoteConfig, load
from syncd.errors import ConfigError, PermanentError
from syncd.hashing import Source
from syncd.manifest import FILENAME, Manifest
from syncd.planner import Looked, Rules, plan
from syncd.remotes import base
from syncd.remotes.kinds import KINDS, open_remote, versions_line
from syncd.remotes.s3 import mode_text, mtime_text, parse_mode, parse_mtime
from syncd.types import LocalFile, RemoteEntry, Row
from syncd.verify import time_difference
from syncd.versioning import split_version_path
from tests.conftest import write_config
from tests.remote_servers import (
    BUCKET,
    DavServer,
    RemoteServer,
    S3Server,
    SyncdServer,
    start_remote,
)

VERSIONED = "syncd-versioned"


class Servers:
    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.running: dict[str, RemoteServer] = {}

    def get(self, kind: str) -> RemoteServer:
        if kind not in self.running:
            self.running[kind] = start_remote(kind, self.factory.mktemp(f"remote-{kind}"))
        return self.running[kind]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory)
    try:
        yield s
    finally:
        for srv in s.running.values():
            srv.stop()


@pytest.fixture
def s3(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    srv = servers.get("s3")
    assert isinstance(srv, S3Server)
    for k, v in srv.env.items():
        monkeypatch.setenv(k, v)
    return srv


def config_of(tmp_path: Path, section: str, extra: str = "", remote_path: str = "docs") -> Path:
    (tmp_path / "folder").mkdir(exist_ok=True)
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{section}
{extra}
[[folder]]
path = "{tmp_path / "folder"}"
remote_path = "{remote_path}"
""",
    )


def remote_cfg(
    tmp_path: Path, srv: RemoteServer, *, url: str = "", extra: str = ""
) -> RemoteConfig:
    section = srv.remote_section()
    if url:
        section = re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', section)
    return load(config_of(tmp_path, section, extra), kinds=KINDS).remote


async def source(
    tmp_path: Path, rel: str, data: bytes, *, mtime_ns: int = 0, executable: bool = False
) -> Source:
    p = tmp_path / "src" / secrets.token_hex(4)
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    if mtime_ns:
        os.utime(p, ns=(mtime_ns, mtime_ns))
    stt = p.stat()
    local = LocalFile(rel, stt.st_size, stt.st_mtime_ns, executable=executable)
    return await Source.open(p, local)


async def collect(it: Any) -> list[Any]:
    return [x async for x in it]


async def read_all(it: Any) -> bytes:
    return b"".join([c async for c in it])


# -- the mtime and mode metadata (rclone's) ------------------------------------------------
@given(st.integers(min_value=0, max_value=2**62))
def test_mtime_metadata_round_trips(ns: int) -> None:
    text = mtime_text(ns)
    assert parse_mtime(text) == ns
    assert re.fullmatch(r"\d+(\.\d{9})?", text)


def test_metadata_as_rclone_writes_it() -> None:
    assert mtime_text(1_700_000_000_000_000_000) == "1700000000"
    assert parse_mtime("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_mtime("not a time") is None
    assert parse_mode(mode_text(True)) is True and parse_mode(mode_text(False)) is False
    assert parse_mode("0100764") is True and parse_mode("xyz") is None


async def test_s3_keeps_mtime_and_mode_as_rclone_does(tmp_path: Path, s3: S3Server) -> None:
    space = f"m{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, s3), 2)
    assert r.features.keeps_times and r.features.keeps_exec
    when = 1_600_000_000_123_456_789
    async with r:  # type: ignore[attr-defined]
        await r.put(
            f"{space}/run.sh",
            await source(tmp_path, "run.sh", b"#!", mtime_ns=when, executable=True),
        )
        big = os.urandom(9 << 20)  # multipart
        await r.put(f"{space}/big", await source(tmp_path, "big", big, mtime_ns=when))
        stat = await r.stat(f"{space}/run.sh")  # type: ignore[attr-defined]
        assert stat is not None and stat.mtime_ns == when and stat.executable is True
        stat = await r.stat(f"{space}/big")  # type: ignore[attr-defined]
        assert stat is not None and stat.mtime_ns == when and stat.executable is False
        await r.move(f"{space}/run.sh", f"{space}/moved.sh")  # type: ignore[attr-defined]
        stat = await r.stat(f"{space}/moved.sh")  # type: ignore[attr-defined]
        assert stat is not None and stat.mtime_ns == when
    head = s3.client.head_object(Bucket=BUCKET, Key=f"mirror/{space}/big")
    assert head["Metadata"] == {"mtime": "1600000000.123456789", "mode": "0100644"}


# -- S3 with bucket versioning -------------------------------------------------------------
@pytest.fixture
def versioned(s3: S3Server) -> S3Server:
    existing = {b["Name"] for b in s3.client.list_buckets()["Buckets"]}
    if VERSIONED not in existing:
        s3.client.create_bucket(Bucket=VERSIONED)
        s3.client.put_bucket_versioning(
            Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"}
        )
    return s3


async def test_s3_bucket_versioning(tmp_path: Path, versioned: S3Server) -> None:
    space = f"v{secrets.token_hex(3)}"
    cfg = remote_cfg(tmp_path, versioned, url=f"s3://{VERSIONED}/mirror/")
    r = open_remote(cfg, 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Versions) and r.features.versions
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one"))
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"two"))
        await r.put(f"{space}/sub/b.txt", await source(tmp_path, "b.txt", b"bee"))
        await r.delete(f"{space}/sub")
        found = await collect(r.versions(space))
        by = sorted((v.path, v.why, v.size) for v in found)
        assert by == [(f"{space}/a.txt", "replaced", 3), (f"{space}/sub/b.txt", "deleted", 3)]
        old = next(v for v in found if v.path.endswith("a.txt"))
        assert await read_all(r.read_version(old)) == b"one"
        # a prefix naming a file lists that file's versions only
        assert [v.path for v in await collect(r.versions(f"{space}/a.txt"))] == [old.path]
        gone = next(v for v in found if v.why == "deleted")
        await r.restore_version(gone, gone.path)
        await r.restore_version(old, old.path)
        assert await read_all(r.read(old.path)) == b"one"  # type: ignore[attr-defined]
        assert await read_all(r.read(gone.path)) == b"bee"  # type: ignore[attr-defined]
        # what the restore replaced ("two") is kept in turn
        again = await collect(r.versions(f"{space}/a.txt"))
        assert sorted([await read_all(r.read_version(v)) for v in again]) == [b"one", b"two"]
        assert all(v.when_ns > 0 for v in again)
        assert "bucket versioning" in await r.retention()


# -- S3 with a trash -----------------------------------------------------------------------
async def test_s3_trash_keeps_replaced_and_deleted(tmp_path: Path, s3: S3Server) -> None:
    space = f"t{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, s3, extra='trash = "trash"'), 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Versions)
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one"))
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one"))  # same bytes
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"two"))
        await r.put(f"{space}/d/b.txt", await source(tmp_path, "b.txt", b"bee"))
        await r.delete(f"{space}/d")
        await r.put(f"{space}/c.txt", await source(tmp_path, "c.txt", b"sea"))
        await r.move(f"{space}/a.txt", f"{space}/c.txt")  # type: ignore[attr-defined]
        keys = sorted(
            o["Key"]
            for o in s3.client.list_objects_v2(Bucket=BUCKET, Prefix=f"mirror/trash/{space}/")[
                "Contents"
            ]
        )
        parsed = [split_version_path(k[len("mirror/trash/") :]) for k in keys]
        assert sorted((p.path, p.why) for p in parsed if p) == [
            (f"{space}/a.txt", "replaced"),
            (f"{space}/c.txt", "overwritten"),
            (f"{space}/d/b.txt", "deleted"),
        ]
        found = await collect(r.versions(space))
        assert sorted((v.path, v.why) for v in found) == sorted(
            (p.path, p.why) for p in parsed if p
        )
        # the mirror's listing never shows the trash, and versions of one file in a deleted
        # directory are found from the file's own path
        assert [e.path for e in await collect(r.list(space))] == ["c.txt"]
        inside = await collect(r.versions(f"{space}/d/b.txt"))
        assert [(v.path, v.why) for v in inside] == [(f"{space}/d/b.txt", "deleted")]
        await r.restore_version(inside[0], inside[0].path)
        assert await read_all(r.read(f"{space}/d/b.txt")) == b"bee"  # type: ignore[attr-defined]
        sea = next(v for v in found if v.why == "overwritten")
        await r.restore_version(sea, sea.path)
        assert await read_all(r.read(f"{space}/c.txt")) == b"sea"  # type: ignore[attr-defined]
        # the restore kept what it replaced ("two", moved onto c.txt)
        kept = [await read_all(r.read_version(v)) for v in await collect(r.versions(sea.path))]
        assert sorted(kept) == [b"sea", b"two"]
        assert "trash at trash" in await r.retention()


async def test_s3_without_versioning_or_trash_keeps_nothing(tmp_path: Path, s3: S3Server) -> None:
    space = f"n{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, s3), 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Versions)
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one"))
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"two"))
        assert await collect(r.versions(space)) == []
        assert "none" in await r.retention()


# -- WebDAV with a trash --------------------------------------------------------------------
@pytest.fixture(params=["nginx", "wsgidav"])
def dav(request: pytest.FixtureRequest, servers: Servers) -> DavServer:
    srv = servers.get(request.param)
    assert isinstance(srv, DavServer)
    return srv


async def test_webdav_trash(tmp_path: Path, dav: DavServer) -> None:
    space = f"w{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, dav, extra='trash = "trash"'), 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Versions) and r.features.versions
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one"))
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"two"))
        await r.put(f"{space}/d/e/b.txt", await source(tmp_path, "b.txt", b"bee"))
        await r.delete(f"{space}/d")
        await r.put(f"{space}/c.txt", await source(tmp_path, "c.txt", b"sea"))
        await r.move(f"{space}/a.txt", f"{space}/c.txt")  # type: ignore[attr-defined]
        on_disk = sorted(
            p.relative_to(dav.root / "trash").as_posix()
            for p in (dav.root / "trash").rglob("*")
            if p.is_file()
        )
        parsed = [split_version_path(k) for k in on_disk]
        assert all(parsed), on_disk
        want = [
            (f"{space}/a.txt", "replaced"),
            (f"{space}/c.txt", "overwritten"),
            (f"{space}/d/e/b.txt", "deleted"),
        ]
        assert sorted((p.path, p.why) for p in parsed if p) == want
        assert dav.read_tree(space) == {"c.txt": b"two"}
        if dav.name == "nginx":
            # nginx leaves dot names out of PROPFIND: the versions are kept but not listed,
            # and versions() says so instead of answering "nothing kept"
            with pytest.raises(PermanentError, match=r"leaves names starting with '\.' out"):
                await collect(r.versions(space))
            with pytest.raises(PermanentError, match=r"leaves names starting with '\.' out"):
                await collect(r.versions(f"{space}/a.txt"))  # (a file's own versions)
            return
        found = await collect(r.versions(space))
        assert sorted((v.path, v.why) for v in found) == want
        inside = await collect(r.versions(f"{space}/d/e/b.txt"))
        assert [(v.path, v.why, v.size) for v in inside] == [(f"{space}/d/e/b.txt", "deleted", 3)]
        assert await read_all(r.read_version(inside[0])) == b"bee"
        await r.restore_version(inside[0], inside[0].path)
        sea = next(v for v in found if v.why == "overwritten")
        await r.restore_version(sea, sea.path)
        assert dav.read_tree(space) == {"c.txt": b"sea", "d/e/b.txt": b"bee"}
        kept = [await read_all(r.read_version(v)) for v in await collect(r.versions(sea.path))]
        assert sorted(kept) == [b"sea", b"two"]
        assert await r.retention() == "versions: trash at trash (kept until removed from it)"


async def test_webdav_without_trash_keeps_nothing_and_sends_oc_mtime(
    tmp_path: Path, dav: DavServer
) -> None:
    space = f"x{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, dav), 2)
    async with r:  # type: ignore[attr-defined]
        assert not r.features.versions
        await r.put(f"{space}/a.txt", await source(tmp_path, "a.txt", b"one", mtime_ns=10**18))
        await r.delete(f"{space}/a.txt")
        assert await collect(r.versions(space)) == []  # type: ignore[attr-defined]
        # neither nginx nor wsgidav answers "X-OC-Mtime: accepted": times are not kept
        assert not r.features.keeps_times
        assert [e.mtime_ns for e in await collect(r.list(space))] == []
    assert not (dav.root / "trash").exists() or not any((dav.root / "trash").rglob(f"{space}*"))


# -- syncd serve -------------------------------------------------------------------------
@pytest.fixture
def serve(servers: Servers) -> SyncdServer:
    srv = servers.get("syncd")
    assert isinstance(srv, SyncdServer)
    return srv


async def test_syncd_read_checks_the_digest(tmp_path: Path, serve: SyncdServer) -> None:
    space = f"r{secrets.token_hex(3)}"
    r = open_remote(remote_cfg(tmp_path, serve), 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Reader) and r.features.read
        data = os.urandom(3 << 20)
        await r.put(f"{space}/big.bin", await source(tmp_path, "big.bin", data))
        assert await read_all(r.read(f"{space}/big.bin")) == data
        with pytest.raises(PermanentError) as e:
            await read_all(r.read(f"{space}/absent"))
        assert e.value.status == 404


async def test_syncd_read_refuses_an_answer_without_digest(
    tmp_path: Path, static_server: tuple[str, Path]
) -> None:
    url, _log = static_server
    section = f'kind = "syncd"\nurl = "{url}"'
    r = open_remote(load(config_of(tmp_path, section), kinds=KINDS).remote, 2)
    async with r:  # type: ignore[attr-defined]
        with pytest.raises(PermanentError, match="no Repr-Digest"):
            await read_all(r.read("docs/index.txt"))  # type: ignore[attr-defined]
        # a server that answers no PROPFIND (501): versions falls back to whole listings
        assert await r._entries_in("docs/x") is None  # type: ignore[attr-defined]


async def test_syncd_keeps_times_exec_bits_and_versions(tmp_path: Path, serve: SyncdServer) -> None:
    """What part A's server keeps, through the syncd remote: the mtime (ns) and exec bit of
    every upload (one-step and upload + commit), listed back; versions listed (a file's own,
    and those of a deleted directory), read, restored; the retention line."""
    space = f"s{secrets.token_hex(3)}"
    when = 1_600_000_000_123_456_789
    r = open_remote(remote_cfg(tmp_path, serve), 2)
    async with r:  # type: ignore[attr-defined]
        assert isinstance(r, base.Versions)
        await r.put(
            f"{space}/run.sh", await source(tmp_path, "r", b"#!", mtime_ns=when, executable=True)
        )
        big = os.urandom(9 << 20)
        await r.put(f"{space}/big", await source(tmp_path, "b", big, mtime_ns=when + 1))
        listed = {e.path: e async for e in r.list(space)}
        assert listed["run.sh"].mtime_ns == when and listed["run.sh"].executable is True
        assert listed["big"].mtime_ns == when + 1 and listed["big"].executable is False
        stored = serve.root / space / "run.sh"
        assert stored.stat().st_mtime_ns == when and stored.stat().st_mode & 0o777 == 0o755
        await r.put(f"{space}/run.sh", await source(tmp_path, "r", b"#!2", mtime_ns=when + 5))
        await r.put(f"{space}/d/e.txt", await source(tmp_path, "e", b"eee"))
        await r.delete(f"{space}/d")
        found = await collect(r.versions(space))
        assert sorted((v.path, v.why) for v in found) == [
            (f"{space}/d/e.txt", "deleted"),
            (f"{space}/run.sh", "replaced"),
        ]
        old = next(v for v in found if v.why == "replaced")
        assert old.mtime_ns == when and old.executable is True and old.sha256 == sha(b"#!")
        assert await read_all(r.read_version(old)) == b"#!"
        inside = await collect(r.versions(f"{space}/d/e.txt"))
        assert [(v.path, v.why) for v in inside] == [(f"{space}/d/e.txt", "deleted")]
        # (the deleted directory's entry was found by PROPFIND, not a listing of all above)
        entries = await r._entries_in(f"{space}/d")  # type: ignore[attr-defined]
        assert entries == [inside[0].ref.removeprefix(".~syncd-versions/").rsplit("/", 1)[0]]
        assert await r._entries_in(f"{space}/nothing-here") == []  # type: ignore[attr-defined]
        assert [v.path for v in await collect(r.versions(f"{space}/run.sh"))] == [old.path]
        await r.restore_version(old, old.path)
        await r.restore_version(inside[0], inside[0].path)
        assert serve.read_tree(space) == {"run.sh": b"#!", "big": big, "d/e.txt": b"eee"}
        assert stored.stat().st_mtime_ns == when
        assert "versions: kept by syncd serve" in await r.retention()


def test_retention_line() -> None:
    from syncd.remotes.syncd import parse_retention

    assert parse_retention("keep=2592000; space=1073741824") == (
        "versions: kept by syncd serve for 30 days, up to 1 GiB"
    )
    assert parse_retention("keep=forever; space=10") == (
        "versions: kept by syncd serve for ever, up to 10 bytes"
    )
    off = "versions: none — this syncd serve keeps none (it runs with --keep 0)"
    assert parse_retention("off") == off
    assert "does not say" in parse_retention(None)


# -- config: the trash -----------------------------------------------------------------------
@pytest.mark.parametrize("trash", ["docs", "docs/trash", "docs/"])
def test_trash_inside_a_folder_is_refused(tmp_path: Path, trash: str) -> None:
    section = 'kind = "webdav"\nurl = "http://127.0.0.1:1/"'
    with pytest.raises(ConfigError, match=r"remote.trash.*inside folder"):
        load(config_of(tmp_path, section, f'trash = "{trash}"'), kinds=KINDS)


def test_trash_holding_a_folder_is_refused(tmp_path: Path) -> None:
    section = 'kind = "s3"\nurl = "s3://b/p/"'
    with pytest.raises(ConfigError, match=r"remote.trash.*holds folder"):
        load(config_of(tmp_path, section, 'trash = "a"', remote_path="a/docs"), kinds=KINDS)


def test_versions_line_says_who_keeps_them(tmp_path: Path) -> None:
    def line(section: str, extra: str = "") -> str:
        return versions_line(load(config_of(tmp_path, section, extra), kinds=KINDS).remote)

    assert "kept by syncd serve" in line('kind = "syncd"\nurl = "http://127.0.0.1:1/"')
    dav = 'kind = "webdav"\nurl = "http://127.0.0.1:1/"'
    assert line(dav, 'trash = "old"') == "versions: trash at old"
    assert line(dav).startswith("versions: none — deleted files cannot be brought back")
    assert "S3 bucket versioning" in line('kind = "s3"\nurl = "s3://b/p/"')


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the planner's rule: a new mtime or exec bit alone is sent where the remote keeps it -----
def _plan(lf: LocalFile, row: Row, **rules: bool) -> list[tuple[str, bool]]:
    p = plan(Looked({lf.rel: lf}), {row.rel: row}, Rules(ignored=lambda *a, **k: False, **rules))
    return [(op.rel, op.meta) for op in p.uploads]


@given(
    st.integers(min_value=0, max_value=2**63),
    st.integers(min_value=0, max_value=2**63),
    st.booleans(),
    st.booleans(),
)
@settings(max_examples=200)
def test_planner_sends_a_new_time_or_exec_bit_where_kept(
    row_mtime: int, mtime: int, row_exe: bool, exe: bool
) -> None:
    row = Row("a.txt", 4, row_mtime, sha(b"same"), 0.0, 7, 9, row_exe)
    lf = LocalFile("a.txt", 4, mtime, 7, 9, exe)
    changed = mtime != row_mtime
    # a remote that keeps neither: a candidate only where the stat changed (then hashed)
    assert _plan(lf, row) == ([("a.txt", False)] if changed else [])
    kept = _plan(lf, row, keeps_times=True, keeps_exec=True)
    if changed or exe != row_exe:
        assert kept == [("a.txt", True)]
    else:
        assert kept == []
    only_times = _plan(lf, row, keeps_times=True)
    assert only_times == ([("a.txt", True)] if changed else [])


def test_manifest_keeps_the_exec_bit_and_migrates(tmp_path: Path) -> None:
    import sqlite3

    with Manifest.in_state_dir(tmp_path) as m:
        m.put("s", Row("x.sh", 1, 5, sha(b"x"), 1.0, 2, 3, True))
        m.put("s", Row("y.txt", 1, 5, sha(b"y"), 1.0, 2, 3))
    with Manifest.in_state_dir(tmp_path) as m:
        rows = m.rows("s")
        assert bool(rows["x.sh"].executable) is True and not rows["y.txt"].executable
    # a schema-2 manifest (no exec column) is migrated: its rows say "not executable"
    db = tmp_path / FILENAME
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE files DROP COLUMN executable")
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    with Manifest.in_state_dir(tmp_path) as m:
        rows = m.rows("s")
        assert set(rows) == {"x.sh", "y.txt"} and not rows["x.sh"].executable
        m.put("s", rows["x.sh"]._replace(executable=True))
    with Manifest.in_state_dir(tmp_path) as m:
        assert bool(m.rows("s")["x.sh"].executable) is True


# -- verify --times ----------------------------------------------------------------------------
@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=10**9 - 1))
def test_time_difference_to_the_second_or_exact(secs: int, ns: int) -> None:
    local = LocalFile("a", 1, secs * 10**9 + ns)
    whole = RemoteEntry("a", 1, None, secs * 10**9)
    assert time_difference(local, whole, True, False) == ""  # whole seconds: to the second
    exact = RemoteEntry("a", 1, None, secs * 10**9 + ns + 1)
    assert "mtime here" in time_difference(local, exact, True, False)
    assert time_difference(local, exact, False, False) == ""
    exe = RemoteEntry("a", 1, None, None, True)
    assert (
        time_difference(local, exe, True, True) == "not executable here, executable on the server"
    )
