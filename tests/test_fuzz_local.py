"""Generated inputs on the workstation side: timestamps, file names, sizes, ignore files, deep
trees and skipped paths. A pass never crashes; what can be mirrored is; what cannot is skipped
with one warning naming the file (escaped) and the reason; the manifest keeps every other row.

The in-process properties run the scanner and the manifest directly; the pass-level ones run
the real ``syncd sync`` / ``syncd run`` against a real ``syncd serve`` (tests/conftest.py), one
pass per example, so their example counts are scaled down from the profile's.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.manifest import FILENAME, Manifest
from syncd.types import Row
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
        assert m.states("s") == {
            (r.rel, r.size, r.mtime_ns, r.ctime_ns, r.inode) for r in want.values()
        }
        assert m.rows("s") == want
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
