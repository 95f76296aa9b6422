"""What a person sees: one line for a pass that could not reach its server (or reached one that
does not speak its protocol), a progress bar that counts files as files and bytes in the
summary's units with the log printed above it, control characters escaped in text logs (JSON
logs stay valid JSON), and a closed stdout that ends a command quietly.

Real `syncd` subprocesses, a real `syncd serve` and `python -m http.server` on 127.0.0.1, and a
real pseudo-terminal for the progress bar.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd import config as cfgmod
from syncd.engine import Engine
from syncd.errors import WrongProtocol
from syncd.hashing import Source
from syncd.logs import JsonFormatter, TextFormatter, escape
from syncd.remotes.base import Features
from syncd.remotes.kinds import KINDS
from syncd.types import RemoteEntry
from tests.conftest import ServerProc, mirror_config, run_syncd, write_config
from tests.remote_servers import free_port

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    return f


def config_for(tmp_path: Path, url: str, folder: Path, extra: str = "", remote: str = "") -> Path:
    return write_config(
        tmp_path / "config.toml",
        f'[remote]\nurl = "{url}"\n{remote}\n'
        f'[[folder]]\npath = "{folder}"\nremote_path = "docs"\n'
        f'[sync]\nstate_dir = "{tmp_path / "state"}"\n{extra}',
    )


def rows(tmp_path: Path) -> int:
    """How many files the manifest records (it may not exist yet: none)."""
    path = tmp_path / "state" / "manifest.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        n: int = db.execute("SELECT count(*) FROM files").fetchone()[0]
    return n


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- unreachable


def test_unreachable_server_is_one_line_with_the_count(tmp_path: Path, folder: Path) -> None:
    """4,269 files and a server that is down: one line, not one per file (issue 13)."""
    for i in range(1234):
        (folder / f"f{i:04}.txt").write_text(f"file {i}\n")
    port = free_port()  # nothing listens there
    cfg = config_for(tmp_path, f"http://127.0.0.1:{port}/", folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert lines(r.stderr) == [
        f"syncd: server http://127.0.0.1:{port}/ unreachable (connection refused): "
        "1,234 files not sent; nothing recorded"
    ], r.stderr[:3000]
    out = lines(r.stdout)
    assert len(out) == 1 and out[0].startswith("uploaded 0, deleted 0, "), r.stdout
    assert "not sent 1,234" in out[0]
    assert rows(tmp_path) == 0
    # (Each file is still named at debug level: test_sync.py::test_server_down_is_a_clear_failure.)


# --------------------------------------------------------------------------- wrong protocol


class StaticFiles:
    """A remote that answers like a static file server: listing and uploads raise
    WrongProtocol (as the remotes do at the first answer that shows it). Counts its calls."""

    description = "http://127.0.0.1:9/"
    features = Features()

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def put(self, path: str, source: Source) -> str:
        self.calls.append(f"put {path}")
        raise WrongProtocol(f"{self.description} is not a syncd server (PUT {path}: 501)")

    async def delete(self, path: str) -> None:
        self.calls.append(f"delete {path}")
        raise WrongProtocol(f"{self.description} is not a syncd server")

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        self.calls.append(f"list {prefix}")
        if prefix == "listed":
            raise WrongProtocol(f"{self.description} is not a syncd server (an HTML listing)")
        return
        yield  # an async generator that lists nothing

    async def ping(self) -> None:
        self.calls.append("ping")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("where", ["upload", "listing"])
async def test_wrong_protocol_stops_the_pass_at_the_first_answer(
    tmp_path: Path, folder: Path, where: str
) -> None:
    for i in range(40):
        (folder / f"f{i:02}.txt").write_text(f"file {i}\n")
    remote_path = "listed" if where == "listing" else "docs"
    cfg_file = write_config(
        tmp_path / "c.toml",
        f'[remote]\nurl = "http://127.0.0.1:9/"\n[[folder]]\npath = "{folder}"\n'
        f'remote_path = "{remote_path}"\n[sync]\nstate_dir = "{tmp_path / "state"}"\n'
        "concurrency = 4\n",
    )
    remote = StaticFiles()
    async with Engine(cfgmod.load(cfg_file, kinds=KINDS), remote=remote) as engine:
        report = await engine.sync()
    puts = [c for c in remote.calls if c.startswith("put")]
    # Nothing more is tried once the first answer showed it (the workers already running
    # may each have asked once).
    assert len(puts) <= (0 if where == "listing" else 4), remote.calls
    assert report.uploaded == 0 and report.not_sent == 40 and not report.failed
    assert report.stopped is not None and "is not a syncd server" in report.stopped
    assert report.outcome() == f"{report.stopped}: 40 files not sent; nothing recorded"
    assert "\n" not in report.outcome()
    assert not report.ok
    assert rows(tmp_path) == 0


def test_a_static_file_server_is_named_as_such_in_one_line(
    tmp_path: Path, folder: Path, static_server: tuple[str, Path]
) -> None:
    url, log = static_server
    for i in range(20):
        (folder / f"f{i:02}.txt").write_text(f"file {i}\n")
    cfg = config_for(tmp_path, url, folder)
    # (Generous: it is one answer; until the remotes know, 20 files x 5 tries of a 501.)
    r = run_syncd("sync", config=cfg, timeout=10)
    assert r.returncode == 1, r.stdout + r.stderr
    err = lines(r.stderr)
    assert len(err) == 1, r.stderr[:3000]
    assert err[0].startswith("syncd: ") and url in err[0], err
    assert err[0].endswith(": 20 files not sent; nothing recorded"), err
    requests = [line for line in log.read_text().splitlines() if '"' in line]
    assert len(requests) <= 8, requests  # the first answers that show it, not one per file


# --------------------------------------------------------------------------- progress bar

CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]")


def run_on_a_terminal(cfg: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """`syncd sync` on a real pseudo-terminal (stdout and stderr, 150 columns, as a person
    runs it): the exit code and what the terminal received, escape sequences removed and
    lines split on CR and LF."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_CONFIG", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sync", *args, "-c", str(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    code = proc.wait(timeout=timeout)
    text = CSI.sub("", raw.decode("utf-8", "replace"))
    return code, "\n".join(re.split(r"\r\n|\r|\n", text))


