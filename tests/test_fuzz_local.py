"""Generated inputs on the workstation side: timestamps, file names, sizes, ignore files, deep
trees and skipped paths. A pass never crashes; what can be mirrored is; what cannot is skipped
with one warning naming the file (escaped) and the reason; the manifest keeps every other row.

The in-process properties run the scanner and the manifest directly; the pass-level ones run
the real ``syncd sync`` / ``syncd run`` against a real ``syncd serve`` (tests/conftest.py), one
pass per example, so their example counts are scaled down from the profile's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import subprocess
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.config import FolderConfig
from syncd.hashing import INLINE, SMALL
from syncd.ignore import IGNORE_FILE
from syncd.manifest import FILENAME, Manifest
from syncd.manifestdb import decoded
from syncd.remotes.body import PIECE, SENDFILE_MIN
from syncd.scanner import Scanner
from syncd.types import Row, shown
from tests.conftest import DaemonProc, ServerProc, mirror_config, run_syncd, wait_for

#: Tests that start one `syncd sync` per example run this many examples (the "long" profile
#: gives more). A fixture per test (the server) serves every example, each in its own folder.
PASS_EXAMPLES = max(2, settings().max_examples // 20)
_SUPPRESS = [*settings().suppress_health_check, HealthCheck.function_scoped_fixture]
PASS_SETTINGS = settings(max_examples=PASS_EXAMPLES, suppress_health_check=_SUPPRESS)
NO_FIXTURE_CHECK = settings(suppress_health_check=_SUPPRESS)

# -- timestamps ----------------------------------------------------------------------------------

#: What os.utime can be asked for (seconds must fit a time_t); the filesystem clamps to its
#: own range: ext4 keeps -2**31 s .. 15032385535.999999999 s, more than an int64 of ns holds;
#: tmpfs and btrfs keep 64-bit seconds, 10**27 ns and more.
UTIME_NS = st.integers(min_value=-(2**63) * 10**9, max_value=(2**63 - 1) * 10**9 + 999_999_999)
EDGES = [
    0,
    -1,
    1,
    2**31 * 10**9,
    -(2**31) * 10**9,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    15032385535 * 10**9 + 999_999_999,
    2**64,
    -(2**63) * 10**9,
    (2**63 - 1) * 10**9 + 999_999_999,
]
TIMES = st.one_of(st.sampled_from(EDGES), UTIME_NS, st.integers(-(2**64), 2**64))
INODES = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


@given(rows=st.lists(st.tuples(TIMES, TIMES, INODES), min_size=1, max_size=6))
@NO_FIXTURE_CHECK
def test_manifest_stores_every_timestamp_exactly(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("manifest") / FILENAME
    want = {
        f"f{i}": Row(f"f{i}", i, mt, "0" * 64, 1.0, ct, ino) for i, (mt, ct, ino) in enumerate(rows)
    }
    with Manifest(path) as m:
        for row in want.values():
            m.put("s", row)
        m.flush()
    with Manifest(path) as m:
        assert [decoded(t) for t in m.sorted_rows("s")] == sorted(want.values())
        assert m.rows("s") == want
        assert dict(m.rows("s").items()) == want
        assert m.count("s") == len(want)


def test_one_bad_row_never_loses_its_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A path that cannot be stored (not UTF-8: the scanner refuses those, the manifest must
    # not depend on it) is skipped with one warning; the rest of the batch is written.
    path = tmp_path / FILENAME
    good = [Row(f"good{i}", i, 10**18 + i, "0" * 64, 1.0, 5, 6) for i in range(3)]
    with Manifest(path) as m:
        m.put("s", good[0])
        m.put("s", Row("bad\udcff\nname", 1, 1, "0" * 64, 1.0))
        m.put("s", good[1])
        m.outbox_add("s", "also\udcffbad")
        m.put("s", good[2])
        with caplog.at_level(logging.WARNING, logger="syncd.manifest"):
            m.flush()
        m.put("s", good[0]._replace(size=99))  # the connection is still usable
        m.flush()
    with Manifest(path) as m:
        assert m.rows("s") == {r.rel: r for r in [good[0]._replace(size=99), *good[1:]]}
        assert m.outbox() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "bad\\xff\\nname" in warnings[0] and "\n" not in warnings[0]
    assert "also\\xffbad" in warnings[1]


def _read_rows(state_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) by path, read from the manifest file as a second process would."""
    db = sqlite3.connect(f"file:{state_dir / FILENAME}?mode=ro", uri=True)
    try:
        return {p: (s, int(m)) for p, s, m in db.execute("SELECT path, size, mtime_ns FROM files")}
    finally:
        db.close()


