"""Monitoring: `syncd status` exit codes (0 in sync, 1 errors, 3 busy, 4 no daemon), held
deletions in status/JSON/metrics/page, and one worker per state dir (`syncd sync` beside a
running `syncd run` asks the daemon instead of uploading itself).

Real `syncd serve` and `syncd run` processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.config import load
from syncd.manifest import Manifest, scope_of
from syncd.remotes.kinds import KINDS
from syncd.statelock import AlreadyRunning, StateLock, holder, read_holder
from tests import test_ops
from tests.conftest import (
    DaemonProc,
    ServerProc,
    refused_by_the_server,
    run_syncd,
    wait_for,
)
from tests.faultproxy import FORWARD, Action, FaultProxy
from tests.test_ops import chromium_dom, get, ops_config, parse_metrics, status_url
from tests.test_ops import status_cli as status
from tests.test_sync import tree_of

SUMMARY = re.compile(r"^uploaded \d+, deleted \d+, (moved \d+, )?unchanged \d+, failed \d+, ")


folder = test_ops.folder  # the fixture: three small files


def config(tmp_path: Path, server: ServerProc, folder: Path, sync: str = "") -> Path:
    """test_ops' config (a status endpoint on a free loopback port), with text logs."""
    return ops_config(tmp_path, server, folder, sync=sync, json_logs=False)


@pytest.fixture
def cfg(tmp_path: Path, server: ServerProc, folder: Path) -> Path:
    return config(tmp_path, server, folder)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProc]]:
    """Daemons a test starts: never left behind."""
    started: list[DaemonProc] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop(signal.SIGKILL)


def start(daemons: list[DaemonProc], cfg: Path, log: Path) -> DaemonProc:
    d = DaemonProc(cfg, log)
    daemons.append(d)
    return d


def status_code(cfg: Path) -> int:
    return run_syncd("status", config=cfg).returncode


def mirrored(server: ServerProc, folder: Path) -> bool:
    return tree_of(server.root / "docs") == tree_of(folder)


# --------------------------------------------------------------------------- exit codes


def test_status_exit_4_without_a_daemon_never_synced_and_after_sigkill(
    tmp_path: Path, server: ServerProc, folder: Path, cfg: Path, daemons: list[DaemonProc]
) -> None:
    # A new install: nothing synced, nothing runs.
    r = run_syncd("status", config=cfg)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "no daemon is running" in r.stdout
    code, doc = status(cfg)
    assert code == 4 and doc["source"] == "manifest" and doc["state"] == "stopped"
    assert doc["folders"][0]["files"] == 0
    # After a one-shot pass: still no daemon, whatever the manifest says.
    assert run_syncd("sync", config=cfg).returncode == 0
    code, doc = status(cfg)
    assert code == 4 and doc["folders"][0]["files"] == 3
    # A daemon in sync: 0.
    d = start(daemons, cfg, tmp_path / "d.log")
    wait_for(lambda: status_code(cfg) == 0, what="exit 0 in sync")
    code, doc = status(cfg)
    assert code == 0 and doc["source"] == "daemon" and doc["daemon"]["pid"] == d.proc.pid
    assert read_holder(tmp_path / "state") == (d.proc.pid, "run")
    # Killed without a chance to clean up: the socket file is left behind, nobody answers.
    d.stop(signal.SIGKILL)
    assert (tmp_path / "state" / "syncd.sock").exists()
    r = run_syncd("status", config=cfg)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "no daemon is running" in r.stdout and "3 files" in r.stdout
    assert holder(tmp_path / "state") is None, "a dead PID does not hold the state dir"
    # And a new daemon starts despite the stale socket and lock file.
    start(daemons, cfg, tmp_path / "d2.log")
    wait_for(lambda: status_code(cfg) == 0, what="exit 0 again")


