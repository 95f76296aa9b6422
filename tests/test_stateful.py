"""Property-based: random sequences of local changes, restarts and server outages always
converge — the server equals the folder and the manifest equals the server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from syncd import config as cfgmod
from syncd.engine import Engine
from syncd.manifest import Manifest, scope_of
from syncd.remotes.kinds import KINDS
from syncd.report import Report
from tests.conftest import ServerProc, start_server
from tests.test_sync import tree_of

NAMES = st.sampled_from(["a.txt", "b.txt", "dir/c.txt", "dir/sub/d.txt", "é e.txt", "x#y%z"])
DATA = (
    st.binary(max_size=3000)
    | st.just(b"")
    | st.binary(min_size=1, max_size=1).map(lambda b: b * 1_500_000)
)


class Mirror(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="syncd-stateful-"))
        self.folder = self.tmp / "folder"
        self.folder.mkdir()
        self.root = self.tmp / "root"
        self.root.mkdir()
        token = self.tmp / "token"
        token.write_text("stateful-token")
        self.token = token
        self.server: ServerProc | None = start_server(self.root, token)
        self.port = self.server.port
        cfg_file = self.tmp / "c.toml"
        cfg_file.write_text(
            f'[remote]\nurl = "http://127.0.0.1:{self.port}/"\ntoken_file = "{token}"\n'
            f'[[folder]]\npath = "{self.folder}"\nremote_path = "docs"\n'
            f'[sync]\nstate_dir = "{self.tmp / "state"}"\nmax_delete = 1000\n'
        )
        self.cfg = cfgmod.load(cfg_file, kinds=KINDS)

    def teardown(self) -> None:
        if getattr(self, "server", None) is not None:
            assert self.server is not None
            self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sync(self) -> Report:
        async def go() -> Report:
            async with Engine(self.cfg) as engine:
                return await engine.sync()

        return asyncio.run(go())

    def blocked(self, p: Path) -> bool:
        """Is some directory on the way to ``p`` a file now (after a swap)?"""
        return any(a.exists() and not a.is_dir() for a in p.parents if a != self.folder.parent)

    @rule(name=NAMES, data=DATA)
    def write(self, name: str, data: bytes) -> None:
        p = self.folder / name
        if self.blocked(p):
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir():
            return
        p.write_bytes(data)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        p = self.folder / name
        if p.is_file():
            p.unlink()

    @rule(src=NAMES, dst=NAMES)
    def rename(self, src: str, dst: str) -> None:
        s, d = self.folder / src, self.folder / dst
        if s.is_file() and not d.is_dir() and not self.blocked(d):
            d.parent.mkdir(parents=True, exist_ok=True)
            s.rename(d)

    @rule(name=NAMES, data=DATA)
    def edit_keeping_mtime(self, name: str, data: bytes) -> None:
        """A same-size edit with the old mtime put back (``touch -r``, ``exiftool -P``)."""
        p = self.folder / name
        if p.is_file():
            st = p.stat()
            p.write_bytes((data * (st.st_size // max(len(data), 1) + 1))[: st.st_size] or b"")
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    @rule(src=NAMES, dst=NAMES)
    def unrelated_same_size_and_mtime(self, src: str, dst: str) -> None:
        """``src`` goes and an unrelated ``dst`` comes with its size and mtime (``cp -p``)."""
        s, d = self.folder / src, self.folder / dst
        if s.is_file() and not d.exists() and d.parent.is_dir() and s != d:
            st = s.stat()
            s.unlink()
            d.write_bytes(b"\x7f" * st.st_size)
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))

    @rule()
    def swap_file_and_dir(self) -> None:
        """``dir`` becomes a file, or a file ``a.txt`` becomes a directory."""
        d = self.folder / "dir"
        if d.is_dir():
            shutil.rmtree(d)
            d.write_bytes(b"was a directory")
        elif d.is_file():
            d.unlink()
            (d / "sub").mkdir(parents=True)
            (d / "sub" / "d.txt").write_bytes(b"was a file")

    @rule(name=NAMES)
    def server_loses(self, name: str) -> None:
        """A file vanishes from the server's disk behind its back."""
        p = self.root / "docs" / name
        if p.is_file():
            p.unlink()

    @rule()
    def server_gains_a_stray(self) -> None:
        """A file the folder never had appears on the server (left by a crash)."""
        if (self.root / "docs").is_dir():
            (self.root / "docs" / "stray.bin").write_bytes(b"stray")

    @rule()
    def killed_after_an_upload(self) -> None:
        """`syncd sync` SIGKILLed between the server's confirmation and the manifest commit
        (where there is something to send; otherwise it is an ordinary pass)."""
        if self.server is not None:
            subprocess.run(
                [sys.executable, "-m", "syncd", "sync", "-c", str(self.tmp / "c.toml")],
                env={**os.environ, "SYNCD_CRASH_AT": "after-upload"},
                capture_output=True,
                timeout=60,
            )

    @rule()
    def sync_pass(self) -> None:
        self.sync()

    @rule()
    def outage(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            report = self.sync()  # fails, loses nothing
            assert report.failed or report.uploaded == 0

    @rule()
    def server_back(self) -> None:
        if self.server is None:
            self.server = start_server(self.root, self.token, port=self.port)

    @invariant()
    def converges_when_up(self) -> None:
        if self.server is None:
            return
        before = tree_of(self.root / "docs")
        report = self.sync()
        if not tree_of(self.folder) and before:
            # Deletion safety: an emptied folder is never mirrored as a mass delete.
            assert [p.reason for p in report.failed if "deleting nothing" in p.reason]
            assert tree_of(self.root / "docs") == before
            return
        assert not report.failed, report.failed
        assert tree_of(self.root / "docs") == tree_of(self.folder)
        with Manifest.in_state_dir(self.cfg.sync.state_dir) as m:
            rows = m.rows(scope_of(self.cfg, self.cfg.folders[0]))
            server = {
                rel: hashlib.sha256(data).hexdigest()
                for rel, data in tree_of(self.root / "docs").items()
            }
            assert {rel: r.sha256 for rel, r in rows.items()} == server


Mirror.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMirror = Mirror.TestCase
