"""Large files over a link that fails or is slow (issue 17): resumable uploads and delta transfer,
the bytes on the wire counted by a proxy between client and server (countproxy), never by the
tool measured.

One file of random bytes (1 GiB; 48 MiB with --quick), generated once with a fixed seed into
``<dir>/data/<mode>/bigfile/``. The servers are these rows' own, each behind a CountProxy on
127.0.0.1: a ``syncd serve`` (its root where the servers store), an rsync daemon, moto_server
for S3 (bucket made by the bench). The rows, in the order they run:

- chunking: ``syncd.chunking.chunk_path`` over the file, wall-clock GB/s (floor ≥ 1.0; it
  hashes in two threads) and CPU seconds, beside hashlib's sha-256 of the same bytes;
- insert: 4 KiB inserted at 10 MiB after a first sync, then ``syncd sync``: bytes sent / size
  (≤ 2 %), and the time of that sync / the time of the first (whole) upload (≤ 0.3) with the
  proxy pacing client -> server at 125 MB/s (1 Gbit/s); the same unpaced (loopback) beside
  it; rsync to its daemon and rclone to ``syncd serve``'s WebDAV face (full run) on the same
  link;
- append: 1 MiB appended, then ``syncd sync``: bytes sent (≤ 2.5 MiB); rsync the same;
- reset: ``syncd sync`` with its connection reset once the proxy has counted half the file:
  bytes sent / size (≤ 1.05) and the file on the server equal to the source (sha-256); rsync
  --partial (run again when it fails, as it does not retry), rclone copyto (full run);
- kill: ``syncd sync`` SIGKILLed once the proxy has counted half the file (the proxy holds the
  client there; what it had in flight is dropped), then run again: bytes of both runs / size
  (≤ 1.05); rsync --partial the same;
- s3: the kill against S3 (moto_server), against one uninterrupted upload (≤ 1.05).

Until syncd resumes uploads and sends deltas, the resume and delta rows miss (the whole file
goes again). --quick leaves rclone out and asserts nothing about speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bigfile_peers as bp
from .countproxy import CountProxy
from .peers import start_syncd_serve
from .procs import PROCS, BenchError, Ran, run, spawn, wait_until
from .report import Floor, Result, unmeasured
from .session import Session
from .syncd_runs import config
from .workloads import SEED, GiB, MiB, gen_file

KiB = 1 << 10
SIZE, QUICK_SIZE = GiB, 48 * MiB
INSERT_AT, INSERT, APPEND = 10 * MiB, 4 * KiB, MiB
LINK = 125e6  # bytes/s of the paced link: 1 Gbit/s
RESUME_MAX = 1.05  # × size, over every run of an interrupted upload
DELTA_MAX_PCT = 2.0  # % of the size sent for the 4 KiB insert
DELTA_TIME_MAX = 0.3  # × the whole upload's time, paced
APPEND_MAX = 2.5 * MiB  # bytes sent for 1 MiB appended (with the chunk list)
CHUNK_MIN = 1.0  # GB/s, wall clock
DATA_NAME = "bigfile"
FILE = "big.bin"


@dataclass
class Wire:
    """What one command, or several, put on the wire (the proxy's counts) and took."""

    up: int  # client -> server bytes
    down: int  # server -> client bytes
    conns: int
    seconds: float
    codes: list[int]
    resets: int = 0

    def __add__(self, other: Wire) -> Wire:
        return Wire(
            self.up + other.up,
            self.down + other.down,
            self.conns + other.conns,
            self.seconds + other.seconds,
            self.codes + other.codes,
            self.resets + other.resets,
        )

    def facts(self, size: int) -> dict[str, Any]:
        return {
            "up_bytes": self.up,
            "down_bytes": self.down,
            "up_per_size": round(self.up / size, 4),
            "connections": self.conns,
            "seconds": round(self.seconds, 3),
            "exit_codes": self.codes,
            **({"resets": self.resets} if self.resets else {}),
        }


@dataclass
class Group:
    """These rows' data, servers and proxies, for the time of the step."""

    s: Session
    size: int
    folder: Path  # holds FILE only (and syncd's own files): synced as it is
    sha: str
    label: str
    timeout: float
    serve_proc: subprocess.Popen[bytes]
    serve_root: Path
    token: str
    token_file: Path
    px: CountProxy  # to syncd serve
    rsyncd: bp.Daemon | None = None
    rpx: CountProxy | None = None  # to the rsync daemon
    moto: bp.Daemon | None = None
    rclone_conf: Path | None = None  # rclone's WebDAV remote "serve:" through px
    whole: Wire | None = None  # syncd's first, uninterrupted upload (loopback): the reference
    work: Path = field(default_factory=Path)

    @property
    def src(self) -> Path:
        return self.folder / FILE

    def sync(self, cfg: Path, name: str, env: dict[str, str] | None = None) -> Ran:
        return command(self.s, [*self.s.syncd, "sync", "-c", cfg], name, self.timeout, env)

    def serve_cfg(self, name: str, folder: Path) -> Path:
        return config(self.s, name, folder, name, serve=(self.px.url, self.token_file))


def bigfile(s: Session) -> None:
    """The large-file rows (see the module)."""
    size = QUICK_SIZE if s.args.quick else SIZE
    folder = ensure_file(s.data_dir, size)
    g = start(s, size, folder)
    took: list[str] = []
    try:
        for phase in (chunking, delta, reset, kill, s3):
            t0 = time.perf_counter()
            phase(g)
            took.append(f"{phase.__name__} {time.perf_counter() - t0:.1f} s")
    finally:
        stop(g)
        print(f"  bigfile phases: {', '.join(took)}", flush=True)


# --------------------------------------------------------------------------- set up, tear down


def ensure_file(data_dir: Path, size: int) -> Path:
    """The file (random bytes, fixed seed), generated once; regenerated when its size changes."""
    folder = data_dir / DATA_NAME
    stamp = data_dir / f"{DATA_NAME}.stamp.json"
    spec = {"seed": SEED, "size": size, "name": DATA_NAME}
    with contextlib.suppress(OSError, ValueError):
        if json.loads(stamp.read_text()) == spec and (folder / FILE).stat().st_size == size:
            return folder
    t0 = time.perf_counter()
    print(f"generating {DATA_NAME} ({spec}) ...", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    gen_file(folder / FILE, size, DATA_NAME)
    stamp.write_text(json.dumps(spec))
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def start(s: Session, size: int, folder: Path) -> Group:
    """This step's own syncd serve (and the rsync daemon, moto_server, rclone's config where
    they are here), each behind a counting proxy."""
    pid, _url, root, token, token_file = start_syncd_serve(
        s.run_dir, s.store_dir, s.syncd, tag="-bigfile", env=s.env
    )
    proc = bp.proc_of(pid)
    port = int(_url.rstrip("/").rsplit(":", 1)[1])
    label = f"{size / GiB:g} GiB" if size >= GiB else f"{size // MiB} MiB"
    g = Group(
        s=s,
        size=size,
        folder=folder,
        sha=sha256_of(folder / FILE),
        label=label,
        timeout=max(120.0, size / 10e6),
        serve_proc=proc,
        serve_root=root,
        token=token,
        token_file=token_file,
        px=CountProxy(port, name="serve-proxy"),
        work=s.run_dir / DATA_NAME,
    )
    try:
        if s.args.quick and not bp.s3_missing():
            g.moto = bp.start_moto(s.run_dir)  # --quick times nothing: start it at once
        if bp.have("rsync"):
            g.rsyncd = bp.start_rsyncd(s.run_dir, s.store_dir)
            g.rpx = CountProxy(g.rsyncd.port, name="rsync-proxy")
        if not s.args.quick and bp.have("rclone"):
            g.rclone_conf = bp.rclone_serve_config(
                s.run_dir / DATA_NAME / "rclone.conf", g.px.url, token
            )
    except BaseException:
        stop(g)
        raise
    return g


def stop(g: Group) -> None:
    for proxy in (g.px, g.rpx):
        if proxy is not None:
            proxy.close()
    bp.stop_all([g.moto, g.rsyncd])
    PROCS.stop(g.serve_proc, 15)
    for d in (g.serve_root, g.rsyncd.root if g.rsyncd else None, g.work):
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def command(
    s: Session,
    cmd: Sequence[str | Path],
    name: str,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Ran:
    """One command to its end, its exit code kept (an interrupted transfer may fail)."""
    os.sync()
    return run(cmd, s.log(name), timeout=timeout, env=env or s.env, check=False)


def measure(proxy: CountProxy, go: Callable[[], Ran]) -> Wire:
    """Run ``go`` and take what the proxy counted meanwhile (once every connection ended)."""
    proxy.wait_idle(10)
    before = proxy.counts()
    ran = go()
    proxy.wait_idle(10)
    d = proxy.counts() - before
    resets = sum(c.reset for c in proxy.conns[before.conns :])
    return Wire(d.up, d.down, d.conns, ran.seconds, [ran.code], resets)


def reset_at_half(g: Group, proxy: CountProxy, go: Callable[[], Ran], what: str) -> Wire:
    """``go`` with the connection that brings the proxy's count to half the file reset; run
    again if the tool gave up (rsync does not retry), once."""
    proxy.wait_idle(10)
    proxy.reset_at(proxy.counts().up + g.size // 2)
    try:
        w = measure(proxy, go)
    finally:
        proxy.reset_at(None)
    if not w.resets:
        raise BenchError(f"{what}: no connection was reset (sent {w.up:,} bytes)")
    if w.codes[-1] != 0:
        w = w + measure(proxy, go)
    return w


def killed_at_half(
    g: Group, proxy: CountProxy, cmd: Sequence[str | Path], name: str, env: dict[str, str]
) -> Wire:
    """Start ``cmd``; SIGKILL it (its process group) once the proxy has counted half the file.
    The proxy takes nothing more from it meanwhile, and drops what it had in flight."""
    proxy.wait_idle(10)
    before = proxy.counts()
    stalled = proxy.stall_at(before.up + g.size // 2)
    log = g.s.log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(("$ " + " ".join(map(str, cmd)) + "  # SIGKILLed at half\n").encode())
    os.sync()
    t0 = time.perf_counter()
    proc = spawn(name, cmd, log, env=env)
    try:
        wait_until(
            lambda: stalled.is_set() or proc.poll() is not None,
            g.timeout,
            f"{name} to send half the file",
        )
        if not stalled.is_set():
            raise BenchError(f"{name} exited {proc.returncode} before sending half (log: {log})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        PROCS.stop(proc, 5)
        proxy.abort_open()
        proxy.wait_idle(10)
        proxy.release()
    d = proxy.counts() - before
    return Wire(d.up, d.down, d.conns, time.perf_counter() - t0, [proc.returncode])


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while b := f.read(8 << 20):
            h.update(b)
    return h.hexdigest()


def same(path: Path, sha: str) -> bool:
    return path.is_file() and sha256_of(path) == sha


def insert(path: Path, at: int, data: bytes) -> None:
    """``data`` inserted at offset ``at`` (the file written anew and renamed into place)."""
    tmp = path.with_name(path.name + ".new")
    with path.open("rb") as f, tmp.open("wb") as out:
        out.write(f.read(at))
        out.write(data)
        shutil.copyfileobj(f, out, 8 << 20)
    os.replace(tmp, path)


def noise(name: str, n: int) -> bytes:
    return random.Random(f"{SEED}:{name}").randbytes(n)


def ratio_row(
    id: str, name: str, syncd: Wire, peer: Wire | None, peer_name: str, size: int, ok: bool
) -> Result:
    """Bytes sent over the whole interrupted upload / size, against a peer's (or, without
    one, syncd's uninterrupted upload): floor ≤ 1.05 and the server's copy right."""
    ref = peer if peer is not None else syncd
    return Result(
        id,
        name,
        "× size",
        syncd.up / size,
        ref.up / size,
        peer_name,
        "lower",
        [
            Floor(f"≤ {RESUME_MAX} × size", syncd.up <= RESUME_MAX * size),
            Floor("sha-256 on the server matches", ok),
        ],
        {"syncd": syncd.facts(size), "peer": ref.facts(size) if peer is not None else None},
    )


# --------------------------------------------------------------------------- the rows

CHUNK_CODE = """\
import hashlib, json, resource, sys, time
path, reps = sys.argv[1], int(sys.argv[2])
try:
    from syncd.chunking import chunk_path
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
out = {}
for what, fn in (("sha256", sha), ("chunk", chunk_path)):
    best = None
    for _ in range(reps):
        c, t = cpu(), time.perf_counter()
        got = fn(path)
        wall, spent = time.perf_counter() - t, cpu() - c
        if best is None or wall < best[0]:
            best = (wall, spent)
    out[what] = {"wall_s": best[0], "cpu_s": best[1]}
    if what == "chunk":
        out["chunks"] = len(got.blob) // 36
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
    name = f"chunk_path of the {g.label} file (content-defined chunks + sha-256s)"
    cpu_name = f"chunk_path of the {g.label} file: CPU seconds (two threads)"
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
    chunk, sha = got["chunk"], got["sha256"]
    rate = size / chunk["wall_s"] / 1e9
    facts = {
        "wall_s": round(chunk["wall_s"], 3),
        "cpu_s": round(chunk["cpu_s"], 3),
        "chunks": got["chunks"],
        "mean_chunk_bytes": size // max(1, got["chunks"]),
        "whole_digest_right": got["digest_right"],
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
            size / sha["wall_s"] / 1e9,
            "hashlib sha-256, one core, same bytes",
            "higher",
            [Floor(f"≥ {CHUNK_MIN} GB/s (wall clock)", rate >= CHUNK_MIN)],
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


def reset(g: Group) -> None:
    """The connection reset at half the file: syncd, rsync --partial, rclone."""
    s, size, px = g.s, g.size, g.px
    if g.moto is None and not bp.s3_missing():
        # Starts meanwhile (s3() waits for it): it imports for seconds, which the timed rows
        # before this one must not share the cores with; these rows count bytes.
        g.moto = bp.start_moto(s.run_dir)
    cfg = g.serve_cfg("bigfile-reset", g.folder)
    w = reset_at_half(g, px, lambda: g.sync(cfg, "syncd-bigfile-reset"), "syncd sync")
    ok = same(g.serve_root / "bigfile-reset" / FILE, g.sha)
    peer, peer_name = None, "syncd's uninterrupted upload (rsync is not installed)"
    if g.rpx is not None and g.rsyncd and g.rsyncd.root:
        rpx = g.rpx
        peer = reset_at_half(
            g,
            rpx,
            lambda: command(s, bp.rsync_push(g.folder, rpx.port, "reset"), "rsync-reset", 600),
            "rsync",
        )
        peer_name = "rsync --partial, run again, same proxy"
        if not same(g.rsyncd.root / "reset" / FILE, g.sha):
            peer_name += " (its copy is WRONG)"
    elif g.whole is not None:
        peer = g.whole
    row = ratio_row(
        "bigfile_reset",
        f"{g.label} to syncd serve, connection reset at 50 %: bytes sent / size",
        w,
        peer,
        peer_name,
        size,
        ok,
    )
    s.add(row)
    if g.rclone_conf:
        conf = g.rclone_conf
        dst = f"serve:bigfile-reset-rclone/{FILE}"
        rc = reset_at_half(
            g,
            px,
            lambda: command(s, bp.rclone_copyto(conf, g.src, dst), "rclone-reset", 600),
            "rclone",
        )
        rc_ok = same(g.serve_root / "bigfile-reset-rclone" / FILE, g.sha)
        s.add(
            Result(
                "bigfile_reset_rclone",
                f"{g.label} to syncd serve, connection reset at 50 %, vs rclone",
                "× size",
                w.up / size,
                rc.up / size,
                "rclone copyto (WebDAV), same proxy" + ("" if rc_ok else " (its copy is WRONG)"),
                "lower",
                [],
                {"syncd": w.facts(size), "rclone": rc.facts(size)},
            )
        )
    elif not s.args.quick:
        s.add(
            unmeasured(
                "bigfile_reset_rclone",
                f"{g.label} to syncd serve, connection reset at 50 %, vs rclone",
                "× size",
                "rclone",
                "lower",
                "rclone is not installed",
            )
        )
    for rel in ("bigfile-reset", "bigfile-reset-rclone"):
        shutil.rmtree(g.serve_root / rel, ignore_errors=True)
    if g.rsyncd and g.rsyncd.root:
        shutil.rmtree(g.rsyncd.root / "reset", ignore_errors=True)


def kill(g: Group) -> None:
    """``syncd sync`` SIGKILLed at half the file, then again; rsync --partial the same."""
    s, size, px = g.s, g.size, g.px
    cfg = g.serve_cfg("bigfile-kill", g.folder)
    argv: list[str | Path] = [*s.syncd, "sync", "-c", cfg]
    w = killed_at_half(g, px, argv, "syncd-bigfile-kill", s.env)
    w = w + measure(px, lambda: g.sync(cfg, "syncd-bigfile-kill-again"))
    ok = same(g.serve_root / "bigfile-kill" / FILE, g.sha)
    peer, peer_name = g.whole, "syncd's uninterrupted upload (rsync is not installed)"
    if g.rpx is not None and g.rsyncd and g.rsyncd.root:
        rpx = g.rpx
        push = bp.rsync_push(g.folder, rpx.port, "kill")
        peer = killed_at_half(g, rpx, push, "rsync-kill", s.env)
        peer = peer + measure(rpx, lambda: command(s, push, "rsync-kill-again", 600))
        peer_name = "rsync --partial, SIGKILLed, run again, same proxy"
        if not same(g.rsyncd.root / "kill" / FILE, g.sha):
            peer_name += " (its copy is WRONG)"
    s.add(
        ratio_row(
            "bigfile_kill",
            f"{g.label} to syncd serve, SIGKILLed at 50 % then run again: bytes sent / size",
            w,
            peer,
            peer_name,
            size,
            ok,
        )
    )
    shutil.rmtree(g.serve_root / "bigfile-kill", ignore_errors=True)
    if g.rsyncd and g.rsyncd.root:
        shutil.rmtree(g.rsyncd.root / "kill", ignore_errors=True)


def s3(g: Group) -> None:
    """The kill against S3 (moto_server), against one uninterrupted upload to it."""
    s, size = g.s, g.size
    name = f"{g.label} to S3 (moto), SIGKILLed at 50 % then run again: bytes sent / size"
    why = bp.s3_missing()
    if why or g.moto is None:
        peer = "one uninterrupted upload"
        s.add(unmeasured("bigfile_s3_kill", name, "× size", peer, "lower", why or "no moto"))
        return
    bp.moto_ready(g.moto)
    env = bp.s3_env(s.env, s.run_dir)
    with CountProxy(g.moto.port, name="s3-proxy") as mpx:
        endpoint = mpx.url.rstrip("/")
        clean_cfg = bp.s3_config(s.run_dir, "bigfile-s3-clean", g.folder, "clean", endpoint)
        clean = measure(mpx, lambda: g.sync(clean_cfg, "syncd-bigfile-s3-clean", env))
        if clean.codes != [0]:
            raise BenchError(f"syncd sync to S3 exited {clean.codes[0]} (see its log)")
        cfg = bp.s3_config(s.run_dir, "bigfile-s3-kill", g.folder, "kill", endpoint)
        argv: list[str | Path] = [*s.syncd, "sync", "-c", cfg]
        w = killed_at_half(g, mpx, argv, "syncd-bigfile-s3-kill", env)
        w = w + measure(mpx, lambda: g.sync(cfg, "syncd-bigfile-s3-kill-again", env))
    ok = bp.s3_object_sha256(g.moto, f"mirror/kill/{FILE}") == g.sha
    s.add(
        ratio_row(
            "bigfile_s3_kill",
            name,
            w,
            clean,
            "one uninterrupted syncd sync to S3, same proxy",
            size,
            ok,
        )
    )
    g.moto.stop()
    g.moto = None
