"""Pieces of the bench that can be checked without running it: the million-file tree is the same
whatever the number of workers and within its sizes, the RSS floors, and the Syncthing driver's
refusal to start outside a loopback-only network namespace."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import gentree  # noqa: E402
from benchlib.report import rss_floor  # noqa: E402
from benchlib.syncthing_peer import isolated  # noqa: E402


def digest_of(folder: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for dirpath, dirs, names in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(names):
            p = Path(dirpath, name)
            data = p.read_bytes()
            assert 64 <= len(data) <= 2048, (p, len(data))
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + data)
            n += 1
    return n, h.hexdigest()


@settings(max_examples=8, deadline=None)
@given(files=st.integers(1, 300), dirs=st.integers(1, 40))
def test_tree_is_the_same_whatever_the_workers(
    tmp_path_factory: pytest.TempPathFactory, files: int, dirs: int
) -> None:
    one, many = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("many")
    per = -(-files // dirs)
    gentree._write_dirs((str(one), 0, -(-files // per), per, files, 7))  # one job, here
    gentree.gen_tree(many, files, dirs, 7)  # split into jobs, one process per core
    assert digest_of(one) == digest_of(many)
    assert digest_of(one)[0] == files


def test_rss_floors_follow_the_tree() -> None:
    assert rss_floor(10_000)[0] == 25.0
    assert rss_floor(1_000_000)[0] == 250.0


def test_syncthing_driver_refuses_outside_a_namespace(tmp_path: Path) -> None:
    if isolated():
        pytest.skip("this test already runs in a loopback-only namespace")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    p = subprocess.run(
        [sys.executable, "-m", "benchlib.syncthing_peer", str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 2
    assert "refusing to start Syncthing" in p.stderr