def _server_files(root: Path) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    broot = os.fsencode(root)
    for dirpath, _dirs, files in os.walk(broot):
        for name in files:
            if not name.startswith(b".~syncd-"):
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, broot)] = f.read()
    return out


@given(times=st.lists(UTIME_NS, min_size=1, max_size=8))
@example(times=EDGES)
@PASS_SETTINGS
def test_sync_mirrors_files_of_every_timestamp(
    tmp_path: Path, server: ServerProc, times: list[int]
) -> None:
    case = tmp_path / uuid.uuid4().hex[:8]
    folder = case / "f"
    folder.mkdir(parents=True)
    want: dict[str, int] = {}
    for i, ns in enumerate(times):
        p = folder / f"t{i}.txt"
        p.write_text(f"time {ns}")
        os.utime(p, ns=(ns, ns))
        want[p.name] = p.stat().st_mtime_ns  # as the filesystem clamped it
    cfg = mirror_config(case, server, folder, remote_path=case.name)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert _server_files(server.root / case.name) == {
        n.encode(): (folder / n).read_bytes() for n in want
    }
    assert _read_rows(case / "state") == {
        n: ((folder / n).stat().st_size, ns) for n, ns in want.items()
    }
    r = run_syncd("sync", config=cfg)  # and the next pass finds nothing to do
    assert r.returncode == 0 and "uploaded 0" in r.stdout + r.stderr, r.stdout + r.stderr


def test_daemon_keeps_the_batch_of_a_file_with_a_far_future_mtime(
    tmp_path: Path, server: ServerProc
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.05\n")
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        names = [f"n{i}.txt" for i in range(5)]
        far = 15032385535 * 10**9  # year 2446: the most ext4 keeps, more than int64 ns
        for name in names:
            (folder / name).write_text(name)
        os.utime(folder / names[2], ns=(far, far))
        want = {n: (folder / n).stat().st_mtime_ns for n in names}
        wait_for(
            lambda: sorted(os.fsdecode(p) for p in _server_files(server.root / "docs")) == names,
            30,
            "every file on the server",
        )
        wait_for(
            lambda: {p: m for p, (_s, m) in _read_rows(tmp_path / "state").items()} == want,
            30,
            "every row in the manifest",
        )
        assert daemon.proc.poll() is None, daemon.log()
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()


# -- file names ----------------------------------------------------------------------------------

#: Any byte but NUL and '/', any length up to the 255-byte limit.
NAME_BYTES = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"\0" not in b and b"/" not in b and b not in (b".", b"..")
)
TEXT_NAME = (
    st.text(
        st.characters(exclude_characters="\0/", exclude_categories=("Cs",)), min_size=1, max_size=60
    )
    .map(lambda s: s.encode("utf-8")[:255].decode("utf-8", "ignore"))
    .filter(lambda s: s not in ("", ".", ".."))
)


