"""One conformance suite, the same cases for every remote: `syncd serve`, nginx WebDAV,
wsgidav and S3 (moto_server). Each server runs on a free 127.0.0.1 port for this module; every
test mirrors into its own space on it. What was mirrored is read back without syncd (the
server's directory, or boto3) and compared byte for byte.

The "http" kind (an upload endpoint that cannot list) has its own section at the end, against
a small aiohttp upload app.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, web

from syncd.config import RemoteConfig
from syncd.errors import PermanentError, SourceChanged, TransientError
from syncd.hashing import Source
from syncd.remotes import base
from syncd.remotes.kinds import KINDS, open_remote
from syncd.remotes.s3 import S3Remote
from syncd.remotes.webdav import WebDAVRemote
from syncd.types import LocalFile
from tests.conftest import DaemonProc, run_syncd, wait_for, write_config
from tests.remote_servers import (
    BUCKET,
    DavServer,
    FileServer,
    RemoteServer,
    S3Server,
    SyncdServer,
    start_remote,
)
from tests.test_sync import HOSTILE_NAMES, make_tree, tree_of

#: Every server of every registered kind (a kind names its own: ``RemoteKind.conformance``).
SERVERS = tuple(server for kind in KINDS for server in kind.conformance)


class Servers:
    """The module's servers, one per kind, started when first asked for."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.running: dict[str, RemoteServer] = {}

    def get(self, kind: str) -> RemoteServer:
        if kind not in self.running:
            self.running[kind] = start_remote(kind, self.factory.mktemp(f"remote-{kind}"))
        return self.running[kind]

    def stop(self) -> None:
        for srv in self.running.values():
            srv.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(params=SERVERS)
def remote(request: pytest.FixtureRequest, servers: Servers) -> RemoteServer:
    return servers.get(request.param)


