"""Pieces of the bench that can be checked without running it: the million-file tree is the same
whatever the number of workers and within its sizes, the RSS floors, the Syncthing driver's
refusal to start outside a loopback-only network namespace, and what the bench does where it
lacks something: a shallow clone without the baseline commit, no network namespace."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import gentree, measure_baseline, measure_syncthing  # noqa: E402
from benchlib.report import rss_floor, table, write_results  # noqa: E402
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


#: made in a network namespace of its own, one interface besides loopback (each is tried in
#: turn: a namespace of a user namespace loads no kernel module, so what works depends on
#: what the kernel has built in)
ANOTHER_INTERFACE = (
    "ip tuntap add t0 mode tap 2>/dev/null || ip link add b0 type bridge 2>/dev/null"
    " || ip link add v0 type veth peer name v1"
)


def test_syncthing_driver_refuses_outside_a_namespace(tmp_path: Path) -> None:
    """Where the network holds more than loopback, the driver refuses to start Syncthing
    (it would dial discovery servers and relays). Run as it is here, or -- where this test
    itself runs in a loopback-only namespace -- in a namespace given one more interface."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    cmd = [sys.executable, "-m", "benchlib.syncthing_peer", str(tmp_path / "spec.json")]
    if isolated():
        cmd = ["unshare", "-r", "-n", "sh", "-c", f'{ANOTHER_INTERFACE} && exec "$@"', "sh", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "refusing to start Syncthing" in p.stderr


def test_syncthing_driver_starts_inside_a_loopback_only_namespace(tmp_path: Path) -> None:
    """The other side of the refusal: in a namespace that holds only loopback the driver goes
    past the check (and here fails on its spec, which does not exist)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    cmd = [sys.executable, "-m", "benchlib.syncthing_peer", str(tmp_path / "spec.json")]
    if not isolated():
        cmd = ["unshare", "-r", "-n", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert "refusing to start Syncthing" not in p.stderr, p.stderr
    assert "spec.json" in p.stderr, p.stderr


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    p = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return p.stdout.strip()


def test_baseline_in_a_shallow_clone(tmp_path: Path) -> None:
    full, shallow = tmp_path / "full", tmp_path / "shallow"
    (full / "syncd").mkdir(parents=True)
    git(full, "init", "-q")
    for n in (1, 2):
        (full / "syncd" / "__init__.py").write_text(f"VERSION = {n}\n")
        (full / "syncd" / "__main__.py").write_text("print('syncd')\n")
        git(full, "add", "-A")
        git(full, "commit", "-q", "-m", f"commit {n}")
    first, head = git(full, "rev-parse", "HEAD~1"), git(full, "rev-parse", "HEAD")
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{full}", str(shallow)],
        check=True,
        capture_output=True,
    )
    rev = first[:7]

    assert measure_baseline.pick(full, rev, quick=False)[0] == first
    commit, name = measure_baseline.pick(shallow, rev, quick=True)
    assert (commit, name) == (head, f"baseline: HEAD ({rev} not in this clone)")
    commit, why = measure_baseline.pick(shallow, rev, quick=False)
    assert commit is None and "git fetch --unshallow" in why and rev in why
    assert measure_baseline.pick(tmp_path / "nowhere", rev, quick=True)[0] is None

    tree = tmp_path / "baseline" / head
    measure_baseline.extract(shallow, head, tree)
    assert (tree / "syncd" / "__init__.py").read_text() == "VERSION = 2\n"


def test_syncthing_rows_not_measured_without_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "unshare"
    fake.write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "f.bin").write_bytes(b"x" * 4096)
    s = SimpleNamespace(
        data={"small": folder},
        sizes=SimpleNamespace(writes=5),
        args=SimpleNamespace(debounce=0.2),
        results=[],
    )
    measure_syncthing.syncthing(s)  # type: ignore[arg-type]

    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "Operation not permitted" in said[0], said
    ids = [r.id for r in s.results]
    assert ids == ["syncthing_first", "syncthing_latency_median", "syncthing_latency_max"]
    assert all("Operation not permitted" in r.not_measured for r in s.results)
    assert "not measured" in table(s.results)
    write_results(tmp_path / "results.json", s.results, {}, [])
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["not_measured"]) == set(ids)
    assert all(w["syncd"] is None and w["pass"] is None for w in doc["workloads"])