def test_status_exit_3_while_busy_then_0(
    tmp_path: Path, server: ServerProc, folder: Path, daemons: list[DaemonProc]
) -> None:
    cfg = config(tmp_path, server, folder, sync='bwlimit = "256KiB"\n')
    assert status_code(cfg) == 4  # nothing runs yet
    start(daemons, cfg, tmp_path / "d.log")
    wait_for(lambda: status_code(cfg) == 0, what="in sync")
    (folder / "big.bin").write_bytes(os.urandom(1024 * 1024))  # about 4 s to send
    wait_for(lambda: status(cfg)[0] == 3, what="exit 3 while sending")
    code, doc = status(cfg)
    assert code in (0, 3)
    if code == 3:
        assert doc["state"] in ("syncing", "starting")
    wait_for(lambda: status_code(cfg) == 0, 60, "exit 0 once sent")
    assert mirrored(server, folder)


def test_missing_folder_is_reported_not_a_config_error(
    tmp_path: Path, server: ServerProc, folder: Path, cfg: Path, daemons: list[DaemonProc]
) -> None:
    d = start(daemons, cfg, tmp_path / "d.log")
    wait_for(lambda: status_code(cfg) == 0, what="in sync")
    folder.rename(tmp_path / "aside")  # as if the disk were unmounted
    wait_for(lambda: status(cfg)[1]["folders"][0]["unavailable"], what="the folder is missing")
    code, doc = status(cfg)
    f = doc["folders"][0]
    assert code == 1 and doc["state"] == "error" and f["state"] == "error"
    assert f["unavailable"], f
    r = run_syncd("status", config=cfg)
    assert r.returncode == 1 and "config error" not in r.stderr
    assert "FOLDER UNAVAILABLE" in r.stdout
    # No daemon: the manifest's view says the folder is missing; exit 4 (nothing runs).
    assert d.stop() == 0, d.log()
    r = run_syncd("status", config=cfg)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "config error" not in r.stderr
    assert "no daemon is running" in r.stdout
    assert "FOLDER UNAVAILABLE: folder does not exist" in r.stdout
    code, doc = status(cfg)
    assert code == 4 and doc["folders"][0]["unavailable"] == "folder does not exist"
    assert doc["folders"][0]["state"] == "error" and doc["folders"][0]["files"] == 3
    # The other commands still refuse the config (nothing to mirror from).
    assert run_syncd("sync", config=cfg).returncode == 2


# --------------------------------------------------------------------------- held deletions


