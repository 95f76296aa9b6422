"""`syncd sync` / `verify` / `status` against a real `syncd serve` on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from syncd import config as cfgmod
from syncd.engine import Engine
from syncd.remotes.kinds import KINDS
from tests.conftest import ServerProc, mirror_config, run_syncd

HOSTILE_NAMES = [
    "with space.txt",
    "hash#tag.txt",
    "per%cent.txt",
    "per%2Fcent.txt",
    "quest?ion.txt",
    "amp&ersand.txt",
    "plus+sign.txt",
    "semi;colon.txt",
    "sin'gle.txt",
    'dou"ble.txt',
    "[brackets].txt",
    "{braces}.txt",
    unicodedata.normalize("NFC", "café.txt"),
    unicodedata.normalize("NFD", "naïve.txt"),
    "emoji 🎉.txt",
    ".leading-dot",
    "..double-leading",
    "empty-file",
    "back\\slash.txt",
    "colon:name.txt",
    "a" * 200 + ".txt",
]


def tree_of(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (skipping the server's temporaries)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".~syncd-"):
                continue
            p = Path(dirpath, name)
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def make_tree(folder: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i, name in enumerate(HOSTILE_NAMES):
        files[name] = b"" if name == "empty-file" else f"content {i} of {name}\n".encode()
    deep = "/".join(f"d{i}" for i in range(12))
    files[f"{deep}/deep.txt"] = b"deep"
    files["sub dir/n#sted %41.txt"] = b"nested"
    files[unicodedata.normalize("NFD", "Ünïcödé dir") + "/x.bin"] = os.urandom(3000)
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    return f


def test_first_sync_mirrors_hostile_names_then_noop(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    files = make_tree(folder)
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert f"uploaded {len(files)}," in r.stdout
    assert tree_of(server.root / "docs") == files
    inodes = {p: os.stat(server.root / "docs" / p).st_ino for p in files}

    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 0, deleted 0" in r.stdout
    assert {p: os.stat(server.root / "docs" / p).st_ino for p in files} == inodes

    r = run_syncd("verify", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"identical: {len(files)} identical" in r.stdout


async def test_noop_resync_reads_no_bytes_and_sends_nothing(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    make_tree(folder)
    cfg = cfgmod.load(mirror_config(tmp_path, server, folder), kinds=KINDS)
    async with Engine(cfg) as engine:
        first = await engine.sync()
    assert first.uploaded > 0 and not first.failed
    async with Engine(cfg) as engine:
        again = await engine.sync()
        assert engine.stats.bytes == 0 and engine.stats.files == 0
        assert engine.bytes_sent == 0  # the server was asked only for its state token
    assert again.uploaded == 0 and again.bytes_sent == 0 and again.unchanged == first.uploaded


def test_change_delete_add_then_resync(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    (folder / "keep.txt").write_text("keep")
    (folder / "change.txt").write_text("before")
    (folder / "gone.txt").write_text("bye")
    (folder / "dir" / "sub").mkdir(parents=True)
    (folder / "dir" / "sub" / "only.txt").write_text("alone")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0

    (folder / "change.txt").write_text("after!")  # same size + 1 -> changed
    (folder / "gone.txt").unlink()
    (folder / "dir" / "sub" / "only.txt").unlink()
    (folder / "new.txt").write_text("new")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 2, deleted 2" in r.stdout
    assert tree_of(server.root / "docs") == tree_of(folder)
    assert not (server.root / "docs" / "dir").exists(), "empty directories are pruned"


def test_same_size_edit_is_sent(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    f = folder / "same.txt"
    f.write_text("aaaa")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    st = f.stat()
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert run_syncd("sync", config=cfg).returncode == 0
    assert (server.root / "docs" / "same.txt").read_text() == "bbbb"


def test_touch_without_change_is_sent_where_times_are_kept(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """syncd serve keeps the mtime: a touch alone is sent again (the server keeps no new
    version for the same bytes; it updates the time). A remote that keeps no times only has
    the row refreshed (tests/test_remote_versions.py, the planner's rule)."""
    f = folder / "t.txt"
    f.write_text("same")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 5_000_000_000))
    r = run_syncd("sync", config=cfg)
    assert "uploaded 1" in r.stdout, r.stdout
    assert (server.root / "docs" / "t.txt").read_text() == "same"
    assert "uploaded 0" in run_syncd("sync", config=cfg).stdout


def test_ignores_and_syncdignore(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    for rel in [
        "a.txt",
        "build/out.o",
        "src/main.c",
        "src/main.o",
        "notes.swp",
        "x.log",
        "keep.log",
        "node_modules/pkg/index.js",
        ".git/HEAD",
    ]:
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    (folder / ".syncdignore").write_text("*.log\n!keep.log\nnode_modules/\n")
    cfg = mirror_config(
        tmp_path, server, folder, extra_folder='ignore = [".git/", "build/", "*.o"]'
    )
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert sorted(tree_of(server.root / "docs")) == [
        ".syncdignore",
        "a.txt",
        "keep.log",
        "src/main.c",
    ]


def test_special_files_skipped_with_warning(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "real.txt").write_text("real")
    os.mkfifo(folder / "pipe")
    os.symlink("/etc/passwd", folder / "link")
    os.symlink("loop", folder / "loop")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg, timeout=30)  # a FIFO that was opened would hang here
    assert r.returncode == 0, r.stderr
    assert "pipe: named pipe" in r.stderr and "link: symbolic link" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == ["real.txt"]


