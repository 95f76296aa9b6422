"""The peers: the servers the bench starts (syncd serve, nginx WebDAV) and the commands syncd is
timed against (curl, rclone, rsync, lsyncd): how each is started or called, and their versions.

The Debian packages (curl rsync rclone nginx-extras lsyncd) are installed by ``scripts/bench``.
The functions that build a command return its argv; ``Session.cmd`` runs and times it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .procs import PROCS, BenchError, free_port, port_open, spawn, version_of, wait_until

DAV_MODULE = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"
DAV_USER = "bench"


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
    run_dir: Path, store: Path, syncd: list[str], tag: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, Path, str, Path]:
    """``syncd serve`` (``syncd`` is its command, ``env`` its environment) on a free port, its
    root ``store/serve-root<tag>``; returns its pid, URL, root, token and token file."""
    root = store / f"serve-root{tag}"
    root.mkdir(parents=True)
    token = secrets.token_urlsafe(24)
    token_file = run_dir / f"token{tag}"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    out = run_dir / "logs" / f"syncd-serve{tag}.out"
    err = run_dir / "logs" / f"syncd-serve{tag}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*syncd, "serve", "--root", str(root), "--port", "0", "--token-file", str(token_file)],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    PROCS.add(f"syncd serve{tag}", proc)
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


def start_servers(run_dir: Path, store: Path, syncd: list[str]) -> Servers:
    """syncd serve and nginx WebDAV, both storing on ``store``, and rclone's config for nginx."""
    serve_pid, serve_url, serve_root, token, token_file = start_syncd_serve(run_dir, store, syncd)
    nginx_pid, dav_url, dav_root, password, password_file = start_nginx(run_dir, store)
    conf = rclone_config(run_dir, dav_url, password)
    return Servers(
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


# --------------------------------------------------------------------------- the peers' commands


def serve_auth(srv: Servers) -> list[str]:
    return ["-H", f"Authorization: Bearer {srv.token}"]


def dav_auth(srv: Servers) -> list[str]:
    return ["-u", f"{DAV_USER}:{srv.dav_password}"]


def curl_put(src: Path, url: str, auth: list[str]) -> list[str | Path]:
    return ["curl", "-sS", "--fail", "-o", "/dev/null", *auth, "-T", src, url]


def curl_config(srv: Servers, folder: Path, cfg: Path, remote_path: str) -> list[str | Path]:
    """One curl, one connection kept alive, uploading every file of ``folder`` to syncd serve
    (the list of uploads written to ``cfg``)."""
    lines = [f'header = "Authorization: Bearer {srv.token}"']
    for dirpath, _dirs, names in os.walk(folder):
        for name in sorted(names):
            p = Path(dirpath, name)
            rel = p.relative_to(folder).as_posix()
            lines.append(f'upload-file = "{p}"\nurl = "{srv.serve_url}{remote_path}/{rel}"')
            lines.append('output = "/dev/null"')
    cfg.write_text("\n".join(lines) + "\n")
    return ["curl", "-sS", "--fail", "-K", cfg]


def rclone(srv: Servers, args: Sequence[str | Path]) -> list[str | Path]:
    return ["rclone", "--config", srv.rclone_conf, "-q", "--low-level-retries", "3", *args]


def rsync(src: Path, dst: Path) -> list[str | Path]:
    return ["rsync", "-a", f"{src}/", f"{dst}/"]


def start_lsyncd(
    run_dir: Path, logs: Path, name: str, src: Path, dst: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """lsyncd mirroring ``src`` to ``dst`` with rsync, delay = 0; returns it and its log."""
    conf = run_dir / f"lsyncd-{name}.lua"
    log = logs / f"lsyncd-{name}.log"
    conf.write_text(
        "settings {\n"
        f'  logfile = "{log}",\n'
        f'  statusFile = "{run_dir}/lsyncd-{name}.status",\n'
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
    proc = spawn(f"lsyncd {name}", ["lsyncd", conf], logs / f"lsyncd-{name}.out")
    return proc, log


def lsyncd_started(log: Path) -> bool:
    """lsyncd has done its first rsync and set its watches."""
    return log.exists() and "finished" in log.read_text(errors="replace")


IN_NAMESPACE = 'ip link set lo up && exec "$@"'


def netns(cmd: Sequence[str]) -> list[str]:
    """``cmd`` in a new network namespace holding only loopback (up): ``unshare -n``, with
    ``-r`` (a user namespace) when not root. Syncthing never runs otherwise."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]
    return [*unshare, "sh", "-c", IN_NAMESPACE, "sh", *cmd]


def versions(syncd: list[str]) -> dict[str, str]:
    return {
        "syncd": version_of([*syncd, "--version"]),
        "curl": version_of(["curl", "--version"]),
        "rclone": version_of(["rclone", "version"]),
        "rsync": version_of(["rsync", "--version"]),
        "nginx": version_of(["nginx", "-v"]),
        "lsyncd": version_of(["lsyncd", "--version"]),
        "syncthing": version_of(netns(["syncthing", "--version"])),
        "aiohttp": version_of([sys.executable, "-c", "import aiohttp; print(aiohttp.__version__)"]),
    }