@st.composite
def names(draw: st.DrawFn, max_size: int = 12, newline: bool = True) -> list[bytes]:
    """Raw names with their NFC/NFD and case twins."""
    out: list[bytes] = []
    for text in draw(st.lists(TEXT_NAME, max_size=max_size // 2)):
        out.append(text.encode())
        for twin in (
            unicodedata.normalize("NFD", text),
            unicodedata.normalize("NFC", text),
            text.swapcase(),
        ):
            if len(twin.encode()) <= 255 and twin not in (".", ".."):
                out.append(twin.encode())
    out += draw(st.lists(NAME_BYTES, max_size=max_size // 2))
    out = [n for n in out if n != IGNORE_FILE.encode() and (newline or b"\n" not in n)]
    return list(dict.fromkeys(out))


def mirrorable(name: bytes) -> bool:
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not text.startswith(".~syncd-")


def folder_config(path: Path, ignore: tuple[str, ...] = (), defaults: bool = False) -> FolderConfig:
    return FolderConfig(
        path=path, remote_path="docs", ignore=ignore, use_default_ignores=defaults, delete=True
    )


def one_line(message: str) -> bool:
    """Can this message be printed as one log line that nothing forged?"""
    return shown(message) == message


@given(batch=names(max_size=16))
@NO_FIXTURE_CHECK
def test_scanner_takes_every_name_a_filesystem_allows(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture, batch: list[bytes]
) -> None:
    root = tmp_path_factory.mktemp("names")
    broot = os.fsencode(root)
    sub = os.path.join(broot, b"sub")
    os.mkdir(sub)
    placed: list[tuple[str, bytes]] = []
    for i, name in enumerate(batch):
        where = sub if i % 3 == 2 else broot
        path = os.path.join(where, name)
        if os.path.exists(path):
            continue  # a twin the filesystem folds (not on Linux, but be exact)
        with open(path, "wb") as f:
            f.write(name)
        rel = (b"sub/" if where == sub else b"") + name
        placed.append((os.fsdecode(rel), name))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="syncd.scanner"):
        scan = Scanner(folder_config(root)).scan()
    assert not scan.problems
    want = {rel for rel, name in placed if mirrorable(name)}
    assert set(scan.files) == want
    for rel in want:
        size = len(rel.rsplit("/", 1)[-1].encode())
        assert scan.files[rel].size == size
    messages = [r.getMessage() for r in caplog.records]
    assert all(one_line(m) for m in messages), messages
    for rel, name in placed:
        if not mirrorable(name):
            assert any(shown(rel) in m for m in messages), (rel, messages)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1  # skips come as one line per scan


def _sync_names(tmp_path: Path, server: ServerProc, batch: list[bytes]) -> None:
    """Mirror a folder of ``batch`` (plus a file of each in a subdirectory) with the real
    `syncd sync`; check the server, the manifest, the log and the exit code."""
    case = tmp_path / uuid.uuid4().hex[:8]
    folder = case / "f"
    (folder / "sub").mkdir(parents=True)
    files: dict[bytes, bytes] = {}
    for i, name in enumerate(batch):
        rel = name if i % 2 else b"sub/" + name
        full = os.path.join(os.fsencode(folder), rel)
        if os.path.exists(full):
            continue
        body = hashlib.sha256(rel).digest() * (i % 3)
        with open(full, "wb") as f:
            f.write(body)
        files[rel] = body
    cfg = mirror_config(
        case, server, folder, remote_path=case.name, extra_folder="use_default_ignores = false"
    )
    r = run_syncd("sync", config=cfg)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("2026-01-01 00:00:00")]
    want = {rel: body for rel, body in files.items() if mirrorable(rel.rsplit(b"/", 1)[-1])}
    assert _server_files(server.root / case.name) == want
    rows = _read_rows(case / "state")
    assert {os.fsencode(p) for p in rows} == set(want)
    skipped = [rel for rel in files if rel not in want]
    for rel in skipped:
        assert shown(os.fsdecode(rel)) in r.stderr, (rel, r.stderr)


@given(batch=names(max_size=10, newline=False).map(lambda b: b[:12]))
@example(
    batch=[
        b"\x01ctl",
        b"del\x7f",
        b"\x1b[31mred",
        b"\r",
        b"\t",
        b"x" * 255,
        "é".encode() * 127 + b"x",
        b"\xff\xfe",
        b"a\\b",
        b"%41",
        b"q?x#y",
    ]
)
@PASS_SETTINGS
def test_sync_mirrors_hostile_names(tmp_path: Path, server: ServerProc, batch: list[bytes]) -> None:
    # At most a few names that cannot be mirrored, so that the summary names each of them.
    bad = [n for n in batch if not mirrorable(n)]
    _sync_names(tmp_path, server, [n for n in batch if mirrorable(n)] + bad[:3])


def test_sync_mirrors_a_name_with_a_newline(tmp_path: Path, server: ServerProc) -> None:
    _sync_names(tmp_path, server, [b"a\nb", b"\nlead", b"trail\n", b"ok.txt"])


def test_sync_names_names_it_cannot_mirror_escaped(tmp_path: Path, server: ServerProc) -> None:
    # Skipped names are named (escaped: a newline in one cannot split or forge a log line),
    # the pass succeeds and every other file is mirrored.
    _sync_names(
        tmp_path,
        server,
        [b"ok.txt", b"bad\xff\n2026-01-01 00:00:00 ERROR forged", b".~syncd-mine", b"ok2"],
    )


# -- sizes around every threshold ----------------------------------------------------------------

THRESHOLDS = sorted({INLINE, SMALL, PIECE, SENDFILE_MIN, 8 << 20})
SIZES = sorted({0, 1, *(t + d for t in THRESHOLDS for d in (-1, 0, 1))})


def _sparse(path: Path, size: int) -> None:
    """A sparse file of ``size`` bytes whose first and last bytes say which file it is."""
    with open(path, "wb") as f:
        f.truncate(size)
        tag = path.name.encode()
        if size:
            f.write(tag[:size])
            f.seek(max(0, size - len(tag)))
            f.write(tag[: size - max(0, size - len(tag))])


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@given(
    sizes=st.lists(
        st.one_of(
            st.sampled_from([*THRESHOLDS, 2**40, 2**44 - 4096]).flatmap(
                lambda t: st.integers(max(0, t - 2), t + 2)
            ),
            st.integers(0, 2**40),
        ),
        min_size=1,
        max_size=6,
    )
)
@NO_FIXTURE_CHECK
def test_scanner_and_manifest_take_every_size(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    root = tmp_path_factory.mktemp("sizes")
    want: dict[str, int] = {}
    for i, size in enumerate(sizes):
        p = root / f"s{i}"
        try:
            _sparse(p, size)
        except OSError:  # beyond what this filesystem holds (ext4: 16 TiB)
            p.unlink(missing_ok=True)
            continue
        want[p.name] = size
    scan = Scanner(folder_config(root)).scan()
    assert {rel: f.size for rel, f in scan.files.items()} == want
    path = root.parent / f"{root.name}.sqlite3"
    with Manifest(path) as m:
        for lf in scan.files.values():
            m.put("s", Row(lf.rel, lf.size, lf.mtime_ns, "0" * 64, 1.0, lf.ctime_ns, lf.inode))
    with Manifest(path) as m:
        assert {rel: r.size for rel, r in m.rows("s").items()} == want
        assert m.totals("s").bytes == sum(want.values())


def test_sync_mirrors_files_of_every_threshold_size(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    for size in SIZES:
        _sparse(folder / f"size-{size}", size)
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    stored = server.root / "docs"
    assert sorted(os.fsdecode(p) for p in _server_files(stored)) == sorted(
        f"size-{s}" for s in SIZES
    )
    for size in SIZES:
        assert (stored / f"size-{size}").stat().st_size == size
        assert _sha(stored / f"size-{size}") == _sha(folder / f"size-{size}"), size
    assert _read_rows(tmp_path / "state") == {
        f"size-{s}": (s, (folder / f"size-{s}").stat().st_mtime_ns) for s in SIZES
    }


# -- deep trees ----------------------------------------------------------------------------------


def _deep_tree(base: Path, depth: int, name: str) -> list[str]:
    """``depth`` nested directories under ``base`` (built relative to directory fds: the path
    soon exceeds PATH_MAX), a file in every 100th; returns the files' relative paths."""
    files: list[str] = []
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if i % 100 == 0:
                f = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, b"level %d" % i)
                os.close(f)
                files.append("/".join([name] * (i + 1) + ["f.txt"]))
    finally:
        os.close(fd)
    return files


def _remove_deep(path: Path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree recurses per level)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=True, timeout=60)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "top.txt").write_text("top")
    files = _deep_tree(folder, 2000, "level-0123")  # 22,000 bytes deep, 2,000 levels
    try:
        yield folder, files
    finally:
        _remove_deep(folder)


def test_scanner_takes_a_tree_deeper_than_path_max_and_the_recursion_limit(
    deep: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, files = deep
    limit = os.pathconf(folder, "PC_PATH_MAX")
    with caplog.at_level(logging.DEBUG, logger="syncd.scanner"):
        scan = Scanner(folder_config(folder)).scan()
    reachable = {f for f in files if len(os.fsencode(folder)) + 1 + len(f.encode()) < limit}
    assert reachable and len(reachable) < len(files)
    assert set(scan.files) == {"top.txt", *reachable}
    assert not scan.problems  # not a failure: a skip, like any name that cannot be mirrored
    assert 1 <= len(scan.incomplete) <= 2  # nothing below the cut is deleted on the server
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "too long" in warnings[0], warnings


def test_sync_of_a_deep_tree_skips_what_cannot_be_addressed(
    tmp_path: Path, server: ServerProc, deep: tuple[Path, list[str]]
) -> None:
    folder, _files = deep
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if "WARNING" in ln and "too long" in ln]
    assert (server.root / "docs" / "top.txt").read_text() == "top"


# -- skipped paths: one line per scan ------------------------------------------------------------


def test_skips_are_summarised_once_per_scan_and_again_only_when_they_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "real.txt").write_text("real")
    for i in range(79):
        os.symlink(f"/usr/share/doc/{i}", folder / f"link{i}")
    os.mkfifo(folder / "pipe")
    scanner = Scanner(folder_config(folder))

    def scan() -> tuple[list[str], list[str]]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="syncd.scanner"):
            assert set(scanner.scan().files) == {"real.txt"}
        records = [r for r in caplog.records if r.name == "syncd.scanner"]
        return (
            [r.getMessage() for r in records if r.levelno == logging.WARNING],
            [r.getMessage() for r in records if r.levelno == logging.DEBUG],
        )

    warnings, debug = scan()
    assert warnings == [
        "skipped 80 paths in docs: 79 symbolic links (not followed), 1 named pipe (FIFO); "
        '-v or [log] level = "debug" lists them'
    ]
    assert sum("symbolic link" in m for m in debug) == 79  # each listed at debug level
    assert scan()[0] == []  # nothing changed: no line
    os.symlink("/etc/passwd", folder / "new-link")
    assert scan()[0] == ["skipped docs/new-link: symbolic link (not followed)"]
    (folder / "pipe").unlink()
    assert scan()[0] == []  # fewer skips: nothing to warn about
    os.mkfifo(folder / "pipe")
    assert scan()[0] == ["skipped docs/pipe: named pipe (FIFO)"]


