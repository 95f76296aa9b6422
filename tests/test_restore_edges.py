"""Getting files back where a hostile tester found it went wrong: a symlink on the way out of
the folder, a restore killed half-way and run again, a path that was a file then and is a
directory now, a dry run that must say what the real one does, a --to inside what is being
restored, and a daemon that goes away during a restore."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_syncd
from tests.remote_servers import RemoteServer, start_remote
from tests.test_restore import _config, _sync


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    srv = start_remote("syncd", tmp_path_factory.mktemp("serve"))
    try:
        yield srv
    finally:
        srv.stop()


def _req(srv: RemoteServer, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    token = Path(srv.token_file).read_text().strip()  # type: ignore[attr-defined]
    url = srv.url.rstrip("/") + path  # type: ignore[attr-defined]
    h = {"Authorization": f"Bearer {token}", **(headers or {})}
    with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=h)) as r:
        return bytes(r.read())


def test_restore_does_not_write_through_a_symlinked_directory_outside_the_folder(
    tmp_path: Path, serve: RemoteServer
) -> None:
    """A directory deleted (and mirrored as deleted), then replaced locally by a symlink to a
    directory outside the folder: `syncd restore DIR` writes the files into the symlink's
    target (outside every folder), and with --overwrite renames the files found there. The
    daemon does not follow the symlink, so it deletes the restored files from the server
    again."""
    folder = tmp_path / "folder"
    (folder / "u").mkdir(parents=True)
    (folder / "keep.txt").write_text("keep\n")
    (folder / "u" / "a.txt").write_text("old a\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("precious, not in any folder\n")
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    (folder / "u" / "a.txt").unlink()
    (folder / "u").rmdir()
    _sync(cfg)
    (folder / "u").symlink_to(outside)
    r = run_syncd("restore", str(folder / "u"), "--overwrite", config=cfg)
    # Nothing outside the folder may be touched: the target is a symlink syncd never follows.
    assert sorted(p.name for p in outside.iterdir()) == ["a.txt"], r.stdout + r.stderr
    assert (outside / "a.txt").read_text() == "precious, not in any folder\n"
    assert r.returncode != 0  # and the restore must say it could not restore there


def test_a_restore_killed_after_putting_back_on_the_server_is_finished_by_running_it_again(
    tmp_path: Path, serve: RemoteServer
) -> None:
    """`restore --deleted-since` first COPYs the version back on the server, then downloads.
    Killed in between (SIGKILL), the file is current on the server but missing locally; the
    same command run again no longer sees it as deleted, restores nothing else and exits 0
    ("0 not restored") while the file is still missing from the folder. (Reproduced here by
    making the server-side copy by hand, as the killed restore had done; seen live with a
    kill -9 of a restore of 880 files: 1 file missing after the re-run.)"""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n")
    (folder / "a.txt").write_text("a\n")
    (folder / "b.txt").write_text("b\n")
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    (folder / "a.txt").unlink()
    (folder / "b.txt").unlink()
    run_syncd("sync", "--force-delete", config=cfg)
    assert serve.read_tree(space) == {"keep.txt": b"keep\n"}
    listing = _req(serve, "GET", f"/.~syncd-versions/{space}/?list").decode()
    entry = next(json.loads(line)["path"] for line in listing.splitlines() if "a.txt/" in line)
    # What the killed restore had done: the version put back on the server, not yet downloaded.
    _req(
        serve,
        "COPY",
        f"/.~syncd-versions/{space}/{entry}",
        {"Destination": f"/{space}/a.txt"},
    )
    r = run_syncd("restore", "--deleted-since", "1h", config=cfg)
    assert (folder / "b.txt").read_text() == "b\n"
    # The same command again must finish the job (README: "run the same command again and it
    # goes on where it stopped"), or at least not say everything is back.
    assert (folder / "a.txt").exists() or r.returncode != 0, r.stdout + r.stderr


def test_at_a_time_a_path_was_a_file_brings_the_file_back(
    tmp_path: Path, serve: RemoteServer
) -> None:
    """d was a file at T, is a directory now: `restore d --at T --to OUT` restores the
    directory's current files (which did not exist at T) and refuses the file itself with
    "a file appeared there while it was restored; ... run it again" (it did not: restore made
    the directory itself), exit 1, however often it is run."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n")
    (folder / "d").write_text("I am a file\n")
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    time.sleep(1.1)
    at = time.time()
    time.sleep(1.1)
    (folder / "d").unlink()
    (folder / "d").mkdir()
    (folder / "d" / "z").write_text("new\n")
    _sync(cfg)
    out = tmp_path / "out"
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at))
    r = run_syncd("restore", str(folder / "d"), "--at", when, "--to", str(out), config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "d").is_file() and (out / "d").read_text() == "I am a file\n"
    assert os.listdir(out) == ["d"]  # d/z did not exist at T


def test_dry_run_says_what_the_real_run_will_do(tmp_path: Path, serve: RemoteServer) -> None:
    """A path that cannot be restored (a directory is there now) is counted by --dry-run as
    "1 file(s) would be restored", exit 0; the same command without --dry-run restores
    nothing and exits 1. (An identical file is also counted as "would be restored".)"""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n")
    (folder / "d").write_text("a file\n")
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    (folder / "d").unlink()
    _sync(cfg)
    (folder / "d").mkdir()
    (folder / "d" / "new").write_text("new\n")
    dry = run_syncd("restore", str(folder / "d"), "--overwrite", "--dry-run", config=cfg)
    real = run_syncd("restore", str(folder / "d"), "--overwrite", config=cfg)
    assert real.returncode == 1, real.stdout + real.stderr
    assert dry.returncode == real.returncode, dry.stdout + dry.stderr
    assert "1 file(s) would be restored" not in dry.stdout


def test_to_inside_what_is_restored_is_refused(tmp_path: Path, serve: RemoteServer) -> None:
    folder = tmp_path / "folder"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "a.txt").write_text("a\n")
    space = serve.new_space()
    cfg = _config(tmp_path, serve, folder, space)
    _sync(cfg)
    for args in (("--all",), (str(folder / "d"),)):
        r = run_syncd("restore", *args, "--to", str(folder / "d" / "old"), config=cfg)
        assert r.returncode == 2 and "is inside" in r.stderr, r.stderr
        assert not (folder / "d" / "old").exists()
    # Elsewhere in the folder is fine: a copy beside the original (mirrored like any file).
    r = run_syncd("restore", str(folder / "d"), "--to", str(folder / "copies"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert (folder / "copies" / "d" / "a.txt").read_text() == "a\n"


async def test_a_daemon_gone_during_a_restore_says_run_it_again(tmp_path: Path) -> None:
    """The daemon's end of a restore session closes (it was killed): one error that says the
    files so far are on disk and to run the same restore again; the release that follows
    raises nothing more."""
    import asyncio

    from syncd.errors import SyncdError
    from syncd.status.client import SOCKET_NAME, RestoreSession

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # "restore"
        writer.close()

    server = await asyncio.start_unix_server(hang_up, str(tmp_path / SOCKET_NAME))
    try:
        session = await RestoreSession.open(tmp_path)
        assert session is not None
        with pytest.raises(SyncdError, match="run the same restore again") as first:
            await session.hold("scope", ["a.txt"])
        with pytest.raises(SyncdError) as second:
            await session.hold("scope", ["b.txt"])
        assert second.value is first.value
        await session.release()
    finally:
        server.close()
        await server.wait_closed()
