"""Real servers for the conformance suite, each on a free 127.0.0.1 port with its own directory
and config, stopped at teardown: `syncd serve`, nginx WebDAV (Debian's nginx-extras), wsgidav,
and moto_server for S3.

Every server is wrapped in a ``RemoteServer``: how to configure syncd for it (right or wrong
credentials, or a port where nothing listens), and how to read, change and remove what it
stores without going through syncd (its backing directory, or boto3 for S3).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.conftest import ServerProc, start_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DAV_EXT = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"
BUCKET = "syncd-test"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[Any], what: str, log: Path | None) -> None:
    """Wait (with a deadline) until ``port`` accepts connections; fail if ``proc`` exits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {text}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RemoteServer(ABC):
    """One running server and how syncd talks to it."""

    name: str
    base: Path  # this server's private directory (config, logs, data)
    env: dict[str, str] = field(default_factory=dict)  # for the syncd process
    #: the server does server-side moves (every kind here does: S3 as copy + delete)
    moves: bool = True
    #: the server stores files as files in a directory (so inodes show a move)
    file_backed: bool = True
    _spaces: int = 0

    def new_space(self) -> str:
        """A fresh remote_path, so that tests sharing one server never see each other."""
        self._spaces += 1
        return f"t{self._spaces}"

    @abstractmethod
    def remote_section(self, *, wrong_credentials: bool = False, down: bool = False) -> str:
        """The [remote] table of a config for this server."""

    @abstractmethod
    def read_tree(self, space: str) -> dict[str, bytes]:
        """Every file the server holds under ``space``, read back without syncd."""

    @abstractmethod
    def write(self, space: str, rel: str, data: bytes) -> None:
        """Change or add a file behind syncd's back."""

    @abstractmethod
    def remove(self, space: str, rel: str) -> None:
        """Remove a file behind syncd's back."""

    @abstractmethod
    def stop(self) -> None: ...

    def described(self) -> str:
        return self.name


# -- servers that store files in a directory ---------------------------------------------------
@dataclass
class FileServer(RemoteServer):
    root: Path = Path()
    url: str = ""
    port: int = 0
    proc: subprocess.Popen[Any] | None = None

    def live_url(self, down: bool) -> str:
        return self.url.replace(f":{self.port}/", f":{free_port()}/") if down else self.url

    def read_tree(self, space: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        top = self.root / space
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith(".~syncd-"):
                    continue
                p = Path(dirpath) / name
                out[p.relative_to(top).as_posix()] = p.read_bytes()
        return out

    def write(self, space: str, rel: str, data: bytes) -> None:
        p = self.root / space / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def remove(self, space: str, rel: str) -> None:
        (self.root / space / rel).unlink()

    def inode(self, space: str, rel: str) -> int:
        return os.stat(self.root / space / rel).st_ino

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@dataclass
class SyncdServer(FileServer):
    server: ServerProc | None = None
    token_file: Path = Path()
    wrong_token_file: Path = Path()

    def remote_section(self, *, wrong_credentials: bool = False, down: bool = False) -> str:
        token = self.wrong_token_file if wrong_credentials else self.token_file
        return f'kind = "syncd"\nurl = "{self.live_url(down)}"\ntoken_file = "{token}"\n'

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def start_syncd(base: Path) -> SyncdServer:
    root = base / "root"
    root.mkdir()
    token_file = base / "token"
    token_file.write_text(secrets.token_urlsafe(24) + "\n")
    wrong = base / "wrong-token"
    wrong.write_text("not-the-token\n")
    srv = start_server(root, token_file)
    return SyncdServer(
        name="syncd",
        base=base,
        root=root,
        url=srv.url,
        port=srv.port,
        server=srv,
        token_file=token_file,
        wrong_token_file=wrong,
    )


@dataclass
class DavServer(FileServer):
    """A WebDAV server with Basic auth (user ``syncd``)."""

    password_file: Path = Path()
    wrong_password_file: Path = Path()

    def requests(self) -> list[str]:
        """nginx only: "METHOD URI STATUS depth=DEPTH" per request so far."""
        return (self.base / "access.log").read_text().splitlines()

    def remote_section(self, *, wrong_credentials: bool = False, down: bool = False) -> str:
        pw = self.wrong_password_file if wrong_credentials else self.password_file
        return (
            f'kind = "webdav"\nurl = "{self.live_url(down)}"\n'
            f'username = "syncd"\npassword_file = "{pw}"\n'
        )


def _passwords(base: Path) -> tuple[str, Path, Path]:
    password = "pw-" + secrets.token_hex(8) + " with space"
    pw = base / "password"
    pw.write_text(password + "\n")
    wrong = base / "wrong-password"
    wrong.write_text("not-the-password\n")
    return password, pw, wrong


NGINX_CONF = """\
load_module {dav_ext};
{user}
daemon off;
master_process on;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format dav '$request_method $request_uri $status depth=$http_depth';
    access_log {base}/access.log dav;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path off;
            dav_access user:rw group:r all:r;
            autoindex on;
            auth_basic "syncd conformance";
            auth_basic_user_file {base}/htpasswd;
        }}
    }}
}}
"""


def start_nginx(base: Path) -> DavServer:
    """nginx with WebDAV (dav + dav_ext), its own config, root and temp paths."""
    root = base / "root"
    root.mkdir()
    (base / "tmp").mkdir()
    password, pw, wrong = _passwords(base)
    (base / "htpasswd").write_text(f"syncd:{{PLAIN}}{password}\n")
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dav_ext=DAV_EXT,
            user="user root;" if os.geteuid() == 0 else "",
            base=base,
            port=port,
            root=root,
        )
    )
    log = base / "error.log"
    proc = subprocess.Popen(
        [NGINX, "-p", str(base), "-c", str(conf), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_listening(port, proc, "nginx", log)
    return DavServer(
        name="nginx",
        base=base,
        root=root,
        url=f"http://127.0.0.1:{port}/",
        port=port,
        proc=proc,
        password_file=pw,
        wrong_password_file=wrong,
    )


def start_wsgidav(base: Path) -> DavServer:
    """wsgidav (cheroot) sharing ``root`` with Basic auth, from its own JSON config."""
    root = base / "root"
    root.mkdir()
    password, pw, wrong = _passwords(base)
    port = free_port()
    conf = base / "wsgidav.json"
    conf.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "provider_mapping": {"/": str(root)},
                "http_authenticator": {
                    "domain_controller": None,
                    "accept_basic": True,
                    "accept_digest": False,
                    "default_to_digest": False,
                },
                "simple_dc": {"user_mapping": {"*": {"syncd": {"password": password}}}},
                "verbose": 1,
                "logging": {"enable_loggers": []},
                "dir_browser": {"enable": False},
            }
        )
    )
    log = base / "wsgidav.log"
    exe = Path(sys.executable).with_name("wsgidav")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wsgidav.server.server_cli"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
        )
    wait_listening(port, proc, "wsgidav", log)
    return DavServer(
        name="wsgidav",
        base=base,
        root=root,
        url=f"http://127.0.0.1:{port}/",
        port=port,
        proc=proc,
        password_file=pw,
        wrong_password_file=wrong,
    )


