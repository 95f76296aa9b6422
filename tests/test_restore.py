"""`syncd restore` and `syncd versions`: TIME, the planning, and real restores with real
processes (`syncd serve`, nginx WebDAV, `syncd run`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd import restore_plan as rp
from syncd.remotes.base import Version
from syncd.timespec import BadTime, parse_time
from syncd.types import RemoteEntry
from tests.conftest import DaemonProc, run_syncd, wait_for, write_config
from tests.remote_servers import DavServer, RemoteServer, start_remote

S = 1_000_000_000

# --------------------------------------------------------------------------- TIME


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_iso_times_with_an_offset_are_that_instant(when: datetime, minutes: int) -> None:
    tz = timezone(timedelta(minutes=minutes))
    aware = when.replace(tzinfo=tz)
    want = int(aware.replace(microsecond=0).timestamp()) * S + aware.microsecond * 1000
    assert parse_time(aware.isoformat()) == want
    if minutes == 0:
        assert parse_time(aware.isoformat().replace("+00:00", "Z")) == want


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)))
def test_iso_times_without_an_offset_are_local_time(when: datetime) -> None:
    text = when.replace(microsecond=0).isoformat(timespec="minutes")
    local = datetime.fromisoformat(text).astimezone()
    assert parse_time(text) == int(local.timestamp()) * S


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw")),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=10**18, max_value=2 * 10**18),
)
def test_relative_times_are_that_long_ago(parts: list[tuple[int, str]], now: int) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_time(text, now) == now - sum(n * unit[u] for n, u in parts) * S


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "12:00 tomorrow", "-2h", "2026-13-01"])
def test_unreadable_times_say_what_works(text: str) -> None:
    with pytest.raises(BadTime, match="2026-12-01T14:30"):
        parse_time(text)


# --------------------------------------------------------------------------- the planning


def _v(path: str, when_s: int, why: str = "replaced", size: int = 1) -> Version:
    return Version(
        path,
        when_s * S,
        why,
        size,
        f"sha-{path}-{when_s}",
        when_s * S,
        False,
        f"ref/{path}/{when_s}",
    )


def _e(path: str, size: int = 1) -> RemoteEntry:
    return RemoteEntry(path, size, f"sha-{path}-now")


def test_versions_are_numbered_from_the_oldest_kept_per_file() -> None:
    kept = rp.history(
        [_v("docs/a", 30), _v("docs/a", 10), _v("docs/b", 20), _v("docs/a", 20), _v("else/x", 5)],
        "docs",
    )
    assert sorted(kept) == ["a", "b"]
    assert [v.when_ns // S for v in kept["a"]] == [10, 20, 30]
    pick = rp.numbered({"a": _e("a")}, kept, "a", 2)
    assert (pick.number, pick.version) == (2, kept["a"][1])
    with pytest.raises(rp.PlanError, match="versions 1 to 3"):
        rp.numbered({}, kept, "a", 4)
    with pytest.raises(rp.PlanError, match="directory"):
        rp.numbered({"d/x": _e("d/x")}, {"d/x": [_v("d/x", 1)]}, "d", 1)


def test_at_time_is_the_oldest_version_that_stopped_being_current_after_it() -> None:
    # a: written at ~0, replaced at 10, 20, 30 (each version stopped being current then)
    kept = {"a": [_v("a", 10), _v("a", 20), _v("a", 30)], "gone": [_v("gone", 15, "deleted")]}
    listing = {"a": _e("a"), "new": _e("new")}
    at = {p.rel: p for p in rp.as_at(listing, kept, "", 12 * S)}
    assert at["a"].number == 2 and at["gone"].number == 1 and at["new"].version is None
    at = {p.rel: p for p in rp.as_at(listing, kept, "", 31 * S)}
    assert at["a"].version is None and "gone" not in at  # deleted before then: left out
    assert [p.number for p in rp.as_at(listing, kept, "a", 5 * S)] == [1]


def test_a_deleted_path_comes_back_as_just_before_its_last_deletion() -> None:
    hour = 3600
    kept = {
        "d/x": [_v("d/x", 10 * hour), _v("d/x", 20 * hour, "deleted")],
        "d/y": [_v("d/y", 20 * hour - 60, "deleted")],  # the same rm -rf, a minute earlier
        "d/old": [_v("d/old", 2 * hour, "deleted")],  # deleted long before: not brought back
        "d/moved": [_v("d/moved", 20 * hour, "replaced")],  # its last version is no deletion
        "e/z": [_v("e/z", 20 * hour, "deleted")],
    }
    picks, when = rp.deleted({"d/here": _e("d/here")}, kept, "d")
    assert when == 20 * hour * S
    assert [(p.rel, p.number) for p in picks] == [("d/x", 2), ("d/y", 1)]
    assert rp.deleted({}, kept, "nothing") == ([], None)


def test_deleted_since_brings_back_what_is_missing_and_was_deleted_since() -> None:
    kept = {
        "a": [_v("a", 100, "deleted")],
        "b": [_v("b", 50, "deleted")],
        "c": [_v("c", 120, "deleted")],  # back on the server since
        "sub/d": [_v("sub/d", 110, "replaced"), _v("sub/d", 130, "deleted")],
        "e": [_v("e", 140, "replaced")],
    }
    listing = {"c": _e("c"), "e": _e("e")}
    assert [p.rel for p in rp.deleted_since(listing, kept, "", 90 * S)] == ["a", "sub/d"]
    assert [p.number for p in rp.deleted_since(listing, kept, "sub", 90 * S)] == [2]
    assert rp.deleted_since(listing, kept, "", 200 * S) == []


# --------------------------------------------------------------------------- real restores


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    srv = start_remote("nginx", tmp_path_factory.mktemp("nginx"))
    try:
        yield srv
    finally:
        srv.stop()


def _config(
    tmp_path: Path, remote: RemoteServer, folder: Path, space: str, extra: str = ""
) -> Path:
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{remote.remote_section()}
[[folder]]
path = "{folder}"
remote_path = "{space}"
{extra}

[sync]
state_dir = "{tmp_path / "state"}"
debounce = 0.2
""",
    )


def _tree(top: Path) -> dict[str, bytes]:
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and not p.name.startswith(".~syncd-")
    }


def _files(n: int, size: int = 3000) -> dict[str, bytes]:
    return {f"d{i % 4}/f{i}.bin": os.urandom(size + i) for i in range(n)}


def _write(top: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _synced(
    tmp_path: Path, remote: RemoteServer, files: dict[str, bytes]
) -> tuple[Path, Path, str]:
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder, files)
    space = remote.new_space()
    cfg = _config(tmp_path, remote, folder, space)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert remote.read_tree(space) == files
    return folder, cfg, space


def test_a_deleted_directory_comes_back_in_one_command(tmp_path: Path, nginx: RemoteServer) -> None:
    files = _files(12)
    folder, cfg, _ = _synced(tmp_path, nginx, files)
    for p in (folder / "d1").iterdir():
        p.unlink()
    (folder / "d1").rmdir()
    r = run_syncd("restore", str(folder / "d1"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert _tree(folder) == files
    assert "3 restored" in r.stdout
    # The manifest records them as sent: a sync afterwards has nothing to do.
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 0," in r.stdout and "unchanged 12" in r.stdout


def test_restore_all_to_an_empty_folder_resumes_after_sigkill(
    tmp_path: Path, nginx: RemoteServer
) -> None:
    files = _files(60, 200_000)
    _folder, cfg, space = _synced(tmp_path, nginx, files)
    dest = tmp_path / "new-machine"
    cmd = [sys.executable, "-m", "syncd", "restore", "--all", "--to", str(dest), "-c", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_tree(dest / space)) >= 10 if dest.exists() else False, 60, "files")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = _tree(dest / space)
    assert 10 <= len(partial) < len(files)
    for rel, data in partial.items():
        assert files[rel] == data  # whatever is there is whole: temp + rename
    r = run_syncd("restore", "--all", "--to", str(dest), "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert _tree(dest / space) == files
    assert len(doc["identical"]) >= len(partial)
    assert len(doc["restored"]) == len(files) - len(doc["identical"])
    # What the killed run left half-written was swept away by the second.
    assert not list((dest / space).rglob(".~syncd-*"))


def test_overwrite_keeps_the_local_file_aside(tmp_path: Path, nginx: RemoteServer) -> None:
    files = {"a.txt": b"the server's copy\n", "b.txt": b"bee\n"}
    folder, cfg, _ = _synced(tmp_path, nginx, files)
    (folder / "a.txt").write_bytes(b"garbage an editor saved\n")
    r = run_syncd("restore", str(folder / "a.txt"), config=cfg)
    assert r.returncode == 1
    assert "--overwrite" in r.stderr and "not restored" in r.stderr
    assert (folder / "a.txt").read_bytes() == b"garbage an editor saved\n"
    r = run_syncd("restore", str(folder / "a.txt"), "--overwrite", config=cfg)
    assert r.returncode == 0, r.stderr
    assert (folder / "a.txt").read_bytes() == files["a.txt"]
    kept = [p for p in folder.iterdir() if p.name.startswith("a.txt.syncd-kept-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"garbage an editor saved\n"
    assert "kept your file" in r.stdout


def test_dry_run_changes_nothing(tmp_path: Path, nginx: RemoteServer) -> None:
    files = _files(5)
    folder, cfg, _ = _synced(tmp_path, nginx, files)
    (folder / "d0" / "f0.bin").unlink()
    (folder / "d1" / "f1.bin").write_bytes(b"changed")
    before = _tree(folder)
    manifest = (tmp_path / "state" / "manifest.sqlite3").read_bytes()
    r = run_syncd("restore", str(folder), "--dry-run", config=cfg)
    # It says what the real run would do, exit code included: d1/f1.bin is in the way.
    assert r.returncode == 1, r.stderr
    assert "would restore" in r.stdout and "nothing changed" in r.stdout
    assert "would not restore" in r.stderr and "--overwrite" in r.stderr
    # (nginx lists no digests: the 3 unchanged files are only known to have the same size)
    assert "4 file(s) would be restored (3 of them only if they differ" in r.stdout
    assert "0 identical already, 1 would not be" in r.stdout
    assert _tree(folder) == before
    assert (tmp_path / "state" / "manifest.sqlite3").read_bytes() == manifest
    r = run_syncd("restore", "--all", "--to", str(tmp_path / "x"), "--dry-run", config=cfg)
    assert r.returncode == 0 and not (tmp_path / "x").exists()
    # The real run does what the dry run said.
    real = run_syncd("restore", str(folder), config=cfg)
    assert real.returncode == 1, real.stdout + real.stderr
    assert "1 restored" in real.stdout and "3 identical already, 1 not restored" in real.stdout


def test_usage_errors_say_what_to_type(tmp_path: Path, nginx: RemoteServer) -> None:
    folder, cfg, _ = _synced(tmp_path, nginx, {"a": b"a"})
    r = run_syncd("restore", config=cfg)
    assert r.returncode == 2 and "--all" in r.stderr
    r = run_syncd("restore", str(tmp_path), config=cfg)
    assert r.returncode == 2 and "not inside a configured folder" in r.stderr
    r = run_syncd("restore", str(folder / "a"), "--at", "yesterday", config=cfg)
    assert r.returncode == 2 and "2h" in r.stderr
    r = run_syncd("restore", str(folder / "a"), "--at", "2h", config=cfg)
    assert r.returncode == 2 and "keeps no versions" in r.stderr
    r = run_syncd("versions", str(folder / "a"), config=cfg)
    assert r.returncode == 0 and "keeps no versions" in r.stderr and "current" in r.stdout


def test_a_running_daemon_does_not_send_a_restored_file_back(
    tmp_path: Path, nginx: RemoteServer
) -> None:
    assert isinstance(nginx, DavServer)
    files = {"keep/a.txt": b"alpha\n" * 1000, "keep/b.txt": b"beta\n"}
    folder = tmp_path / "folder"
    folder.mkdir()
    space = nginx.new_space()
    for rel, data in files.items():  # on the server only; the folder keeps no deletions
        nginx.write(space, rel, data)
    cfg = _config(tmp_path, nginx, folder, space, extra="delete = false")
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        seen = len(nginx.requests())
        r = run_syncd("restore", str(folder / "keep"), config=cfg)
        assert r.returncode == 0, r.stderr
        assert _tree(folder) == files
        wait_for(lambda: "restore: released 2 path(s)" in daemon.log(), 20, "the release")
        # The daemon looked at them again and found them sent: no PUT, nothing in flight.
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 20, "in sync")
        doc = json.loads(run_syncd("status", "--json", config=cfg).stdout)
        assert doc["folders"][0]["files"] == 2 and doc["totals"]["uploaded"] == 0
        puts = [line for line in nginx.requests()[seen:] if line.startswith(f"PUT /{space}/keep")]
        assert puts == [], puts
    finally:
        assert daemon.stop() == 0, daemon.log()


# --------------------------------------------------------------------------- versions (syncd serve)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    srv = start_remote("syncd", tmp_path_factory.mktemp("serve"))
    try:
        yield srv
    finally:
        srv.stop()


def _times(top: Path) -> dict[str, tuple[int, bool]]:
    return {
        p.relative_to(top).as_posix(): (p.stat().st_mtime_ns, bool(p.stat().st_mode & 0o100))
        for p in sorted(top.rglob("*"))
        if p.is_file() and not p.name.startswith(".~syncd-")
    }


def _sync(cfg: Path) -> None:
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr


def test_a_deleted_directory_comes_back_with_every_byte_and_mtime(
    tmp_path: Path, serve: RemoteServer
) -> None:
    files = _files(9)
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder, files)
    (folder / "d2" / "f2.bin").chmod(0o755)
    for i, p in enumerate(sorted(folder.rglob("*.bin"))):
        os.utime(p, ns=(1_600_000_000 * S, 1_600_000_000 * S + i * 1_234_567_891))
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    before = _times(folder)
    for p in (folder / "d2").iterdir():
        p.unlink()
    (folder / "d2").rmdir()
    _sync(cfg)  # the server deletes d2 (and keeps it)
    assert not any(rel.startswith("d2/") for rel in serve.read_tree(space))
    r = run_syncd("restore", str(folder / "d2"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert "just before it was deleted" in r.stderr
    assert _tree(folder) == files
    assert _times(folder) == before  # every mtime (to the nanosecond) and the exec bit
    assert serve.read_tree(space) == files  # put back on the server too
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0 and "uploaded 0," in r.stdout and "deleted 0," in r.stdout


def test_a_file_overwritten_three_times_comes_back_as_each_version(
    tmp_path: Path, serve: RemoteServer
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    target = folder / "notes.txt"
    contents = [f"version {n}\n".encode() * (n + 1) for n in range(4)]
    after: list[int] = []  # a moment when each content was current
    for data in contents:
        target.write_bytes(data)
        _sync(cfg)
        time.sleep(0.05)
        after.append(time.time_ns())
        time.sleep(0.05)
    r = run_syncd("versions", str(target), "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (entry,) = doc["files"]
    assert [v["number"] for v in entry["versions"]] == [1, 2, 3]
    assert [v["why"] for v in entry["versions"]] == ["replaced"] * 3
    text = run_syncd("versions", str(target), config=cfg)
    assert "--version N" in text.stdout and "current" in text.stdout
    out = tmp_path / "out"
    for n in (1, 2, 3):
        r = run_syncd(
            "restore", str(target), "--version", str(n), "--to", str(out / f"v{n}"), config=cfg
        )
        assert r.returncode == 0, r.stderr
        assert (out / f"v{n}" / "notes.txt").read_bytes() == contents[n - 1]
    for n, when in enumerate(after):
        stamp = datetime.fromtimestamp(when / S).astimezone().isoformat()
        r = run_syncd(
            "restore", str(target), "--at", stamp, "--to", str(out / f"at{n}"), config=cfg
        )
        assert r.returncode == 0, r.stderr
        assert (out / f"at{n}" / "notes.txt").read_bytes() == contents[n]
    # Into the folder: the local file is the server's current copy, which putting version 1
    # back keeps there as version 4: no --overwrite needed, nothing set aside.
    r = run_syncd("restore", str(target), "--version", "1", config=cfg)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == contents[0]
    assert serve.read_tree(space)["notes.txt"] == contents[0]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    r = run_syncd("restore", str(target), "--version", "4", "--to", str(out / "v4"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert (out / "v4" / "notes.txt").read_bytes() == contents[3]
    # A local edit the server has not seen is another matter: --overwrite, and set aside.
    target.write_bytes(b"an edit not sent yet\n")
    r = run_syncd("restore", str(target), "--version", "2", config=cfg)
    assert r.returncode == 1 and "--overwrite" in r.stderr, r.stderr
    assert target.read_bytes() == b"an edit not sent yet\n"
    r = run_syncd("restore", str(target), "--version", "2", "--overwrite", config=cfg)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == contents[1]
    kept = [p for p in folder.iterdir() if ".syncd-kept-" in p.name]
    assert [p.read_bytes() for p in kept] == [b"an edit not sent yet\n"]
    r = run_syncd("restore", str(target), "--version", "9", config=cfg)
    assert r.returncode == 2 and "versions 1 to 5" in r.stderr


def _totals(cfg: Path) -> dict[str, int]:
    totals: dict[str, int] = json.loads(run_syncd("status", "--json", config=cfg).stdout)["totals"]
    return totals


def test_a_mass_delete_through_syncd_run_is_undone_with_deleted_since(
    tmp_path: Path, serve: RemoteServer
) -> None:
    # (20 files stay: the 13 deletions are within the guard's max_delete = 50%)
    files = {**_files(16), **{f"keep/k{i}": b"%d" % i for i in range(20)}}
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder, files)
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: serve.read_tree(space) == files, 30, "the first mirror")
        since = datetime.now().isoformat(timespec="seconds")  # local time, no offset
        time.sleep(1.1)  # (TIME is to the second)
        for d in ("d0", "d1", "d3"):
            for p in (folder / d).iterdir():
                p.unlink()
            (folder / d).rmdir()
        (folder / "d2" / "f2.bin").unlink()
        gone = {rel for rel in files if rel.split("/")[0] in ("d0", "d1", "d3")} | {"d2/f2.bin"}
        left = set(files) - gone
        wait_for(lambda: set(serve.read_tree(space)) == left, 30, "the deletions")
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 20, "in sync")
        # The daemon asked the server what it keeps, and status says it in the server's words.
        wait_for(
            lambda: (
                "versions: kept by syncd serve for 30 days"
                in run_syncd("status", config=cfg).stdout
            ),
            20,
            "the server's retention in syncd status",
        )
        sent = _totals(cfg)
        r = run_syncd("restore", "--deleted-since", since, "--dry-run", config=cfg)
        assert r.returncode == 0 and r.stdout.count("would restore") == 13, r.stdout
        r = run_syncd("restore", "--deleted-since", since, config=cfg)
        assert r.returncode == 0, r.stderr
        assert "13 restored" in r.stdout
        assert _tree(folder) == files
        wait_for(lambda: "restore: released 13 path(s)" in daemon.log(), 20, "the release")
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 20, "in sync")
        time.sleep(1.0)  # (a debounce window and more: a re-delete or a re-send would show)
        assert serve.read_tree(space) == files
        now = _totals(cfg)
        assert (now["uploaded"], now["deleted"]) == (sent["uploaded"], sent["deleted"])
        assert _tree(folder) == files
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_restore_all_onto_a_new_machine_skips_what_is_there_by_digest(
    tmp_path: Path, serve: RemoteServer
) -> None:
    files = _files(40, 300_000)
    _folder, cfg, space = _synced(tmp_path, serve, files)
    dest = tmp_path / "new-machine"
    cmd = [sys.executable, "-m", "syncd", "restore", "--all", "--to", str(dest), "-c", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_tree(dest / space)) >= 8 if dest.exists() else False, 60, "files")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = _tree(dest / space)
    assert 8 <= len(partial) < len(files)
    r = run_syncd("restore", "--all", "--to", str(dest), "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert _tree(dest / space) == files
    assert len(doc["identical"]) >= len(partial)
    # (identical files were not read again: the bytes read are the missing files' only)
    missing = [f for f in files if f not in partial]
    assert doc["bytes"] <= sum(len(files[f]) for f in missing)
    assert not list((dest / space).rglob(".~syncd-*"))


# --------------------------------------------------------------------------- S3, WebDAV trash


@pytest.fixture(scope="module")
def others(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RemoteServer]]:
    running: dict[str, RemoteServer] = {}
    try:
        running["s3"] = start_remote("s3", tmp_path_factory.mktemp("s3"))
        running["wsgidav"] = start_remote("wsgidav", tmp_path_factory.mktemp("wsgidav"))
        yield running
    finally:
        for srv in running.values():
            srv.stop()


def _keeping(kind: str, srv: RemoteServer, space: str) -> str:
    """The [remote] section of ``srv`` set to keep versions the way ``kind`` says."""
    section = srv.remote_section()
    if kind == "s3-versioning":
        bucket = "syncd-restore-versioned"
        client = getattr(srv, "client")  # noqa: B009 (an S3Server's boto3 client)
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        return section.replace('url = "s3://syncd-test/', f'url = "s3://{bucket}/')
    return section + f'trash = "trash-{space}"\n'


@pytest.mark.parametrize("kind", ["s3-versioning", "s3-trash", "webdav-trash"])
def test_other_remotes_give_back_deleted_and_earlier_files(
    tmp_path: Path, others: dict[str, RemoteServer], kind: str
) -> None:
    srv = others["wsgidav" if kind == "webdav-trash" else "s3"]
    space = srv.new_space() + kind.replace("-", "")
    folder = tmp_path / "folder"
    folder.mkdir()
    files = {**_files(6), "a.txt": b"first\n"}
    _write(folder, files)
    cfg = write_config(
        tmp_path / "config.toml",
        f"""
[remote]
{_keeping(kind, srv, space)}
[[folder]]
path = "{folder}"
remote_path = "{space}"

[sync]
state_dir = "{tmp_path / "state"}"
max_delete = 100
""",
    )

    def syncd(*args: str) -> subprocess.CompletedProcess[str]:
        return run_syncd(*args, config=cfg, env=srv.env)

    assert syncd("sync").returncode == 0
    (folder / "a.txt").write_bytes(b"second, garbage\n")
    assert syncd("sync").returncode == 0
    for p in (folder / "d1").iterdir():
        p.unlink()
    (folder / "d1").rmdir()
    r = syncd("sync")
    assert r.returncode == 0 and "deleted 2" in r.stdout, r.stdout
    r = syncd("versions", str(folder / "a.txt"), "--json")
    assert r.returncode == 0, r.stderr
    assert [v["number"] for v in json.loads(r.stdout)["files"][0]["versions"]] == [1]
    r = syncd("restore", str(folder / "d1"))
    assert r.returncode == 0, r.stderr
    r = syncd("restore", str(folder / "a.txt"), "--version", "1", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert {k: v for k, v in _tree(folder).items() if ".syncd-kept-" not in k} == files
    r = syncd("sync")  # what was restored is on the server: nothing to send or delete
    assert r.returncode == 0 and "uploaded 1," in r.stdout and "deleted 0," in r.stdout, r.stdout


def test_a_plain_restore_says_how_to_get_deleted_files_too(
    tmp_path: Path, serve: RemoteServer
) -> None:
    files = _files(8)
    folder, cfg, _space = _synced(tmp_path, serve, files)
    (folder / "d3" / "f7.bin").unlink()
    _sync(cfg)
    r = run_syncd("restore", str(folder / "d3"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert "0 restored" in r.stdout and "1 more file(s) under it were deleted" in r.stderr
    command = r.stderr.split("to bring them back too: ")[1].split()
    assert command[:2] == ["syncd", "restore"]
    r = run_syncd(*command[1:], config=cfg)
    assert r.returncode == 0, r.stderr
    assert _tree(folder) == files


async def test_a_held_path_waits_and_a_vanished_restore_releases_it(
    tmp_path: Path, nginx: RemoteServer
) -> None:
    from syncd import config as cfgmod
    from syncd.manifest import scope_of
    from syncd.remotes.kinds import KINDS
    from syncd.status.client import RestoreSession

    assert isinstance(nginx, DavServer)
    folder = tmp_path / "folder"
    folder.mkdir()
    space = nginx.new_space()
    cfg_path = _config(tmp_path, nginx, folder, space)
    cfg = cfgmod.load(cfg_path, kinds=KINDS)
    daemon = DaemonProc(cfg_path, tmp_path / "daemon.log")
    try:
        session = await RestoreSession.open(cfg.sync.state_dir)
        assert session is not None
        # (many long names, some not ASCII: held in requests the socket's line limit takes)
        many = [f"many/{'é' * 200}-{i}/\udcff{'x' * 100}" for i in range(3000)]
        await session.hold(scope_of(cfg, cfg.folders[0]), ["sub/held.txt", *many])
        (folder / "sub").mkdir()
        (folder / "sub" / "held.txt").write_bytes(b"written while held\n")
        (folder / "free.txt").write_bytes(b"not held\n")
        wait_for(lambda: "free.txt" in nginx.read_tree(space), 20, "the free file sent")
        assert "sub/held.txt" not in nginx.read_tree(space)  # (it settled long ago: held)
        # The restore goes away without recording it: the path is free, and sent as a change.
        await session.aclose()
        wait_for(lambda: "restore: released 3001 path(s)" in daemon.log(), 20, "the release")
        wait_for(lambda: "sub/held.txt" in nginx.read_tree(space), 20, "the held file sent")
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_a_folder_emptied_under_syncd_run_comes_back_and_the_hold_is_lifted(
    tmp_path: Path, nginx: RemoteServer
) -> None:
    files = _files(10)
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder, files)
    space = nginx.new_space()
    cfg = _config(tmp_path, nginx, folder, space)
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: nginx.read_tree(space) == files, 30, "the first mirror")
        for d in list(folder.iterdir()):
            for p in d.iterdir():
                p.unlink()
            d.rmdir()
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 1, 20, "the hold")
        sent = _totals(cfg)
        r = run_syncd("restore", str(folder), config=cfg)
        assert r.returncode == 0, r.stderr
        assert _tree(folder) == files and "10 restored" in r.stdout
        wait_for(lambda: run_syncd("status", config=cfg).returncode == 0, 20, "in sync again")
        assert nginx.read_tree(space) == files
        now = _totals(cfg)
        assert now["held_deletions"] == 0
        assert (now["uploaded"], now["deleted"]) == (sent["uploaded"], sent["deleted"])
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_a_new_machine_restores_every_folder_in_place_then_mirrors_on(
    tmp_path: Path, nginx: RemoteServer
) -> None:
    files = _files(7)
    (tmp_path / "old").mkdir()
    _folder, _cfg, space = _synced(tmp_path / "old", nginx, files)
    new = tmp_path / "new"
    folder = new / "folder"
    folder.mkdir(parents=True)
    cfg = _config(new, nginx, folder, space)  # (a new state dir: nothing known)
    r = run_syncd("restore", "--all", config=cfg)
    assert r.returncode == 0, r.stderr
    assert _tree(folder) == files
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "does not know" not in r.stderr  # the mirror it was restored from is its own
    assert "uploaded 0, deleted 0, unchanged 7" in r.stdout
    (folder / "d0" / "f0.bin").unlink()
    r = run_syncd("sync", config=cfg)  # and it mirrors on: a deletion is a deletion
    assert r.returncode == 0 and "deleted 1," in r.stdout, r.stdout + r.stderr
