"""How the bench drives syncd: through its command line only, like a user (a config file with a
fresh state_dir, ``syncd sync -c``, ``syncd run -c`` until its ``ready:`` line)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .peers import DAV_USER
from .procs import PROCS, BenchError, Ran, spawn, wait_until
from .session import Session

ROOT = Path(__file__).resolve().parent.parent.parent


def compile_syncd(package: Path = ROOT / "syncd") -> None:
    """As `pip install` does: syncd's modules compiled once, not at every command's start
    (PYTHONDONTWRITEBYTECODE or a read-only checkout would otherwise cost ~50 ms a run)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=False,
        capture_output=True,
        timeout=120,
    )


def has_webdav_remote() -> bool:
    """Whether this syncd has a webdav remote kind (asked in a child: the bench imports no
    syncd)."""
    probe = subprocess.run(
        [sys.executable, "-c", "from syncd.remotes.kinds import NAMES; print('webdav' in NAMES)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return probe.stdout.strip() == "True"


def config(
    s: Session,
    name: str,
    folder: Path,
    remote_path: str,
    *,
    kind: str = "syncd",
    debounce: float | None = None,
    concurrency: int | None = None,
    serve: tuple[str, Path] | None = None,
) -> Path:
    """A syncd config with its own state_dir (fresh: no manifest yet). ``serve`` is another
    ``syncd serve``'s URL and token file (default: the bench's)."""
    srv = s.srv
    state = s.run_dir / "state" / name
    if kind == "syncd":
        url, token_file = serve or (srv.serve_url, srv.token_file)
        remote = f'url = "{url}"\ntoken_file = "{token_file}"\n'
    else:
        remote = (
            f'kind = "webdav"\nurl = "{srv.dav_url}"\nusername = "{DAV_USER}"\n'
            f'password_file = "{srv.dav_password_file}"\n'
        )
    sync = f'state_dir = "{state}"\n'
    if debounce is not None:
        sync += f"debounce = {debounce}\n"
    if concurrency is not None:
        sync += f"concurrency = {concurrency}\n"
    path = s.run_dir / "cfg" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[remote]\n{remote}\n[[folder]]\npath = "{folder}"\nremote_path = "{remote_path}"\n'
        f"\n[sync]\n{sync}"
    )
    return path


def sync(s: Session, cfg: Path, name: str, timeout: float) -> Ran:
    """One timed ``syncd sync``."""
    return s.cmd([*s.syncd, "sync", "-c", cfg], name, timeout)


@contextlib.contextmanager
def running(
    s: Session, label: str, log_name: str, cfg: Path, stop_timeout: float = 15
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``syncd run`` for the time of the block (stopped with TERM after it, KILL after
    ``stop_timeout`` seconds); it must exit 0."""
    log = s.log(log_name)
    proc = spawn(label, [*s.syncd, "run", "-c", cfg], log, env=s.env)
    try:
        yield proc, log
    finally:
        code = PROCS.stop(proc, stop_timeout)
    if code != 0:
        raise BenchError(f"syncd run exited {code} (log: {log})")


def wait_ready(log: Path, timeout: float, what: str, poll: float = 0.005) -> float:
    """Wait for ``syncd run``'s ``ready:`` line; returns when it was seen (time.perf_counter)."""
    return wait_until(lambda: "ready:" in log.read_text(errors="replace"), timeout, what, poll)
