"""The rig of the large-file rows (measure_bigfile): the file, the servers behind counting
proxies, running a command while the proxy counts, and the shared row shapes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bigfile_peers as bp
from .countproxy import CountProxy
from .peers import start_syncd_serve
from .procs import PROCS, BenchError, Ran, run, spawn, wait_until
from .report import Floor, Result
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
CHUNK_MIN = 1.0  # GB/s, one core
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
