"""The manifest read as it is asked (not held in memory) and the whole folder compared with it
as two sorted streams (``syncd.look.first_look``): generated folders, rows and changes, each
checked against the plain in-memory answer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd import look
from syncd.config import FolderConfig
from syncd.config_checks import DeleteLimit
from syncd.look import first_look, with_listing
from syncd.manifest import FILENAME, Manifest
from syncd.manifestdb import decoded
from syncd.planner import Looked, Rules, Server, plan
from syncd.scanner import FolderUnavailable, Scanner
from syncd.types import DictRows, LocalFile, RemoteEntry, Row

SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

# Names whose order as paths is the tricky part: '.', '-', '/' and '0' sit next to each other
# in the code points ("a-b" < "a.b" < "a/b" < "a0"), and non-ASCII sorts after all of them.
PART = st.text(alphabet="ab.-0_é€😀", min_size=1, max_size=3).filter(
    lambda s: s not in (".", "..") and not s.startswith(".~syncd-")
)
REL = st.lists(PART, min_size=1, max_size=3).map("/".join)
SHA = "0" * 64


def row(rel: str, n: int) -> Row:
    return Row(rel, n, 10**9 + n, SHA, 1.0, 7, n + 1)


def _no_clash(rels: list[str]) -> list[str]:
    """Paths a folder can hold together: none is a directory of another."""
    out: list[str] = []
    for rel in sorted(set(rels), key=len):
        if not any(rel.startswith(o + "/") or o.startswith(rel + "/") for o in out):
            out.append(rel)
    return out


OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "flush"]), REL, st.integers(0, 50)), max_size=40
)


@given(ops=OPS, dirs=st.lists(REL, max_size=4))
@SETTINGS
def test_rows_read_from_the_file_answer_as_a_dict_would(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, int]], dirs: list[str]
) -> None:
    path = tmp_path_factory.mktemp("m") / FILENAME
    model: dict[str, Row] = {}
    with Manifest(path) as m:
        m.count("s")  # counted from the start: every change must keep the count right
        for op, rel, n in ops:
            if op == "put":
                m.put("s", row(rel, n))
                model[rel] = row(rel, n)
            elif op == "delete":
                m.delete("s", rel)
                model.pop(rel, None)
            else:
                m.flush()
            view = m.rows("s")
            assert view == model and len(view) == len(model) == m.count("s")
            assert dict(m.rows("s").items()) == model
            for d in dirs:
                below = sorted(r for r in model if r.startswith(d + "/"))
                assert sorted(r.rel for r in view.under(d)) == below
                assert view.count_under([d]) == {d: len(below)}
                assert DictRows(model).count_under([d]) == {d: len(below)}
        staged = m.staged_rows("s")
        committed = {decoded(t).rel: decoded(t) for t in m.sorted_rows("s")}
        for rel, r in staged.items():
            if r is None:
                committed.pop(rel, None)
            else:
                committed[rel] = r
        assert committed == model  # the file plus what is staged is what was done
        m.count_under("s", "")  # '' is every row
    with Manifest(path) as m:
        assert m.rows("s") == model and m.count("s") == len(model)
        assert [decoded(t).rel for t in m.sorted_rows("s")] == sorted(model)


@given(
    files=st.lists(REL, max_size=25),
    rows=st.lists(st.tuples(REL, st.booleans()), max_size=25),
    changes=st.lists(st.tuples(st.sampled_from(["put", "delete"]), REL), max_size=6),
)
@SETTINGS
def test_the_sorted_streams_find_what_a_whole_scan_finds(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[str],
    rows: list[tuple[str, bool]],
    changes: list[tuple[str, str]],
) -> None:
    base = tmp_path_factory.mktemp("f")
    folder = base / "folder"
    folder.mkdir()
    for i, rel in enumerate(_no_clash(files)):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (i % 5))
    scanner = Scanner(
        FolderConfig(
            path=folder, remote_path="f", ignore=(), use_default_ignores=False, delete=True
        )
    )
    scan = scanner.scan()
    with Manifest(base / FILENAME) as m:
        for rel, matches in rows:  # rows that match their file, others that do not
            lf = scan.files.get(rel)
            if matches and lf is not None:
                m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
            else:
                m.put("s", row(rel, 3))
        m.flush()
        for op, rel in changes:  # staged, not committed: the look must see them too
            if op == "put" and (lf := scan.files.get(rel)) is not None:
                m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
            else:
                m.delete("s", rel)
        rows_now = dict(m.rows("s").items())
        look = first_look(scanner, m, "s")
        # The naive answer: every file against every row.
        same = {r for r, lf in scan.files.items() if r in rows_now and rows_now[r].same == lf.same}
        assert look.unchanged == len(same)
        assert look.found == len(scan.files)
        assert set(look.scan.files) == set(scan.files) - same
        assert {r.rel for r in look.gone} == set(rows_now) - set(scan.files)
        assert look.in_sync == (not (set(scan.files) - same) and set(rows_now) <= set(scan.files))
        # Planned from the differences or from everything, the plan is the same.
        rules = Rules(ignored=lambda rel, is_dir=False: False, can_move=True)
        a = plan(look.looked(), m.rows("s"), rules)
        b = plan(Looked(scan.files), rows_now, rules)
        assert a.ops == b.ops and a.unchanged == b.unchanged and a.held == b.held


def test_the_walk_is_in_the_order_sqlite_sorts_paths(tmp_path: Path) -> None:
    names = ["a", "a.b", "a-b", "a0", "é", "Z", "a b", "😀", "€"]
    for d in names:
        for f in names:
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / f).write_bytes(b"")
            (tmp_path / (d + f + ".txt")).write_bytes(b"")
    from syncd.scanner import ScanResult

    walked = [
        lf.rel
        for lf in Scanner(
            FolderConfig(
                path=tmp_path, remote_path="t", ignore=(), use_default_ignores=False, delete=True
            )
        ).walk(ScanResult())
    ]
    with Manifest(tmp_path.parent / (tmp_path.name + ".sqlite3")) as m:
        for rel in walked:
            m.put("s", row(rel, 1))
        m.flush()
        assert [decoded(t).rel for t in m.sorted_rows("s")] == walked == sorted(walked)


@given(
    files=st.lists(REL, min_size=2, max_size=30),
    rows=st.lists(st.tuples(REL, st.booleans()), min_size=2, max_size=30),
)
@settings(SETTINGS, max_examples=max(3, settings().max_examples // 10))
def test_a_walk_in_two_processes_is_the_walk_in_one(
    tmp_path_factory: pytest.TempPathFactory, files: list[str], rows: list[tuple[str, bool]]
) -> None:
    base = tmp_path_factory.mktemp("p")
    folder = base / "folder"
    folder.mkdir()
    for i, rel in enumerate(_no_clash(files)):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"y" * (i % 3))
    (folder / "z\udcff").write_bytes(b"")  # skipped (not UTF-8): in one part
    os.mkfifo(folder / "fifo")  # skipped too: counted once, whichever part met it
    cfg = FolderConfig(
        path=folder, remote_path="p", ignore=(), use_default_ignores=False, delete=True
    )
    one, two = Scanner(cfg), Scanner(cfg)
    full = one.scan().files
    with Manifest(base / FILENAME) as m:
        for rel, matches in rows:
            lf = full.get(rel)
            if matches and lf is not None:
                m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
            else:
                m.put("s", row(rel, 4))
        m.flush()
        a = first_look(one, m, "s", parts=1)
        b = first_look(two, m, "s", parts=2)
        # A second process that cannot start or dies: the rest is walked by the first.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(look.sys, "executable", "/bin/false")
            c = first_look(Scanner(cfg), m, "s", parts=2)
    for other in (b, c):
        assert other.scan.files == a.scan.files and list(other.scan.files) == list(a.scan.files)
        assert other.gone == a.gone and (other.unchanged, other.found) == (a.unchanged, a.found)
        assert sorted(other.scan.skips) == sorted(a.scan.skips)
        assert other.scan.skipped == a.scan.skipped
        assert sorted(other.scan.problems) == sorted(a.scan.problems)


def test_a_folder_of_many_entries_is_split_and_each_part_counts(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    for d in "abcdefghij":
        for i in range(3):
            (folder / d).mkdir(parents=True, exist_ok=True)
            (folder / d / f"{i}.txt").write_bytes(b"z" * i)
    (folder / "b" / "1.txt").write_bytes(b"changed")  # after the rows below are made
    cfg = FolderConfig(
        path=folder, remote_path="p", ignore=(), use_default_ignores=False, delete=True
    )
    with Manifest(tmp_path / FILENAME) as m:
        for rel, lf in Scanner(cfg).scan().files.items():
            m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
        m.put("s", row("h/gone.txt", 1))
        m.put("s", row("b/1.txt", 1))
        m.flush()
        split = look._split(tmp_path / FILENAME, "s", 2)
        assert split is not None and "a/" < split <= "j/"
        two = first_look(Scanner(cfg), m, "s", parts=2)
    assert (two.found, two.unchanged) == (30, 29)
    assert list(two.scan.files) == ["b/1.txt"] and [r.rel for r in two.gone] == ["h/gone.txt"]


@given(
    files=st.lists(REL, max_size=20),
    rows=st.lists(st.tuples(REL, st.booleans()), max_size=20),
    listed=st.lists(st.tuples(REL, st.sampled_from(["same", "size", "sha", "none"])), max_size=20),
    first_contact=st.booleans(),
    max_delete=st.sampled_from([None, "2", "50%"]),
)
@SETTINGS
def test_a_listing_reduced_to_the_differences_plans_what_the_whole_listing_plans(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[str],
    rows: list[tuple[str, bool]],
    listed: list[tuple[str, str]],
    first_contact: bool,
    max_delete: str | None,
) -> None:
    base = tmp_path_factory.mktemp("l")
    folder = base / "folder"
    folder.mkdir()
    for i, rel in enumerate(_no_clash(files)):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"w" * (i % 4))
    cfg = FolderConfig(
        path=folder, remote_path="l", ignore=(), use_default_ignores=False, delete=True
    )
    scanner = Scanner(cfg)
    scan = scanner.scan()
    with Manifest(base / FILENAME) as m:
        for rel, matches in rows:
            lf = scan.files.get(rel)
            if matches and lf is not None:
                m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
            else:
                m.put("s", row(rel, 3))
        m.flush()
        rows_now = dict(m.rows("s").items())
        entries: dict[str, RemoteEntry] = {}
        for rel, how in listed:  # what the server holds: as the row says, or not
            r = rows_now.get(rel)
            size = r.size if r is not None else (lf.size if (lf := scan.files.get(rel)) else 2)
            sha = r.sha256 if r is not None else "1" * 64
            entries[rel] = RemoteEntry(
                rel,
                size + (how == "size"),
                None if how == "none" else sha if how != "sha" else "2" * 64,
            )
        rules = Rules(
            ignored=lambda rel, is_dir=False: False,
            can_move=True,
            max_delete=DeleteLimit.parse(max_delete) if max_delete else None,
        )
        whole_plan = plan(
            Looked(scan.files), rows_now, rules, server=Server(dict(entries), first_contact)
        )
        first = first_look(scanner, m, "s")
        looked, reduced = with_listing(
            first, Server(dict(entries), first_contact), m.sorted_rows("s"), scanner.stat
        )
        delta_plan = plan(looked, m.rows("s"), rules, server=reduced)
    assert delta_plan.ops == whole_plan.ops
    assert sorted(delta_plan.forget) == sorted(whole_plan.forget)
    assert delta_plan.hints == whole_plan.hints
    assert (delta_plan.unchanged, delta_plan.held, delta_plan.held_new) == (
        whole_plan.unchanged,
        whole_plan.held,
        whole_plan.held_new,
    )
    assert [p.reason for p in delta_plan.held_back] == [p.reason for p in whole_plan.held_back]
    assert reduced.total == len(entries) and len(reduced.entries) <= len(entries)


def test_a_walk_in_two_parts_whose_first_part_fails_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder goes away while the first part walks: the error reaches the caller, and the
    second part's process is stopped and waited for (it was left a zombie)."""
    folder = tmp_path / "folder"
    for d in "abcd":
        (folder / d).mkdir(parents=True)
        (folder / d / "x.txt").write_bytes(b"x")
    cfg = FolderConfig(
        path=folder, remote_path="p", ignore=(), use_default_ignores=False, delete=True
    )
    started: list[look._Part] = []
    start = look._Part.start

    def keep(job: look.Job) -> look._Part | None:
        part = start(job)
        assert part is not None
        started.append(part)
        return part

    def gone(*args: object, **kwargs: object) -> Iterator[LocalFile]:
        raise FolderUnavailable(folder, "gone")
        yield  # (a generator, as Scanner.walk is)

    with Manifest(tmp_path / FILENAME) as m:
        for rel, lf in Scanner(cfg).scan().files.items():
            m.put("s", Row(rel, lf.size, lf.mtime_ns, SHA, 1.0, lf.ctime_ns, lf.inode))
        m.flush()
        scanner = Scanner(cfg)
        monkeypatch.setattr(look._Part, "start", keep)
        monkeypatch.setattr(scanner, "walk", gone)
        with pytest.raises(FolderUnavailable):
            first_look(scanner, m, "s", parts=2)
    assert len(started) == 1 and started[0].proc.returncode is not None
