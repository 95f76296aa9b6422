"""syncd's performance bench: syncd and its peers (curl, rclone, rsync, lsyncd) side by side.

Run it through ``scripts/bench`` (which sets up the venv and the peers); ``--quick`` scales
every data set down so the whole run takes about a minute. Everything runs against servers this
script starts on free 127.0.0.1 ports (``syncd serve`` and nginx WebDAV with a private
nginx.conf) and stops at exit; every subprocess has a deadline. The data is generated with a
fixed seed into ``<dir>/data`` and kept between runs; ``<dir>/run`` is rebuilt every run. The
table goes to stdout and the same figures to ``<dir>/results.json``.

This file does not import syncd: it drives the ``syncd`` command line like a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GiB = 1 << 30
SEED = 20260701
DAV_MODULE = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"
DAV_USER = "bench"


class BenchError(Exception):
    """A workload could not be measured (a tool failed, timed out, or produced wrong bytes)."""


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    big: int  # one file, bytes
    huge: int  # one file for the peak-RSS check (0: skipped)
    small_files: int  # 4 KiB files ...
    small_dirs: int  # ... spread over this many directories
    medium_files: int  # 5 MiB files
    tree_files: int  # the tree `syncd run` starts on
    tree_dirs: int
    writes: int  # change-latency samples
    reps: int  # repetitions of the throughput and no-op measurements (median kept)


FULL = Sizes(GiB, 4 * GiB, 10_000, 100, 200, 100_000, 1000, 20, 3)
QUICK = Sizes(256 * MiB, 0, 500, 10, 20, 3_000, 30, 10, 1)


# --------------------------------------------------------------------------- processes


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
    """User + system CPU time of a process and its children still running (0 if gone)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def version_of(cmd: Sequence[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(0) if m else "?"


# --------------------------------------------------------------------------- data


def _rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def _stamped(stamp: Path, spec: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(stamp.read_text()) == spec)
    except (OSError, ValueError):
        return False


def gen_file(path: Path, size: int, name: str) -> None:
    """``size`` pseudo-random bytes (seeded by ``name``), written 1 MiB at a time."""
    rng = _rng(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        left = size
        while left:
            n = min(MiB, left)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)


def gen_files(folder: Path, files: int, size: int, name: str) -> None:
    """``files`` files of ``size`` bytes, each seeded by ``name`` and its number."""
    for i in range(files):
        gen_file(folder / f"m{i:04d}.bin", size, f"{name}{i}")


def gen_many(
    folder: Path, files: int, dirs: int, size: Callable[[random.Random], int], name: str
) -> None:
    """``files`` files spread evenly over ``dirs`` directories, seeded by ``name``."""
    rng = _rng(name)
    per = -(-files // dirs)
    for i in range(files):
        d = folder / f"d{i // per:04d}"
        if i % per == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(size(rng)))


def ensure_data(data: Path, s: Sizes, wanted: set[str]) -> dict[str, Path]:
    """Generate (once) the ``wanted`` data sets for these sizes; returns their folders."""
    sets: dict[str, tuple[dict[str, Any], Callable[[Path], None]]] = {
        "big": ({"size": s.big}, lambda p: gen_file(p / "big.bin", s.big, "big")),
        "small": (
            {"files": s.small_files, "dirs": s.small_dirs, "size": 4096},
            lambda p: gen_many(p, s.small_files, s.small_dirs, lambda r: 4096, "small"),
        ),
        "medium": (
            {"files": s.medium_files, "size": 5 * MiB},
            lambda p: gen_files(p, s.medium_files, 5 * MiB, "medium"),
        ),
        "tree": (
            {"files": s.tree_files, "dirs": s.tree_dirs, "size": "64..2048"},
            lambda p: gen_many(p, s.tree_files, s.tree_dirs, lambda r: r.randint(64, 2048), "t"),
        ),
    }
    if s.huge:
        sets["huge"] = ({"size": s.huge}, lambda p: gen_file(p / "huge.bin", s.huge, "huge"))
    out: dict[str, Path] = {}
    for name, (spec, make) in sets.items():
        if name not in wanted:
            continue
        folder = data / name
        stamp = data / f"{name}.stamp.json"
        spec = {"seed": SEED, **spec}
        if not _stamped(stamp, spec):
            t0 = time.perf_counter()
            print(f"generating {name} ({spec}) ...", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            stamp.write_text(json.dumps(spec))
            print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
        out[name] = folder
    return out


def tree_size(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder``, less syncd's own (the mirror marker, the lock)."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            if n.startswith(".~syncd-"):
                continue
            files += 1
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return files, total


# --------------------------------------------------------------------------- servers


@dataclass
class Servers:
    serve_pid: int
    nginx_pid: int
    serve_url: str
    serve_root: Path
    token: str
    token_file: Path
    dav_url: str
    dav_root: Path
    dav_password: str
    dav_password_file: Path
    rclone_conf: Path


def start_syncd_serve(
    run_dir: Path, store: Path, syncd: list[str]
) -> tuple[int, str, Path, str, Path]:
    root = store / "serve-root"
    root.mkdir(parents=True)
    token = secrets.token_urlsafe(24)
    token_file = run_dir / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    out = run_dir / "logs" / "syncd-serve.out"
    err = run_dir / "logs" / "syncd-serve.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*syncd, "serve", "--root", str(root), "--port", "0", "--token-file", str(token_file)],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    PROCS.add("syncd serve", proc)
    found: list[str] = []

    def listening() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"syncd serve exited {proc.returncode} (log: {err})")
        found[:] = re.findall(r"listening on http://127\.0\.0\.1:(\d+)/", out.read_text())
        return bool(found)

    wait_until(listening, 30, "syncd serve to listen", poll=0.02)
    return proc.pid, f"http://127.0.0.1:{found[0]}/", root, token, token_file


NGINX_CONF = """\
load_module {module};
{user}
worker_processes auto;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;  # on, like syncd serve logging each stored file
    client_body_temp_path {body}/nginx-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
            auth_basic "bench";
            auth_basic_user_file {dir}/htpasswd;
        }}
    }}
}}
"""


def start_nginx(run_dir: Path, store: Path) -> tuple[int, str, Path, str, Path]:
    """nginx with WebDAV (dav_ext for PROPFIND) on a free port, basic auth, its own config.
    Its root and its body temp directory are on ``store`` (one filesystem: renames, no copy)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(DAV_MODULE).exists():
        raise BenchError(f"{DAV_MODULE} is missing (apt-get install nginx-extras)")
    conf_dir = run_dir / "nginx"
    root = store / "dav-root"
    for d in (conf_dir, root, store / "nginx-body"):
        d.mkdir(parents=True, exist_ok=True)
    password = "p" + secrets.token_urlsafe(16)  # never "-...": rclone would take it for a flag
    (conf_dir / "htpasswd").write_text(f"{DAV_USER}:{{PLAIN}}{password}\n")
    password_file = run_dir / "dav-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    port = free_port()
    user = ""
    if os.geteuid() == 0:  # workers would switch to nobody and could not write root's dirs
        user = "user root root;"
    (conf_dir / "nginx.conf").write_text(
        NGINX_CONF.format(
            module=DAV_MODULE, user=user, dir=conf_dir, port=port, root=root, body=store
        )
    )
    log = run_dir / "logs" / "nginx.log"
    proc = spawn("nginx", [nginx, "-p", conf_dir, "-c", conf_dir / "nginx.conf"], log)

    def up() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"nginx exited {proc.returncode}: {(conf_dir / 'error.log')}")
        return port_open(port)

    wait_until(up, 20, "nginx to listen", poll=0.02)
    return proc.pid, f"http://127.0.0.1:{port}/", root, password, password_file


def rclone_config(run_dir: Path, url: str, password: str) -> Path:
    obscured = subprocess.run(
        ["rclone", "obscure", password], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    conf = run_dir / "rclone.conf"
    conf.write_text(
        f"[dav]\ntype = webdav\nurl = {url}\nvendor = other\nuser = {DAV_USER}\npass = {obscured}\n"
    )
    conf.chmod(0o600)
    return conf


# --------------------------------------------------------------------------- results


@dataclass
class Floor:
    text: str
    passed: bool


@dataclass
class Result:
    id: str
    name: str
    unit: str
    syncd: float
    peer: float
    peer_name: str
    better: str  # "higher" or "lower": for syncd's and the peer's figure
    floors: list[Floor] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """syncd relative to the peer, the higher the better."""
        if self.better == "higher":
            return self.syncd / self.peer if self.peer else float("inf")
        return self.peer / self.syncd if self.syncd else float("inf")

    @property
    def passed(self) -> bool | None:
        return all(f.passed for f in self.floors) if self.floors else None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3)
        d["pass"] = self.passed
        return d


def fmt(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"


def table(results: list[Result]) -> str:
    rows = [("workload", "syncd", "peer", "ratio", "floor", "")]
    for r in results:
        floor = "; ".join(f.text for f in r.floors) or "-"
        verdict = {True: "pass", False: "MISS", None: ""}[r.passed]
        rows.append(
            (
                r.name,
                fmt(r.syncd, r.unit),
                f"{fmt(r.peer, r.unit)} ({r.peer_name})",
                f"{r.ratio:.2f}",
                floor,
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the bench


class Bench:
    WORKLOADS = ("big", "huge", "small", "medium", "latency", "tree")

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        if args.reps:
            self.sizes = Sizes(**{**asdict(self.sizes), "reps": args.reps})
        self.dir: Path = args.dir.resolve()
        self.data_dir = self.dir / "data" / ("quick" if args.quick else "full")
        self.run_dir: Path = self.dir / "run"
        # Where the servers store what they receive: a RAM filesystem unless --disk, so that
        # the figures compare the software (the same for syncd and its peers) rather than the
        # disk's writeback, which made runs on this VM vary by +-30 %. See docs/performance.md.
        shm = Path("/dev/shm")
        # Room for the largest file three times over (two servers and rclone's temp) and the
        # small files; containers often give /dev/shm only 64 MiB: then the disk it is.
        need = 3 * max(self.sizes.big, self.sizes.huge) + self.sizes.medium_files * 5 * MiB
        need += 512 * MiB
        if args.disk or not (shm.is_dir() and os.access(shm, os.W_OK)):
            self.store_dir = self.run_dir / "store"
            self.store_kind = "disk"
        elif shutil.disk_usage(shm).free < need:
            print(
                f"/dev/shm has {shutil.disk_usage(shm).free // MiB:,} MiB free, "
                f"{need // MiB:,} MiB are needed: the servers store on disk",
                flush=True,
            )
            self.store_dir = self.run_dir / "store"
            self.store_kind = "disk"
        else:
            self.store_dir = shm / f"syncd-bench-{os.getpid()}"
            self.store_kind = "tmpfs"
        self.logs: Path = self.run_dir / "logs"
        self.results: list[Result] = []
        self.errors: list[str] = []
        venv_syncd = Path(sys.executable).with_name("syncd")
        self.syncd = [str(venv_syncd)] if venv_syncd.exists() else [sys.executable, "-m", "syncd"]
        self.env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
        self.webdav = False
        self._n = 0
        self.only = set(args.only.split(",")) if args.only else set(self.WORKLOADS)
        if self.only - set(self.WORKLOADS):
            raise SystemExit(
                f"--only: unknown workload(s) {sorted(self.only - set(self.WORKLOADS))}"
            )

    # -- helpers -----------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        self._n += 1
        return self.logs / f"{self._n:03d}-{name}.log"

    def config(
        self,
        name: str,
        folder: Path,
        remote_path: str,
        *,
        kind: str = "syncd",
        debounce: float | None = None,
        concurrency: int | None = None,
    ) -> Path:
        """A syncd config with its own state_dir (fresh: no manifest yet)."""
        s = self.srv
        state = self.run_dir / "state" / name
        if kind == "syncd":
            remote = f'url = "{s.serve_url}"\ntoken_file = "{s.token_file}"\n'
        else:
            remote = (
                f'kind = "webdav"\nurl = "{s.dav_url}"\nusername = "{DAV_USER}"\n'
                f'password_file = "{s.dav_password_file}"\n'
            )
        sync = f'state_dir = "{state}"\n'
        if debounce is not None:
            sync += f"debounce = {debounce}\n"
        if concurrency is not None:
            sync += f"concurrency = {concurrency}\n"
        path = self.run_dir / "cfg" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'[remote]\n{remote}\n[[folder]]\npath = "{folder}"\nremote_path = "{remote_path}"\n'
            f"\n[sync]\n{sync}"
        )
        return path

    def cmd(self, cmd: Sequence[str | Path], name: str, timeout: float) -> Ran:
        """``run`` with a log of its own, also noting the CPU time each server used meanwhile.
        Dirty pages of earlier runs are written out first (``sync``), so that no run pays for
        the writeback of the one before it."""
        os.sync()
        pids = {"serve": self.srv.serve_pid, "nginx": self.srv.nginx_pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        ran = run(cmd, self.log(name), timeout=timeout, env=self.env)
        ran.server_cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
        return ran

    def sync(self, cfg: Path, name: str, timeout: float) -> Ran:
        return self.cmd([*self.syncd, "sync", "-c", cfg], name, timeout)

    def rclone(self, args: Sequence[str | Path], name: str, timeout: float) -> Ran:
        cmd: list[str | Path] = ["rclone", "--config", self.srv.rclone_conf, "-q"]
        cmd += ["--low-level-retries", "3"]
        return self.cmd([*cmd, *args], name, timeout)

    def curl_put(self, src: Path, url: str, auth: list[str], name: str, timeout: float) -> Ran:
        return self.cmd(
            ["curl", "-sS", "--fail", "-o", "/dev/null", *auth, "-T", src, url], name, timeout
        )

    def serve_auth(self) -> list[str]:
        return ["-H", f"Authorization: Bearer {self.srv.token}"]

    def dav_auth(self) -> list[str]:
        return ["-u", f"{DAV_USER}:{self.srv.dav_password}"]

    def add(self, r: Result) -> None:
        self.results.append(r)
        verdict = {True: "pass", False: "MISS", None: ""}[r.passed]
        print(
            f"  {r.name}: syncd {fmt(r.syncd, r.unit)}, {r.peer_name} {fmt(r.peer, r.unit)}"
            f" (ratio {r.ratio:.2f}) {verdict}",
            flush=True,
        )

    def timeout_for(self, nbytes: int, files: int = 1) -> float:
        """Generous deadline: 20 MB/s and 10 files/s, at least a minute."""
        return max(60.0, nbytes / 20e6 + files / 10)

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # As `pip install` does: syncd's modules compiled once, not at every command's start
        # (PYTHONDONTWRITEBYTECODE or a read-only checkout would otherwise cost ~50 ms a run).
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "syncd")],
            check=False,
            capture_output=True,
            timeout=120,
        )
        self.data = ensure_data(self.data_dir, self.sizes, self.only)
        serve_pid, serve_url, serve_root, token, token_file = start_syncd_serve(
            self.run_dir, self.store_dir, self.syncd
        )
        nginx_pid, dav_url, dav_root, password, password_file = start_nginx(
            self.run_dir, self.store_dir
        )
        conf = rclone_config(self.run_dir, dav_url, password)
        self.srv = Servers(
            serve_pid,
            nginx_pid,
            serve_url,
            serve_root,
            token,
            token_file,
            dav_url,
            dav_root,
            password,
            password_file,
            conf,
        )
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "from syncd.remotes.kinds import NAMES; print('webdav' in NAMES)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.webdav = probe.stdout.strip() == "True" and not self.args.no_webdav
        print(
            f"syncd serve at {serve_url}, nginx WebDAV at {dav_url}; "
            f"syncd's webdav remote: {'yes' if self.webdav else 'not available'}; "
            f"server roots on {self.store_kind} ({self.store_dir})",
            flush=True,
        )

    # -- workloads ---------------------------------------------------------------------------
    def big_upload(self) -> None:
        """One big file: curl -T to nginx and to syncd serve, syncd sync to both, rclone."""
        folder = self.data["big"]
        src = folder / "big.bin"
        size = src.stat().st_size
        t = self.timeout_for(size)
        label = f"{size / GiB:g} GiB" if size >= GiB else f"{size // MiB} MiB"
        runs: dict[str, list[Ran]] = {}

        def clean(root: Path, rel: str) -> None:
            shutil.rmtree(root / rel, ignore_errors=True)

        tools: list[tuple[str, Callable[[int], Ran]]] = [
            (
                "curl_nginx",
                lambda i: self.curl_put(
                    src, f"{self.srv.dav_url}curl-big-{i}/big.bin", self.dav_auth(), "curl-nginx", t
                ),
            ),
            (
                "curl_serve",
                lambda i: self.curl_put(
                    src,
                    f"{self.srv.serve_url}curl-big-{i}/big.bin",
                    self.serve_auth(),
                    "curl-serve",
                    t,
                ),
            ),
            (
                "syncd_serve",
                lambda i: self.sync(
                    self.config(f"big-serve-{i}", folder, f"syncd-big-{i}"), "syncd-big-serve", t
                ),
            ),
            (
                "rclone",
                lambda i: self.rclone(
                    ["copy", folder, f"dav:rclone-big-{i}"], "rclone-big", t + 60
                ),
            ),
        ]
        if self.webdav:
            tools.append(
                (
                    "syncd_nginx",
                    lambda i: self.sync(
                        self.config(f"big-dav-{i}", folder, f"syncd-big-{i}", kind="webdav"),
                        "syncd-big-webdav",
                        t,
                    ),
                )
            )
        for i in range(self.sizes.reps):
            for name, go in tools:
                ran = go(i)
                runs.setdefault(name, []).append(ran)
                for root in (self.srv.serve_root, self.srv.dav_root):
                    for rel in (f"curl-big-{i}", f"syncd-big-{i}", f"rclone-big-{i}"):
                        got = root / rel / "big.bin"
                        if got.exists() and got.stat().st_size != size:
                            raise BenchError(f"{got}: wrong size after {name}")
                        clean(root, rel)

        def mbps(name: str) -> float:
            return statistics.median(size / r.seconds / 1e6 for r in runs[name])

        def cpu_per_gib(name: str, server: str) -> dict[str, float]:
            rs = runs[name]
            return {
                "client": round(statistics.median(r.cpu for r in rs) * GiB / size, 2),
                server: round(statistics.median(r.server_cpu[server] for r in rs) * GiB / size, 2),
            }

        target = {
            "curl_nginx": "nginx",
            "curl_serve": "serve",
            "syncd_serve": "serve",
            "syncd_nginx": "nginx",
            "rclone": "nginx",
        }
        extra = {
            "MBps_samples": {
                k: [round(size / r.seconds / 1e6, 1) for r in v] for k, v in runs.items()
            },
            "cpu_s_per_GiB": {k: cpu_per_gib(k, target[k]) for k in runs},
        }
        curl_nginx, curl_serve = mbps("curl_nginx"), mbps("curl_serve")
        syncd_serve, rclone = mbps("syncd_serve"), mbps("rclone")
        self.add(
            Result(
                "big_serve",
                f"{label} upload to syncd serve",
                "MB/s",
                syncd_serve,
                curl_serve,
                "curl -T, same server",
                "higher",
                [Floor("≥ 0.8 × curl", syncd_serve >= 0.8 * curl_serve)],
                extra,
            )
        )
        if self.webdav:
            syncd_nginx = mbps("syncd_nginx")
            self.add(
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
        self.add(
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
        sha = hash_rate(src)
        self.add(
            Result(
                "sha256_ceiling",
                f"sha-256 of the {label} file alone (hashlib, one core), vs curl -T",
                "MB/s",
                sha,
                curl_nginx,
                "curl -T to nginx",
                "higher",
            )
        )
        if self.webdav:
            self.add(
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
            self.add(
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
        self.add(
            Result(
                "rss_big",
                f"peak RSS sending {label}",
                "MiB",
                syncd_rss,
                rclone_rss,
                "rclone copy",
                "lower",
                [Floor("≤ 60 MiB and < rclone", syncd_rss <= 60 and syncd_rss < rclone_rss)],
            )
        )

    def huge_rss(self) -> None:
        """Peak RSS sending the 4 GiB file (full mode only)."""
        folder = self.data.get("huge")
        if folder is None:
            return
        size = (folder / "huge.bin").stat().st_size
        t = self.timeout_for(size)
        ran = self.sync(self.config("huge", folder, "syncd-huge"), "syncd-huge", t)
        shutil.rmtree(self.srv.serve_root / "syncd-huge", ignore_errors=True)
        rc = self.rclone(["copy", folder, "dav:rclone-huge"], "rclone-huge", t + 60)
        shutil.rmtree(self.srv.dav_root / "rclone-huge", ignore_errors=True)
        syncd_rss, rclone_rss = ran.maxrss_kib / 1024, rc.maxrss_kib / 1024
        self.add(
            Result(
                "rss_huge",
                f"peak RSS sending {size / GiB:g} GiB",
                "MiB",
                syncd_rss,
                rclone_rss,
                "rclone copy",
                "lower",
                [Floor("≤ 60 MiB and < rclone", syncd_rss <= 60 and syncd_rss < rclone_rss)],
                {
                    "syncd_MBps": round(size / ran.seconds / 1e6, 1),
                    "rclone_MBps": round(size / rc.seconds / 1e6, 1),
                },
            )
        )

    def first_syncs(self, name: str, folder: Path, remote_path: str, root: Path, t: float) -> Ran:
        """The median (by time) of a few first syncs of ``folder``, each from scratch (no
        manifest, nothing on the server); the state of the last one is kept. A single sample
        of 10,000 small files swung between 550 and 1,135 files/s on this shared VM."""
        kind = "webdav" if root == self.srv.dav_root else "syncd"
        runs: list[Ran] = []
        for i in range(max(3, self.sizes.reps)):
            if i:
                shutil.rmtree(root / remote_path, ignore_errors=True)
                shutil.rmtree(self.run_dir / "state" / name, ignore_errors=True)
            cfg = self.config(name, folder, remote_path, kind=kind)
            runs.append(self.sync(cfg, f"syncd-{name}-first", t))
        return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]

    def small_files(self) -> None:
        """Many 4 KiB files: first sync, no-op, one changed file; vs rclone, curl, rsync."""
        work = self.run_dir / "small"  # a copy: the changed-file step edits it
        shutil.copytree(self.data["small"], work)
        files, nbytes = tree_size(work)
        t = self.timeout_for(nbytes, files)
        n = f"{files:,}"

        first = self.first_syncs("small", work, "small", self.srv.serve_root, t)
        curl_cfg = self.run_dir / "curl-small.cfg"
        lines = [f'header = "Authorization: Bearer {self.srv.token}"']
        for dirpath, _dirs, names in os.walk(work):
            for name in sorted(names):
                p = Path(dirpath, name)
                rel = p.relative_to(work).as_posix()
                lines.append(f'upload-file = "{p}"\nurl = "{self.srv.serve_url}curl-small/{rel}"')
                lines.append('output = "/dev/null"')
        curl_cfg.write_text("\n".join(lines) + "\n")
        curl = self.cmd(["curl", "-sS", "--fail", "-K", curl_cfg], "curl-small", t)
        rclone = self.rclone(
            ["copy", work, "dav:small", "--transfers", "16", "--checkers", "16"],
            "rclone-small",
            max(t, files / 5),
        )
        if tree_size(self.srv.serve_root / "small")[0] != files:
            raise BenchError("syncd sync did not store every small file")
        if tree_size(self.srv.dav_root / "small")[0] != files:
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
        self.add(
            Result(
                "small_first",
                f"{n} × 4 KiB first sync",
                "files/s",
                rate,
                rclone_rate,
                "rclone --transfers 16 to nginx",
                "higher",
                [
                    Floor("≥ 600 files/s", rate >= 600),
                    Floor("≥ 20 × rclone", rate >= 20 * rclone_rate),
                ],
                {"cpu_ms_per_file": cpu_ms},
            )
        )
        self.add(
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
        if self.webdav:
            ran = self.first_syncs("small-dav", work, "syncd-small", self.srv.dav_root, t)
            dav_cfg = self.run_dir / "cfg" / "small-dav.toml"
            self.add(
                Result(
                    "small_first_nginx",
                    f"{n} × 4 KiB first sync to nginx",
                    "files/s",
                    files / ran.seconds,
                    rclone_rate,
                    "rclone --transfers 16",
                    "higher",
                    [
                        Floor("≥ 600 files/s", files / ran.seconds >= 600),
                        Floor("≥ 20 × rclone", files / ran.seconds >= 20 * rclone_rate),
                    ],
                )
            )

        # Nothing changed.
        cfg = self.run_dir / "cfg" / "small.toml"
        mirror = self.run_dir / "small-rsync"
        self.cmd(["rsync", "-a", f"{work}/", f"{mirror}/"], "rsync-small-first", t)
        noop: dict[str, list[float]] = {"syncd": [], "rclone": [], "rsync": [], "syncd_nginx": []}
        reps = max(5, self.sizes.reps)  # seconds each; medians of 5 steady the ratios
        for _ in range(reps):
            noop["syncd"].append(self.sync(cfg, "syncd-small-noop", 120).seconds)
            noop["rclone"].append(
                self.rclone(
                    ["sync", work, "dav:small", "--checkers", "16"], "rclone-small-noop", 300
                ).seconds
            )
            noop["rsync"].append(
                self.cmd(["rsync", "-a", f"{work}/", f"{mirror}/"], "rsync-small-noop", 120).seconds
            )
            if dav_cfg is not None:
                noop["syncd_nginx"].append(
                    self.sync(dav_cfg, "syncd-small-noop-webdav", 120).seconds
                )
        med = {k: statistics.median(v) for k, v in noop.items() if v}
        self.add(
            Result(
                "noop",
                f"no-op re-sync, {n} files",
                "s",
                med["syncd"],
                med["rclone"],
                "rclone sync",
                "lower",
                [Floor("≥ 5 × faster than rclone", med["syncd"] * 5 <= med["rclone"])],
                {"samples": noop},
            )
        )
        self.add(
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
            self.add(
                Result(
                    "noop_nginx",
                    f"no-op re-sync to nginx, {n} files",
                    "s",
                    med["syncd_nginx"],
                    med["rclone"],
                    "rclone sync",
                    "lower",
                    [Floor("≥ 5 × faster than rclone", med["syncd_nginx"] * 5 <= med["rclone"])],
                )
            )

        # One upload on its own: a one-file folder, synced, then that file edited.
        one = self.run_dir / "one"
        one.mkdir()
        one_cfg = self.config("one", one, "one")
        one_up: list[float] = []
        one_noop: list[float] = []
        (one / "f.bin").write_bytes(os.urandom(4096))
        self.sync(one_cfg, "syncd-one-first", 60)
        # One changed file among all: the same size, new bytes (rclone, comparing sizes and
        # modification times on a server that keeps no hashes, may or may not notice).
        all_files = sorted(work.rglob("*.bin"))
        victim = all_files[len(all_files) // 2]
        changed: dict[str, list[float]] = {"syncd": [], "rclone": [], "rsync": []}
        rclone_missed = 0
        for _ in range(reps):
            one_noop.append(self.sync(one_cfg, "syncd-one-noop", 60).seconds)
            edit(one / "f.bin")
            one_up.append(self.sync(one_cfg, "syncd-one-changed", 60).seconds)
            new = edit(victim)
            changed["syncd"].append(self.sync(cfg, "syncd-small-changed", 120).seconds)
            edited = victim.relative_to(work)
            if (self.srv.serve_root / "small" / edited).read_bytes() != new:
                raise BenchError(f"syncd sync did not send the edited {edited}")
            changed["rclone"].append(
                self.rclone(
                    ["sync", work, "dav:small", "--checkers", "16"], "rclone-small-changed", 300
                ).seconds
            )
            if (self.srv.dav_root / "small" / edited).read_bytes() != new:
                rclone_missed += 1
            changed["rsync"].append(
                self.cmd(
                    ["rsync", "-a", f"{work}/", f"{mirror}/"], "rsync-small-changed", 120
                ).seconds
            )
        upload1 = statistics.median(one_up) - statistics.median(one_noop)
        c = statistics.median(changed["syncd"])
        budget = med["syncd"] + max(0.0, upload1)
        self.add(
            Result(
                "one_changed",
                f"one changed file among {n}",
                "s",
                c,
                statistics.median(changed["rclone"]),
                "rclone sync"
                + (f", missed the edit {rclone_missed}/{reps}×" if rclone_missed else ""),
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

    def medium_files(self) -> None:
        """Many 5 MiB files: syncd to syncd serve (and to nginx) vs rclone to nginx."""
        folder = self.data["medium"]
        files, nbytes = tree_size(folder)
        t = self.timeout_for(nbytes, files)
        runs: dict[str, list[Ran]] = {"syncd": [], "rclone": [], "syncd_nginx": []}
        for i in range(self.sizes.reps):
            cfg = self.config(f"medium-{i}", folder, f"medium-{i}")
            runs["syncd"].append(self.sync(cfg, "syncd-medium", t))
            shutil.rmtree(self.srv.serve_root / f"medium-{i}")
            runs["rclone"].append(
                self.rclone(["copy", folder, f"dav:medium-{i}"], "rclone-medium", t)
            )
            shutil.rmtree(self.srv.dav_root / f"medium-{i}")
            if self.webdav:
                cfg = self.config(f"medium-dav-{i}", folder, f"syncd-medium-{i}", kind="webdav")
                runs["syncd_nginx"].append(self.sync(cfg, "syncd-medium-webdav", t))
                shutil.rmtree(self.srv.dav_root / f"syncd-medium-{i}")

        def mbps(name: str) -> float:
            return statistics.median(nbytes / r.seconds / 1e6 for r in runs[name])

        target = {"syncd": "serve", "rclone": "nginx", "syncd_nginx": "nginx"}
        extra = {
            "MBps_samples": {
                k: [round(nbytes / r.seconds / 1e6, 1) for r in v] for k, v in runs.items() if v
            },
            "cpu_s_per_GiB": {
                k: {
                    "client": round(statistics.median(r.cpu for r in v) * GiB / nbytes, 2),
                    target[k]: round(
                        statistics.median(r.server_cpu[target[k]] for r in v) * GiB / nbytes, 2
                    ),
                }
                for k, v in runs.items()
                if v
            },
        }
        s, r = mbps("syncd"), mbps("rclone")
        self.add(
            Result(
                "medium",
                f"{files} × 5 MiB",
                "MB/s",
                s,
                r,
                "rclone copy to nginx",
                "higher",
                [Floor("≥ 1.5 × rclone", s >= 1.5 * r)],
                extra,
            )
        )
        if runs["syncd_nginx"]:
            d = mbps("syncd_nginx")
            self.add(
                Result(
                    "medium_nginx",
                    f"{files} × 5 MiB to nginx",
                    "MB/s",
                    d,
                    r,
                    "rclone copy, same nginx",
                    "higher",
                    [Floor("≥ 1.5 × rclone", d >= 1.5 * r)],
                )
            )

    def latency(self) -> None:
        """`syncd run` change latency vs lsyncd (delay = 0, rsync to a local folder)."""
        debounce = self.args.debounce
        live = self.run_dir / "live"
        live.mkdir()
        (live / "seed.txt").write_text("seed\n")
        cfg = self.config("live", live, "live", debounce=debounce)
        log = self.log("syncd-run-live")
        proc = spawn("syncd run", [*self.syncd, "run", "-c", cfg], log, env=self.env)
        try:
            wait_until(lambda: "ready:" in log.read_text(errors="replace"), 60, "syncd run ready")
            syncd = measure_latency(live, self.srv.serve_root / "live", self.sizes.writes)
        finally:
            code = PROCS.stop(proc)
        if code != 0:
            raise BenchError(f"syncd run exited {code} (log: {log})")

        src = self.run_dir / "lsyncd-src"
        dst = self.store_dir / "lsyncd-dst"  # on the same filesystem as the servers
        src.mkdir()
        dst.mkdir()
        (src / "seed.txt").write_text("seed\n")
        lproc, llog = self.start_lsyncd("live", src, dst)
        try:
            wait_until(lambda: (dst / "seed.txt").exists(), 60, "lsyncd's first rsync")
            wait_until(lambda: "finished" in llog.read_text(errors="replace"), 60, "lsyncd start")
            lsyncd = measure_latency(src, dst, self.sizes.writes)
        finally:
            PROCS.stop(lproc)
        med, top = statistics.median(syncd), max(syncd)
        lmed, ltop = statistics.median(lsyncd), max(lsyncd)
        d_ms = debounce * 1000
        self.add(
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
        self.add(
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

    def start_lsyncd(self, name: str, src: Path, dst: Path) -> tuple[subprocess.Popen[bytes], Path]:
        conf = self.run_dir / f"lsyncd-{name}.lua"
        log = self.logs / f"lsyncd-{name}.log"
        conf.write_text(
            "settings {\n"
            f'  logfile = "{log}",\n'
            f'  statusFile = "{self.run_dir}/lsyncd-{name}.status",\n'
            "  nodaemon = true,\n"
            "  maxProcesses = 1,\n"
            "}\n"
            "sync {\n"
            "  default.rsync,\n"
            f'  source = "{src}",\n'
            f'  target = "{dst}",\n'
            "  delay = 0,\n"
            "}\n"
        )
        proc = spawn(f"lsyncd {name}", ["lsyncd", conf], self.logs / f"lsyncd-{name}.out")
        return proc, log

    def tree_start(self) -> None:
        """`syncd run` on the big tree with a warm manifest: time to ready, RSS; vs lsyncd."""
        folder = self.data["tree"]
        files, nbytes = tree_size(folder)
        cfg = self.config("tree", folder, "tree")
        first = self.sync(cfg, "syncd-tree-first", self.timeout_for(nbytes, files))
        ready: list[float] = []
        rss: list[int] = []
        for _ in range(max(1, min(2, self.sizes.reps))):
            log = self.log("syncd-run-tree")
            t0 = time.perf_counter()
            proc = spawn("syncd run tree", [*self.syncd, "run", "-c", cfg], log, env=self.env)
            try:
                t1 = wait_until(
                    lambda log=log: "ready:" in log.read_text(errors="replace"),  # type: ignore[misc]
                    120,
                    "syncd run ready on the tree",
                    poll=0.01,
                )
                ready.append(t1 - t0)
                st = proc_status(proc.pid)
                rss.append(max(st.get("VmHWM", 0), st.get("VmRSS", 0)))
            finally:
                code = PROCS.stop(proc)
            if code != 0:
                raise BenchError(f"syncd run exited {code} (log: {log})")
            if "sent " in log.read_text(errors="replace"):
                raise BenchError(f"syncd run sent files although the manifest was warm ({log})")

        dst = self.run_dir / "tree-lsyncd"
        self.cmd(["rsync", "-a", f"{folder}/", f"{dst}/"], "rsync-tree", 600)
        t0 = time.perf_counter()
        lproc, llog = self.start_lsyncd("tree", folder, dst)
        try:
            t1 = wait_until(
                lambda: "finished" in llog.read_text(errors="replace") if llog.exists() else False,
                600,
                "lsyncd start on the tree",
                poll=0.01,
            )
            lst = proc_status(lproc.pid)
        finally:
            PROCS.stop(lproc)
        lready = t1 - t0
        lrss = max(lst.get("VmHWM", 0), lst.get("VmRSS", 0)) / 1024
        r, m = statistics.median(ready), max(rss) / 1024
        n = f"{files:,}"
        self.add(
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
        self.add(
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

    # -- all ---------------------------------------------------------------------------------
    def run(self) -> int:
        only = self.only
        steps: dict[str, Callable[[], None]] = {
            "big": self.big_upload,
            "huge": self.huge_rss,
            "small": self.small_files,
            "medium": self.medium_files,
            "latency": self.latency,
            "tree": self.tree_start,
        }
        started = time.time()
        try:
            self.setup()
            for name in self.WORKLOADS:
                if name not in only:
                    continue
                print(f"== {name}", flush=True)
                t0 = time.perf_counter()
                try:
                    steps[name]()
                except BenchError as e:
                    self.errors.append(f"{name}: {e}")
                    print(f"  FAILED: {e}", flush=True)
                print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        finally:
            PROCS.stop_all()
            if self.store_kind == "tmpfs":
                shutil.rmtree(self.store_dir, ignore_errors=True)
        print()
        print(table(self.results))
        missed = [r.id for r in self.results if r.passed is False]
        doc = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "mode": "quick" if self.args.quick else "full",
            "command": " ".join(["scripts/bench", *sys.argv[1:]]),
            "machine": machine(),
            "versions": versions(self.syncd),
            "sizes": asdict(self.sizes),
            "debounce": self.args.debounce,
            "server_store": self.store_kind,
            "webdav_remote": self.webdav,
            "workloads": [r.as_json() for r in self.results],
            "floors_missed": missed,
            "errors": self.errors,
        }
        out = self.dir / "results.json"
        out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print()
        print(
            f"floors: {sum(r.passed is True for r in self.results)} met, {len(missed)} missed"
            + (f" ({', '.join(missed)})" if missed else "")
        )
        if self.args.quick:
            print("--quick: scaled-down data; the floors are meant for the full sizes")
        print(f"results: {out}")
        if self.errors:
            print("errors:\n  " + "\n  ".join(self.errors), file=sys.stderr)
            return 1
        return 3 if missed and self.args.check else 0


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


def edit(path: Path) -> bytes:
    """Rewrite ``path`` with new bytes of the same size; make sure its mtime moves."""
    before = path.stat()
    data = os.urandom(before.st_size)
    path.write_bytes(data)
    after = path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))
    return data


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


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(syncd: list[str]) -> dict[str, str]:
    return {
        "syncd": version_of([*syncd, "--version"]),
        "curl": version_of(["curl", "--version"]),
        "rclone": version_of(["rclone", "version"]),
        "rsync": version_of(["rsync", "--version"]),
        "nginx": version_of(["nginx", "-v"]),
        "lsyncd": version_of(["lsyncd", "--version"]),
        "aiohttp": version_of([sys.executable, "-c", "import aiohttp; print(aiohttp.__version__)"]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data sets (about a minute)")
    p.add_argument("--dir", type=Path, default=ROOT / "bench-out", help="data and results")
    p.add_argument("--only", default="", help=f"comma-separated subset of {Bench.WORKLOADS}")
    p.add_argument("--reps", type=int, default=0, help="repetitions (median kept)")
    p.add_argument("--debounce", type=float, default=0.2, help="syncd run's debounce (s)")
    p.add_argument("--no-webdav", action="store_true", help="skip syncd's webdav remote")
    p.add_argument(
        "--disk",
        action="store_true",
        help="servers store on disk (under --dir) instead of a tmpfs in /dev/shm",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 3 when a floor is missed (default: report only)"
    )
    return p.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Many files open at once in the servers under test.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with stopping_at_exit():
        return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
