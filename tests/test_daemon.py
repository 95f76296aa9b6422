"""`syncd run` against a real `syncd serve`: live changes, directories, moves, stop, restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProc, ServerProc, mirror_config, run_syncd, wait_for
from tests.test_sync import tree_of


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    (f / "initial.txt").write_text("initial")
    return f


@pytest.fixture
def cfg(tmp_path: Path, server: ServerProc, folder: Path) -> Path:
    return mirror_config(tmp_path, server, folder, extra="debounce = 0.2\nmax_delay = 2")


@pytest.fixture
def daemon(tmp_path: Path, cfg: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        yield d
    finally:
        d.stop()


def in_sync(daemon: DaemonProc) -> bool:
    """The daemon says every folder is in sync (nothing pending, nothing in flight)."""
    return run_syncd("status", config=daemon.config).returncode == 0


def mirrored(server: ServerProc, folder: Path) -> bool:
    return tree_of(server.root / "docs") == tree_of(folder)


def test_reconciles_at_start_then_follows_changes(
    server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    remote = server.root / "docs"
    assert (remote / "initial.txt").read_text() == "initial"  # ready means reconciled
    (folder / "new.txt").write_text("new")
    wait_for(lambda: (remote / "new.txt").read_text() == "new", what="new file")
    (folder / "new.txt").write_text("modified")
    wait_for(lambda: (remote / "new.txt").read_text() == "modified", what="modified file")
    (folder / "new.txt").unlink()
    wait_for(lambda: not (remote / "new.txt").exists(), what="deleted file")
    assert mirrored(server, folder)


def test_editor_style_saves(server: ServerProc, folder: Path, daemon: DaemonProc) -> None:
    target = folder / "notes.txt"
    target.write_text("v1")
    wait_for(lambda: mirrored(server, folder), what="first version")
    # vim: probe file 4913, swap file, backup by rename, write new, remove backup.
    (folder / ".notes.txt.swp").write_bytes(b"swap")
    (folder / "4913").write_text("")
    (folder / "4913").unlink()
    target.rename(folder / "notes.txt~")
    target.write_text("v2 from vim")
    (folder / "notes.txt~").unlink()
    # JetBrains/VS Code: write a temp beside it, rename over the target.
    tmp = folder / "notes.txt___jb_tmp___"
    tmp.write_text("v3 from an IDE")
    os.replace(tmp, target)
    (folder / ".notes.txt.swp").unlink()
    (folder / "download.part").write_text("half")
    wait_for(lambda: (server.root / "docs" / "notes.txt").read_text() == "v3 from an IDE")
    wait_for(lambda: sorted(tree_of(server.root / "docs")) == ["initial.txt", "notes.txt"])


def test_slow_writer_final_content_wins(
    server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    f = folder / "slow.log"
    with f.open("w") as out:
        for i in range(5):
            out.write(f"line {i}\n")
            out.flush()
            time.sleep(0.3)  # the writer pauses for longer than the debounce
    wait_for(lambda: (server.root / "docs" / "slow.log").read_text() == f.read_text(), 20)


def test_directory_moved_in_with_files(
    tmp_path: Path, server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    outside = tmp_path / "outside"
    (outside / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (outside / "a" / "b" / f"f{i}.txt").write_text(str(i))
    (outside / "a" / "top.txt").write_text("top")
    shutil.move(str(outside / "a"), str(folder / "a"))
    wait_for(lambda: mirrored(server, folder), what="moved-in directory")
    # A directory created, then filled at once (before it could be watched).
    d = folder / "fresh" / "deep"
    d.mkdir(parents=True)
    for i in range(10):
        (d / f"{i}.txt").write_text(str(i))
    wait_for(lambda: mirrored(server, folder), what="new directory with files")


def test_directory_rename_is_a_move(server: ServerProc, folder: Path, daemon: DaemonProc) -> None:
    src = folder / "project"
    (src / "sub").mkdir(parents=True)
    for i in range(10):
        (src / "sub" / f"{i}.bin").write_bytes(os.urandom(1000 + i))
    (src / "README").write_text("readme")
    wait_for(lambda: mirrored(server, folder), what="project uploaded")
    wait_for(lambda: in_sync(daemon), what="daemon idle")  # no upload still on its way
    remote = server.root / "docs"
    inodes = {p: os.stat(remote / "project" / p).st_ino for p in tree_of(remote / "project")}
    src.rename(folder / "renamed")
    wait_for(lambda: mirrored(server, folder), what="rename mirrored")
    after = {p: os.stat(remote / "renamed" / p).st_ino for p in tree_of(remote / "renamed")}
    assert after == inodes, "files were uploaded again instead of moved"
    # A single file renamed is a move as well.
    ino = os.stat(remote / "renamed" / "README").st_ino
    (folder / "renamed" / "README").rename(folder / "renamed" / "README.md")
    wait_for(lambda: mirrored(server, folder), what="file rename")
    assert os.stat(remote / "renamed" / "README.md").st_ino == ino


def test_tree_delete(server: ServerProc, folder: Path, daemon: DaemonProc) -> None:
    (folder / "t" / "u" / "v").mkdir(parents=True)
    for d in ("t", "t/u", "t/u/v"):
        (folder / d / "x.txt").write_text(d)
    wait_for(lambda: mirrored(server, folder))
    shutil.rmtree(folder / "t")
    wait_for(lambda: not (server.root / "docs" / "t").exists(), what="tree deleted")
    assert mirrored(server, folder)


def test_burst_of_changes_converges(server: ServerProc, folder: Path, daemon: DaemonProc) -> None:
    for d in range(20):
        (folder / f"d{d}").mkdir()
        for i in range(100):
            (folder / f"d{d}" / f"{i}.txt").write_text(f"{d}-{i}")
    for i in range(100):  # rewrite some while the first ones are being sent
        (folder / "d0" / f"{i}.txt").write_text(f"rewritten {i}")
    wait_for(lambda: mirrored(server, folder), 120, "burst converged")


def test_sigterm_exit_0_and_catch_up_after_restart(
    tmp_path: Path, server: ServerProc, folder: Path, cfg: Path
) -> None:
    d = DaemonProc(cfg, tmp_path / "d1.log")
    (folder / "one.txt").write_text("1")
    wait_for(lambda: mirrored(server, folder))
    assert d.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in d.log()
    # Changes while stopped.
    (folder / "one.txt").write_text("one, changed while stopped")
    (folder / "two.txt").write_text("2")
    (folder / "initial.txt").unlink()
    d2 = DaemonProc(cfg, tmp_path / "d2.log")
    try:
        assert mirrored(server, folder)  # ready means caught up
    finally:
        assert d2.stop(signal.SIGINT) == 0


def test_status_json_while_running(cfg: Path, folder: Path, daemon: DaemonProc) -> None:
    r = run_syncd("status", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["daemon"]["ready"] is True and doc["daemon"]["pid"] == daemon.proc.pid
    f = doc["folders"][0]
    assert f["path"] == str(folder) and f["watcher"] == "watching" and f["files"] == 1
    r = run_syncd("status", config=cfg)
    assert "in sync" in r.stdout and f"pid {daemon.proc.pid}" in r.stdout
    # A second daemon on the same state dir is refused.
    r = run_syncd("run", config=cfg, timeout=30)
    assert r.returncode == 1 and "another `syncd run`" in r.stderr


def test_folder_removed_then_back_deletes_nothing(
    tmp_path: Path, server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    (folder / "keep.txt").write_text("keep")
    wait_for(lambda: mirrored(server, folder))
    before = tree_of(server.root / "docs")
    aside = tmp_path / "aside"
    folder.rename(aside)  # as if the disk were unmounted
    wait_for(lambda: "waiting for it to come back" in daemon.log(), what="folder noticed gone")
    assert tree_of(server.root / "docs") == before
    aside.rename(folder)
    (folder / "after.txt").write_text("after")
    wait_for(lambda: mirrored(server, folder), what="watching again after the folder came back")


def test_case_only_rename(server: ServerProc, folder: Path, daemon: DaemonProc) -> None:
    (folder / "readme.txt").write_text("case")
    wait_for(lambda: mirrored(server, folder))
    (folder / "readme.txt").rename(folder / "README.txt")
    wait_for(lambda: sorted(tree_of(server.root / "docs")) == ["README.txt", "initial.txt"])
    wait_for(lambda: "moved docs/readme.txt -> docs/README.txt" in daemon.log(), what="a move")


def test_refused_move_falls_back_to_upload(
    server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    (folder / "old.txt").write_text("content")
    wait_for(lambda: mirrored(server, folder))
    (server.root / "docs" / "old.txt").unlink()  # the server lost the source behind our back
    (folder / "old.txt").rename(folder / "new.txt")
    wait_for(lambda: mirrored(server, folder), what="sent as an upload after the move failed")
    assert (server.root / "docs" / "new.txt").read_text() == "content"


def test_live_names_are_judged_as_a_scan_judges_them(
    server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    """A live event for a reserved name or a name that is not UTF-8 is skipped with one warning
    (never sent, never an error, never a broken watcher); the files beside them still go."""
    (folder / ".~syncd-x").write_text("reserved")
    with open(os.path.join(os.fsencode(folder), b"bad\xff"), "wb") as f:
        f.write(b"not utf-8")
    (folder / "after.txt").write_text("after")
    remote = server.root / "docs"
    wait_for(lambda: (remote / "after.txt").exists(), what="the file beside them")
    for _ in range(3):  # every change to the undecodable name: still one warning in all
        with open(os.path.join(os.fsencode(folder), b"bad\xff"), "ab") as f:
            f.write(b"more")
        time.sleep(0.3)
    (folder / "later.txt").write_text("later")
    wait_for(lambda: (remote / "later.txt").exists(), what="a later file")
    log = daemon.log()
    assert not (remote / ".~syncd-x").exists()
    held = sorted(n for n in os.listdir(os.fsencode(remote)) if not n.startswith(b".~syncd-mirror"))
    assert held == [b"after.txt", b"initial.txt", b"later.txt"]
    assert "ERROR" not in log, log
    assert "does not know" not in log, log
    assert "watching" not in log or "failed" not in log, log
    assert log.count("a name that is not UTF-8 changed in") == 1, log
    assert "bad\\xff" in log.lower(), log
