"""Throughput: one big file (curl -T to both servers, syncd to both, rclone), the sha-256
ceiling, peak RSS (the big file, and the huge one in full mode), and many 5 MiB files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import peers
from .measure_cpu import cpu_rows
from .procs import BenchError, Ran
from .report import Floor, Result, median_mbps, throughput_extra
from .session import Session
from .syncd_runs import config, sync
from .workloads import GiB, MiB, tree_size

# The server each tool sends to, for its CPU time per GiB.
RECEIVER = {
    "curl_nginx": "nginx",
    "curl_serve": "serve",
    "syncd_serve": "serve",
    "syncd_nginx": "nginx",
    "rclone": "nginx",
    "syncd": "serve",
}


def big_upload(s: Session) -> None:
    """One big file: curl -T to nginx and to syncd serve, syncd sync to both, rclone."""
    folder = s.data["big"]
    src = folder / "big.bin"
    size = src.stat().st_size
    t = s.timeout_for(size)
    label = f"{size / GiB:g} GiB" if size >= GiB else f"{size // MiB} MiB"
    srv = s.srv
    tools: list[tuple[str, Callable[[int], Ran]]] = [
        (
            "curl_nginx",
            lambda i: s.cmd(
                peers.curl_put(src, f"{srv.dav_url}curl-big-{i}/big.bin", peers.dav_auth(srv)),
                "curl-nginx",
                t,
            ),
        ),
        (
            "curl_serve",
            lambda i: s.cmd(
                peers.curl_put(src, f"{srv.serve_url}curl-big-{i}/big.bin", peers.serve_auth(srv)),
                "curl-serve",
                t,
            ),
        ),
        (
            "syncd_serve",
            lambda i: sync(
                s, config(s, f"big-serve-{i}", folder, f"syncd-big-{i}"), "syncd-big-serve", t
            ),
        ),
        (
            "rclone",
            lambda i: s.cmd(
                peers.rclone(srv, ["copy", folder, f"dav:rclone-big-{i}"]), "rclone-big", t + 60
            ),
        ),
    ]
    if s.webdav:
        tools.append(
            (
                "syncd_nginx",
                lambda i: sync(
                    s,
                    config(s, f"big-dav-{i}", folder, f"syncd-big-{i}", kind="webdav"),
                    "syncd-big-webdav",
                    t,
                ),
            )
        )
    runs: dict[str, list[Ran]] = {}
    for i in range(s.sizes.reps):
        for name, go in tools:
            runs.setdefault(name, []).append(go(i))
            for root in (srv.serve_root, srv.dav_root):
                for rel in (f"curl-big-{i}", f"syncd-big-{i}", f"rclone-big-{i}"):
                    got = root / rel / "big.bin"
                    if got.exists() and got.stat().st_size != size:
                        raise BenchError(f"{got}: wrong size after {name}")
                    shutil.rmtree(root / rel, ignore_errors=True)

    def mbps(name: str) -> float:
        return median_mbps(runs[name], size)

    curl_nginx, curl_serve = mbps("curl_nginx"), mbps("curl_serve")
    syncd_serve, rclone = mbps("syncd_serve"), mbps("rclone")
    s.add(
        Result(
            "big_serve",
            f"{label} upload to syncd serve",
            "MB/s",
            syncd_serve,
            curl_serve,
            "curl -T, same server",
            "higher",
            [Floor("≥ 0.8 × curl", syncd_serve >= 0.8 * curl_serve)],
            throughput_extra(runs, size, RECEIVER),
        )
    )
    if s.webdav:
        syncd_nginx = mbps("syncd_nginx")
        s.add(
            Result(
                "big_nginx",
                f"{label} upload to nginx WebDAV",
                "MB/s",
                syncd_nginx,
                curl_nginx,
                "curl -T, same nginx",
                "higher",
                [Floor("≥ 0.8 × curl", syncd_nginx >= 0.8 * curl_nginx)],
            )
        )
    s.add(
        Result(
            "serve_vs_nginx",
            f"{label} curl -T: syncd serve vs nginx receiving",
            "MB/s",
            curl_serve,
            curl_nginx,
            "nginx WebDAV",
            "higher",
            [Floor("≥ 0.8 × nginx", curl_serve >= 0.8 * curl_nginx)],
        )
    )
    # The bound on the two floors above: both syncd's client and syncd serve compute the
    # sha-256 of every byte (one core each), so neither can go faster than this.
    s.add(
        Result(
            "sha256_ceiling",
            f"sha-256 of the {label} file alone (hashlib, one core), vs curl -T",
            "MB/s",
            hash_rate(src),
            curl_nginx,
            "curl -T to nginx",
            "higher",
        )
    )
    if s.webdav:
        s.add(
            Result(
                "big_vs_rclone",
                f"{label} upload to nginx, vs rclone",
                "MB/s",
                mbps("syncd_nginx"),
                rclone,
                "rclone copy, same nginx",
                "higher",
            )
        )
    else:
        s.add(
            Result(
                "big_vs_rclone",
                f"{label} upload (syncd serve) vs rclone (nginx)",
                "MB/s",
                syncd_serve,
                rclone,
                "rclone copy to nginx",
                "higher",
            )
        )
    syncd_rss = max(r.maxrss_kib for r in runs["syncd_serve"]) / 1024
    rclone_rss = max(r.maxrss_kib for r in runs["rclone"]) / 1024
    s.add(rss_result("rss_big", f"peak RSS sending {label}", syncd_rss, rclone_rss))
    cpu_rows(s, runs, src, label)


def huge_rss(s: Session) -> None:
    """Peak RSS sending the 4 GiB file (full mode only)."""
    folder = s.data.get("huge")
    if folder is None:
        return
    size = (folder / "huge.bin").stat().st_size
    t = s.timeout_for(size)
    ran = sync(s, config(s, "huge", folder, "syncd-huge"), "syncd-huge", t)
    shutil.rmtree(s.srv.serve_root / "syncd-huge", ignore_errors=True)
    rc = s.cmd(peers.rclone(s.srv, ["copy", folder, "dav:rclone-huge"]), "rclone-huge", t + 60)
    shutil.rmtree(s.srv.dav_root / "rclone-huge", ignore_errors=True)
    s.add(
        rss_result(
            "rss_huge",
            f"peak RSS sending {size / GiB:g} GiB",
            ran.maxrss_kib / 1024,
            rc.maxrss_kib / 1024,
            {
                "syncd_MBps": round(size / ran.seconds / 1e6, 1),
                "rclone_MBps": round(size / rc.seconds / 1e6, 1),
            },
        )
    )


def rss_result(
    id: str, name: str, syncd_mib: float, rclone_mib: float, extra: dict[str, Any] | None = None
) -> Result:
    """syncd's peak RSS sending one file, against rclone's: the same floor for every size."""
    return Result(
        id,
        name,
        "MiB",
        syncd_mib,
        rclone_mib,
        "rclone copy",
        "lower",
        [Floor("≤ 60 MiB and < rclone", syncd_mib <= 60 and syncd_mib < rclone_mib)],
        extra or {},
    )


def medium_files(s: Session) -> None:
    """Many 5 MiB files: syncd to syncd serve (and to nginx) vs rclone to nginx."""
    folder = s.data["medium"]
    files, nbytes = tree_size(folder)
    t = s.timeout_for(nbytes, files)
    srv = s.srv
    runs: dict[str, list[Ran]] = {"syncd": [], "rclone": [], "syncd_nginx": []}
    for i in range(s.sizes.reps):
        cfg = config(s, f"medium-{i}", folder, f"medium-{i}")
        runs["syncd"].append(sync(s, cfg, "syncd-medium", t))
        shutil.rmtree(srv.serve_root / f"medium-{i}")
        runs["rclone"].append(
            s.cmd(peers.rclone(srv, ["copy", folder, f"dav:medium-{i}"]), "rclone-medium", t)
        )
        shutil.rmtree(srv.dav_root / f"medium-{i}")
        if s.webdav:
            cfg = config(s, f"medium-dav-{i}", folder, f"syncd-medium-{i}", kind="webdav")
            runs["syncd_nginx"].append(sync(s, cfg, "syncd-medium-webdav", t))
            shutil.rmtree(srv.dav_root / f"syncd-medium-{i}")

    syncd, rclone = median_mbps(runs["syncd"], nbytes), median_mbps(runs["rclone"], nbytes)
    s.add(
        Result(
            "medium",
            f"{files} × 5 MiB",
            "MB/s",
            syncd,
            rclone,
            "rclone copy to nginx",
            "higher",
            [Floor("≥ 1.5 × rclone", syncd >= 1.5 * rclone)],
            throughput_extra(runs, nbytes, RECEIVER),
        )
    )
    if runs["syncd_nginx"]:
        dav = median_mbps(runs["syncd_nginx"], nbytes)
        s.add(
            Result(
                "medium_nginx",
                f"{files} × 5 MiB to nginx",
                "MB/s",
                dav,
                rclone,
                "rclone copy, same nginx",
                "higher",
                [Floor("≥ 1.5 × rclone", dav >= 1.5 * rclone)],
            )
        )


def hash_rate(path: Path, reps: int = 3) -> float:
    """MB/s of hashlib's sha-256 over ``path`` (1 MiB reads, page cache warm), best of ``reps``,
    in a fresh Python so that the figure is that of one core doing nothing else."""
    code = (
        "import hashlib, sys, time\n"
        "best = 0.0\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    h = hashlib.sha256(); n = 0; t = time.perf_counter()\n"
        "    with open(sys.argv[1], 'rb', buffering=0) as f:\n"
        "        while b := f.read(1 << 20):\n"
        "            h.update(b); n += len(b)\n"
        "    best = max(best, n / (time.perf_counter() - t) / 1e6)\n"
        "print(best)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(reps)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(out.stdout.strip())