# -- S3 ----------------------------------------------------------------------------------------
@dataclass
class S3Server(RemoteServer):
    endpoint: str = ""
    port: int = 0
    proc: subprocess.Popen[Any] | None = None
    key_id: str = ""
    secret: str = ""
    client: Any = None

    def remote_section(self, *, wrong_credentials: bool = False, down: bool = False) -> str:
        endpoint = f"http://127.0.0.1:{free_port()}" if down else self.endpoint
        return (
            f'kind = "s3"\nurl = "s3://{BUCKET}/mirror/"\n'
            f'endpoint_url = "{endpoint}"\nregion = "{REGION}"\n'
        )

    def credentials(self, *, wrong: bool = False) -> dict[str, str]:
        """Environment for the syncd process: these keys, and no other AWS configuration."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": "wrong-secret" if wrong else self.secret,
            "AWS_CONFIG_FILE": str(self.base / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.base / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def keys(self, space: str) -> dict[str, int]:
        prefix = f"mirror/{space}/"
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        ):
            for obj in page.get("Contents", ()):
                out[obj["Key"][len(prefix) :]] = obj["Size"]
        return out

    def read_tree(self, space: str) -> dict[str, bytes]:
        """Every object under the space (one that vanishes while it is read is left out)."""
        out: dict[str, bytes] = {}
        for rel in self.keys(space):
            if rel.rsplit("/", 1)[-1].startswith(".~syncd-"):
                continue  # syncd's own (the mirror marker), as FileServer leaves them out
            try:
                obj = self.client.get_object(Bucket=BUCKET, Key=f"mirror/{space}/{rel}")
            except self.client.exceptions.NoSuchKey:
                continue
            out[rel] = obj["Body"].read()
        return out

    def head(self, space: str, rel: str) -> dict[str, Any]:
        resp: dict[str, Any] = self.client.head_object(
            Bucket=BUCKET, Key=f"mirror/{space}/{rel}", ChecksumMode="ENABLED"
        )
        return resp

    def write(self, space: str, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=f"mirror/{space}/{rel}", Body=data)

    def remove(self, space: str, rel: str) -> None:
        self.client.delete_object(Bucket=BUCKET, Key=f"mirror/{space}/{rel}")

    def incomplete_uploads(self) -> list[str]:
        resp = self.client.list_multipart_uploads(Bucket=BUCKET)
        return [u["Key"] for u in resp.get("Uploads", ())]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_moto(base: Path) -> S3Server:
    """moto_server with IAM authentication on: the fixture's first requests (a user, its key,
    its policy, the bucket) go through unauthenticated, every later one must be signed with
    that user's key."""
    import boto3
    from botocore.config import Config as BotoConfig

    port = free_port()
    log = base / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wait_listening(port, proc, "moto_server", log)
    endpoint = f"http://127.0.0.1:{port}"
    cfg = BotoConfig(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
    anon = {
        "endpoint_url": endpoint,
        "region_name": REGION,
        "aws_access_key_id": "setup",
        "aws_secret_access_key": "setup",
        "config": cfg,
    }
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="syncd")
    key = iam.create_access_key(UserName="syncd")["AccessKey"]
    iam.put_user_policy(
        UserName="syncd",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    boto3.client("s3", **anon).create_bucket(Bucket=BUCKET)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=cfg,
    )
    srv = S3Server(
        name="s3",
        base=base,
        endpoint=endpoint,
        port=port,
        proc=proc,
        key_id=key["AccessKeyId"],
        secret=key["SecretAccessKey"],
        client=client,
        file_backed=False,
    )
    srv.env = srv.credentials()
    return srv


STARTERS = {
    "syncd": start_syncd,
    "nginx": start_nginx,
    "wsgidav": start_wsgidav,
    "s3": start_moto,
}


def start_remote(kind: str, base: Path) -> RemoteServer:
    return STARTERS[kind](base)


@dataclass
class Listener:
    """A raw TCP listener on 127.0.0.1, a thread per connection, for servers that misbehave
    on purpose (tests script what ``_serve`` does with each connection)."""

    port: int = field(default=0, kw_only=True)
    _sock: socket.socket | None = field(default=None, kw_only=True)
    _stop: threading.Event = field(default_factory=threading.Event, kw_only=True)
    _conns: list[socket.socket] = field(default_factory=list, kw_only=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Self:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError
