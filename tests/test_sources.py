"""Source edge cases: odd names, files that vanish or change under syncd."""

from __future__ import annotations

import os
from pathlib import Path

from syncd import config as cfgmod
from syncd.engine import Engine
from syncd.remotes.kinds import KINDS
from syncd.report import Report
from tests.conftest import ServerProc, mirror_config, run_syncd
from tests.test_sync import tree_of


def test_long_and_odd_names(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    long_name = "L" * 251 + ".txt"  # 255 bytes
    (folder / long_name).write_text("long")
    long_utf8 = "é" * 127 + "x"  # 255 bytes in UTF-8
    (folder / long_utf8).write_text("long utf8")
    bad = os.fsencode(folder) + b"/bad-\xff-name.txt"
    with open(bad, "wb") as f:
        f.write(b"latin-1 name")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "bad-" in r.stderr and "not valid UTF-8" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == sorted([long_name, long_utf8])


async def test_file_vanishing_before_read(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "stays.txt").write_text("stays")
    (folder / "goes.txt").write_text("goes")
    cfg = cfgmod.load(mirror_config(tmp_path, server, folder), kinds=KINDS)
    async with Engine(cfg) as engine:
        ctx = engine.folders[0]
        report = Report()
        plan = await engine.plan(ctx, report)
        assert plan is not None and len(plan.uploads) == 2
        (folder / "goes.txt").unlink()  # between the scan and the read
        await engine.execute(ctx, plan, report)
    assert report.uploaded == 1 and not report.failed
    assert sorted(tree_of(server.root / "docs")) == ["stays.txt"]