def test_a_few_skips_are_named_in_the_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    os.symlink("/etc/passwd", folder / "link")
    os.mkfifo(folder / "pipe")
    with caplog.at_level(logging.WARNING, logger="syncd.scanner"):
        Scanner(folder_config(folder)).scan()
    assert [r.getMessage() for r in caplog.records] == [
        "skipped 2 paths in docs: link: symbolic link (not followed); pipe: named pipe (FIFO)"
    ]


def test_daemon_summarises_skips_once_and_names_a_new_one(
    tmp_path: Path, server: ServerProc
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "real.txt").write_text("real")
    for i in range(20):
        os.symlink(f"/nowhere/{i}", folder / f"link{i}")
    cfg = mirror_config(
        tmp_path,
        server,
        folder,
        extra='debounce = 0.05\nrescan_interval = 0.2\n[log]\nlevel = "debug"\n',
    )
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")

    def scans() -> int:  # each full scan lists every skip at debug level
        return daemon.log().count("DEBUG syncd.scanner: skipped docs/link0:")

    try:
        wait_for(lambda: scans() >= 4, 30, "a few rescans with the same skips")
        os.symlink("/etc/passwd", folder / "late-link")
        (folder / "after.txt").write_text("after")
        wait_for(lambda: (server.root / "docs" / "after.txt").exists(), 30, "the live change")
        n = scans()
        wait_for(lambda: scans() >= n + 3, 30, "more rescans")
    finally:
        daemon.stop()
    warnings = [ln for ln in daemon.log().splitlines() if " WARNING " in ln]
    assert [ln for ln in warnings if "skipped" in ln] == [
        ln for ln in warnings if "skipped 20 paths in docs" in ln or "late-link" in ln
    ]
    assert sum("skipped 20 paths in docs" in ln for ln in warnings) == 1, warnings
    assert sum("skipped docs/late-link: symbolic link" in ln for ln in warnings) == 1, warnings
    assert "Traceback" not in daemon.log()