def test_progress_bar_counts_files_and_mib_and_prints_logs_above_it(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    for i in range(20):
        (folder / f"f{i:02}.bin").write_bytes(os.urandom(96 * 1024))
    cfg = mirror_config(tmp_path, server, folder)
    code, screen = run_on_a_terminal(cfg)
    assert code == 0, screen
    assert "uploaded 20," in screen
    # Files are counted as files, bytes in binary units like the summary (1.9 MiB).
    assert re.search(r"\b20/20 files\b", screen), screen
    assert not re.search(r"\d/\d+ bytes\b", screen), screen
    assert re.search(r"\d\.\d/1\.9 MiB\b", screen), screen
    assert not re.search(r"\d ?[kMG]B\b", screen), screen  # no decimal units anywhere
    assert "1.9 MiB in" in screen and "MiB/s" in screen
    # Every log line arrives whole, above the bar, not torn through it.
    sent = [line for line in screen.split("\n") if "syncd.uploader: sent " in line]
    assert len(sent) == 20, screen
    for line in sent:
        assert LOG_LINE.match(line), f"torn log line: {line!r}\n{screen}"
        assert re.search(r"sent docs/f\d\d\.bin \(98304 bytes\)$", line), line


# --------------------------------------------------------------------------- control characters

NAMES_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)


def unsafe(c: str) -> bool:
    """What a log line must not hold as it is: controls, surrogates, line separators, bidi."""
    n = ord(c)
    return (
        n < 0x20
        or 0x7F <= n <= 0x9F
        or 0xD800 <= n < 0xE000
        or c in "\u2028\u2029\u061c\u200e\u200f"
        or 0x202A <= n <= 0x202E
        or 0x2066 <= n <= 0x2069
    )


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("syncd.test", logging.WARNING, __file__, 1, msg, args, None)


@given(NAMES_TEXT)
def test_a_text_record_is_one_line_whatever_the_names(name: str) -> None:
    out = TextFormatter().format(record("sent %s (%d bytes)", name, 3))
    assert len(out.splitlines()) == 1 and "\n" not in out and "\r" not in out
    assert not any(unsafe(c) for c in out), repr(out)
    out.encode("utf-8")  # strict: no lone surrogate reaches a log file
    assert out.endswith(f"sent {escape(name)} (3 bytes)")
    if not any(unsafe(c) for c in name):
        assert escape(name) == name  # printable names are shown as they are


