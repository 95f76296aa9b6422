"""Hostile tests of issue 16's manifest work: rows read from SQLite when asked (an overlay of
staged changes), the whole-folder look as two sorted streams (in two processes for a big
folder), the planner given the differences, the daemon's skipped second look.

Each test asserts what syncd promises. Those whose docstring tells of a defect failed before
it was fixed (a hostile review of that work); the others cover what was looked for and held.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from syncd.config import FolderConfig
from syncd.errors import ManifestError
from syncd.look import first_look
from syncd.manifest import FILENAME, Manifest
from syncd.planner import Rules, plan
from syncd.scanner import Scanner
from syncd.types import LocalFile, OpKind, Row

SHA = "0" * 64


def _folder_cfg(folder: Path) -> FolderConfig:
    return FolderConfig(
        path=folder, remote_path="p", ignore=(), use_default_ignores=False, delete=True
    )


def _row(lf: LocalFile) -> Row:
    return Row(lf.rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode, lf.executable)


def _tree(folder: Path, tops: str = "abcdef", per: int = 3) -> None:
    for d in tops:
        (folder / d).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            (folder / d / f"{i}.txt").write_text(f"{d}{i}")


def _recorded(m: Manifest, scanner: Scanner, scope: str = "s") -> None:
    """Every file of the folder recorded as sent, as it is now (committed)."""
    for lf in scanner.scan().files.values():
        m.put(scope, _row(lf))
    m.flush()


def _all_rows(m: Manifest, scope: str = "s") -> dict[str, Row]:
    return dict(m.rows(scope).items())


# -- the look in two processes -----------------------------------------------------------------
def test_a_bad_ignore_line_is_warned_once_when_the_walk_runs_in_two_parts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was a defect. A .syncdignore line that cannot be used is warned about once per scanner,
    however often the folder is scanned (scanner.py: ``_bad_warned``). The second part of a walk
    builds a Scanner of its own in the child (lookpart -> ``_look_part``), which warns again, and
    the parent replays the child's log: one more warning on every whole look (every rescan of a
    folder of 200,000 rows or more)."""
    folder = tmp_path / "f"
    _tree(folder)
    (folder / ".syncdignore").write_text("\\\n*.log\n")  # line 1: a lone backslash
    cfg = _folder_cfg(folder)
    with caplog.at_level(logging.WARNING, logger="syncd"):
        scanner = Scanner(cfg)  # warns once here
        with Manifest(tmp_path / FILENAME) as m:
            _recorded(m, scanner)
            for _ in range(3):
                look = first_look(scanner, m, "s", parts=2)
                assert look.in_sync
    said = [r.getMessage() for r in caplog.records if "the line is not used" in r.getMessage()]
    assert len(said) == 1, said


def test_the_second_part_of_a_walk_runs_no_code_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a defect. The second part of a walk is ``python -m syncd.lookpart``; ``-m`` puts the
    current directory first on sys.path, so a ``syncd`` package there (a checkout of another
    version, or anything named so) is what the child imports and runs, not the syncd that started
    it. The console script `syncd` itself never imports from the current directory."""
    folder = tmp_path / "f"
    _tree(folder)
    elsewhere = tmp_path / "cwd"
    (elsewhere / "syncd").mkdir(parents=True)
    marker = tmp_path / "foreign-code-ran"
    (elsewhere / "syncd" / "__init__.py").write_text("")
    (elsewhere / "syncd" / "lookpart.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(1)\n"
    )
    cfg = _folder_cfg(folder)
    with Manifest(tmp_path / FILENAME) as m:
        _recorded(m, Scanner(cfg))
        monkeypatch.chdir(elsewhere)
        look = first_look(Scanner(cfg), m, "s", parts=2)
    assert look.in_sync and look.found == 18
    assert not marker.exists(), "the child ran foreign code from the current directory"


# -- the overlay and the count -----------------------------------------------------------------
def test_a_row_that_cannot_be_stored_is_left_out_also_when_the_rows_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was a defect. "A change that cannot be stored is left out of its batch with one warning; the
    rest of the batch is written" (manifest.py). Once the folder's rows have been counted
    (``count``: the status line does it every second, the guard on every plan), staging a
    change reads the row it replaces by a point query (``_stage`` -> ``get``), and a path that is
    not UTF-8 makes that query raise UnicodeEncodeError out of ``put``/``delete`` itself."""
    good = Row("good", 1, 1, SHA, 1.0, 2, 3)
    with Manifest(tmp_path / FILENAME) as m:
        assert m.count("s") == 0
        m.put("s", good)
        m.put("s", Row("bad\udcffname", 1, 1, SHA, 1.0, 2, 3))  # raises now
        m.delete("s", "also\udcffbad")
        assert m.get("s", "bad\udcffname") in (None, Row("bad\udcffname", 1, 1, SHA, 1.0, 2, 3))
        with caplog.at_level(logging.WARNING, logger="syncd.manifest"):
            m.flush()
        assert _all_rows(m) == {"good": good}
        assert m.count("s") == 1


