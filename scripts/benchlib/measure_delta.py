"""The delta rows of the large-file group (see measure_bigfile): the chunker's speed, a
4 KiB insert and a 1 MiB append, beside rsync and rclone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from . import bigfile_peers as bp
from .bigfile_rig import (
    APPEND,
    APPEND_MAX,
    CHUNK_MIN,
    DELTA_MAX_PCT,
    DELTA_TIME_MAX,
    FILE,
    INSERT,
    INSERT_AT,
    LINK,
    Group,
    command,
    insert,
    measure,
    noise,
    same,
    sha256_of,
)
from .procs import BenchError, Ran
from .report import Floor, Result, unmeasured
from .workloads import MiB

# --------------------------------------------------------------------------- the rows

CHUNK_CODE = """\
import hashlib, json, resource, sys, time
path, reps = sys.argv[1], int(sys.argv[2])
try:
    import os
    from syncd.chunking import ENTRY, chunk_fd, chunk_path
except ImportError as e:
    print(json.dumps({"missing": f"{type(e).__name__}: {e}"}))
    raise SystemExit(0)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread's
    return r.ru_utime + r.ru_stime
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()
def cut(p):  # the chunker alone, on one core (the whole file's sha-256 left out)
    fd = os.open(p, os.O_RDONLY)
    try:
        return chunk_fd(fd, os.fstat(fd).st_size, whole=False)
    finally:
        os.close(fd)
out = {}
for what, fn in (("sha256", sha), ("chunk", chunk_path), ("cut", cut)):
    best = None
    for _ in range(reps):
        c, t = cpu(), time.perf_counter()
        got = fn(path)
        wall, spent = time.perf_counter() - t, cpu() - c
        if best is None or wall < best[0]:
            best = (wall, spent)
    out[what] = {"wall_s": best[0], "cpu_s": best[1]}
    if what == "cut":
        continue
    if what == "chunk":
        out["chunks"] = len(got.blob) // ENTRY.size
        out["digest_right"] = got.sha256 == out["sha256_hex"]
    else:
        out["sha256_hex"] = got