def test_unreadable_file_fails_the_run_but_not_the_rest(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "ok.txt").write_text("ok")
    (folder / "secret.txt").write_text("no")
    (folder / "secret.txt").chmod(0)
    r = run_syncd("sync", config=mirror_config(tmp_path, server, folder), honour_modes=True)
    assert r.returncode == 1
    assert "docs/secret.txt: cannot open: Permission denied" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == ["ok.txt"]


def test_unreadable_directory_deletes_nothing_under_it(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "locked").mkdir()
    (folder / "locked" / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "locked").chmod(0)
    try:
        r = run_syncd("sync", config=cfg, honour_modes=True)
    finally:
        (folder / "locked").chmod(0o755)
    assert r.returncode == 1
    assert "docs/locked: cannot list directory: Permission denied" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == ["b.txt", "locked/a.txt"]


def test_emptied_or_missing_folder_deletes_nothing(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "a.txt").unlink()
    (folder / "b.txt").unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1
    assert "deleting nothing" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == ["a.txt", "b.txt"]
    folder.rmdir()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 2 and "folder does not exist" in r.stderr
    assert sorted(tree_of(server.root / "docs")) == ["a.txt", "b.txt"]


def test_delete_false_keeps_remote_files(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    cfg = mirror_config(tmp_path, server, folder, extra_folder="delete = false")
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "a.txt").unlink()
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "deleted 0" in r.stdout
    assert sorted(tree_of(server.root / "docs")) == ["a.txt", "b.txt"]


def test_dry_run_changes_nothing(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", "--dry-run", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "upload docs/a.txt" in r.stdout and "nothing changed" in r.stdout
    assert not (server.root / "docs").exists()
    r = run_syncd("sync", config=cfg)
    assert "uploaded 1," in r.stdout


def test_verify_catches_server_side_changes(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    for n in "abc":
        (folder / f"{n}.txt").write_text(n * 10)
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (server.root / "docs" / "a.txt").write_text("A" * 10)  # same size, other bytes
    (server.root / "docs" / "b.txt").unlink()
    (server.root / "docs" / "extra.txt").write_text("x")
    r = run_syncd("verify", config=cfg)
    assert r.returncode == 1
    assert "different:             docs/a.txt" in r.stdout
    assert "missing on the server: docs/b.txt" in r.stdout
    assert "only on the server:    docs/extra.txt" in r.stdout


def test_wrong_token_fails_and_writes_nothing(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, server, folder)
    assert server.token_file is not None
    server.token_file.write_text("not-the-token\n")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1
    assert "refused the credentials (401)" in r.stderr and str(server.token_file) in r.stderr
    assert "not-the-token" not in r.stderr + r.stdout
    assert tree_of(server.root) == {}


def test_server_down_is_a_clear_failure(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    """One line saying so, with the count; each file named at debug level only (-v)."""
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(name)
    cfg = mirror_config(tmp_path, server, folder)
    server.stop()
    r = run_syncd("sync", "-v", config=cfg)
    assert r.returncode == 1
    said = [line for line in r.stderr.splitlines() if " DEBUG " not in line]
    assert said == [
        f"syncd: server {server.url} unreachable (connection refused): 3 files not sent; "
        "nothing recorded"
    ], r.stderr
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        assert f" DEBUG syncd.engine: docs/{name}: not sent: " in r.stderr, r.stderr
    assert "failed 0, not sent 3, " in r.stdout, r.stdout


def test_lost_manifest_adopts_identical_files(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    make_tree(folder)
    (folder / "big.bin").write_bytes(os.urandom(3 << 20))
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    inodes = {p: os.stat(server.root / "docs" / p).st_ino for p in tree_of(folder)}
    for p in (tmp_path / "state").iterdir():
        p.unlink()
    (folder / "a-new-one.txt").write_text("new")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "uploaded 1, deleted 0" in r.stdout
    assert {p: os.stat(server.root / "docs" / p).st_ino for p in inodes} == inodes


def _maxrss_kib(cmd: list[str]) -> tuple[int, int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return proc.returncode, usage.ru_maxrss


def test_large_file_streams_with_flat_memory(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / "small.txt").write_text("x")
    cfg = mirror_config(tmp_path, server, folder)
    cmd = [sys.executable, "-m", "syncd", "sync", "-c", str(cfg)]
    code, baseline = _maxrss_kib(cmd)
    assert code == 0
    size = 200 << 20
    big = folder / "big.bin"
    block = os.urandom(1 << 20)
    with big.open("wb") as f:
        for i in range(size >> 20):
            f.write(block[i:] + block[:i])
    code, peak = _maxrss_kib(cmd)
    assert code == 0
    assert (peak - baseline) < 40 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    h = hashlib.sha256()
    with (server.root / "docs" / "big.bin").open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    with big.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == h.hexdigest()


def test_status_reports_manifest_totals(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    (folder / "a.txt").write_text("12345")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    r = run_syncd("status", "--json", config=cfg)
    assert r.returncode == 4  # in sync as the manifest says, but no daemon runs
    import json

    doc = json.loads(r.stdout)
    assert doc["folders"][0]["files"] == 1 and doc["folders"][0]["bytes"] == 5


def test_bwlimit_applies_to_large_files(tmp_path: Path, server: ServerProc, folder: Path) -> None:
    (folder / "big.bin").write_bytes(os.urandom(4 << 20))
    cfg = mirror_config(tmp_path, server, folder, extra='bwlimit = "2MiB"')
    import time

    t0 = time.monotonic()
    r = run_syncd("sync", config=cfg)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert tree_of(server.root / "docs") == tree_of(folder)
    assert elapsed >= 1.4, f"4 MiB at 2 MiB/s took only {elapsed:.2f}s: bwlimit not applied"
