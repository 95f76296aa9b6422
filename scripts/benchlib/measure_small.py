"""Many 4 KiB files: the first sync (vs rclone and a curl keep-alive loop), the no-op re-sync
(vs rclone and rsync), one changed file among them (and one upload on its own)."""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

from . import peers
from .procs import BenchError, Ran, proc_status
from .report import Floor, Result, run_rss_result
from .session import Session
from .syncd_runs import config, running, sync, wait_ready
from .workloads import edit, tree_size


def first_syncs(s: Session, name: str, folder: Path, remote_path: str, root: Path, t: float) -> Ran:
    """The median (by time) of a few first syncs of ``folder``, each from scratch (no
    manifest, nothing on the server); the state of the last one is kept. A single sample
    of 10,000 small files swung between 550 and 1,135 files/s on this shared VM."""
    kind = "webdav" if root == s.srv.dav_root else "syncd"
    runs: list[Ran] = []
    for i in range(s.reps_at_least(3)):
        if i:
            shutil.rmtree(root / remote_path, ignore_errors=True)
            shutil.rmtree(s.run_dir / "state" / name, ignore_errors=True)
        cfg = config(s, name, folder, remote_path, kind=kind)
        runs.append(sync(s, cfg, f"syncd-{name}-first", t))
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def first_sync_floors(rate: float, rclone_rate: float) -> list[Floor]:
    return [
        Floor("≥ 600 files/s", rate >= 600),
        Floor("≥ 20 × rclone", rate >= 20 * rclone_rate),
    ]


def noop_floor(syncd: float, rclone: float) -> list[Floor]:
    return [Floor("≥ 5 × faster than rclone", syncd * 5 <= rclone)]


