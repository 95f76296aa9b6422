"""Shared fixtures: real servers on 127.0.0.1, each with its own root, token and free port."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Generated inputs: "ci" (the default, what scripts/test runs) keeps every property test bounded
# so the suite stays under ten minutes; "long" digs deeper: scripts/test --hypothesis-profile=long
# Tests that do real I/O per example scale their own counts from settings().max_examples.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("SYNCD_HYPOTHESIS_PROFILE", "ci"))


@dataclass
class ServerProc:
    """A running `syncd serve` subprocess."""

    root: Path
    token: str | None
    token_file: Path | None
    url: str
    port: int
    proc: subprocess.Popen[str]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_server(
    root: Path,
    token_file: Path | None,
    *extra: str,
    port: int = 0,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    prefix: tuple[str, ...] = (),
) -> ServerProc:
    """Start `python -m syncd serve` and wait (with a deadline) for its 'listening' line.
    ``log``: a file its log is appended to (else this process's stderr); ``prefix``: a
    command it runs under (``prlimit --nofile=…``)."""
    cmd = [sys.executable, "-m", "syncd", "serve", "--root", str(root), "--port", str(port)]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    cmd = [*prefix, *cmd, *extra]
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(log.open("ab")) if log is not None else None
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"syncd serve exited with {proc.returncode}")
            continue
        m = re.search(r"listening on (https?)://[^:/]+:(\d+)/", line)
        if m:
            bound = int(m.group(2))
            token = token_file.read_text().strip() if token_file else None
            return ServerProc(
                root=root,
                token=token,
                token_file=token_file,
                url=f"{m.group(1)}://127.0.0.1:{bound}/",
                port=bound,
                proc=proc,
            )
    proc.kill()
    raise RuntimeError(f"syncd serve did not report listening; last line: {line!r}")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    f = tmp_path / "token"
    f.write_text(secrets.token_urlsafe(24) + "\n")
    f.chmod(0o600)
    return f


@pytest.fixture
def server(tmp_path: Path, token_file: Path) -> Iterator[ServerProc]:
    """A real `syncd serve` on a free 127.0.0.1 port with a token and its own root."""
    root = tmp_path / "server-root"
    root.mkdir()
    srv = start_server(root, token_file)
    try:
        yield srv
    finally:
        srv.stop()


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def mirror_config(
    tmp_path: Path,
    server: ServerProc,
    folder: Path,
    *,
    remote_path: str = "docs",
    extra_folder: str = "",
    extra: str = "",
) -> Path:
    """A config mirroring ``folder`` to ``server`` with its own state dir."""
    token = f'token_file = "{server.token_file}"\n' if server.token_file else ""
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
url = "{server.url}"
{token}
[[folder]]
path = "{folder}"
remote_path = "{remote_path}"
{extra_folder}

[sync]
state_dir = "{tmp_path / "state"}"
{extra}
""",
    )


def run_syncd(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    honour_modes: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the real `syncd` command line in a subprocess.

    ``honour_modes``: when run as root, drop the capabilities that let root read any file, so
    that ``chmod 000`` means what it means for a normal user.
    """
    cmd = [sys.executable, "-m", "syncd", *args]
    if honour_modes and os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    if config is not None:
        cmd += ["-c", str(config)]
    full_env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**full_env, **(env or {})}
    )


def wait_for(cond: Callable[[], object], timeout: float = 20, what: str = "condition") -> None:
    """Poll ``cond`` until it is true, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
            last_exc = None
        except (OSError, AssertionError) as e:
            last_exc = e
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last_exc}" if last_exc else ""))


class DaemonProc:
    """A running `syncd run` subprocess whose stderr is collected in a file."""

    def __init__(
        self, config: Path, log: Path, env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        self.config = config
        self.log_path = log
        self._log = log.open("ab")
        base = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(config)],
            stdout=self._log,
            stderr=self._log,
            env={**base, **(env or {})},
        )
        if wait:
            try:
                wait_for(
                    lambda: "ready:" in self.log() or self.proc.poll() is not None, 30, "ready"
                )
                assert self.proc.poll() is None, self.log()
            except BaseException:
                self.stop(signal.SIGKILL)  # never leave a daemon behind
                raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def refused_by_the_server(server: ServerProc, folder: Path, remote_path: str = "docs") -> Path:
    """A local file the server refuses for good: on the server, its directory is a symlink
    (``syncd serve`` never follows one: 403 "is a symlink", and listings leave it out).
    Returns the local file (``linked/refused.txt``); the error names ``linked/refused.txt``."""
    elsewhere = server.root.parent / "outside-the-root"
    elsewhere.mkdir(exist_ok=True)
    (server.root / remote_path).mkdir(parents=True, exist_ok=True)
    link = server.root / remote_path / "linked"
    if not link.is_symlink():
        link.symlink_to(elsewhere)
    (folder / "linked").mkdir(exist_ok=True)
    f = folder / "linked" / "refused.txt"
    f.write_text("refused by the server")
    return f


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m http.server` on a free port: a static file server, not a syncd server
    (what a wrong URL often is). Serves a docs/ directory and an index page; yields the URL
    and the server's log (one line per request)."""
    from tests.remote_servers import free_port, stop_process, wait_listening

    root = tmp_path / "static"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.txt").write_text("hello")
    (root / "index.html").write_text("<html><body>hello</body></html>\n")
    port = free_port()
    log = tmp_path / "http.server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_listening(port, proc, "http.server", log)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        stop_process(proc)


def server_temps(root: Path) -> list[Path]:
    """The server's temporary files (``.~syncd-*``) anywhere under ``root``, the kept
    versions' too; not its lock, a mirror's marker or the versions, which are meant to stay."""
    keep = (".~syncd-serve.lock", ".~syncd-mirror")
    found = []
    for top, dirs, files in os.walk(root):  # (iterative: a tree deeper than recursion allows)
        found += [Path(top, n) for n in dirs + files if _temp_like(n) and n not in keep]
    return found


def _temp_like(name: str) -> bool:
    """A reserved name that is not the versions' directory or one of their entries."""
    if name.startswith(".~syncd-v") and not name.endswith(".tmp"):
        return False  # .~syncd-versions, .~syncd-v<when>-<why> (syncd/versioning.py)
    return name.startswith(".~syncd-")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl: scripts/test installs it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key
