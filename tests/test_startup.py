"""The fast starts: `syncd sync` with nothing to do, and `syncd run` on a folder in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import DaemonProc, ServerProc, mirror_config, run_syncd, wait_for
from tests.test_sync import tree_of

# Run `syncd sync` in-process and say which heavy modules it imported.
PROBE = """
import sys
from syncd.cli import main
code = main(["sync", "-c", sys.argv[1]])
# (json stays: the server's state token is read with http.client and json, ~2 ms.)
heavy = ("asyncio", "aiohttp", "pathspec", "syncd.engine", "syncd.hashing")
print("imported:", ",".join(m for m in heavy if m in sys.modules))
sys.exit(code)
"""


def probe(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(cfg)], capture_output=True, text=True, timeout=60
    )


def test_noop_sync_needs_no_event_loop_then_a_change_does(
    tmp_path: Path, server: ServerProc
) -> None:
    folder = tmp_path / "Documents"
    for i in range(30):
        (folder / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i % 3}" / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder, extra_folder='ignore = [".git/", "*.log"]')
    assert run_syncd("sync", config=cfg).returncode == 0
    r = probe(cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 0, deleted 0, unchanged 30, failed 0" in r.stdout, r.stdout
    assert "imported: \n" in r.stdout, r.stdout  # none of them
    # One changed file, one deleted: the engine takes over the scan and does both.
    (folder / "d1" / "1.txt").write_text("changed")
    (folder / "d2" / "2.txt").unlink()
    r = probe(cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 1, deleted 1, unchanged 28, failed 0" in r.stdout, r.stdout
    assert tree_of(server.root / "docs") == tree_of(folder)
    # A dry run with nothing to do says so, as before.
    r = run_syncd("sync", "--dry-run", config=cfg)
    assert r.returncode == 0 and "dry run: 0 changes planned" in r.stdout, r.stdout


def test_noop_sync_still_reports_problems(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / ".syncdignore").mkdir()  # unreadable as a file: a problem, not a no-op
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1 and ".syncdignore" in r.stderr, (r.stdout, r.stderr)


def test_run_refills_what_the_server_lost_while_it_was_stopped(
    tmp_path: Path, server: ServerProc
) -> None:
    # The folder is in sync as far as the manifest knows, so the daemon is ready before it
    # lists the server; then it finds what the server lost and sends it again.
    folder = tmp_path / "Documents"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / "sub" / f"{i}.txt").write_text(str(i))
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1")
    assert run_syncd("sync", config=cfg).returncode == 0
    (server.root / "docs" / "sub" / "3.txt").unlink()
    (server.root / "docs" / "sub" / "4.txt").write_text("other bytes")
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: tree_of(server.root / "docs") == tree_of(folder), 20, "refilled")
        assert "no longer holds 2 file(s)" in d.log(), d.log()
    finally:
        assert d.stop() == 0