def small_files(s: Session) -> None:
    """Many 4 KiB files: first sync, no-op, one changed file; vs rclone, curl, rsync."""
    srv = s.srv
    work = s.run_dir / "small"  # a copy: the changed-file step edits it
    shutil.copytree(s.data["small"], work)
    files, nbytes = tree_size(work)
    t = s.timeout_for(nbytes, files)
    n = f"{files:,}"

    first = first_syncs(s, "small", work, "small", srv.serve_root, t)
    curl_cmd = peers.curl_config(srv, work, s.run_dir / "curl-small.cfg", "curl-small")
    curl = s.cmd(curl_cmd, "curl-small", t)
    rclone = s.cmd(
        peers.rclone(srv, ["copy", work, "dav:small", "--transfers", "16", "--checkers", "16"]),
        "rclone-small",
        max(t, files / 5),
    )
    if tree_size(srv.serve_root / "small")[0] != files:
        raise BenchError("syncd sync did not store every small file")
    if tree_size(srv.dav_root / "small")[0] != files:
        raise BenchError("rclone did not store every small file")
    rate, rclone_rate = files / first.seconds, files / rclone.seconds

    def per_file(r: Ran, server: str) -> dict[str, float]:
        return {
            "client": round(r.cpu / files * 1000, 3),
            server: round(r.server_cpu[server] / files * 1000, 3),
        }

    cpu_ms = {
        "syncd": per_file(first, "serve"),
        "curl": per_file(curl, "serve"),
        "rclone": per_file(rclone, "nginx"),
    }
    s.add(
        Result(
            "small_first",
            f"{n} × 4 KiB first sync",
            "files/s",
            rate,
            rclone_rate,
            "rclone --transfers 16 to nginx",
            "higher",
            first_sync_floors(rate, rclone_rate),
            {"cpu_ms_per_file": cpu_ms},
        )
    )
    s.add(
        Result(
            "small_vs_curl",
            f"{n} × 4 KiB first sync vs curl",
            "files/s",
            rate,
            files / curl.seconds,
            "curl keep-alive loop, same server",
            "higher",
        )
    )
    dav_cfg: Path | None = None
    if s.webdav:
        ran = first_syncs(s, "small-dav", work, "syncd-small", srv.dav_root, t)
        dav_cfg = s.run_dir / "cfg" / "small-dav.toml"
        s.add(
            Result(
                "small_first_nginx",
                f"{n} × 4 KiB first sync to nginx",
                "files/s",
                files / ran.seconds,
                rclone_rate,
                "rclone --transfers 16",
                "higher",
                first_sync_floors(files / ran.seconds, rclone_rate),
            )
        )

    # Nothing changed.
    cfg = s.run_dir / "cfg" / "small.toml"
    mirror = s.run_dir / "small-rsync"
    rclone_sync = peers.rclone(srv, ["sync", work, "dav:small", "--checkers", "16"])
    s.cmd(peers.rsync(work, mirror), "rsync-small-first", t)
    noop: dict[str, list[float]] = {"syncd": [], "rclone": [], "rsync": [], "syncd_nginx": []}
    reps = s.reps_at_least(5)  # seconds each; medians of 5 steady the ratios
    rsync_kib = 0
    for _ in range(reps):
        noop["syncd"].append(sync(s, cfg, "syncd-small-noop", 120).seconds)
        noop["rclone"].append(s.cmd(rclone_sync, "rclone-small-noop", 300).seconds)
        rs = s.cmd(peers.rsync(work, mirror), "rsync-small-noop", 120)
        noop["rsync"].append(rs.seconds)
        rsync_kib = max(rsync_kib, rs.maxrss_kib)
        if dav_cfg is not None:
            noop["syncd_nginx"].append(sync(s, dav_cfg, "syncd-small-noop-webdav", 120).seconds)
    med = {k: statistics.median(v) for k, v in noop.items() if v}
    s.add(
        Result(
            "noop",
            f"no-op re-sync, {n} files",
            "s",
            med["syncd"],
            med["rclone"],
            "rclone sync",
            "lower",
            noop_floor(med["syncd"], med["rclone"]),
            {"samples": noop},
        )
    )
    s.add(
        Result(
            "noop_rsync",
            f"no-op re-sync, {n} files, vs rsync",
            "s",
            med["syncd"],
            med["rsync"],
            "rsync -a, local",
            "lower",
            [Floor("≤ 3 × rsync", med["syncd"] <= 3 * med["rsync"])],
        )
    )
    if "syncd_nginx" in med:
        s.add(
            Result(
                "noop_nginx",
                f"no-op re-sync to nginx, {n} files",
                "s",
                med["syncd_nginx"],
                med["rclone"],
                "rclone sync",
                "lower",
                noop_floor(med["syncd_nginx"], med["rclone"]),
            )
        )

    run_rss(s, cfg, files, rsync_kib / 1024)

    # One upload on its own: a one-file folder, synced, then that file edited.
    one = s.run_dir / "one"
    one.mkdir()
    one_cfg = config(s, "one", one, "one")
    one_up: list[float] = []
    one_noop: list[float] = []
    (one / "f.bin").write_bytes(os.urandom(4096))
    sync(s, one_cfg, "syncd-one-first", 60)
    # One changed file among all: the same size, new bytes (rclone, comparing sizes and
    # modification times on a server that keeps no hashes, may or may not notice).
    all_files = sorted(work.rglob("*.bin"))
    victim = all_files[len(all_files) // 2]
    edited = victim.relative_to(work)
    changed: dict[str, list[float]] = {"syncd": [], "rclone": [], "rsync": []}
    rclone_missed = 0
    for _ in range(reps):
        one_noop.append(sync(s, one_cfg, "syncd-one-noop", 60).seconds)
        edit(one / "f.bin")
        one_up.append(sync(s, one_cfg, "syncd-one-changed", 60).seconds)
        new = edit(victim)
        changed["syncd"].append(sync(s, cfg, "syncd-small-changed", 120).seconds)
        if (srv.serve_root / "small" / edited).read_bytes() != new:
            raise BenchError(f"syncd sync did not send the edited {edited}")
        changed["rclone"].append(s.cmd(rclone_sync, "rclone-small-changed", 300).seconds)
        if (srv.dav_root / "small" / edited).read_bytes() != new:
            rclone_missed += 1
        changed["rsync"].append(
            s.cmd(peers.rsync(work, mirror), "rsync-small-changed", 120).seconds
        )
    upload1 = statistics.median(one_up) - statistics.median(one_noop)
    c = statistics.median(changed["syncd"])
    budget = med["syncd"] + max(0.0, upload1)
    s.add(
        Result(
            "one_changed",
            f"one changed file among {n}",
            "s",
            c,
            statistics.median(changed["rclone"]),
            "rclone sync" + (f", missed the edit {rclone_missed}/{reps}×" if rclone_missed else ""),
            "lower",
            [Floor(f"≤ no-op + 1 upload ({budget:.3f} s) + 10%", c <= 1.1 * budget)],
            {
                "samples": changed,
                "one_upload_s": round(upload1, 4),
                "rsync_s": round(statistics.median(changed["rsync"]), 4),
                "rclone_missed_edits": rclone_missed,
            },
        )
    )


def run_rss(s: Session, cfg: Path, files: int, rsync_mib: float) -> None:
    """`syncd run` started on the small set, its manifest complete: RSS at ready (the issue's
    floor: ≤ 25 MiB at 10,000 files)."""
    with running(s, "syncd run small", "syncd-run-small", cfg) as (proc, log):
        wait_ready(log, 120, "syncd run ready on the small files", poll=0.01)
        st = proc_status(proc.pid)
    kib = max(st.get("VmHWM", 0), st.get("VmRSS", 0))
    s.add(
        run_rss_result(
            "small_run_rss",
            f"`syncd run` on {files:,} files, manifest complete: RSS at ready (peak)",
            files,
            kib,
            rsync_mib,
            "rsync -a no-op, peak",
        )
    )