def test_held_deletions_in_status_metrics_page_released_through_the_daemon(
    tmp_path: Path, server: ServerProc, folder: Path, daemons: list[DaemonProc]
) -> None:
    cfg = config(tmp_path, server, folder, sync="max_delete = 1\n")
    assert run_syncd("sync", config=cfg).returncode == 0
    for i in range(3):
        (folder / f"file{i}.txt").unlink()
    (folder / "keep.txt").write_text("keep")  # not empty: the max_delete rule holds them
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and "max_delete" in r.stderr, r.stdout + r.stderr
    assert sorted(tree_of(server.root / "docs")) == [
        "file0.txt",
        "file1.txt",
        "file2.txt",
        "keep.txt",
    ]
    # The guard's verdict is in the manifest.
    with Manifest.in_state_dir(tmp_path / "state") as m:
        held = m.held()
    loaded = load(cfg, kinds=KINDS)
    scope = scope_of(loaded, loaded.folders[0])
    assert [(s, n) for s, n, _, _ in held] == [(scope, 3)], held

    # No daemon: exit 4, and the folder's held deletions with how to release them.
    code, doc = status(cfg)
    f = doc["folders"][0]
    assert code == 4 and f["state"] == "error"
    assert f["held_deletions"]["count"] == 3 and "max_delete" in f["held_deletions"]["reason"]
    assert f["held_deletions"]["since"] > 0 and doc["totals"]["held_deletions"] == 3
    r = run_syncd("status", config=cfg)
    assert "3 deletion(s) HELD BACK" in r.stdout and "syncd sync --force-delete" in r.stdout

    # A daemon: exit 1 (error-like), in the JSON, the text, /metrics and the page.
    d = start(daemons, cfg, tmp_path / "d.log")
    code, doc = status(cfg)
    f = doc["folders"][0]
    assert code == 1 and doc["source"] == "daemon" and doc["state"] == "error", doc
    assert f["held_deletions"]["count"] == 3 and f["state"] == "error" and not f["in_sync"]
    r = run_syncd("status", config=cfg)
    assert r.returncode == 1
    assert "3 deletion(s) HELD BACK" in r.stdout and "syncd sync --force-delete" in r.stdout
    url = status_url(d)
    samples = parse_metrics(get(url + "metrics")[2])
    assert samples['syncd_held_deletions{folder="docs"}'] == 3
    dom = chromium_dom(url, tmp_path / "chromium")
    assert "3 deletion(s) held back" in dom and "syncd sync --force-delete" in dom
    assert 'data-k="held_deletions">3<' in dom

    # `syncd sync --force-delete` beside the daemon: the daemon releases them.
    r = run_syncd("sync", "--force-delete", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the running daemon (pid {d.proc.pid}) made this pass" in r.stderr
    assert SUMMARY.match(r.stdout.strip()), r.stdout
    assert sorted(tree_of(server.root / "docs")) == ["keep.txt"]
    wait_for(lambda: status_code(cfg) == 0, what="in sync once released")
    code, doc = status(cfg)
    assert doc["folders"][0]["held_deletions"] is None and doc["totals"]["held_deletions"] == 0
    samples = parse_metrics(get(url + "metrics")[2])
    assert samples['syncd_held_deletions{folder="docs"}'] == 0


# --------------------------------------------------------------------------- one worker


def test_sync_beside_a_running_daemon_is_done_by_the_daemon(
    tmp_path: Path, server: ServerProc, folder: Path, cfg: Path, daemons: list[DaemonProc]
) -> None:
    d = start(daemons, cfg, tmp_path / "d.log")
    wait_for(lambda: status_code(cfg) == 0, what="in sync")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the running daemon (pid {d.proc.pid}) made this pass" in r.stderr
    assert SUMMARY.match(r.stdout.strip()) and "failed 0" in r.stdout, r.stdout
    assert "asked for a pass" in d.log()
    # A second daemon is refused, naming the first.
    r = run_syncd("run", config=cfg, timeout=30)
    assert r.returncode == 1 and f"another `syncd run` (pid {d.proc.pid})" in r.stderr, r.stderr
    # A file the server refuses: the daemon's pass reports it, the exit code says so.
    refused = refused_by_the_server(server, folder)
    (folder / "new.txt").write_text("new")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"the running daemon (pid {d.proc.pid}) made this pass" in r.stderr
    assert "syncd: failed: docs/linked/refused.txt" in r.stderr
    assert SUMMARY.match(r.stdout.strip()), r.stdout
    assert (server.root / "docs" / "new.txt").read_text() == "new"
    # --dry-run plans locally and changes nothing (no lock needed).
    refused.unlink()
    refused.parent.rmdir()
    (folder / "later.txt").write_text("later")
    r = run_syncd("sync", "--dry-run", config=cfg)
    assert r.returncode == 0 and "dry run:" in r.stdout, r.stdout + r.stderr
    assert "made this pass" not in r.stderr
    assert d.proc.poll() is None
    wait_for(lambda: mirrored(server, folder), what="the daemon mirrors the rest")
    assert d.stop() == 0, d.log()
    assert read_holder(tmp_path / "state") == (None, ""), "released on a clean stop"


def test_sync_beside_the_daemon_reports_what_its_live_op_in_flight_did(
    tmp_path: Path, server: ServerProc, folder: Path, daemons: list[DaemonProc]
) -> None:
    """`syncd sync` while the daemon's live path is sending a file: the pass waits for that
    op, looks at the file again, and reports it -- a refused file fails the pass (exit 1)
    instead of being left out of it."""
    slow = threading.Event()

    def decide(n: int, method: str, target: str) -> Action:
        if slow.is_set() and method in ("PUT", "POST"):
            return Action("delay", seconds=1.5)
        return FORWARD

    proxy = FaultProxy(server.port, decide).start()
    try:
        cfg = config(tmp_path, server, folder)
        cfg.write_text(cfg.read_text().replace(server.url, proxy.url))
        d = start(daemons, cfg, tmp_path / "d.log")
        wait_for(lambda: status_code(cfg) == 0, what="in sync")
        slow.set()
        sent = len(proxy.seen)
        refused_by_the_server(server, folder)
        wait_for(
            lambda: any(s.method in ("PUT", "POST") for s in proxy.seen[sent:]),
            what="the live path sending the refused file",
        )
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"the running daemon (pid {d.proc.pid}) made this pass" in r.stderr
        assert "syncd: failed: docs/linked/refused.txt" in r.stderr, r.stderr
        assert SUMMARY.match(r.stdout.strip()) and "failed 1" in r.stdout, r.stdout
        # A file the live path sends fine: the pass waits for it and finds it in sync.
        slow.set()
        (folder / "linked" / "refused.txt").unlink()
        (folder / "linked").rmdir()
        sent = len(proxy.seen)
        (folder / "fine.txt").write_text("fine")
        wait_for(
            lambda: any(s.method in ("PUT", "POST") for s in proxy.seen[sent:]),
            what="the live path sending fine.txt",
        )
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "failed 0" in r.stdout, r.stdout
        assert (server.root / "docs" / "fine.txt").read_text() == "fine"
        assert d.stop() == 0, d.log()
    finally:
        proxy.stop()


def test_second_worker_is_refused_naming_the_holder(
    tmp_path: Path, server: ServerProc, folder: Path, cfg: Path
) -> None:
    state = tmp_path / "state"
    with StateLock(state, "sync") as lock:
        assert lock.held
        assert read_holder(state) == (os.getpid(), "sync")
        # In-process: a second lock on the same state dir is refused, naming this PID.
        with pytest.raises(AlreadyRunning, match=rf"`syncd sync` \(pid {os.getpid()}\)") as e:
            StateLock(state, "sync").acquire()
        assert e.value.pid == os.getpid()
        # Another `syncd sync`: no daemon answers, so it refuses in one line.
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"`syncd sync` (pid {os.getpid()})" in lines[0], r.stderr
        assert str(state) in lines[0]
        assert not (server.root / "docs").exists(), "nothing was uploaded"
        # `syncd run` is refused as well.
        r = run_syncd("run", config=cfg, timeout=30)
        assert r.returncode == 1 and f"(pid {os.getpid()})" in r.stderr, r.stderr
        # `syncd status`: no daemon runs (a pass does): exit 4, saying who holds it.
        r = run_syncd("status", config=cfg)
        assert r.returncode == 4 and f"pid {os.getpid()}, is making a pass now" in r.stdout
    assert read_holder(state) == (None, "")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mirrored(server, folder)


def test_two_real_syncs_at_once_one_refuses(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    # A pass that takes a few seconds (bwlimit), and a second one started meanwhile.
    (folder / "big.bin").write_bytes(os.urandom(768 * 1024))
    cfg = config(tmp_path, server, folder, sync='bwlimit = "256KiB"\n')
    first = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sync", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"},
    )
    try:
        wait_for(lambda: read_holder(tmp_path / "state")[0] == first.pid, what="first locks")
        r = run_syncd("sync", config=cfg)
        assert r.returncode == 1 and f"`syncd sync` (pid {first.pid})" in r.stderr, r.stderr
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, out + err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert mirrored(server, folder)
