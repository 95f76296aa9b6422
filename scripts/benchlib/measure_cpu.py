"""CPU seconds for one big file against the floor syncd cannot go below.

On two shared cores both ends hashing every byte cannot match an unhashed curl in wall-clock
time; CPU seconds against the work that must be done measure syncd, not the machine:

- the client: ``syncd sync``'s user + system CPU against curl's for the same upload to the
  same ``syncd serve``, plus sha-256 of the file alone (hashlib, in a process of its own), plus
  starting Python (``python -c pass``);
- ``syncd serve``: its CPU receiving the file from ``syncd sync`` (its /proc stat before and
  after) against nginx's receiving curl's upload, plus the same sha-256, plus an fsync of the
  file nginx received (nginx never fsyncs; on a tmpfs it costs nothing).

Floors: within 1.2 × each. The wall-clock rows stay in the table (measure_big).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import peers
from .procs import Ran, run
from .report import Floor, Result
from .session import Session

TIMES = 1.2
HASH_CPU = (
    "import hashlib, sys, time\n"
    "best = None\n"
    "for _ in range(2):\n"
    "    t = time.process_time(); h = hashlib.sha256()\n"
    "    with open(sys.argv[1], 'rb', buffering=0) as f:\n"
    "        while b := f.read(1 << 20):\n"
    "            h.update(b)\n"
    "    c = time.process_time() - t\n"
    "    best = c if best is None else min(best, c)\n"
    "print(best)\n"
)


def hash_cpu(path: Path) -> float:
    """CPU seconds of hashlib's sha-256 over ``path`` (page cache warm), the better of two."""
    out = subprocess.run(
        [sys.executable, "-c", HASH_CPU, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(out.stdout.strip())


def python_start_cpu(s: Session) -> float:
    """CPU seconds of ``python -c pass`` in the bench's venv (median of 5)."""
    cmd = [sys.executable, "-c", "pass"]
    return statistics.median(run(cmd, s.log("python-pass"), timeout=60).cpu for _ in range(5))


def fsync_cpu(s: Session, src: Path) -> float:
    """CPU seconds of an fsync of a file nginx has just received (curl -T, then fsync at once,
    before anything else writes the page cache out)."""
    url = f"{s.srv.dav_url}cpu-floor/big.bin"
    run(peers.curl_put(src, url, peers.dav_auth(s.srv)), s.log("curl-nginx-fsync"), timeout=600)
    got = s.srv.dav_root / "cpu-floor" / "big.bin"
    fd = os.open(got, os.O_RDONLY)
    try:
        t = time.thread_time()
        os.fsync(fd)
        spent = time.thread_time() - t
    finally:
        os.close(fd)
    got.unlink()
    return spent


def cpu_rows(s: Session, runs: dict[str, list[Ran]], src: Path, label: str) -> None:
    """The two CPU rows from big_upload's runs (median of each) and the floors' parts."""

    def med(name: str, server: str | None = None) -> float:
        return statistics.median(r.server_cpu[server] if server else r.cpu for r in runs[name])

    sha, py, fsync = hash_cpu(src), python_start_cpu(s), fsync_cpu(s, src)
    curl = med("curl_serve")
    client = {"curl_cpu_s": curl, "sha256_cpu_s": sha, "python_start_cpu_s": py}
    s.add(
        cpu_result(
            "big_cpu_client",
            f"{label} upload to syncd serve: client CPU",
            med("syncd_serve"),
            client,
            "curl -T's CPU + sha-256 + python -c pass",
        )
    )
    nginx = med("curl_nginx", "nginx")
    serve = {"nginx_cpu_s": nginx, "sha256_cpu_s": sha, "fsync_cpu_s": fsync}
    row = cpu_result(
        "big_cpu_serve",
        f"{label} upload: syncd serve's CPU receiving",
        med("syncd_serve", "serve"),
        serve,
        "nginx's CPU (curl -T) + sha-256 + fsync",
    )
    row.extra["serve_cpu_receiving_curl_s"] = round(med("curl_serve", "serve"), 3)
    s.add(row)


def cpu_result(id: str, name: str, cpu: float, parts: dict[str, float], peer: str) -> Result:
    """syncd's CPU seconds against the floor, the sum of ``parts`` (kept in the row)."""
    floor = sum(parts.values())
    return Result(
        id,
        name,
        "s",
        cpu,
        floor,
        peer,
        "lower",
        [Floor(f"≤ {TIMES:g} × the floor", cpu <= TIMES * floor)],
        {k: round(v, 3) for k, v in parts.items()},
    )