print(json.dumps(out))
"""


def chunking(g: Group) -> None:
    """chunk_path's speed over the file (page cache warm), beside hashlib's sha-256."""
    s, size = g.s, g.size
    reps = 1 if s.args.quick else 3
    os.sync()  # the file may have just been written: no writeback during the timing
    name = f"chunking the {g.label} file, one core (FastCDC cut + xxh3-128 per chunk)"
    cpu_name = f"chunk_path of the {g.label} file (+ its sha-256, two threads): CPU seconds"
    p = subprocess.run(
        [sys.executable, "-c", CHUNK_CODE, str(g.src), str(reps)],
        capture_output=True,
        text=True,
        timeout=600,
        env=s.env,
        check=False,
    )
    if p.returncode != 0:
        raise BenchError(f"chunking: exited {p.returncode}: {p.stderr.strip()[-800:]}")
    got = json.loads(p.stdout)
    if "missing" in got:
        why = f"syncd.chunking: {got['missing']}"
        s.add(unmeasured("bigfile_chunking", name, "GB/s", "hashlib sha-256", "higher", why))
        s.add(unmeasured("bigfile_chunking_cpu", cpu_name, "s", "sha-256", "lower", why))
        return
    chunk, sha, one = got["chunk"], got["sha256"], got["cut"]
    rate = size / one["cpu_s"] / 1e9  # (one thread: its CPU time is its wall time)
    facts = {
        "wall_s": round(chunk["wall_s"], 3),
        "cpu_s": round(chunk["cpu_s"], 3),
        "chunks": got["chunks"],
        "mean_chunk_bytes": size // max(1, got["chunks"]),
        "whole_digest_right": got["digest_right"],
        "cut_one_core_wall_s": round(one["wall_s"], 3),
        "cut_one_core_cpu_s": round(one["cpu_s"], 3),
        "chunk_path_GBps_wall": round(size / chunk["wall_s"] / 1e9, 3),
        "sha256_wall_s": round(sha["wall_s"], 3),
        "sha256_cpu_s": round(sha["cpu_s"], 3),
        "best_of": reps,
    }
    s.add(
        Result(
            "bigfile_chunking",
            name,
            "GB/s",
            rate,
            size / sha["cpu_s"] / 1e9,
            "hashlib sha-256, one core, same bytes",
            "higher",
            [Floor(f"≥ {CHUNK_MIN} GB/s on one core", rate >= CHUNK_MIN)],
            facts,
        )
    )
    s.add(
        Result(
            "bigfile_chunking_cpu",
            cpu_name,
            "s",
            chunk["cpu_s"],
            sha["cpu_s"],
            "hashlib sha-256 alone",
            "lower",
            [],
            {"cpu_GBps": round(size / chunk["cpu_s"] / 1e9, 3), **facts},
        )
    )


def delta(g: Group) -> None:
    """The 4 KiB insert (paced and loopback) and the 1 MiB append, vs rsync and rclone."""
    s, size, px = g.s, g.size, g.px
    work = g.work / "delta"
    work.mkdir(parents=True, exist_ok=True)
    path = work / FILE
    shutil.copyfile(g.src, path)
    paced, loop = g.serve_cfg("bigfile-delta-paced", work), g.serve_cfg("bigfile-delta-loop", work)
    rsync = g.rpx is not None

    def rsync_push(name: str) -> Ran:
        assert g.rpx is not None
        return command(s, bp.rsync_push(work, g.rpx.port, "delta"), name, g.timeout)

    def rclone_copy(name: str) -> Ran:
        assert g.rclone_conf is not None
        dst = f"serve:bigfile-delta-rclone/{FILE}"
        return command(s, bp.rclone_copyto(g.rclone_conf, path, dst), name, g.timeout)

    # The first, whole uploads (the insert's time is measured against them).
    px.rate = LINK
    whole_paced = measure(px, lambda: g.sync(paced, "syncd-bigfile-first-paced"))
    px.rate = 0
    whole = g.whole = measure(px, lambda: g.sync(loop, "syncd-bigfile-first"))
    if rsync:
        rs_first = measure(g.rpx, lambda: rsync_push("rsync-bigfile-first"))  # type: ignore[arg-type]
    if g.rclone_conf:
        measure(px, lambda: rclone_copy("rclone-bigfile-first"))

    insert(path, INSERT_AT, noise("bigfile-insert", INSERT))
    sha = sha256_of(path)
    px.rate = LINK
    ins_paced = measure(px, lambda: g.sync(paced, "syncd-bigfile-insert-paced"))
    px.rate = 0
    ins_loop = measure(px, lambda: g.sync(loop, "syncd-bigfile-insert"))
    ins_rsync = ins_rclone = None
    if rsync:
        assert g.rpx is not None
        g.rpx.rate = LINK
        ins_rsync = measure(g.rpx, lambda: rsync_push("rsync-bigfile-insert-paced"))
        g.rpx.rate = 0
    if g.rclone_conf:
        px.rate = LINK
        ins_rclone = measure(px, lambda: rclone_copy("rclone-bigfile-insert-paced"))
        px.rate = 0
    right = {
        "syncd_paced": same(g.serve_root / "bigfile-delta-paced" / FILE, sha),
        "syncd_loopback": same(g.serve_root / "bigfile-delta-loop" / FILE, sha),
    }
    if rsync and g.rsyncd and g.rsyncd.root:
        right["rsync"] = same(g.rsyncd.root / "delta" / FILE, sha)
    if ins_rclone:
        right["rclone"] = same(g.serve_root / "bigfile-delta-rclone" / FILE, sha)

    with path.open("ab") as f:
        f.write(noise("bigfile-append", APPEND))
    app_sha = sha256_of(path)
    app = measure(px, lambda: g.sync(loop, "syncd-bigfile-append"))
    app_rsync = None
    if rsync:
        app_rsync = measure(g.rpx, lambda: rsync_push("rsync-bigfile-append"))  # type: ignore[arg-type]
    app_right = {"syncd": same(g.serve_root / "bigfile-delta-loop" / FILE, app_sha)}
    if app_rsync and g.rsyncd and g.rsyncd.root:
        app_right["rsync"] = same(g.rsyncd.root / "delta" / FILE, app_sha)

    what = f"4 KiB inserted at 10 MiB of the {g.label} file"
    pct = 100 * ins_paced.up / size
    ref = ins_rsync or whole
    facts = {
        "syncd_paced": ins_paced.facts(size),
        "syncd_loopback": ins_loop.facts(size),
        "whole_upload": whole.facts(size),
        "rsync": ins_rsync.facts(size) if ins_rsync else None,
        "rsync_first": rs_first.facts(size) if rsync else None,
        "server_copies_right": right,
    }
    s.add(
        Result(
            "bigfile_insert_bytes",
            f"{what}: bytes sent / size",
            "% of size",
            pct,
            100 * ref.up / size,
            "rsync, same proxy" if ins_rsync else "syncd's whole first upload",
            "lower",
            [
                Floor(f"≤ {DELTA_MAX_PCT:g} %", pct <= DELTA_MAX_PCT),
                Floor("sha-256 on the server matches", right["syncd_paced"]),
            ],
            facts,
        )
    )
    both = ins_paced.up + ins_paced.down
    s.add(
        Result(
            "bigfile_insert_wire",
            f"{what}: bytes both ways (client -> server + server -> client)",
            "bytes",
            both,
            ref.up + ref.down,
            "rsync, same proxy" if ins_rsync else "syncd's whole first upload",
            "lower",
            [],
            {"syncd_down_bytes": ins_paced.down, "peer_down_bytes": ref.down},
        )
    )
    tp = ins_paced.seconds / whole_paced.seconds
    tl = ins_loop.seconds / whole.seconds
    s.add(
        Result(
            "bigfile_insert_time",
            f"{what}: sync time, link paced at {LINK / 1e6:g} MB/s",
            "s",
            ins_paced.seconds,
            whole_paced.seconds,
            "syncd's whole upload, same link",
            "lower",
            [Floor(f"≤ {DELTA_TIME_MAX:g} × whole upload ({tp:.2f})", tp <= DELTA_TIME_MAX)],
            {"time_ratio": round(tp, 3), "loopback_time_ratio": round(tl, 3)},
        )
    )
    s.add(
        Result(
            "bigfile_insert_time_loopback",
            f"{what}: sync time, loopback (information: {tl:.2f} × whole)",
            "s",
            ins_loop.seconds,
            whole.seconds,
            "syncd's whole upload, loopback",
            "lower",
            [],
            {"time_ratio": round(tl, 3)},
        )
    )
    if ins_rsync:
        s.add(
            Result(
                "bigfile_insert_time_rsync",
                f"{what}: sync time vs rsync, paced link",
                "s",
                ins_paced.seconds,
                ins_rsync.seconds,
                "rsync to its daemon, same link",
                "lower",
                [],
                {"syncd": ins_paced.facts(size), "rsync": ins_rsync.facts(size)},
            )
        )
    else:
        s.add(
            unmeasured(
                "bigfile_insert_time_rsync",
                f"{what}: sync time vs rsync, paced link",
                "s",
                "rsync",
                "lower",
                "rsync is not installed",
            )
        )
    if ins_rclone:
        s.add(
            Result(
                "bigfile_insert_rclone",
                f"{what}: sync time vs rclone, paced link",
                "s",
                ins_paced.seconds,
                ins_rclone.seconds,
                "rclone copyto to syncd serve (WebDAV), same link",
                "lower",
                [],
                {"syncd": ins_paced.facts(size), "rclone": ins_rclone.facts(size)},
            )
        )
    elif not s.args.quick:
        s.add(
            unmeasured(
                "bigfile_insert_rclone",
                f"{what}: sync time vs rclone, paced link",
                "s",
                "rclone",
                "lower",
                "rclone is not installed",
            )
        )
    aref = app_rsync or whole
    s.add(
        Result(
            "bigfile_append",
            f"1 MiB appended to the {g.label} file: bytes sent",
            "bytes",
            app.up,
            aref.up,
            "rsync, same proxy" if app_rsync else "syncd's whole first upload",
            "lower",
            [
                Floor(f"≤ {APPEND_MAX / MiB:g} MiB", app.up <= APPEND_MAX),
                Floor("sha-256 on the server matches", app_right["syncd"]),
            ],
            {
                "syncd": app.facts(size),
                "rsync": app_rsync.facts(size) if app_rsync else None,
                "server_copies_right": app_right,
            },
        )
    )
    for rel in ("bigfile-delta-paced", "bigfile-delta-loop", "bigfile-delta-rclone"):
        shutil.rmtree(g.serve_root / rel, ignore_errors=True)
    if g.rsyncd and g.rsyncd.root:
        shutil.rmtree(g.rsyncd.root / "delta", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
