"""The servers and peers of the large-file rows (measure_bigfile): an rsync daemon, moto_server
for S3, an rclone config for ``syncd serve``'s WebDAV face; each on 127.0.0.1 only, started by
the bench and stopped by it (or at exit, with every process in PROCS).

The functions that build a command return its argv, as in ``peers``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .procs import PROCS, BenchError, free_port, port_open, spawn, wait_until

BUCKET = "syncd-bench"
REGION = "us-east-1"
SYNCD_OWN = ".~syncd-*"  # syncd's own files in a synced folder: not the peers' business

RSYNCD_CONF = """\
pid file = {dir}/rsyncd.pid
log file = {dir}/rsyncd.log
use chroot = no
{ids}
[bench]
    path = {root}
    read only = no
    list = yes
"""


@dataclass
class Daemon:
    """A server the bench started for these rows: its process, port and what it stores in."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    root: Path | None = None

    def stop(self) -> None:
        PROCS.stop(self.proc, 10)


def proc_of(pid: int) -> subprocess.Popen[bytes]:
    """The Popen of a process the bench started (in PROCS) by its pid."""
    for _name, proc in PROCS.items:
        if proc.pid == pid:
            return proc
    raise BenchError(f"no process {pid} among the bench's")


# --------------------------------------------------------------------------- rsync


def start_rsyncd(run_dir: Path, store: Path) -> Daemon:
    """``rsync --daemon`` on a free 127.0.0.1 port, one writable module ``bench`` whose path is
    ``store/rsync-root`` (where the servers store: the same filesystem as syncd serve's)."""
    conf_dir = run_dir / "rsyncd"
    root = store / "rsync-root"
    for d in (conf_dir, root):
        d.mkdir(parents=True, exist_ok=True)
    # As root the daemon would write as nobody, who cannot write root's directories.
    ids = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
    conf = conf_dir / "rsyncd.conf"
    conf.write_text(RSYNCD_CONF.format(dir=conf_dir, root=root, ids=ids))
    port = free_port()
    cmd = [
        "rsync", "--daemon", "--no-detach", "--address", "127.0.0.1", "--port", str(port),
        "--config", str(conf),
    ]  # fmt: skip
    proc = spawn("rsync --daemon", cmd, run_dir / "logs" / "rsyncd.out")

    def up() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"rsync --daemon exited {proc.returncode} ({conf_dir}/rsyncd.log)")
        return port_open(port)

    wait_until(up, 20, "rsync --daemon to listen", poll=0.02)
    return Daemon("rsyncd", proc, port, root)


def rsync_push(folder: Path, port: int, rel: str) -> list[str | Path]:
    """Push ``folder``'s files to the daemon's module (through ``port``: the proxy). rsync's
    own choice for a remote copy: its delta algorithm (not --whole-file), a temp file renamed
    into place; ``--partial`` keeps what an interrupted transfer received, for the next run
    to build on."""
    return [
        "rsync", "-a", "--partial", "--exclude", SYNCD_OWN, "--timeout", "60",
        f"{folder}/", f"rsync://127.0.0.1:{port}/bench/{rel}/",
    ]  # fmt: skip


# --------------------------------------------------------------------------- rclone


def rclone_serve_config(path: Path, url: str, token: str) -> Path:
    """rclone's WebDAV backend for ``syncd serve`` at ``url`` (the token as its Basic password,
    any user), remote ``serve:``."""
    obscured = subprocess.run(
        ["rclone", "obscure", token], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[serve]\ntype = webdav\nurl = {url}\nvendor = other\nuser = bench\npass = {obscured}\n"
    )
    path.chmod(0o600)
    return path


def rclone_copyto(conf: Path, src: Path, dst: str) -> list[str | Path]:
    return ["rclone", "--config", conf, "-q", "copyto", src, dst]


# --------------------------------------------------------------------------- S3 (moto_server)


def s3_missing() -> str:
    """Why syncd's S3 rows cannot run here, or "": moto_server and syncd's S3 extra."""
    missing = [m for m in ("moto", "aiobotocore") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install -e '.[test]')"
    return ""


def start_moto(run_dir: Path) -> Daemon:
    """moto_server on a free 127.0.0.1 port (it stores in its own memory; no authentication:
    any key signs). Returns at once: ``moto_ready`` waits for it and makes the bucket."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = spawn("moto_server", cmd, run_dir / "logs" / "moto.log")
    return Daemon("moto", proc, port)


def moto_ready(moto: Daemon, timeout: float = 60) -> None:
    """Wait for moto_server to listen, then create the bucket (a plain, unsigned PUT)."""

    def up() -> bool:
        if moto.proc.poll() is not None:
            raise BenchError(f"moto_server exited {moto.proc.returncode}")
        return port_open(moto.port)

    wait_until(up, timeout, "moto_server to listen", poll=0.05)
    req = urllib.request.Request(f"http://127.0.0.1:{moto.port}/{BUCKET}", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def s3_env(base: dict[str, str], run_dir: Path) -> dict[str, str]:
    """The environment of a syncd process talking to moto: these keys, no other AWS config."""
    return {
        **base,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_CONFIG_FILE": str(run_dir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(run_dir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_config(run_dir: Path, name: str, folder: Path, remote_path: str, endpoint: str) -> Path:
    """A syncd config for the bucket at ``endpoint`` (the proxy), its own fresh state_dir."""
    state = run_dir / "state" / name
    path = run_dir / "cfg" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[remote]\nkind = "s3"\nurl = "s3://{BUCKET}/mirror/"\nendpoint_url = "{endpoint}"\n'
        f'region = "{REGION}"\n\n[[folder]]\npath = "{folder}"\nremote_path = "{remote_path}"\n'
        f'\n[sync]\nstate_dir = "{state}"\n'
    )
    return path


def s3_object_sha256(moto: Daemon, key: str) -> str | None:
    """The sha-256 of an object as moto holds it (read straight from it, not through the
    proxy); None if there is none."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{moto.port}/{BUCKET}/{key}", timeout=120
        ) as r:
            while b := r.read(8 << 20):
                h.update(b)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise BenchError(f"reading s3://{BUCKET}/{key} back: {e}") from e
    return h.hexdigest()


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def stop_all(daemons: Sequence[Daemon | None]) -> None:
    for d in daemons:
        if d is not None:
            with contextlib.suppress(Exception):
                d.stop()