ABILITIES = {
    "move": base.Mover,
    "read": base.Reader,
    "mark": base.Marker,
    "state_token": base.StateToken,
    "size_of": base.Sizer,
    "versions": base.Versions,
    "stat": base.Stat,
    "batch": base.Batcher,
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_declares_what_it_can_do(kind: Any) -> None:
    """A kind's ``features`` say exactly which ability protocols its class implements, and
    every server it names for this suite exists (tests/remote_servers.py)."""
    from tests.remote_servers import STARTERS

    cls = kind.remote_class()
    features = cls.features
    assert isinstance(features, base.Features)
    for name, protocol in ABILITIES.items():
        assert getattr(features, name) == issubclass(cls, protocol), (kind.name, name)
    assert set(kind.conformance) <= set(STARTERS)
    assert kind.conformance or kind.name == "http"  # (http: its own section below)


@pytest.fixture
def space(remote: RemoteServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's own remote_path on the shared server (and the server's client env)."""
    for k, v in remote.env.items():
        monkeypatch.setenv(k, v)
    return remote.new_space()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    return f


def config(
    tmp_path: Path,
    remote: RemoteServer,
    folder: Path,
    space: str,
    *,
    wrong_credentials: bool = False,
    down: bool = False,
    sync: str = "",
) -> Path:
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{remote.remote_section(wrong_credentials=wrong_credentials, down=down)}
[[folder]]
path = "{folder}"
remote_path = "{space}"

[sync]
state_dir = "{tmp_path / "state"}"
{sync}
""",
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Daemon(DaemonProc):
    def __init__(self, config: Path, log: Path) -> None:
        try:
            super().__init__(config, log)
        except BaseException:
            if hasattr(self, "proc"):  # never ready: do not leave it running
                self.proc.kill()
                self.proc.wait()
                self._log.close()
            raise


def start_daemon(config: Path, log: Path) -> DaemonProc:
    """`syncd run`, stopped again if it never says it is ready."""
    return _Daemon(config, log)


def mirrored(remote: RemoteServer, space: str, folder: Path) -> bool:
    return remote.read_tree(space) == tree_of(folder)


# -- the cases -----------------------------------------------------------------------------------
def test_server_truth_on_every_remote(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    """A file only the server holds is deleted, a file it lost is sent again, and a mass
    delete is held -- on syncd serve, WebDAV and S3 alike."""
    for i in range(12):
        (folder / f"f{i:03}.txt").write_bytes(b"%d" % i)
    cfg = config(tmp_path, remote, folder, space)
    assert run_syncd("sync", config=cfg).returncode == 0
    remote.write(space, "stray.txt", b"left by a crash")
    remote.remove(space, "f001.txt")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 1, deleted 1" in r.stdout, r.stdout
    held = {k: v for k, v in remote.read_tree(space).items() if not k.startswith(".~")}
    assert held == tree_of(folder)
    for p in folder.iterdir():
        p.unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and "deleting nothing" in r.stderr, r.stderr
    assert len([k for k in remote.read_tree(space) if not k.startswith(".~")]) == 12


def test_first_sync_hostile_names_noop_and_verify(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    files = make_tree(folder)
    cfg = config(tmp_path, remote, folder, space)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert f"uploaded {len(files)}," in r.stdout
    assert remote.read_tree(space) == files
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 0, deleted 0" in r.stdout
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"verify: identical: {len(files)} identical, 0 missing" in r.stdout
    if remote.name != "syncd":  # no digests in the listing: said so, and read back
        assert "reading every file back to hash it" in r.stderr
    if remote.name == "nginx":
        assert isinstance(remote, DavServer)
        log = [line for line in remote.requests() if f" /{space}/" in line]
        paths = [f"{space}/{rel}" for rel in files]
        dirs = {"/".join(p.split("/")[:n]) for p in paths for n in range(1, p.count("/") + 1)}
        mkcols = [line.split()[1] for line in log if line.startswith("MKCOL ")]
        assert len(mkcols) == len(set(mkcols)) == len(dirs), "one MKCOL per directory"
        assert not [line for line in log if line.startswith("PUT ") and " 409 " in line]
        propfinds = [line for line in log if line.startswith("PROPFIND ")]
        assert propfinds and all(line.endswith(" depth=1") for line in propfinds)


def test_change_and_delete(tmp_path: Path, remote: RemoteServer, space: str, folder: Path) -> None:
    for rel, data in {
        "same-size.txt": b"aaaa",
        "grows.txt": b"short",
        "gone.txt": b"bye",
        "dir/sub/one.txt": b"1",
        "dir/two.txt": b"2",
        "keep/x.txt": b"x",
    }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    cfg = config(tmp_path, remote, folder, space)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "same-size.txt").write_bytes(b"bbbb")
    (folder / "grows.txt").write_bytes(b"much longer than before")
    (folder / "gone.txt").unlink()
    shutil.rmtree(folder / "dir")
    (folder / "keep" / "new.txt").write_bytes(b"new")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 3, deleted 3" in r.stdout
    assert remote.read_tree(space) == tree_of(folder)


def test_large_files(tmp_path: Path, remote: RemoteServer, space: str, folder: Path) -> None:
    # 33 MiB + 4: five 8 MiB parts on S3; sendfile + a separate hash on the HTTP remotes
    big = os.urandom(1 << 20) * 33 + b"tail"
    files = {"empty": b"", "just-streamed.bin": os.urandom((1 << 20) + 1), "big.bin": big}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    cfg = config(tmp_path, remote, folder, space)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    back = remote.read_tree(space)
    assert {k: sha(v) for k, v in back.items()} == {k: sha(v) for k, v in files.items()}
    if isinstance(remote, S3Server):
        assert remote.head(space, "big.bin")["ETag"].endswith('-5"'), "not a multipart upload"
        assert remote.incomplete_uploads() == []
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: identical: 3 identical" in r.stdout


def test_verify_finds_tampering(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    for n in "abc":
        (folder / f"{n}.txt").write_text(n * 10)
    cfg = config(tmp_path, remote, folder, space)
    assert run_syncd("sync", config=cfg).returncode == 0
    remote.write(space, "a.txt", b"A" * 10)  # same size, other bytes
    remote.remove(space, "b.txt")
    remote.write(space, "extra.txt", b"x")
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"different:             {space}/a.txt" in r.stdout
    assert f"missing on the server: {space}/b.txt" in r.stdout
    assert f"only on the server:    {space}/extra.txt" in r.stdout
    assert "1 identical" in r.stdout


def features_of(remote: RemoteServer) -> base.Features:
    """The features the kind of ``remote`` declares (its class's)."""
    kind = next(k for k in KINDS if remote.name in k.conformance)
    features: base.Features = kind.remote_class().features
    return features


def set_stored_mtime(remote: RemoteServer, space: str, rel: str, ns: int) -> None:
    """Change the mtime the server keeps for a file, behind syncd's back."""
    if isinstance(remote, S3Server):
        key = f"mirror/{space}/{rel}"
        meta = remote.client.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        remote.client.copy_object(
            Bucket=BUCKET,
            Key=key,
            CopySource={"Bucket": BUCKET, "Key": key},
            Metadata={**meta, "mtime": str(ns // 10**9)},
            MetadataDirective="REPLACE",
        )
        return
    assert isinstance(remote, FileServer)
    os.utime(remote.root / space / rel, ns=(ns, ns))


def test_times_and_exec_bits_where_kept(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    """A new mtime or exec bit alone is sent again where the remote keeps them (and only
    the row is refreshed where it does not); ``verify --times`` finds a stored time that is
    not the local one's."""
    feats = features_of(remote)
    run = folder / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    plain = folder / "plain.txt"
    plain.write_text("p")
    os.utime(plain, ns=(0, 1_500_000_000_123_456_789))
    cfg = config(tmp_path, remote, folder, space)
    assert run_syncd("sync", config=cfg).returncode == 0
    r = run_syncd("verify", "--times", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    os.utime(plain, ns=(0, 1_600_000_000_000_000_000))
    run.chmod(0o644)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"uploaded {2 if feats.keeps_times else 0}" in r.stdout, r.stdout
    assert run_syncd("verify", "--times", config=cfg).returncode == 0
    if feats.keeps_times:
        set_stored_mtime(remote, space, "plain.txt", 1_000_000_000 * 10**9)
        r = run_syncd("verify", "--times", config=cfg)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"different times:       {space}/plain.txt (mtime here" in r.stdout
        assert run_syncd("verify", config=cfg).returncode == 0  # (the bytes are the same)
    else:
        assert (
            "keeps neither mtimes nor exec bits"
            in run_syncd("verify", "--times", config=cfg).stderr
        )


async def test_versions_kept_where_declared(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    """syncd serve keeps versions itself; WebDAV and S3 (no bucket versioning here) keep
    them in a ``trash``: what an upload replaced and what a delete removed is listed, read
    and put back."""
    from syncd.config import load

    cfg = config(tmp_path, remote, folder, space)
    if not isinstance(remote, SyncdServer):
        text = cfg.read_text().replace("[[folder]]", f'trash = "trash-{space}"\n\n[[folder]]')
        cfg.write_text(text)
    (folder / "stays.txt").write_text("s")
    f = folder / "a.txt"
    for data in ("one", "two!"):
        f.write_text(data)
        assert run_syncd("sync", config=cfg).returncode == 0
    f.unlink()
    assert run_syncd("sync", config=cfg).returncode == 0
    r = open_remote(load(cfg, kinds=KINDS).remote, 2)
    async with r:  # type: ignore[attr-defined]
        assert r.features.versions and isinstance(r, base.Versions)
        if remote.name == "nginx":  # (it leaves dot names out of its listings)
            with pytest.raises(PermanentError, match="cannot be listed"):
                [v async for v in r.versions(space)]
            return
        found = sorted([v async for v in r.versions(space)], key=lambda v: v.when_ns)
        assert [(v.path, v.why) for v in found] == [
            (f"{space}/a.txt", "replaced"),
            (f"{space}/a.txt", "deleted"),
        ]
        got = [b"".join([c async for c in r.read_version(v)]) for v in found]
        assert got == [b"one", b"two!"]
        await r.restore_version(found[0], found[0].path)
    assert remote.read_tree(space) == {"a.txt": b"one", "stays.txt": b"s"}


def test_renames_become_moves(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    src = folder / "project"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "sub" / f"{i}.bin").write_bytes(os.urandom(1000 + i))
    (src / "README").write_text("readme")
    (folder / "other.txt").write_text("other")
    cfg = config(tmp_path, remote, folder, space, sync="debounce = 0.2\nmax_delay = 2")
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: mirrored(remote, space, folder), what="first mirror")
        inodes: dict[str, int] = {}
        if isinstance(remote, FileServer):
            inodes = {p: remote.inode(space, f"project/{p}") for p in tree_of(src)}
        src.rename(folder / "renamed")
        wait_for(lambda: mirrored(remote, space, folder), what="directory rename")
        (folder / "renamed" / "README").rename(folder / "renamed" / "README.md")
        wait_for(lambda: mirrored(remote, space, folder), what="file rename")
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert f"moved {space}/project -> {space}/renamed" in log
    assert f"moved {space}/renamed/README -> {space}/renamed/README.md" in log
    assert f"sent {space}/renamed" not in log, "renamed files were uploaded again"
    if isinstance(remote, FileServer):
        after = {p: remote.inode(space, f"renamed/{p}") for p in tree_of(folder / "renamed")}
        after["README"] = after.pop("README.md")
        assert after == inodes


def test_wrong_credentials_fail_clearly_and_write_nothing(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    (folder / "d" / "b.txt").parent.mkdir()
    (folder / "d" / "b.txt").write_text("b")
    cfg = config(tmp_path, remote, folder, space, wrong_credentials=True)
    env = remote.credentials(wrong=True) if isinstance(remote, S3Server) else None
    r = run_syncd("sync", config=cfg, env=env)
    assert r.returncode == 1
    assert "refused the credentials" in r.stderr, r.stderr
    for secret in ("not-the-token", "not-the-password", "wrong-secret"):
        assert secret not in r.stdout + r.stderr
    assert remote.read_tree(space) == {}
    r = run_syncd("verify", config=cfg, env=env)
    assert r.returncode == 3  # could not check (not "different")
    assert "refused the credentials" in r.stderr, r.stderr


def test_server_down_fails_clearly(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    cfg = config(tmp_path, remote, folder, space, down=True)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1
    # One line for the whole pass, with the count; the file itself is named at debug level.
    lines = [ln for ln in r.stderr.splitlines() if "unreachable" in ln]
    assert len(lines) == 1, r.stderr
    assert "unreachable (connection refused): 1 file not sent; nothing recorded" in lines[0]
    assert "a.txt" not in r.stderr, r.stderr
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 3  # could not check (not "different")
    assert "cannot connect to" in r.stderr, r.stderr


# -- what only some remotes have ------------------------------------------------------------------
def test_webdav_collection_url_with_a_path(tmp_path: Path, servers: Servers, folder: Path) -> None:
    """Nextcloud-style: the collection is not the server's root, and its URL is encoded."""
    nginx = servers.get("nginx")
    assert isinstance(nginx, DavServer)
    (nginx.root / "dav root" / "ü").mkdir(parents=True)
    files = {"a.txt": b"a", "x y/b#.txt": b"b", ".hidden": b"h"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    section = nginx.remote_section().replace(nginx.url, nginx.url + "dav%20root/%C3%BC/")
    cfg = write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{section}
[[folder]]
path = "{folder}"
remote_path = "docs"
[sync]
state_dir = "{tmp_path / "state"}"
""",
    )
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert tree_of(nginx.root / "dav root" / "ü" / "docs") == files
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr  # .hidden is not listed by nginx: read back
    assert "3 identical" in r.stdout


@pytest.mark.parametrize("kind", ["nginx", "wsgidav"])
async def test_webdav_collections_made_once_and_again_when_gone(
    tmp_path: Path, servers: Servers, kind: str
) -> None:
    dav = servers.get(kind)
    assert isinstance(dav, DavServer)
    space = dav.new_space()
    f = tmp_path / "f.txt"
    f.write_text("x")
    remote = WebDAVRemote(remote_config(tmp_path, dav), 2)
    async with remote:
        await remote.put(f"{space}/a/b/one.txt", await local_source(f, "one.txt"))
        shutil.rmtree(dav.root / space / "a")  # behind syncd's back: its cache is stale now
        with pytest.raises(TransientError):  # 409 Conflict (nginx: 500)
            await remote.put(f"{space}/a/b/two.txt", await local_source(f, "two.txt"))
        # The retry (syncd.retry's job) creates the collections again.
        await remote.put(f"{space}/a/b/two.txt", await local_source(f, "two.txt"))
    assert dav.read_tree(space) == {"a/b/two.txt": b"x"}
    # A URL below collections that do not exist yet: they are made (as rclone does).
    missing = WebDAVRemote(remote_config(tmp_path, dav, url=dav.url + "no-such-dir/deeper/"), 2)
    async with missing:
        await missing.put(f"{space}/c.txt", await local_source(f, "c.txt"))
    assert (dav.root / "no-such-dir" / "deeper" / space / "c.txt").read_bytes() == b"x"


@pytest.fixture
def s3(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    srv = servers.get("s3")
    assert isinstance(srv, S3Server)
    for k, v in srv.env.items():
        monkeypatch.setenv(k, v)
    return srv


def remote_config(
    tmp_path: Path, srv: RemoteServer, url: str = "", *, wrong_credentials: bool = False
) -> RemoteConfig:
    """The [remote] of ``srv`` as syncd loads it (for tests that drive a remote directly)."""
    from syncd.config import load

    section = srv.remote_section(wrong_credentials=wrong_credentials)
    if url:
        section = re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', section)
    (tmp_path / "unused").mkdir(exist_ok=True)
    cfg = write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{section}
[[folder]]
path = "{tmp_path / "unused"}"
""",
    )
    return load(cfg, kinds=KINDS).remote


async def local_source(path: Path, rel: str, **kw: Any) -> Source:
    st = path.stat()
    return await Source.open(path, LocalFile(rel, st.st_size, st.st_mtime_ns), **kw)


# -- the mirror marker (Marker) ------------------------------------------------------------
MARKER = ".~syncd-mirror"


def stored_marker(remote: RemoteServer, space: str) -> bytes:
    """The marker's bytes as the server stores them, read without syncd."""
    if isinstance(remote, S3Server):
        obj = remote.client.get_object(Bucket=BUCKET, Key=f"mirror/{space}/{MARKER}")
        data: bytes = obj["Body"].read()
        return data
    assert isinstance(remote, FileServer)
    return (remote.root / space / MARKER).read_bytes()


def without_marker(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The tree without the marker at its top (S3's read_tree lists every key)."""
    return {k: v for k, v in tree.items() if k != MARKER}


async def test_marker_read_write_and_never_listed(
    tmp_path: Path, remote: RemoteServer, space: str
) -> None:
    import json

    r = open_remote(remote_config(tmp_path, remote), 2)
    try:
        assert r.features.mark and isinstance(r, base.Marker)
        assert await r.read_marker(space) is None  # nothing there yet
        f = tmp_path / "a.txt"
        f.write_bytes(b"a")
        await r.put(f"{space}/sub/a.txt", await local_source(f, "sub/a.txt"))
        assert await r.read_marker(space) is None  # a prefix without a marker
        await r.write_marker(space, "mirror-1")
        assert await r.read_marker(space) == "mirror-1"
        assert [e.path async for e in r.list(space)] == ["sub/a.txt"]
        other = remote.new_space()
        assert await r.read_marker(other) is None
        await r.write_marker(other, "mirror-2")
        assert await r.read_marker(space) == "mirror-1"
        assert await r.read_marker(other) == "mirror-2"
        assert [e.path async for e in r.list(other)] == []
        assert await r.read_marker(f"{space}/sub") is None  # markers are per prefix
        await r.write_marker(space, "mirror-3")  # replaced
        assert await r.read_marker(space) == "mirror-3"
        assert [e.path async for e in r.list(space)] == ["sub/a.txt"]
    finally:
        await r.aclose()
    doc = json.loads(stored_marker(remote, space))
    assert doc["mirror"] == "mirror-3" and doc["created"]
    assert without_marker(remote.read_tree(space)) == {"sub/a.txt": b"a"}
    if isinstance(remote, FileServer):  # no temporary left beside it
        assert sorted(p.name for p in (remote.root / space).iterdir()) == [MARKER, "sub"]


def test_marker_survives_sync_and_verify(
    tmp_path: Path, remote: RemoteServer, space: str, folder: Path
) -> None:
    """A marker on the server is not an extra file: sync leaves it, verify does not report it."""

    async def marker(write: str | None = None) -> str | None:
        r = open_remote(remote_config(tmp_path, remote), 2)
        try:
            assert r.features.mark and isinstance(r, base.Marker)
            if write is not None:
                await r.write_marker(space, write)
            return await r.read_marker(space)
        finally:
            await r.aclose()

    assert asyncio.run(marker("kept")) == "kept"
    (folder / "a.txt").write_text("a")
    (folder / "d").mkdir()
    (folder / "d" / "b.txt").write_text("b")
    cfg = config(tmp_path, remote, folder, space)
    r = run_syncd("sync", config=cfg, env=remote.env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_syncd("verify", config=cfg, env=remote.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert asyncio.run(marker()) == "kept"
    assert without_marker(remote.read_tree(space)) == {"a.txt": b"a", "d/b.txt": b"b"}


async def test_s3_multipart_aborted_when_the_file_changes(tmp_path: Path, s3: S3Server) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    space = s3.new_space()

    def touch_once(n: int) -> None:
        st = big.stat()
        os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    remote = S3Remote(remote_config(tmp_path, s3), 2)
    async with remote:
        src = await local_source(big, "big.bin", on_bytes=touch_once)
        with pytest.raises(SourceChanged):
            await remote.put(f"{space}/big.bin", src)
    assert s3.incomplete_uploads() == []
    assert s3.keys(space) == {}


async def test_large_file_rewritten_while_sent_is_refused(
    tmp_path: Path, remote: RemoteServer, space: str
) -> None:
    """A large file whose bytes change in place (same size) during its upload: the digest
    would not describe what was sent, so put() raises SourceChanged (the engine sends it
    again) and the remote is left without a committed file where it can tell."""

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))  # from 32 MiB: sent with sendfile, hashed apart
    os.utime(big, (1e9, 1e9))  # so that the rewrite surely moves mtime and ctime on
    rewritten = False

    def rewrite_once(n: int) -> None:
        nonlocal rewritten
        if not rewritten:
            rewritten = True
            with big.open("r+b") as f:  # same size, new bytes at the end
                f.seek(-4096, os.SEEK_END)
                f.write(os.urandom(4096))

    r = open_remote(remote_config(tmp_path, remote), 2)
    try:
        src = await local_source(big, "big.bin", on_bytes=rewrite_once)
        with pytest.raises(SourceChanged):
            await r.put(f"{space}/big.bin", src)
    finally:
        await r.aclose()
    assert rewritten
    if remote.name in ("syncd", "s3"):  # an upload is committed only after the digest check
        assert "big.bin" not in remote.read_tree(space)


async def test_refused_large_upload_stops_hashing(tmp_path: Path, servers: Servers) -> None:
    """A large upload the server refuses at once (a wrong token): put() fails promptly --
    AuthError, or TransientError when the server's reset of the unread body beats its 401 --
    without first hashing the rest of the file (64 GiB of holes: over a minute of sha-256)."""
    from syncd.errors import AuthError

    srv = servers.get("syncd")
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(64 << 30)  # sparse: no disk space used
    cfg = remote_config(tmp_path, srv, wrong_credentials=True)
    r = open_remote(cfg, 2)
    started = time.monotonic()
    try:
        src = await local_source(huge, "huge.bin")
        with pytest.raises((AuthError, TransientError)):
            await r.put("refused/huge.bin", src)
    finally:
        await r.aclose()
    assert time.monotonic() - started < 30, "the whole file was hashed after the refusal"


class SmallCopies(S3Remote):
    """Multipart copies from 1 MiB on, in 5 MiB parts (the real limit is 5 GiB)."""

    copy_limit = 1 << 20
    copy_part_size = 5 << 20


async def test_s3_multipart_copy_and_prefix_delete(tmp_path: Path, s3: S3Server) -> None:
    space = s3.new_space()
    data = os.urandom((12 << 20) + 7)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small").write_bytes(b"small")
    remote = SmallCopies(remote_config(tmp_path, s3), 2)
    async with remote:
        for rel in ("d/big.bin", "d/sub/small", "dx/small", "d.txt"):
            name = "big.bin" if rel.endswith("big.bin") else "small"
            await remote.put(f"{space}/{rel}", await local_source(tmp_path / name, rel))
        await remote.move(f"{space}/d", f"{space}/e")
        assert s3.keys(space) == {
            "e/big.bin": len(data),
            "e/sub/small": 5,
            "dx/small": 5,
            "d.txt": 5,
        }
        assert s3.read_tree(space)["e/big.bin"] == data
        with pytest.raises(PermanentError):
            await remote.move(f"{space}/d", f"{space}/f")  # nothing there any more
        await remote.delete(f"{space}/e")  # a "directory": every key under e/
        await remote.delete(f"{space}/d")  # absent: fine
        assert s3.keys(space) == {"dx/small": 5, "d.txt": 5}
        listed = sorted((e.path, e.size) for e in [e async for e in remote.list(space)])
        assert listed == [("d.txt", 5), ("dx/small", 5)]
    assert s3.incomplete_uploads() == []


def test_s3_without_aiobotocore_names_the_extra(tmp_path: Path, s3: S3Server, folder: Path) -> None:
    (folder / "a.txt").write_text("a")
    cfg = config(tmp_path, s3, folder, s3.new_space())
    code = (
        "import sys; sys.modules['aiobotocore'] = None; from syncd.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "sync", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "pip install 'syncd[s3]'" in r.stderr


# -- the "http" kind: an upload endpoint ----------------------------------------------------------
@dataclass
class UploadApp:
    """A small upload API: PUT or POST (raw body or a multipart form) to /upload/<path>,
    DELETE to remove; it wants ``Authorization: Bearer <token>``."""

    token: str
    stored: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    @staticmethod
    def path_of(request: web.Request) -> str:
        raw = request.raw_path.split("?", 1)[0]
        assert raw.startswith("/upload/")
        return "/".join(urllib.parse.unquote(seg, errors="strict") for seg in raw[8:].split("/"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = self.path_of(request)
        self.requests.append((request.method, path, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="who are you?")
        if request.method == "DELETE":
            if self.stored.pop(path, None) is None:
                return web.Response(status=404)
            return web.Response(status=204)
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            reader = await request.multipart()
            part = await reader.next()
            assert isinstance(part, BodyPartReader) and part.name == "file"
            data = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                data += chunk
            self.filenames[path] = part.filename or ""
            assert await reader.next() is None
            body = bytes(data)
        else:
            body = await request.read()
        if request.content_length is not None:
            assert request.content_length >= len(body)
        self.stored[path] = body
        return web.Response(status=201 if request.method == "PUT" else 200, text="ok")


@pytest.fixture
async def upload_app() -> AsyncIterator[UploadApp]:
    app_state = UploadApp(token="s3cr3t-" + os.urandom(6).hex())
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/upload/{path:.*}", app_state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    app_state.url = f"http://127.0.0.1:{port}/upload/{{path}}"
    try:
        yield app_state
    finally:
        await runner.cleanup()


async def syncd_async(*args: str, config: Path) -> tuple[int, str, str]:
    """`syncd` in a subprocess, without blocking this loop (the upload app runs on it)."""
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        *args,
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def http_config(tmp_path: Path, app: UploadApp, folder: Path, remote: str, *, token: str) -> Path:
    headers = tmp_path / "headers"
    headers.write_text(f"# for the upload API\nAuthorization: Bearer {token}\nX-Client: syncd\n")
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
kind = "http"
url = "{app.url}"
headers_file = "{headers}"
{remote}
[[folder]]
path = "{folder}"
remote_path = "docs"

[sync]
state_dir = "{tmp_path / "state"}"
""",
    )


def http_tree(folder: Path) -> dict[str, bytes]:
    files = {name: f"content of {name}\n".encode() for name in HOSTILE_NAMES}
    files["empty-file"] = b""
    files["sub dir/n#sted %41.txt"] = b"nested"
    files[unicodedata.normalize("NFD", "Ünïcödé dir") + "/x.bin"] = os.urandom(3000)
    files["big.bin"] = os.urandom(3 << 20)  # streamed from disk
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return {f"docs/{rel}": data for rel, data in files.items()}


@pytest.mark.parametrize(
    "remote_keys",
    ['method = "PUT"', 'method = "POST"\nform_field = "file"', 'method = "POST"\nform_field = ""'],
    ids=["put-raw", "post-multipart", "post-raw"],
)
async def test_http_upload_endpoint(
    tmp_path: Path, upload_app: UploadApp, folder: Path, remote_keys: str
) -> None:
    files = http_tree(folder)
    cfg = http_config(tmp_path, upload_app, folder, remote_keys, token=upload_app.token)
    code, out, err = await syncd_async("sync", config=cfg)
    assert code == 0, err
    assert f"uploaded {len(files)}," in out
    assert upload_app.stored == files
    method = "POST" if "POST" in remote_keys else "PUT"
    assert {m for m, _, _ in upload_app.requests} == {method}
    assert all(h.get("X-Client") == "syncd" for _, _, h in upload_app.requests)
    assert upload_app.token not in out + err
    if "multipart" in str(upload_app.requests[0][2].get("Content-Type")):
        assert upload_app.filenames["docs/sub dir/n#sted %41.txt"] == "n#sted %41.txt"
        assert upload_app.filenames["docs/big.bin"] == "big.bin"
    # Nothing to verify against: said plainly, exit 1.
    code, out, err = await syncd_async("verify", config=cfg)
    assert code == 3  # could not check
    assert "cannot verify" in err and "the manifest" in err and "only record" in err
    # Without delete_method, deletions are not sent (and that is said).
    (folder / "big.bin").unlink()
    code, out, err = await syncd_async("sync", config=cfg)
    assert code == 0, err
    assert "deletions are not sent" in err
    assert "docs/big.bin" in upload_app.stored


async def test_http_delete_method_and_rename(
    tmp_path: Path, upload_app: UploadApp, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    cfg = http_config(
        tmp_path, upload_app, folder, 'delete_method = "DELETE"', token=upload_app.token
    )
    code, _out, err = await syncd_async("sync", config=cfg)
    assert code == 0, err
    (folder / "a.txt").unlink()
    (folder / "b.txt").rename(folder / "c.txt")  # no moves here: a new upload and a delete
    code, out, err = await syncd_async("sync", config=cfg)
    assert code == 0, err
    assert "uploaded 1, deleted 2" in out
    assert upload_app.stored == {"docs/c.txt": b"b"}


async def test_http_refused_credentials(
    tmp_path: Path, upload_app: UploadApp, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    cfg = http_config(tmp_path, upload_app, folder, "", token="not-the-token")
    code, out, err = await syncd_async("sync", config=cfg)
    assert code == 1
    assert "refused the credentials (401)" in err and "headers" in err
    assert "not-the-token" not in out + err
    assert upload_app.stored == {}
