"""The million-file tree (``--only million``): the first sync to ``syncd serve``, then ``syncd
run``'s warm start on it (time to ready, RSS at ready and after ``--idle`` seconds, idle CPU,
change latency with the whole tree watched), then the no-op ``syncd sync`` against rsync's and
rclone's local no-ops.

The floors are those of a small tree: a million files should feel like a thousand. The tree is
the cached data set; the latency writes go into its first directory and are removed again
(leftovers of a killed run are removed before the first sync).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from . import peers
from .measure_live import measure_latency
from .procs import BenchError, Ran, cpu_seconds, proc_status, wait_until
from .report import Floor, Result, run_rss_result
from .session import Session
from .syncd_runs import config, running, sync, wait_ready
from .workloads import SYNCD_OWN_PREFIX, tree_size

IDLE_CPU_WINDOW = 60.0  # seconds after ready (shorter when --idle is shorter)
LATENCY_DIR = "d00000"  # where the latency writes go, inside the tree


def million(s: Session) -> None:
    """Every row of the million-file tree, in one run (see the module's docstring)."""
    folder = s.data["million"]
    for left in (folder / LATENCY_DIR).glob("w*.txt"):
        left.unlink()
    files = s.sizes.million_files
    n = f"{files:,}"
    remote = s.srv.serve_root / "million"
    cfg = config(s, "million", folder, "million", debounce=s.args.debounce)
    t = s.timeout_for(files * 1100, files)
    first = sync(s, cfg, "syncd-million-first", t)
    if tree_size(remote)[0] != files:
        raise BenchError("syncd sync did not store every file of the million tree")
    copy = s.store_dir / "million-copy"  # rsync's and rclone's target, where the servers store
    rsync_first = s.cmd(rsync_mirror(folder, copy), "rsync-million-first", t)
    rate = files / first.seconds
    s.add(
        Result(
            "million_first",
            f"{n}-file tree ({s.sizes.million_dirs:,} dirs) first sync to syncd serve",
            "files/s",
            rate,
            files / rsync_first.seconds,
            "rsync -a, local copy",
            "higher",
            [Floor("≥ 600 files/s (as at 10,000)", rate >= 600)],
            {
                "seconds": round(first.seconds, 1),
                "client_cpu_s": round(first.cpu, 1),
                "server_cpu_s": round(first.server_cpu["serve"], 1),
            },
        )
    )
    noops = noop_runs(s, cfg, folder, copy)
    warm_start(s, cfg, folder, remote / LATENCY_DIR, noops)
    noop_rows(s, n, noops)


def rsync_mirror(src: Path, dst: Path) -> list[str | Path]:
    return ["rsync", "-a", "--delete", f"--exclude={SYNCD_OWN_PREFIX}*", f"{src}/", f"{dst}/"]


def noop_runs(s: Session, cfg: Path, folder: Path, copy: Path) -> dict[str, list[Ran]]:
    """The no-ops, interleaved: ``syncd sync``, ``rsync -a --delete`` and ``rclone sync`` to the
    local copy (rclone to nginx would spend its time in its WebDAV pacer, ~100 calls/s, one
    PROPFIND per directory: 100,000 of them; a local copy asks rclone for its best)."""
    rclone = peers.rclone(
        s.srv, ["sync", folder, copy, "--checkers", "16", "--exclude", f"{SYNCD_OWN_PREFIX}*"]
    )
    s.cmd(rclone, "rclone-million-warmup", 3600)  # nothing to copy, but it must say so
    runs: dict[str, list[Ran]] = {"syncd": [], "rsync": [], "rclone": []}
    for _ in range(s.reps_at_least(3)):
        runs["syncd"].append(sync(s, cfg, "syncd-million-noop", 1800))
        runs["rsync"].append(s.cmd(rsync_mirror(folder, copy), "rsync-million-noop", 1800))
        runs["rclone"].append(s.cmd(rclone, "rclone-million-noop", 3600))
    return runs


def noop_rows(s: Session, n: str, runs: dict[str, list[Ran]]) -> None:
    med = {k: statistics.median(r.seconds for r in v) for k, v in runs.items()}
    samples = {k: [round(r.seconds, 3) for r in v] for k, v in runs.items()}
    syncd = med["syncd"]
    s.add(
        Result(
            "million_noop_rsync",
            f"no-op syncd sync, {n} files, vs rsync",
            "s",
            syncd,
            med["rsync"],
            "rsync -a --delete, local copy",
            "lower",
            [Floor("≤ 1.5 × rsync", syncd <= 1.5 * med["rsync"])],
            {"samples": samples},
        )
    )
    s.add(
        Result(
            "million_noop_rclone",
            f"no-op syncd sync, {n} files, vs rclone",
            "s",
            syncd,
            med["rclone"],
            "rclone sync, local copy",
            "lower",
            [Floor("≥ 5 × faster than rclone", syncd * 5 <= med["rclone"])],
        )
    )


def warm_start(
    s: Session, cfg: Path, folder: Path, seen_in: Path, noops: dict[str, list[Ran]]
) -> None:
    """``syncd run`` on the tree with its manifest complete: ready, RSS, idle CPU, latency."""
    files = s.sizes.million_files
    n = f"{files:,}"
    idle = s.idle
    window = min(IDLE_CPU_WINDOW, idle)
    debounce_ms = s.args.debounce * 1000
    t0 = time.perf_counter()
    with running(s, "syncd run million", "syncd-run-million", cfg, 300) as (proc, log):
        t1 = wait_ready(log, 900, "syncd run ready on the million tree", poll=0.01)
        cpu0, at_ready = cpu_seconds(proc.pid), proc_status(proc.pid)
        time.sleep(window)
        cpu1 = cpu_seconds(proc.pid)
        time.sleep(max(0.0, idle - window))
        cpu2, after_idle = cpu_seconds(proc.pid), proc_status(proc.pid)
        if "sent " in log.read_text(errors="replace"):
            raise BenchError(f"syncd run sent files although the manifest was complete ({log})")
        lat = measure_latency(folder / LATENCY_DIR, seen_in, s.sizes.writes)
        for w in (folder / LATENCY_DIR).glob("w*.txt"):
            w.unlink()
        wait_until(
            lambda: not any(seen_in.glob("w*.txt")), 120, "the latency files' deletion", 0.05
        )
    ready = t1 - t0
    rsync_noop = statistics.median(r.seconds for r in noops["rsync"])
    rsync_rss = max(r.maxrss_kib for r in noops["rsync"]) / 1024
    cpu_pct = (cpu1 - cpu0) / window * 100
    s.add(
        Result(
            "million_ready",
            f"`syncd run` warm start on {n} files: ready",
            "s",
            ready,
            rsync_noop,
            "rsync -a --delete no-op, local",
            "lower",
            [Floor("≤ 10 s", ready <= 10)],
        )
    )
    ready_kib = max(at_ready.get("VmHWM", 0), at_ready.get("VmRSS", 0))
    s.add(
        run_rss_result(
            "million_rss_ready",
            f"`syncd run` on {n} files: RSS at ready (peak)",
            files,
            ready_kib,
            rsync_rss,
            "rsync -a --delete no-op, peak",
        )
    )
    idle_row = run_rss_result(
        "million_rss_idle",
        f"`syncd run` on {n} files: RSS after {idle:g} s idle",
        files,
        after_idle.get("VmRSS", 0),
        ready_kib / 1024,
        "itself at ready",
    )
    idle_row.extra["VmHWM_MiB"] = round(after_idle.get("VmHWM", 0) / 1024, 1)
    s.add(idle_row)
    rest = idle - window
    s.add(
        Result(
            "million_idle_cpu",
            f"`syncd run` on {n} files: idle CPU, {window:g} s after ready",
            "% of a core",
            max(cpu_pct, 0.001),
            1.0,
            "the floor, 1 % of a core",
            "lower",
            [Floor("< 1 %", cpu_pct < 1)],
            {
                "cpu_s": round(cpu1 - cpu0, 3),
                "cpu_pct_rest_of_idle": round((cpu2 - cpu1) / rest * 100, 3) if rest else None,
            },
        )
    )
    small = next((r for r in s.results if r.id == "latency_median"), None)
    peer, peer_name = (
        (small.syncd, "syncd run, 1-file folder") if small else (debounce_ms, "the debounce")
    )
    med, top = statistics.median(lat), max(lat)
    s.add(
        Result(
            "million_latency_median",
            f"`syncd run` change latency on {n} files, median of {len(lat)}",
            "ms",
            med,
            peer,
            peer_name,
            "lower",
            [Floor(f"≤ debounce + 50 ms ({debounce_ms + 50:.0f})", med <= debounce_ms + 50)],
            {"samples_ms": [round(x, 1) for x in lat]},
        )
    )
    top_peer = next((r.syncd for r in s.results if r.id == "latency_max"), debounce_ms)
    s.add(
        Result(
            "million_latency_max",
            f"`syncd run` change latency on {n} files, max of {len(lat)}",
            "ms",
            top,
            top_peer,
            peer_name,
            "lower",
            [Floor(f"≤ debounce + 200 ms ({debounce_ms + 200:.0f})", top <= debounce_ms + 200)],
        )
    )
