"""Issue 16 item 4: `syncd run` under a real, lowered inotify watch limit.

The limit is lowered for the daemon alone: in a user namespace of its own (``unshare -U -r``),
``/proc/sys/user/max_inotify_watches`` is that namespace's limit (Linux >= 4.9), and
inotify_add_watch fails with ENOSPC beyond it. Where user namespaces are not permitted these
tests fail with the reason: they are the only check of the degraded watch.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.watchlimit import (
    POLL_INTERVAL,
    POLL_SHARE,
    Poller,
    outermost,
    plan_watch,
    poll_interval,
    suggested_limit,
)
from tests.conftest import ServerProc, mirror_config, run_syncd, wait_for
from tests.test_ops import get, parse_metrics, status_url

LIMIT = 100


def under_limit(limit: int, *cmd: str) -> list[str]:
    """``cmd`` in a user namespace whose inotify watch limit is ``limit``."""
    script = f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"'
    return ["unshare", "-U", "-r", "sh", "-c", script, "sh", *cmd]


@pytest.fixture(scope="module")
def userns() -> None:
    """User namespaces work here, and the lowered limit is real: the 101st watch fails."""
    probe = textwrap.dedent(
        """
        import ctypes, os, sys, tempfile
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(0)
        top = tempfile.mkdtemp()
        ok = 0
        for i in range(150):
            os.mkdir(f"{top}/{i}")
            if libc.inotify_add_watch(fd, f"{top}/{i}".encode(), 2) < 0:
                print(ok, ctypes.get_errno())
                break
            ok += 1
        """
    )
    if shutil.which("unshare") is None:
        pytest.fail("these tests need unshare (util-linux) to lower the inotify limit")
    r = subprocess.run(
        under_limit(LIMIT, sys.executable, "-c", probe), capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.fail(
            "cannot lower the inotify watch limit in a user namespace "
            f"(unshare -U -r; kernel.unprivileged_userns_clone or a seccomp profile?): "
            f"{r.stderr.strip()}"
        )
    assert r.stdout.split() == [str(LIMIT), str(errno.ENOSPC)], r.stdout


class LimitedDaemon:
    """`syncd run` under a lowered inotify limit, its output in a file."""

    def __init__(self, config: Path, log: Path, limit: int) -> None:
        self.config = config
        self.log_path = log
        self._log = log.open("ab")
        env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
        cmd = under_limit(limit, sys.executable, "-m", "syncd", "run", "-c", str(config))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env)
        try:
            wait_for(lambda: "ready:" in self.log() or self.proc.poll() is not None, 60, "ready")
            assert self.proc.poll() is None, self.log()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def make_tree(folder: Path) -> None:
    """202 directories: a (70), b (65), c (60), small (6) and the folder itself. Under a limit
    of 100 (84 watches taken), a and small are watched, b in part, c is polled whole."""
    for name, n in (("a", 69), ("b", 64), ("c", 59), ("small", 5)):
        for i in range(n):
            (folder / name / str(i)).mkdir(parents=True)
    (folder / "c" / "5" / "old.txt").write_text("old\n")
    (folder / "c" / "6" / "gone.txt").write_text("gone soon\n")
    (folder / "top.txt").write_text("top\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    folder = tmp_path / "Big"
    folder.mkdir()
    make_tree(folder)
    return folder


def config(tmp_path: Path, server: ServerProc, folder: Path) -> Path:
    # rescan_interval caps the poll interval (syncd.watchlimit.poll_interval): 2 s here.
    cfg = mirror_config(
        tmp_path, server, folder, extra="debounce = 0.1\nmax_delay = 2\nrescan_interval = 2\n"
    )
    cfg.write_text(
        cfg.read_text() + '\n[status]\nlisten = "127.0.0.1:0"\n\n[log]\nlevel = "debug"\n'
    )
    return cfg


@pytest.fixture
def limited(
    userns: None, tmp_path: Path, server: ServerProc, tree: Path
) -> Iterator[LimitedDaemon]:
    d = LimitedDaemon(config(tmp_path, server, tree), tmp_path / "daemon.log", LIMIT)
    try:
        yield d
    finally:
        assert d.stop() == 0, d.log()


def test_over_the_limit_one_message_polling_mirrors_every_change(
    server: ServerProc, tree: Path, limited: LimitedDaemon
) -> None:
    remote = server.root / "docs"
    log = limited.log()
    told = [line for line in log.splitlines() if "cannot watch all of" in line]
    assert len(told) == 1, log
    line = told[0]
    assert str(tree) in line and "202 directories" in line and "limit is 100" in line, line
    assert "user.max_inotify_watches = 100" in line, line
    assert "`sudo sysctl fs.inotify.max_user_watches=524288`" in line, line
    assert "/etc/sysctl.d/" in line and "polling the other 118 every 2 s" in line, line
    assert (remote / "c" / "5" / "old.txt").read_text() == "old\n"

    # A change in a watched directory: an inotify event.
    (tree / "small" / "1" / "new.txt").write_text("watched\n")
    wait_for(lambda: (remote / "small" / "1" / "new.txt").exists(), what="watched change")

    # Changes in the polled part: a new file, an edit, a delete, a new directory.
    c = tree / "c"
    (c / "5" / "new.txt").write_text("polled new\n")
    (c / "5" / "old.txt").write_text("edited, longer\n")
    (c / "6" / "gone.txt").unlink()
    (c / "7" / "sub").mkdir()
    (c / "7" / "sub" / "deep.txt").write_text("deep\n")

    def polled_mirrored() -> bool:
        return (
            (remote / "c" / "5" / "new.txt").is_file()
            and (remote / "c" / "5" / "old.txt").read_text() == "edited, longer\n"
            and not (remote / "c" / "6" / "gone.txt").exists()
            and (remote / "c" / "7" / "sub" / "deep.txt").is_file()
        )

    wait_for(polled_mirrored, 60, "the polled changes mirrored")
    # The poller finds them at its next poll, whether or not a rescan (same interval here)
    # mirrored them first.
    wait_for(lambda: {"c/5", "c/6", "c/7"} <= polled(limited.log()), 60, "the poller's finding")

    metrics = parse_metrics(get(status_url_of(limited) + "metrics")[2])
    assert metrics['syncd_watch_degraded{folder="docs"}'] == 1
    assert metrics['syncd_polled_directories{folder="docs"}'] == 118
    assert metrics['syncd_watched_directories{folder="docs"}'] == 84

    human = run_syncd("status", config=limited.config)
    assert (
        "watch: degraded -- 118 of 202 directories polled every 2 s (inotify limit 100); "
        "raise it: sudo sysctl fs.inotify.max_user_watches=524288" in human.stdout
    ), human.stdout
    assert limited.log().count("cannot watch all of") == 1


def test_under_the_limit_the_whole_folder_is_watched(
    userns: None, tmp_path: Path, server: ServerProc, tree: Path
) -> None:
    d = LimitedDaemon(config(tmp_path, server, tree), tmp_path / "daemon.log", 1000)
    try:
        metrics = parse_metrics(get(status_url_of(d) + "metrics")[2])
        assert metrics['syncd_watch_degraded{folder="docs"}'] == 0
        assert metrics['syncd_polled_directories{folder="docs"}'] == 0
        (tree / "c" / "5" / "w.txt").write_text("watched\n")
        wait_for(lambda: (server.root / "docs" / "c" / "5" / "w.txt").exists(), what="mirrored")
        human = run_syncd("status", config=d.config)
        assert "watch: degraded" not in human.stdout and "watcher watching" in human.stdout
    finally:
        assert d.stop() == 0, d.log()
    assert "cannot watch all of" not in d.log()


def test_new_directories_past_the_limit_then_the_limit_raised(
    userns: None, tmp_path: Path, server: ServerProc, tree: Path
) -> None:
    """All watched at first; new directories take it past the limit (notify drops their
    watches without a word): part of it is polled from then on, said once. The limit raised
    (from outside, as an administrator would): all of it is watched again at the next poll."""
    remote = server.root / "docs"
    d = LimitedDaemon(config(tmp_path, server, tree), tmp_path / "daemon.log", 250)
    url = status_url_of(d) + "metrics"
    try:
        assert parse_metrics(get(url)[2])['syncd_watch_degraded{folder="docs"}'] == 0
        for i in range(60):
            (tree / "c" / f"new{i}").mkdir()
        wait_for(lambda: "cannot watch all of" in d.log(), 30, "the message")
        assert "reached the inotify watch limit" in d.log()
        assert parse_metrics(get(url)[2])['syncd_watch_degraded{folder="docs"}'] == 1
        (tree / "c" / "new59" / "after.txt").write_text("after\n")
        wait_for(lambda: (remote / "c" / "new59" / "after.txt").is_file(), 60, "mirrored")
        raised = subprocess.run(
            [
                "nsenter",
                "-U",
                "-t",
                str(d.proc.pid),
                "sh",
                "-c",
                "echo 1000 > /proc/sys/user/max_inotify_watches",
            ],
            capture_output=True,
            text=True,
        )
        assert raised.returncode == 0, raised.stderr
        wait_for(lambda: "with inotify again" in d.log(), 30, "watched again")
        wait_for(
            lambda: parse_metrics(get(url)[2])['syncd_watch_degraded{folder="docs"}'] == 0,
            what="the gauge back to 0",
        )
        (tree / "c" / "new58" / "later.txt").write_text("later\n")
        wait_for(lambda: (remote / "c" / "new58" / "later.txt").is_file(), what="mirrored")
    finally:
        assert d.stop() == 0, d.log()
    assert d.log().count("cannot watch all of") == 1


def polled(log: str) -> set[str]:
    """The paths the poller found changed, in the daemon's debug log."""
    found: set[str] = set()
    for m in re.finditer(r"path\(s\) changed: (.*)", log):
        found.update(m.group(1).split(", "))
    return found


