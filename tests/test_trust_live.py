"""Safety rules of `syncd run` end to end, with real processes: the deletion guard's
recent-deletes window (a mass delete arriving in pieces is held, whichever way each piece came:
a live batch, the start-up's look at the whole folder, a rescan) and the outbox across a
SIGKILL. (Written in the review of issue 15, whose refactor moved this code out of daemon.py.)"""

from __future__ import annotations

import shutil
import signal
import sqlite3
from pathlib import Path

from tests.conftest import ServerProc, mirror_config, run_syncd, start_server, wait_for
from tests.test_sync import tree_of
from tests.test_trust import daemon, make_files, mirror


def three_dirs_mirrored(tmp_path: Path, server: ServerProc) -> tuple[Path, Path]:
    """a/, b/, c/ of 8 files each, mirrored, with max_delete = 10: one directory's deletion is
    within the limit, two within DELETE_WINDOW are not."""
    folder = tmp_path / "Documents"
    for name in ("a", "b", "c"):
        make_files(folder, 8, name)
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1\nmax_delete = 10")
    assert run_syncd("sync", config=cfg).returncode == 0
    return folder, cfg


def test_live_deletions_in_pieces_count_toward_max_delete(
    tmp_path: Path, server: ServerProc
) -> None:
    """Two `rm -rf` a few seconds apart: the first (8 files, within max_delete = 10) is made;
    the second (8 more, 16 within DELETE_WINDOW) is held, as one pass deleting 16 would be."""
    folder, cfg = three_dirs_mirrored(tmp_path, server)
    d = daemon(cfg, tmp_path)
    try:
        # The start-up's deferred comparison with the server (a whole look) is over first:
        # see the next test for what happens when a whole look makes the first deletions.
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 20, "in sync")
        shutil.rmtree(folder / "a")
        wait_for(lambda: not (server.root / "docs" / "a").exists(), 20, "the first delete")
        shutil.rmtree(folder / "b")
        wait_for(lambda: "deleting nothing" in d.log(), 20, "the hold")
        assert "(and 8 just before)" in d.log(), d.log()
        held = mirror(server.root / "docs")
        assert sorted({k.split("/")[0] for k in held}) == ["b", "c"], sorted(held)
        r = run_syncd("status", config=cfg)
        assert r.returncode == 1 and "HELD BACK" in r.stdout, r.stdout
    finally:
        assert d.stop() == 0


def test_deletions_of_a_whole_look_count_toward_the_live_window(
    tmp_path: Path, server: ServerProc
) -> None:
    """8 files deleted while the daemon is down (the start-up's whole look deletes them: within
    max_delete = 10), then 8 more deleted live right after: 16 deletions within seconds, which
    one pass would hold, are held (they went through before the window counted whole looks)."""
    folder, cfg = three_dirs_mirrored(tmp_path, server)
    shutil.rmtree(folder / "a")
    d = daemon(cfg, tmp_path)  # its start-up deletes a/ (8 <= 10)
    try:
        assert not (server.root / "docs" / "a").exists()
        shutil.rmtree(folder / "b")
        wait_for(
            lambda: "deleting nothing" in d.log() or not (server.root / "docs" / "b").exists(),
            20,
            "b held or deleted",
        )
        assert (server.root / "docs" / "b").exists(), "16 deletions within seconds were made"
    finally:
        assert d.stop() == 0


def test_the_outbox_keeps_a_move_across_a_sigkill(tmp_path: Path, token_file: Path) -> None:
    """The server is down, a directory is renamed: the move waits in the manifest's outbox; the
    daemon is SIGKILLed, started again, the server comes back: the move is made as a move (the
    server's file keeps its inode), nothing is sent again."""
    folder = tmp_path / "Documents"
    make_files(folder, 10, "dir")
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, token_file)
    try:
        cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
        assert run_syncd("sync", config=cfg).returncode == 0
        ino = (root / "docs" / "dir" / "f000.txt").stat().st_ino
        d = daemon(cfg, tmp_path)
        try:
            server.stop()
            (folder / "dir").rename(folder / "renamed")
            db = tmp_path / "state" / "manifest.sqlite3"

            def queued() -> list[tuple[str, str | None]]:
                with sqlite3.connect(db) as c:
                    return list(c.execute("SELECT path, dest FROM outbox"))

            wait_for(lambda: ("dir", "renamed") in queued(), 30, "the move in the outbox")
        finally:
            d.stop(signal.SIGKILL)
        assert ("dir", "renamed") in queued()
        server = start_server(root, token_file, port=server.port)
        d = daemon(cfg, tmp_path, "d2.log")
        try:
            wait_for(lambda: mirror(root / "docs") == tree_of(folder), 40, "the move")
            assert (root / "docs" / "renamed" / "f000.txt").stat().st_ino == ino
            assert "sent docs/renamed" not in d.log(), d.log()
            wait_for(lambda: queued() == [], 10, "the outbox emptied")
        finally:
            assert d.stop() == 0
    finally:
        server.stop()