def test_a_path_met_outside_a_scan_is_judged_as_a_scan_judges_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # For the daemon's live events: the same skips, warned about once per path.
    folder = tmp_path / "Documents"
    folder.mkdir()
    broot = os.fsencode(folder)
    for name in (b"ok.txt", b"bad\xff\n", b".~syncd-x", b"a.swp"):
        with open(os.path.join(broot, name), "wb") as f:
            f.write(b"x")
    os.symlink("/etc/passwd", folder / "link")
    scanner = Scanner(folder_config(folder, defaults=True))
    with caplog.at_level(logging.WARNING, logger="syncd.scanner"):
        for _ in range(2):
            got = {
                os.fsdecode(n): scanner.look(os.fsdecode(n), os.lstat(os.path.join(broot, n)))
                for n in os.listdir(broot)
            }
    assert {rel for rel, lf in got.items() if lf is not None} == {"ok.txt"}
    assert got["ok.txt"] == scanner.stat("ok.txt")
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert warnings == [
        "skipped docs/.~syncd-x: names starting with '.~syncd-' are reserved",
        "skipped docs/bad\\xff\\n: name is not valid UTF-8",
        "skipped docs/link: symbolic link (not followed)",
    ]


# -- ignore files ------------------------------------------------------------------------------

#: The pieces gitwildmatch gives a meaning to, and some it does not expect.
# fmt: off
IGNORE_PIECES = st.sampled_from(
    [
        "\\", "[", "]", "[!", "[^", "!", "*", "**", "***", "**/", "/**", "/", "?", "#", " ",
        "\t", "-", "a", "b", ".", "é", "e\u0301", "\u2028", "\x85", "\ufeff",
        "[:alpha:]", "[[:alpha:]]", "z-a", "\x00", "\r", "x" * 300, "\U0001f600", "\\ ",
        "{a,b}", "$", "(?", "\\Z",
    ]
)
# fmt: on
IGNORE_LINE = st.lists(IGNORE_PIECES, max_size=8).map("".join)