def status_url_of(d: LimitedDaemon) -> str:
    return status_url(d)  # type: ignore[arg-type]  # (it reads .log() only)


# --------------------------------------------------------------------------- the pieces


def test_plan_fits_the_largest_subtrees_and_polls_the_rest(tree: Path) -> None:
    plan = plan_watch(tree, 84)
    assert plan.directories == 202 and plan.watched_dirs == 84 and plan.polled_dirs == 118
    assert {"a", "small"} <= set(plan.watched) and "c" in plan.polled
    assert plan.flat == ["", "b"]
    assert plan_watch(tree, 202).watched == [""]
    nothing = plan_watch(tree, 0)
    assert (nothing.watched, nothing.polled, nothing.watched_dirs) == ([], [""], 0)


def test_poller_names_the_directories_that_changed(tree: Path) -> None:
    plan = plan_watch(tree, 84)
    p = Poller(tree, plan.flat, list(plan.polled), lambda rel, is_dir: rel.endswith(".cache"))
    assert p.poll() == []  # the first poll records what is there
    assert p.poll() == [] and p.cost > 0
    (tree / "c" / "5" / "old.txt").write_text("edited, longer\n")
    (tree / "c" / "9" / "x.cache").mkdir()  # an ignored directory: not walked
    (tree / "c" / "9" / "x.cache" / "f").write_text("ignored\n")
    (tree / "c" / "7" / "sub").mkdir()
    (tree / "c" / "7" / "sub" / "f").write_text("f\n")
    (tree / "new-top").mkdir()  # in a flat directory: looked at, and polled from now on
    (tree / "top.txt").unlink()
    assert p.poll() == ["c/5", "c/7", "new-top", "top.txt"]
    (tree / "new-top" / "f").write_text("f\n")
    assert p.poll() == ["new-top"]


def test_outermost_suggested_limit_and_poll_interval() -> None:
    assert outermost(["a/b", "a", "a b", "a/c/d", "b"]) == ["a", "a b", "b"]
    assert poll_interval(3600) == POLL_INTERVAL and poll_interval(2) == 2
    assert poll_interval(0, cost=5.0) == 5.0 / POLL_SHARE  # idle under POLL_SHARE of a core
    assert poll_interval(3600, cost=100.0) == 3600
    assert suggested_limit(100) == 524288
    assert suggested_limit(300_000) == 1 << 20


def test_the_probe_module_needs_libc_inotify() -> None:
    """room_for_one_more reads libc's inotify calls (Linux): they are there."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert hasattr(libc, "inotify_init1") and hasattr(libc, "inotify_add_watch")
