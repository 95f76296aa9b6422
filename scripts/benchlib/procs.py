"""Running and timing subprocesses: deadlines on everything, peak RSS, CPU time, clean stops."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BenchError(Exception):
    """A workload could not be measured (a tool failed, timed out, or produced wrong bytes)."""


@dataclass
class Ran:
    """A finished subprocess: wall time, exit code, peak RSS (ru_maxrss, KiB on Linux), the
    CPU time it used (user + system), and the CPU time the servers used meanwhile."""

    seconds: float
    code: int
    maxrss_kib: int
    cpu: float
    log: Path
    server_cpu: dict[str, float] = field(default_factory=dict)


class Procs:
    """Every long-running process the bench started, stopped at exit (TERM, then KILL)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.items.append((name, proc))

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.items = [(n, p) for n, p in self.items if p is not proc]
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.items)):
            self.stop(proc)


PROCS = Procs()


def run(
    cmd: Sequence[str | Path],
    log: Path,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> Ran:
    """Run ``cmd`` to completion (stdout and stderr to ``log``), bounded by ``timeout``.

    The child is reaped with ``os.wait4`` so that its peak RSS is known; the wall time is taken
    right after it ends.
    """
    argv = [str(c) for c in cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        got: dict[str, Any] = {}

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            got["t"] = time.perf_counter()
            got["status"] = status
            got["usage"] = usage

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if waiter.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            waiter.join(10)
            raise BenchError(f"{Path(argv[0]).name} timed out after {timeout:.0f} s (log: {log})")
    code = os.waitstatus_to_exitcode(got["status"])
    proc.returncode = code
    if check and code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(
            f"{Path(argv[0]).name} exited {code} (log: {log}):\n  " + "\n  ".join(tail)
        )
    usage = got["usage"]
    return Ran(got["t"] - t0, code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, log)


def spawn(
    name: str, cmd: Sequence[str | Path], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process (its own process group), stopped at exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    PROCS.add(name, proc)
    return proc


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.005) -> float:
    """Poll ``cond`` until true; return the time.perf_counter() at which it was seen true."""
    deadline = time.perf_counter() + timeout
    while True:
        if cond():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a running process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its children, running (their own stat) or
    reaped (the parent's cutime + cstime); 0 if gone."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def version_of(cmd: Sequence[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(0) if m else "?"


@contextlib.contextmanager
def stopping_at_exit() -> Iterator[None]:
    """Stop every started process on exit, including on SIGTERM/SIGINT."""

    def on_signal(sig: int, _frame: object) -> None:
        raise SystemExit(128 + sig)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        PROCS.stop_all()
        for s, h in old.items():
            signal.signal(s, h)