def test_the_count_is_true_after_a_commit_that_failed(tmp_path: Path) -> None:
    """Was a defect. A commit that fails (the disk full, the file locked: ManifestError) drops its
    staged statements but leaves their rows in the overlay, and the count kept by ``_stage``
    counts them. The next commit that succeeds clears the overlay up to its stamp, so the rows
    silently go back to what the file holds -- but the count keeps the lost change for the
    rest of the process: `syncd status`'s files, and the guard's "of N mirrored files"
    (max_delete's percentage is taken of it)."""
    path = tmp_path / FILENAME
    with Manifest(path) as m:
        for i in range(10):
            m.put("s", Row(f"old{i}", 1, 1, SHA, 1.0, 2, 3))
        m.flush()
        assert m.count("s") == 10
        for i in range(10):
            m.put("s", Row(f"new{i}", 1, 1, SHA, 1.0, 2, 3))
        m._db.execute("PRAGMA busy_timeout=50")  # (else the lock below is waited for 5 s)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file: the commit fails
        with pytest.raises(ManifestError):
            m.flush()
        other.execute("ROLLBACK")
        other.close()
        m.put("s", Row("later", 1, 1, SHA, 1.0, 2, 3))
        m.flush()  # succeeds
        readable = _all_rows(m)
        with Manifest(path) as fresh:
            on_file = _all_rows(fresh)
        assert readable == on_file  # (nothing is staged: the view is the file)
        assert m.count("s") == len(readable), (m.count("s"), len(readable))


def test_the_first_count_is_right_when_a_commit_lands_while_counting(tmp_path: Path) -> None:
    """A race, forced here in its order. ``count`` reads ``count(*)`` and then asks,
    row by row, whether each staged row is committed, each a separate statement of the reader
    connection (autocommit: each sees the latest commit). ``aflush`` commits in a thread while
    the event loop goes on: if that commit lands between the two reads, every staged new row is
    counted neither in ``count(*)`` nor as uncommitted, and the wrong count is cached for the
    life of the process (``_counts``). Here the thread's commit (``_write``) is run exactly at
    the first of those per-row reads."""
    path = tmp_path / FILENAME
    with Manifest(path) as m:
        for i in range(5):
            m.put("s", Row(f"old{i}", 1, 1, SHA, 1.0, 2, 3))
        m.flush()
        for i in range(5):
            m.put("s", Row(f"new{i}", 1, 1, SHA, 1.0, 2, 3))
        batch = m._take()  # aflush: taken on the loop, written in a thread ...
        assert batch is not None
        committed = m._committed
        landed: list[bool] = []

        def commit_lands_now(scope: str, rel: str) -> bool:
            if not landed:
                landed.append(True)
                m._write(batch)  # ... which finishes here, between count's two reads
            return committed(scope, rel)

        m._committed = commit_lands_now  # type: ignore[method-assign]
        n = m.count("s")
        m._committed = committed  # type: ignore[method-assign]
        assert landed
        assert n == 10, n


