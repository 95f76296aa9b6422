"""Faults: the server going away, coming back (empty), crashes at every step, mass deletes."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import (
    DaemonProc,
    ServerProc,
    mirror_config,
    run_syncd,
    server_temps,
    start_server,
    wait_for,
)
from tests.test_sync import tree_of


def test_daemon_started_while_the_server_is_down_says_so_once(
    tmp_path: Path, server: ServerProc
) -> None:
    """40 files to send and no server: one line says it is unreachable, "ready" says what is
    queued (not "mirrored"), and no file has a line of its own; once it is back, all go."""
    folder = tmp_path / "Documents"
    folder.mkdir()
    for i in range(40):
        (folder / f"f{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    server.stop()
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        log = d.log()
        assert log.count("unreachable (connection refused)") == 1, log
        assert "change(s) queued until" in log and "mirrored to" not in log, log
        assert "f1.txt" not in log and "retry" not in log, log
        # A name made to forge a line of `syncd status`: it stays within its own line.
        (folder / "a\nin sync: daemon pid 1, all good").write_text("x")  # sorted first
        try:
            wait_for(
                lambda: "all good" in run_syncd("status", config=cfg).stdout, 10, "pending shown"
            )
        except AssertionError:
            raise AssertionError(run_syncd("status", config=cfg).stdout + d.log()) from None
        shown = run_syncd("status", config=cfg).stdout
        assert "    pending a\\nin sync: daemon pid 1, all good" in shown, shown
        assert not any(ln.startswith("in sync:") for ln in shown.splitlines()), shown
        back = start_server(server.root, server.token_file, port=server.port)
        try:
            wait_for(lambda: tree_of(server.root / "docs") == tree_of(folder), 120, "converged")
        finally:
            back.stop()
    finally:
        assert d.stop() == 0


def test_daemon_queues_while_server_is_down_and_converges_when_back(
    tmp_path: Path, server: ServerProc
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        server.stop()
        (folder / "a.txt").write_text("a, edited while the server was down")
        (folder / "c.txt").write_text("new while down")
        (folder / "b.txt").unlink()
        wait_for(lambda: "unreachable (" in d.log(), what="outage noticed")

        def status() -> dict[str, object]:
            r = run_syncd("status", "--json", config=cfg)
            assert r.returncode in (0, 1), r.stderr
            doc: dict[str, object] = json.loads(r.stdout)
            return doc

        remote = status()["remote"]
        assert isinstance(remote, dict)
        assert remote["reachable"] is False and remote["unreachable_since"]
        assert d.proc.poll() is None, "the daemon keeps running while the server is down"

        back = start_server(server.root, server.token_file, port=server.port)
        try:
            wait_for(lambda: tree_of(server.root / "docs") == tree_of(folder), 120, "converged")
            wait_for(lambda: status()["remote"]["reachable"] is True)  # type: ignore[index]
        finally:
            back.stop()
    finally:
        assert d.stop() == 0


def test_server_that_comes_back_empty_is_refilled(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    srv = start_server(root, token_file)
    folder = tmp_path / "Documents"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, srv, folder, extra="debounce = 0.1")
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        assert tree_of(root / "docs") == tree_of(folder)
        srv.stop()
        shutil.rmtree(root / "docs")  # the server lost its disk
        (folder / "poke.txt").write_text("a change while it was away")
        wait_for(lambda: "unreachable (" in d.log(), what="outage noticed")
        srv = start_server(root, token_file, port=srv.port)
        wait_for(lambda: tree_of(root / "docs") == tree_of(folder), 60, "refilled, not deleted")
    finally:
        assert d.stop() == 0
        srv.stop()


def converged(cfg: Path, server: ServerProc, folder: Path) -> None:
    """After a crash: the next sync succeeds, the server equals the folder, and the manifest
    is right (a further sync has nothing to do)."""
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree_of(server.root / "docs") == tree_of(folder)
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 0, r.stdout
    r = run_syncd("sync", config=cfg)
    assert "uploaded 0, deleted 0" in r.stdout, r.stdout
    assert server_temps(server.root) == []


@pytest.mark.parametrize("step", ["hashing", "mid-body", "after-upload", "after-delete"])
def test_client_killed_at_each_step_converges(
    tmp_path: Path, server: ServerProc, step: str
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "small.txt").write_text("small")
    (folder / "big.bin").write_bytes(os.urandom(8 << 20))
    (folder / "doomed.txt").write_text("to be deleted")
    cfg = mirror_config(tmp_path, server, folder)
    if step == "after-delete":
        assert run_syncd("sync", config=cfg).returncode == 0
        (folder / "doomed.txt").unlink()
    else:
        (folder / "big.bin").write_bytes(os.urandom(8 << 20))
    r = run_syncd("sync", config=cfg, env={"SYNCD_CRASH_AT": step})
    assert r.returncode == -signal.SIGKILL, f"the crash point {step} was not reached"
    wait_for(lambda: server_temps(server.root) == [], what="server dropped the broken upload")
    converged(cfg, server, folder)


def test_client_killed_after_a_move_converges(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    (folder / "dir").mkdir(parents=True)
    for i in range(5):
        (folder / "dir" / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    d = DaemonProc(cfg, tmp_path / "d.log", env={"SYNCD_CRASH_AT": "after-move"})
    (folder / "dir").rename(folder / "moved")
    wait_for(lambda: d.proc.poll() is not None, what="the daemon killed itself after the move")
    assert d.stop() == -signal.SIGKILL
    assert sorted(tree_of(server.root / "docs")) == [f"moved/{i}.txt" for i in range(5)]
    d2 = DaemonProc(cfg, tmp_path / "d2.log")  # restarted: converges, uploads nothing again
    try:
        assert tree_of(server.root / "docs") == tree_of(folder)
        assert "sent docs/" not in d2.log(), "identical files were sent again"
    finally:
        assert d2.stop() == 0
    converged(cfg, server, folder)


def test_server_killed_mid_upload_leaves_no_partial_file(tmp_path: Path, token_file: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    srv = start_server(root, token_file, env={"SYNCD_CRASH_AT": "server-mid-body"})
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(6 << 20))
    cfg = mirror_config(tmp_path, srv, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1
    assert srv.stop() == -signal.SIGKILL
    assert not (root / "docs" / "big.bin").exists()
    assert len(server_temps(root)) == 1  # the dead server's temp, never at the target path
    srv = start_server(root, token_file, port=srv.port)  # removes leftover temps at start
    try:
        assert server_temps(root) == []
        converged(cfg, srv, folder)
    finally:
        srv.stop()


def test_mass_delete_is_held_back_until_forced(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    for i in range(20):  # two thirds: more than the default max_delete = "50%"
        (folder / f"{i}.txt").unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1
    assert "would delete 20 of 30 mirrored files" in r.stderr and "--force-delete" in r.stderr
    assert len(tree_of(server.root / "docs")) == 30
    r = run_syncd("sync", "--force-delete", config=cfg)
    assert r.returncode == 0 and "deleted 20" in r.stdout
    assert tree_of(server.root / "docs") == tree_of(folder)


def test_small_deletes_and_count_limit(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder, extra="max_delete = 1")
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "0.txt").unlink()
    assert "deleted 1" in run_syncd("sync", config=cfg).stdout
    (folder / "1.txt").unlink()
    (folder / "2.txt").unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and "more than max_delete = 1" in r.stderr


def test_corrupt_manifest_is_rebuilt_without_resending(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.txt").write_text(str(i) * 100)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    inodes = {p.name: p.stat().st_ino for p in (server.root / "docs").iterdir()}
    for p in (tmp_path / "state").glob("manifest.sqlite3*"):
        p.write_bytes(b"this is not a database" * 100)
    (folder / "0.txt").unlink()  # a delete must not be lost, nor invented
    r = run_syncd("sync", config=cfg)
    assert "unreadable" in r.stderr and "rebuilding" in r.stderr
    # The server's listing stands in for the lost manifest: the nine files are adopted, not
    # sent again. The one the folder lost is kept until the user confirms: a mirror marker
    # this state dir does not know could as well be another machine's.
    assert r.returncode == 1 and "--force-delete" in r.stderr, r.stderr
    assert "uploaded 0, deleted 0" in r.stdout
    assert {p.name: p.stat().st_ino for p in (server.root / "docs").iterdir()} == inodes
    r = run_syncd("sync", "--force-delete", config=cfg)
    assert r.returncode == 0 and "uploaded 0, deleted 1" in r.stdout, r.stdout + r.stderr
    del inodes["0.txt"]
    assert {p.name: p.stat().st_ino for p in (server.root / "docs").iterdir()} == inodes
    assert list((tmp_path / "state").glob("manifest.sqlite3.corrupt-*"))
