"""``syncd run``: the change latency (vs lsyncd with delay = 0), and the start on a big tree with
a warm manifest (time to ready, RSS; vs lsyncd's start)."""

from __future__ import annotations

import os
import secrets
import statistics
import time
from pathlib import Path

from . import peers
from .procs import PROCS, BenchError, proc_status, wait_until
from .report import Floor, Result
from .session import Session
from .syncd_runs import config, running, sync, wait_ready
from .workloads import tree_size


def syncd_latency(s: Session, name: str = "live") -> list[float]:
    """`syncd run` on a one-file folder: ``s.sizes.writes`` change latencies, in ms."""
    live = s.run_dir / name
    live.mkdir()
    (live / "seed.txt").write_text("seed\n")
    cfg = config(s, name, live, name, debounce=s.args.debounce)
    with running(s, "syncd run", f"syncd-run-{name}", cfg) as (_proc, log):
        wait_ready(log, 60, "syncd run ready")
        return measure_latency(live, s.srv.serve_root / name, s.sizes.writes)


def latency(s: Session) -> None:
    """`syncd run` change latency vs lsyncd (delay = 0, rsync to a local folder)."""
    debounce = s.args.debounce
    syncd = syncd_latency(s)

    src = s.run_dir / "lsyncd-src"
    dst = s.store_dir / "lsyncd-dst"  # on the same filesystem as the servers
    src.mkdir()
    dst.mkdir()
    (src / "seed.txt").write_text("seed\n")
    lproc, llog = peers.start_lsyncd(s.run_dir, s.logs, "live", src, dst)
    try:
        wait_until(lambda: (dst / "seed.txt").exists(), 60, "lsyncd's first rsync")
        wait_until(lambda: peers.lsyncd_started(llog), 60, "lsyncd start")
        lsyncd = measure_latency(src, dst, s.sizes.writes)
    finally:
        PROCS.stop(lproc)
    med, top = statistics.median(syncd), max(syncd)
    lmed, ltop = statistics.median(lsyncd), max(lsyncd)
    d_ms = debounce * 1000
    s.add(
        Result(
            "latency_median",
            f"`syncd run` change latency, median of {len(syncd)} (debounce {debounce:g} s)",
            "ms",
            med,
            lmed,
            "lsyncd delay=0, local rsync",
            "lower",
            [Floor(f"≤ debounce + 30 ms ({d_ms + 30:.0f})", med <= d_ms + 30)],
            {
                "samples_ms": [round(x, 1) for x in syncd],
                "lsyncd_ms": [round(x, 1) for x in lsyncd],
            },
        )
    )
    s.add(
        Result(
            "latency_max",
            f"`syncd run` change latency, max of {len(syncd)}",
            "ms",
            top,
            ltop,
            "lsyncd delay=0, local rsync",
            "lower",
            [Floor(f"≤ debounce + 200 ms ({d_ms + 200:.0f})", top <= d_ms + 200)],
        )
    )


def tree_start(s: Session) -> None:
    """`syncd run` on the big tree with a warm manifest: time to ready, RSS; vs lsyncd."""
    folder = s.data["tree"]
    files, nbytes = tree_size(folder)
    cfg = config(s, "tree", folder, "tree")
    first = sync(s, cfg, "syncd-tree-first", s.timeout_for(nbytes, files))
    ready: list[float] = []
    rss: list[int] = []
    for _ in range(max(1, min(2, s.sizes.reps))):
        t0 = time.perf_counter()
        with running(s, "syncd run tree", "syncd-run-tree", cfg) as (proc, log):
            t1 = wait_ready(log, 120, "syncd run ready on the tree", poll=0.01)
            ready.append(t1 - t0)
            st = proc_status(proc.pid)
            rss.append(max(st.get("VmHWM", 0), st.get("VmRSS", 0)))
        if "sent " in log.read_text(errors="replace"):
            raise BenchError(f"syncd run sent files although the manifest was warm ({log})")

    dst = s.run_dir / "tree-lsyncd"
    s.cmd(peers.rsync(folder, dst), "rsync-tree", 600)
    t0 = time.perf_counter()
    lproc, llog = peers.start_lsyncd(s.run_dir, s.logs, "tree", folder, dst)
    try:
        t1 = wait_until(
            lambda: peers.lsyncd_started(llog), 600, "lsyncd start on the tree", poll=0.01
        )
        lst = proc_status(lproc.pid)
    finally:
        PROCS.stop(lproc)
    lready = t1 - t0
    lrss = max(lst.get("VmHWM", 0), lst.get("VmRSS", 0)) / 1024
    r, m = statistics.median(ready), max(rss) / 1024
    n = f"{files:,}"
    s.add(
        Result(
            "tree_ready",
            f"`syncd run` start on {n} files, warm manifest: ready",
            "s",
            r,
            lready,
            "lsyncd start (rsync no-op + watches)",
            "lower",
            [Floor("≤ 3 s", r <= 3)],
            {"samples": ready, "first_sync_files_per_s": round(files / first.seconds)},
        )
    )
    s.add(
        Result(
            "tree_rss",
            f"`syncd run` start on {n} files: RSS",
            "MiB",
            m,
            lrss,
            "lsyncd",
            "lower",
            [Floor("≤ 150 MiB", m <= 150)],
        )
    )


def measure_latency(src: Path, dst: Path, writes: int) -> list[float]:
    """From write() to the bytes being in ``dst``, for ``writes`` small files, in ms."""
    out: list[float] = []
    for i in range(writes):
        rel = f"w{i:03d}.txt"  # a new file each time (rsync skips same-size edits within a second)
        data = f"write {i} {secrets.token_hex(16)}\n".encode()
        target = dst / rel

        def arrived(target: Path = target, data: bytes = data) -> bool:
            try:
                return target.read_bytes() == data
            except OSError:
                return False

        t0 = time.perf_counter()
        fd = os.open(src / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        t1 = wait_until(arrived, 30, f"{rel} to arrive in {dst}", poll=0.001)
        out.append((t1 - t0) * 1000)
        time.sleep(0.15)
    return out