# -- the planner given the differences ---------------------------------------------------------
def test_a_file_sent_again_while_the_look_ran_is_not_deleted(tmp_path: Path) -> None:
    """A race, its steps made in order here. A whole look runs in a thread while live
    batches go on. The walk passes ``p.txt`` while it is away (an editor's delete-and-write, a
    `mv` out and back): the look reports its row gone. Before the plan is made, the live batch
    sends the new ``p.txt`` and records its row. The planner takes ``Looked.gone`` against "the
    rows as they are now" (planner.py step 3) -- and deletes the file just sent, whose row is
    not the row the look found gone. The server loses a file the folder has, and its row goes
    with the delete: nothing sends it again until the next rescan. The look's row and the row
    now differ (another inode, mtime, synced_at): the planner has what it needs to see it."""
    folder = tmp_path / "f"
    _tree(folder, "ab")
    (folder / "p.txt").write_text("first")
    scanner = Scanner(_folder_cfg(folder))
    with Manifest(tmp_path / FILENAME) as m:
        _recorded(m, scanner)
        (folder / "p.txt").unlink()
        look = first_look(scanner, m, "s")  # the walk finds p.txt away
        assert [r.rel for r in look.gone] == ["p.txt"]
        # ... and meanwhile the live batch: p.txt written again, sent, its row recorded.
        (folder / "p.txt").write_text("second, longer")
        lf = scanner.stat("p.txt")
        assert lf is not None
        m.put("s", _row(lf))
        m.flush()
        p = plan(look.looked(), m.rows("s"), Rules(ignored=lambda rel, is_dir=False: False))
    deleted = [op.rel for op in p.ops if op.kind is OpKind.DELETE]
    assert "p.txt" not in deleted, p.ops


# -- the walk's order against SQLite's ---------------------------------------------------------
@pytest.mark.parametrize("parts", [1, 2])
def test_names_around_the_slash_and_beyond_ascii_match_their_rows(
    tmp_path: Path, parts: int
) -> None:
    """Holds. Directories and files whose names sort next to '/' ('!', ' ', '-', '.', '0'),
    non-ASCII (NFC and NFD of one name both), astral characters and long names: every file
    matches its row, in one walk and in two."""
    folder = tmp_path / "f"
    names = ["a", "a b", "a!", "a-b", "a.txt", "a0", "é", "e\u0301", "\U0001f600", "z" * 200]
    dirs = ["a", "a-b", "é", "\U0001f600", "a b"]
    for d in dirs:
        for f in names:
            (folder / d / f).parent.mkdir(parents=True, exist_ok=True)
            (folder / d / f).write_text(d + f)
    for f in names:
        if f not in dirs:
            (folder / f).write_text(f)
        (folder / (f + "x")).write_text(f)
    scanner = Scanner(_folder_cfg(folder))
    with Manifest(tmp_path / FILENAME) as m:
        _recorded(m, scanner)
        look = first_look(scanner, m, "s", parts=parts)
        assert look.in_sync and look.gone == [] and not look.scan.files
        assert look.found == look.unchanged == m.count("s")


def test_rows_staged_under_a_moved_tree_move_with_it(tmp_path: Path) -> None:
    """Holds. A directory moved twice before a commit (staged rows under it, committed ones
    too), a sibling sharing its prefix untouched; the count follows."""
    from syncd.recorder import Recorder

    with Manifest(tmp_path / FILENAME) as m:
        rec = Recorder(m)
        m.count("s")
        for rel in ["a/1", "a/2", "a.txt", "a-b/1", "a0"]:
            m.put("s", Row(rel, 1, 1, SHA, 1.0, 2, 3))
        m.flush()
        m.put("s", Row("a/3", 1, 1, SHA, 1.0, 2, 3))  # staged only
        rec.moved("s", "a", "b", None, tree=True)
        rec.moved("s", "b", "c/d", None, tree=True)
        want = {"a.txt", "a-b/1", "a0", "c/d/1", "c/d/2", "c/d/3"}
        assert set(m.rows("s")) == want and m.count("s") == 6
        m.flush()
        assert set(m.rows("s")) == want and m.count("s") == 6
        assert rec.deleted("s", "c", tree=True) == 3
        assert m.count_under("s", "c") == 0 and m.count("s") == 3


def test_the_walk_in_two_parts_keeps_rows_under_an_unreadable_directory(
    tmp_path: Path,
) -> None:
    """Holds. A directory of the second part that cannot be listed is incomplete there, and
    nothing below it is deleted, as with the one-part walk (run with the capabilities that let
    root read anything dropped, so that chmod 000 means what it says)."""
    import subprocess

    folder = tmp_path / "f"
    _tree(folder, "abcdefgh")
    scanner = Scanner(_folder_cfg(folder))
    with Manifest(tmp_path / FILENAME) as m:
        _recorded(m, scanner)
    (folder / "g").chmod(0)
    code = (
        "import sys; from pathlib import Path\n"
        "from syncd.look import first_look\n"
        "from syncd.manifest import Manifest\n"
        "from syncd.scanner import Scanner\n"
        "from syncd.config import FolderConfig\n"
        "from syncd.planner import Rules, plan\n"
        f"cfg = FolderConfig(path=Path({str(folder)!r}), remote_path='p', ignore=(),"
        " use_default_ignores=False, delete=True)\n"
        f"with Manifest(Path({str(tmp_path / FILENAME)!r})) as m:\n"
        "    for parts in (1, 2):\n"
        "        look = first_look(Scanner(cfg), m, 's', parts=parts)\n"
        "        rules = Rules(ignored=lambda r, is_dir=False: False)\n"
        "        p = plan(look.looked(), m.rows('s'), rules)\n"
        "        print(parts, [op.rel for op in p.ops], look.scan.incomplete, look.found)\n"
    )
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        (folder / "g").chmod(0o755)
    lines = out.splitlines()
    assert lines == ["1 [] ['g'] 21", "2 [] ['g'] 21"], out