@given(NAMES_TEXT)
def test_a_json_record_is_one_valid_line_whatever_the_names(name: str) -> None:
    out = JsonFormatter().format(record("sent %s", name))
    assert len(out.splitlines()) == 1 and "\n" not in out
    out.encode("utf-8")
    doc = json.loads(out)
    # Exact, controls included (JSON has escapes of its own); only a lone surrogate (a byte
    # that was not UTF-8), which UTF-8 cannot carry, is shown as the same escape as in text.
    shown = "".join(escape(c) if 0xD800 <= ord(c) < 0xE000 else c for c in name)
    assert doc["msg"] == f"sent {shown}"


def test_escape_shows_what_it_replaced() -> None:
    assert escape("a\nb\r\tc\x00\x1b[31m\x7f\x85") == "a\\nb\\r\\tc\\x00\\x1b[31m\\x7f\\x85"
    assert escape("bad\udcffbyte") == "bad\\xffbyte"  # a non-UTF-8 byte (surrogateescape)
    assert escape("line\u2028sep \u202eevil") == "line\\u2028sep \\u202eevil"
    assert escape("café 🎉 back\\slash") == "café 🎉 back\\slash"


FORGED = "evil\n2026-01-01 00:00:00,000 ERROR syncd: forged line"


def test_a_newline_in_a_file_name_cannot_break_or_forge_a_log_line(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    (folder / FORGED).write_text("a name with a newline")
    (folder / "plain.txt").write_text("plain")
    cfg = mirror_config(tmp_path, server, folder)
    r = run_syncd("sync", "-v", config=cfg)
    assert r.stderr, r.stdout
    for line in r.stderr.splitlines():
        assert LOG_LINE.match(line) or line.startswith("syncd: "), f"{line!r}\n{r.stderr}"
        assert not line.startswith("2026-01-01 00:00:00,000"), r.stderr
    assert "evil\\n2026-01-01 00:00:00,000 ERROR syncd: forged line" in r.stderr
    # JSON lines: one valid document per line, the name exact.
    cfg.write_text(cfg.read_text() + '\n[log]\nformat = "json"\n')
    (folder / FORGED).write_text("changed, so that it is logged again")
    r = run_syncd("sync", "-v", config=cfg)
    names = []
    for line in r.stderr.splitlines():
        if line.startswith("syncd: "):
            continue
        doc = json.loads(line)
        names += [doc["msg"]] if "evil" in doc["msg"] else []
    assert names and all("evil\n2026-01-01" in n for n in names), r.stderr


# --------------------------------------------------------------------------- closed pipe


def closed_stdout(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `syncd ARGS -c CFG` with stdout a pipe whose reader has gone already."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "-c", str(cfg)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("sync",),
        ("sync", "--dry-run"),
        ("verify",),
        ("config", "check"),
    ],
)
def test_a_closed_stdout_ends_quietly(
    tmp_path: Path, server: ServerProc, folder: Path, args: tuple[str, ...]
) -> None:
    for i in range(3):
        (folder / f"f{i}.txt").write_text(f"file {i}\n")
    cfg = mirror_config(tmp_path, server, folder)
    if args[0] in ("status", "verify"):
        assert run_syncd("sync", config=cfg).returncode == 0
    r = closed_stdout(cfg, *args)
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert "Exception ignored" not in r.stderr, r.stderr
    assert r.returncode == 128 + signal.SIGPIPE, (r.returncode, r.stderr)


def test_a_long_output_piped_into_head_ends_quietly(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    """The issue's own case (`syncd status | head -4`), with an output longer than the pipe
    holds (3,000 planned changes), so the writer surely meets the closed pipe."""
    for i in range(3000):
        (folder / f"f{i:04}.txt").write_text(f"file {i}\n")
    cfg = mirror_config(tmp_path, server, folder)
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    cmd = f"{sys.executable} -m syncd sync --dry-run -c {cfg} | head -4"
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=60
    )
    assert len(r.stdout.splitlines()) == 4, r.stdout
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.returncode == 128 + signal.SIGPIPE, (r.returncode, r.stderr)