def _expected_valid(line: str) -> bool:
    """Is ``line`` one that pathspec compiles without error or warning (the reference)?"""
    import warnings

    import pathspec

    if "\x00" in line:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        re.purge()  # re warns about a pattern when it compiles it, not when it has it cached
        try:
            pathspec.GitIgnoreSpec.from_lines([line])
        except Exception:
            return False
    return True


@given(lines=st.lists(IGNORE_LINE, max_size=8))
@NO_FIXTURE_CHECK
def test_any_ignore_file_is_read_without_raising(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture, lines: list[str]
) -> None:
    import pathspec

    root = tmp_path_factory.mktemp("ignores")
    for name in ("a", "b.txt", "x.o", "é", "[", "!", "#c", "sub/a", "sub/deep/b"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    content = "\n".join(lines)
    (root / IGNORE_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="syncd.scanner"):
        scanner = Scanner(folder_config(root))
        scan = scanner.scan()
        scanner.reload_ignores()
        scanner.scan()  # the same bad lines: no second warning
    content = content.removeprefix("\ufeff")  # a byte order mark is not part of a line
    text = [line[:-1] if line.endswith("\r") else line for line in content.split("\n")]
    bad = [
        (n, line)
        for n, line in enumerate(text, 1)
        if line and not line.startswith("#") and not _expected_valid(line)
    ]
    warnings = [r.getMessage() for r in caplog.records if IGNORE_FILE in r.getMessage()]
    assert len(warnings) == len(bad), (bad, warnings)
    for (n, _line), message in zip(bad, warnings, strict=True):
        assert f"{IGNORE_FILE} line {n}:" in message and one_line(message), message
    good = [line for n, line in enumerate(text, 1) if (n, line) not in bad]
    spec = pathspec.GitIgnoreSpec.from_lines(good)
    for rel in ("a", "b.txt", "x.o", "é", "[", "!", "#c", "sub/a", "sub/deep/b"):
        parents = rel.split("/")[:-1]
        if any(spec.match_file("/".join(parents[: i + 1]) + "/") for i in range(len(parents))):
            continue  # under an ignored directory: never reached
        assert (rel in scan.files) == (not spec.match_file(rel)), (rel, good)


@pytest.mark.parametrize(
    "bad",
    ["\\", "!", "foo\\", "[z-a]", "[[:alpha:]]", "a\x00b"],
)
def test_sync_skips_a_bad_ignore_line_with_one_warning(
    tmp_path: Path, server: ServerProc, bad: str
) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / IGNORE_FILE).write_text(f"*.log\n{bad}\nbuild/\n")
    (folder / "a.log").write_text("ignored")
    (folder / "build").mkdir()
    (folder / "build" / "out").write_text("ignored")
    (folder / "keep.txt").write_text("kept")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if IGNORE_FILE in ln and "WARNING" in ln]
    assert len(lines) == 1 and "line 2" in lines[0], r.stderr
    assert sorted(_server_files(server.root / "docs")) == [IGNORE_FILE.encode(), b"keep.txt"]