def test_two_commits_in_flight_leave_the_last_change_recorded(tmp_path: Path) -> None:
    """A race, its order forced here. ``aflush`` takes the staged statements on the
    loop and writes them in a worker thread; nothing orders two of them (the flush loop's,
    every 0.5 s, and any ``recorder.flush()`` meanwhile): the later batch's thread may take the
    writer lock first. Then the later change is committed first and the earlier one over it --
    the file keeps the older row -- and, since the overlay is dropped up to the later batch's
    stamp as soon as it is in, the daemon itself reads the older row from then on (before this
    change, its in-memory rows kept the newer one)."""
    import asyncio
    import threading

    v1 = Row("x", 1, 1, SHA, 1.0, 2, 3)
    v2 = Row("x", 2, 2, "1" * 64, 2.0, 4, 5)
    path = tmp_path / FILENAME
    with Manifest(path) as m:
        real = m._write
        first_may_go = threading.Event()
        writes: list[int] = []

        def write(batch: Any) -> int:
            writes.append(len(batch.statements))
            if len(writes) == 1:  # the first batch's thread reaches the lock last
                first_may_go.wait(1)  # (no more: a commit in order waits for this one)
                return real(batch)
            try:
                return real(batch)
            finally:
                first_may_go.set()

        m._write = write  # type: ignore[method-assign]

        async def two_flushes() -> None:
            m.put("s", v1)
            first = asyncio.create_task(m.aflush())
            await asyncio.sleep(0)  # (it has taken its batch and handed it to a thread)
            m.put("s", v2)
            await m.aflush()
            await first

        asyncio.run(two_flushes())
        m._write = real  # type: ignore[method-assign]
        assert writes == [1, 1]
        assert m.get("s", "x") == v2
    with Manifest(path) as m:
        assert m.get("s", "x") == v2


# -- real processes ----------------------------------------------------------------------------
def _rows_on_file(state_dir: Path) -> set[str]:
    db = sqlite3.connect(f"file:{state_dir / FILENAME}?mode=ro", uri=True)
    try:
        return {p for (p,) in db.execute("SELECT path FROM files")}
    finally:
        db.close()


