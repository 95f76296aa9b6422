"""A mirror you can trust: whichever way a change arrives (a pass, a live batch, a restart),
the server ends up holding exactly the folder, no deletion happens that the user did not make,
and no file on the server holds bytes that never existed under its name locally."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import (
    DaemonProc,
    ServerProc,
    mirror_config,
    run_syncd,
    start_server,
    wait_for,
    write_config,
)
from tests.test_sync import tree_of


def mirror(root: Path) -> dict[str, bytes]:
    """What the server holds under ``root``, less its own files (marker, lock)."""
    return {k: v for k, v in tree_of(root).items() if not k.rsplit("/", 1)[-1].startswith(".~")}


def make_files(folder: Path, n: int, prefix: str = "", size: int = 100) -> None:
    for i in range(n):
        p = folder / prefix / f"f{i:03}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{prefix}{i}".encode().ljust(size, b"."))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    return f


def daemon(cfg: Path, tmp_path: Path, name: str = "d.log") -> DaemonProc:
    return DaemonProc(cfg, tmp_path / name)


# -- the deletion guard on the live path -----------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 4])
def test_live_mass_delete_is_held_like_a_pass(
    tmp_path: Path, server: ServerProc, folder: Path, keep: int
) -> None:
    """`rm -rf folder/*` (keep=0) and deleting 36 of 40 files (keep=4) under `syncd run`:
    the server keeps every file, the hold survives a restart, `syncd status` shows it, and
    `syncd sync --force-delete` releases it."""
    make_files(folder, 20, "a")
    make_files(folder, 20, "b")
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    before = mirror(server.root / "docs")
    assert len(before) == 40
    d = daemon(cfg, tmp_path)
    try:
        kept = sorted(folder.rglob("*.txt"))[:keep]
        for p in folder.rglob("*.txt"):
            if p not in kept:
                p.unlink()
        if keep == 0:
            for sub in list(folder.iterdir()):
                shutil.rmtree(sub)
        wait_for(lambda: "deleting nothing" in d.log(), 20, "the hold")
        time.sleep(0.5)  # nothing else is on its way (the debounce is 0.1 s)
        assert mirror(server.root / "docs") == before
        r = run_syncd("status", config=cfg)
        assert "held" in r.stdout.lower() and "--force-delete" in r.stdout, r.stdout
        assert "resolved since" not in r.stdout, r.stdout  # it is held still
        assert r.returncode == 1
    finally:
        assert d.stop() == 0
    # Still held after a restart: the daemon does not take the restart as a go-ahead.
    d = daemon(cfg, tmp_path, "d2.log")
    try:
        time.sleep(0.5)
        assert mirror(server.root / "docs") == before
    finally:
        assert d.stop() == 0
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and "--force-delete" in r.stderr, r.stderr
    r = run_syncd("sync", "--force-delete", config=cfg)
    assert r.returncode == 0, r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "deleted 0" in r.stdout, r.stdout + r.stderr


def test_a_restore_into_a_held_folder_recounts_the_hold(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """`rm -rf folder/*` is held; the user copies back all but one file: the daemon plans the
    whole folder again, and the one deletion left is within the guard and is made."""
    make_files(folder, 40)
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    d = daemon(cfg, tmp_path)
    try:
        for p in list(folder.iterdir()):
            p.unlink()
        wait_for(lambda: "deleting nothing" in d.log(), 20, "the hold")
        (backup / "f000.txt").unlink()
        for p in backup.iterdir():
            shutil.copy2(p, folder / p.name)
        wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 30, "the recount")
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 30, "no hold left")
    finally:
        assert d.stop() == 0


def test_live_small_deletes_go_through(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    make_files(folder, 40)
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    d = daemon(cfg, tmp_path)
    try:
        for i in range(3):
            (folder / f"f{i:03}.txt").unlink()
        wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 20, "three deletes")
    finally:
        assert d.stop() == 0


# -- renames are confirmed ---------------------------------------------------------------------
def _unrelated_pair(folder: Path) -> None:
    """old.bin goes, new.bin comes: same size, same mtime, other bytes (an unpacked archive)."""
    old = folder / "old.bin"
    st = old.stat()
    old.unlink()
    new = folder / "new.bin"
    new.write_bytes(b"N" * st.st_size)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_unrelated_same_size_same_mtime_is_not_a_move(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "old.bin").write_bytes(b"O" * 5000)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    _unrelated_pair(folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)
    assert run_syncd("verify", config=cfg).returncode == 0


def test_live_unrelated_pair_is_not_a_move_but_a_real_rename_is(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "old.bin").write_bytes(b"O" * 5000)
    (folder / "keep.bin").write_bytes(b"K" * 7000)
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    d = daemon(cfg, tmp_path)
    try:
        _unrelated_pair(folder)
        wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 20, "new.bin sent")
        ino = (server.root / "docs" / "keep.bin").stat().st_ino
        (folder / "keep.bin").rename(folder / "renamed.bin")
        wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 20, "the rename")
        assert (server.root / "docs" / "renamed.bin").stat().st_ino == ino  # moved, not sent
    finally:
        assert d.stop() == 0
    assert run_syncd("verify", config=cfg).returncode == 0


def test_directory_rename_is_one_move(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    make_files(folder, 30, "photos/2020")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    ino = (server.root / "docs" / "photos" / "2020" / "f000.txt").stat().st_ino
    (folder / "photos").rename(folder / "pictures")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "moved 1," in r.stdout and "uploaded 0" in r.stdout, r.stdout
    assert (server.root / "docs" / "pictures" / "2020" / "f000.txt").stat().st_ino == ino
    assert mirror(server.root / "docs") == tree_of(folder)


# -- change detection that a restored mtime cannot fool ----------------------------------------
def test_same_size_edit_with_restored_mtime_is_sent(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    p = folder / "photo.jpg"
    p.write_bytes(b"A" * 4096)
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    st = p.stat()
    p.write_bytes(b"B" * 4096)  # exiftool -P, touch -r: same size, the old mtime put back
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 1" in r.stdout, r.stdout
    assert mirror(server.root / "docs") == tree_of(folder)
    # The same under `syncd run`; and a pure touch that restores the mtime costs no upload.
    d = daemon(cfg, tmp_path)
    try:
        st = p.stat()
        p.write_bytes(b"C" * 4096)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 20, "the edit")
    finally:
        assert d.stop() == 0
    os.chmod(p, 0o600)  # ctime changes, bytes do not
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 0" in r.stdout and "0 B in" in r.stdout, r.stdout


# -- the server's holdings are the truth ---------------------------------------------------------
def test_killed_between_upload_and_commit_then_deleted_locally(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "b.txt").write_text("b")
    r = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": "after-upload"})
    assert r.returncode == -signal.SIGKILL
    assert (server.root / "docs" / "b.txt").exists()  # on the server, not in the manifest
    (folder / "b.txt").unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert mirror(server.root / "docs") == tree_of(folder) == {"a.txt": b"a"}


def test_another_url_spelling_is_the_same_mirror(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    make_files(folder, 5)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    inodes = {p.name: p.stat().st_ino for p in (server.root / "docs").glob("*.txt")}
    text = cfg.read_text().replace("127.0.0.1", "localhost")
    assert "localhost" in text
    cfg2 = write_config(tmp_path / "other.toml", text)
    (folder / "f000.txt").unlink()
    r = run_syncd("sync", config=cfg2)
    assert r.returncode == 0 and "uploaded 0, deleted 1" in r.stdout, r.stdout + r.stderr
    del inodes["f000.txt"]
    assert {p.name: p.stat().st_ino for p in (server.root / "docs").glob("*.txt")} == inodes


def test_server_that_lost_files_is_filled_again(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    make_files(folder, 10)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    for p in (server.root / "docs").glob("f00[0-4].txt"):
        p.unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 5" in r.stdout, r.stdout + r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)
    shutil.rmtree(server.root / "docs")  # everything, marker included
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 10" in r.stdout, r.stdout + r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)


def test_a_file_edited_on_the_server_disk_is_sent_again(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """An edit in place behind the server's back, the size and mtime put back: no directory
    changes, but the state token and the server's digests see the ctime, so the next pass
    lists, finds other bytes, and sends the file again; verify agrees."""
    make_files(folder, 5)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    assert run_syncd("verify", config=cfg).returncode == 0  # the digests are cached now
    stored = server.root / "docs" / "f002.txt"
    st = stored.stat()
    with stored.open("r+b") as f:
        f.write(b"X")
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 1 and "different" in r.stdout, r.stdout
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 1" in r.stdout, r.stdout + r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)


def test_first_contact_with_a_non_empty_directory_deletes_nothing(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (server.root / "docs").mkdir()
    (server.root / "docs" / "theirs.txt").write_text("not ours")
    (server.root / "docs" / "same.txt").write_text("same")
    (server.root / "docs" / "other-size.txt").write_text("the server's, longer")
    (server.root / "docs" / "same-size.txt").write_text("server")
    (folder / "same.txt").write_text("same")
    (folder / "mine.txt").write_text("mine")
    (folder / "other-size.txt").write_text("mine")
    (folder / "same-size.txt").write_text("folder")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and "first sync" in r.stderr and "--force-delete" in r.stderr
    assert (server.root / "docs" / "theirs.txt").read_text() == "not ours"
    assert (server.root / "docs" / "mine.txt").read_text() == "mine"
    # Nothing the server held under the folder's names was replaced either.
    assert (server.root / "docs" / "other-size.txt").read_text() == "the server's, longer"
    assert (server.root / "docs" / "same-size.txt").read_text() == "server"
    assert "already holds other bytes under this name" in r.stderr, r.stderr
    r = run_syncd("sync", config=cfg)  # still held: nothing was confirmed
    assert r.returncode == 1 and (server.root / "docs" / "theirs.txt").exists()
    r = run_syncd("sync", "--force-delete", config=cfg)
    assert r.returncode == 0, r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)


# -- ordering: a file that became a directory, and the reverse -----------------------------------
@pytest.mark.parametrize("live", [False, True])
def test_type_clash_converges_in_one_pass(
    tmp_path: Path, server: ServerProc, folder: Path, live: bool
) -> None:
    (folder / "x").write_text("a file")
    (folder / "y").mkdir()
    (folder / "y" / "inner.txt").write_text("inside")
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0

    def swap() -> None:
        (folder / "x").unlink()
        (folder / "x").mkdir()
        (folder / "x" / "now-a-dir.txt").write_text("dir")
        shutil.rmtree(folder / "y")
        (folder / "y").write_text("now a file")

    if live:
        d = daemon(cfg, tmp_path)
        try:
            swap()
            wait_for(lambda: mirror(server.root / "docs") == tree_of(folder), 20, "the swap")
        finally:
            assert d.stop() == 0
    else:
        swap()
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        assert mirror(server.root / "docs") == tree_of(folder)


# -- the offline queue keeps operations ----------------------------------------------------------
def test_directory_renamed_while_the_server_is_down_is_one_move(
    tmp_path: Path, token_file: Path, folder: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, token_file)
    try:
        make_files(folder, 20, "dir")
        cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
        assert run_syncd("sync", config=cfg).returncode == 0
        ino = (root / "docs" / "dir" / "f000.txt").stat().st_ino
        d = daemon(cfg, tmp_path)
        try:
            server.stop()
            (folder / "dir").rename(folder / "renamed")
            wait_for(lambda: "unreachable" in d.log(), 30, "the daemon to notice")
            server = start_server(root, token_file, port=server.port)
            wait_for(lambda: mirror(root / "docs") == tree_of(folder), 40, "the move")
            assert (root / "docs" / "renamed" / "f000.txt").stat().st_ino == ino
            assert "sent docs/renamed" not in d.log()
        finally:
            assert d.stop() == 0
    finally:
        server.stop()


def test_an_rm_rf_arriving_in_two_batches_is_held_and_counted_once() -> None:
    """`rm -rf folder/*` reaches the live path in pieces: the files first, then their
    directories. The second batch holds the same deletions: it must not count them again
    (it made "80 deletion(s) held" of 40) nor say anything new (its message replaced the
    first one's, which `syncd status` then showed as resolved)."""
    from syncd.planner import GuardState, Looked, Rules, plan
    from syncd.types import Row

    rows = {
        f"{d}/f{i}.txt": Row(f"{d}/f{i}.txt", 1, 1, "x" * 64, 0.0) for d in "ab" for i in range(20)
    }
    rules = Rules(ignored=lambda rel, is_dir=False: False)
    files_gone = Looked({}, under=sorted(rows), folder_empty=True)
    first = plan(files_gone, rows, rules)
    assert first.held == 40 and first.held_new == 40 and not first.ops
    assert len(first.held_back) == 1 and "folder is empty" in first.held_back[0].reason
    dirs_gone = Looked({}, under=["a", "b"], folder_empty=True)
    again = GuardState(held=True, held_rels=set(first.held_rels))
    second = plan(
        dirs_gone, rows, rules, guard=GuardState(held=True, held_rels=set(first.held_rels))
    )
    assert second.held == 40 and not second.ops, "still held: nothing is deleted"
    assert second.held_new == 0 and second.held_back == []
    # A batch with some deletions not held yet names only those.
    more = {**rows, "c.txt": Row("c.txt", 1, 1, "y" * 64, 0.0)}
    third = plan(
        Looked({}, under=["a", "c.txt"], folder_empty=True),
        more,
        rules,
        guard=again,
    )
    assert third.held_new == 1 and not third.ops
    assert third.held_back and third.held_back[0].reason.startswith("1 more deletion(s)")