def test_daemon_survives_saving_a_bad_ignore_line(tmp_path: Path, server: ServerProc) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "first.txt").write_text("first")
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.05\n")
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: (server.root / "docs" / "first.txt").exists(), 30, "the first pass")
        (folder / IGNORE_FILE).write_text("*.log\n[z-a]\n\\\n")
        wait_for(lambda: "line 3" in daemon.log(), 30, "the warning about the bad lines")
        (folder / "a.log").write_text("ignored")
        (folder / "after.txt").write_text("after")
        wait_for(lambda: (server.root / "docs" / "after.txt").exists(), 30, "a change after it")
        assert daemon.proc.poll() is None, daemon.log()
        assert not (server.root / "docs" / "a.log").exists()
    finally:
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log
    assert log.count("line 2") == 1 and log.count("line 3") == 1, log


@pytest.mark.parametrize("kind", ["fifo", "dir", "huge"])
def test_an_ignore_file_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    # A FIFO would hang a plain read; a directory or a huge file is not an ignore list.
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    target = folder / IGNORE_FILE
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    else:
        with open(target, "wb") as f:
            f.truncate(64 << 20)
    scan = Scanner(folder_config(folder)).scan()
    assert "a.txt" in scan.files
    assert [p.path for p in scan.problems] == [IGNORE_FILE], scan.problems