def test_syncd_run_commits_again_after_one_commit_failed(tmp_path: Path) -> None:
    """Was a defect. Under `syncd run` live changes are committed only by the recorder's flush loop
    (every 0.5 s). One commit that fails -- the manifest locked by another writer for longer
    than the 5 s busy timeout, a disk full for a moment -- raises out of ``_flush_loop``: the
    task ends, ``running()`` sees a task (done) and never starts another, and no change is
    committed again until the daemon stops. A crash or power cut then loses every change since
    (each file is sent again: the promise is "at most the last batch"), and every change stays
    in memory meanwhile (the overlay). Nothing is logged -- until a clean stop: ``_drain`` ->
    ``stop_pool`` -> ``Recorder.stop`` awaits the dead task, its old ManifestError ("database is
    locked", long after the lock went) ends the stop before the last ``flush``: the daemon exits
    1 and the rows of everything sent since the failure are never written, even by a clean
    stop."""
    import secrets
    import signal
    import time

    from tests.conftest import DaemonProc, mirror_config, run_syncd, start_server, wait_for

    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(24))
    token.chmod(0o600)
    (tmp_path / "srv").mkdir()
    srv = start_server(tmp_path / "srv", token)
    folder = tmp_path / "Docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, srv, folder, extra="debounce = 0.1")
    try:
        assert run_syncd("sync", config=cfg).returncode == 0
        d = DaemonProc(cfg, tmp_path / "d.log")
        try:
            other = sqlite3.connect(tmp_path / "state" / FILENAME, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another writer: the next commit fails
            try:
                (folder / "b.txt").write_text("b")
                wait_for(lambda: (srv.root / "docs" / "b.txt").exists(), 20, "b.txt sent")
                time.sleep(7)  # the flush loop's commit waits its 5 s for the lock, and fails
            finally:
                other.execute("ROLLBACK")
                other.close()
            (folder / "c.txt").write_text("c")
            wait_for(lambda: (srv.root / "docs" / "c.txt").exists(), 20, "c.txt sent")
            try:  # (committed within 0.5 s when the flush loop runs)
                wait_for(lambda: {"b.txt", "c.txt"} <= _rows_on_file(tmp_path / "state"), 10)
                committed_while_running = True
            except AssertionError:
                committed_while_running = False
        finally:
            code = d.stop(signal.SIGTERM)  # a clean stop commits what is staged
        log = d.log()
        assert {"b.txt", "c.txt"} <= _rows_on_file(tmp_path / "state"), log
        assert code == 0, log
        assert committed_while_running, "the rows waited for the stop"
    finally:
        srv.stop()


def test_syncd_sync_of_a_big_folder_warns_once_about_a_bad_ignore_line(
    tmp_path: Path, server: object
) -> None:
    """Was a defect. The same defect as the two-part test above, as `syncd sync` shows it: a folder
    of 200,000 rows or more is walked in two processes, and the bad line of its .syncdignore
    is warned about twice in one run (once by the sync's scanner, once more by the child's,
    replayed). The rows here are of files long gone (the guard holds their deletion)."""
    from tests.conftest import ServerProc, mirror_config, run_syncd

    assert isinstance(server, ServerProc)
    folder = tmp_path / "Docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    cfg = mirror_config(tmp_path, server, folder, extra="max_delete = 10")
    assert run_syncd("sync", config=cfg).returncode == 0
    db = sqlite3.connect(tmp_path / "state" / FILENAME, isolation_level=None)
    try:
        ((scope,),) = db.execute("SELECT DISTINCT scope FROM files").fetchall()
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO files VALUES (?, ?, 1, 1, ?, 1.0, 2, 3, 0)",
            ((scope, f"gone/{i:06}", SHA) for i in range(200_000)),
        )
        db.execute("COMMIT")
    finally:
        db.close()
    (folder / ".syncdignore").write_text("\\\n*.log\n")
    r = run_syncd("sync", config=cfg, timeout=300)
    assert "deleting nothing" in r.stdout + r.stderr, r.stdout + r.stderr
    said = (r.stdout + r.stderr).count("the line is not used")
    assert said == 1, r.stderr


def test_syncd_sync_moves_and_deletes_whole_directories_beside_prefix_siblings(
    tmp_path: Path, server: object
) -> None:
    """Holds. Planned from the differences (the server's token unchanged: no listing), a
    directory renamed whole is one move and a directory deleted whole is one delete, while its
    siblings sharing its name's prefix (`a.txt`, `a-b/`, `a0`, `a b/`) and a directory that kept
    one unchanged file are left alone; the server ends up holding the folder."""
    from tests.conftest import ServerProc, mirror_config, run_syncd
    from tests.test_sync import tree_of
    from tests.test_trust import mirror

    assert isinstance(server, ServerProc)
    folder = tmp_path / "Docs"
    for top in ["a", "a-b", "a b", "keep", "p"]:
        for i in range(4):
            (folder / top / f"{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (folder / top / f"{i}.txt").write_text(f"{top}{i}")
    (folder / "a.txt").write_text("a.txt")
    (folder / "a0").write_text("a0")
    cfg = mirror_config(tmp_path, server, folder)
    assert run_syncd("sync", config=cfg).returncode == 0
    (folder / "p").rename(folder / "q")  # a whole move
    for i in range(4):
        (folder / "a" / f"{i}.txt").unlink()
    (folder / "a").rmdir()  # a whole delete
    (folder / "keep" / "sub").mkdir()
    for i in range(3):  # three of four moved below: not a whole move of keep
        (folder / "keep" / f"{i}.txt").rename(folder / "keep" / "sub" / f"{i}.txt")
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mirror(server.root / "docs") == tree_of(folder)
    assert "uploaded 0" in r.stdout, r.stdout
