"""Operations: sd_notify, `syncd status`, the status page (in a real browser), /status.json,
/metrics, JSON logs, `syncd config check`, `syncd init`, the service files, Windows fallbacks.

Real `syncd serve` and `syncd run` processes on 127.0.0.1; headless Chromium from Debian for
the page (scripts/test installs it); systemd-analyze for the units where it can run.
"""

from __future__ import annotations

import asyncio
import json
import os
import plistlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd import cli
from syncd import config as cfgmod
from syncd.logs import JsonFormatter, Redactor
from syncd.remotes.kinds import KINDS
from syncd.status import client, control
from syncd.status.notify import Notifier
from tests.conftest import (
    DaemonProc,
    ServerProc,
    mirror_config,
    refused_by_the_server,
    run_syncd,
    wait_for,
)
from tests.test_sync import tree_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    for i in range(3):
        (f / f"file{i}.txt").write_text(f"content {i}\n")
    return f


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ops_config(
    tmp_path: Path,
    server: ServerProc,
    folder: Path,
    *,
    sync: str = "",
    port: int = 0,
    json_logs: bool = True,
) -> Path:
    """A config with a status endpoint on loopback (a free port by default) and JSON logs
    (unless ``json_logs`` is false)."""
    cfg = mirror_config(tmp_path, server, folder, extra="debounce = 0.1\nmax_delay = 2\n" + sync)
    log = '\n[log]\nformat = "json"\n' if json_logs else ""
    cfg.write_text(cfg.read_text() + f'\n[status]\nlisten = "127.0.0.1:{port}"\n' + log)
    return cfg


@pytest.fixture
def daemon(tmp_path: Path, server: ServerProc, folder: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(ops_config(tmp_path, server, folder), tmp_path / "daemon.log")
    try:
        yield d
    finally:
        assert d.stop() == 0, d.log()


def status_url(d: DaemonProc) -> str:
    m = re.search(r"status page at (http://127\.0\.0\.1:\d+/)", d.log())
    assert m, f"no status page URL in the log:\n{d.log()}"
    return m.group(1)


def get(url: str) -> tuple[int, str, str]:
    with NO_PROXY.open(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def status_json(d: DaemonProc) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(get(status_url(d) + "status.json")[2])
    return doc


def status_cli(cfg: Path) -> tuple[int, dict[str, Any]]:
    r = run_syncd("status", "--json", config=cfg)
    assert r.returncode in (0, 1, 3, 4), r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return r.returncode, doc


def keys(doc: object) -> object:
    """The shape of a document: its keys, recursively (lists by their first item)."""
    if isinstance(doc, dict):
        return {k: keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [keys(doc[0])] if doc else []
    return None


# --------------------------------------------------------------------------- sd_notify


def test_sd_notify_ready_after_first_reconcile_status_watchdog_stopping(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    # A file that takes about a second to send (bwlimit): READY=1 sent at start-up, before the
    # first reconcile, would arrive while it is still missing on the server.
    (folder / "big.bin").write_bytes(os.urandom(256 * 1024))
    cfg = ops_config(tmp_path, server, folder, sync='bwlimit = "256KiB"\n')
    addr = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(addr))
    sock.settimeout(0.05)
    got: list[tuple[str, bool]] = []  # (message, were the files on the server when it came)

    def receive() -> None:
        try:
            while True:
                msg = sock.recv(4096).decode()
                on_server = "READY=1" in msg and tree_of(server.root / "docs") == tree_of(folder)
                got.append((msg, on_server))
        except TimeoutError:
            pass

    def fields(name: str) -> list[str]:
        return [ln for msg, _ in got for ln in msg.splitlines() if ln.startswith(name)]

    env = {"NOTIFY_SOCKET": str(addr), "WATCHDOG_USEC": "300000"}
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=env, wait=False)
    try:
        wait_for(lambda: receive() or fields("READY=1"), 30, "READY=1")
        ready = next(i for i, (msg, _) in enumerate(got) if "READY=1" in msg)
        assert got[ready][1], "READY=1 came before the initial files were on the server"
        assert "ready:" in d.log()
        statuses = fields("STATUS=")
        assert statuses and "first scan and upload" in statuses[0], statuses
        assert any("STATUS=" in msg for msg, _ in got[:ready]), "no STATUS= before READY=1"
        wait_for(lambda: receive() or any("in sync" in s for s in fields("STATUS=")), 10)
        # A change shows in the status line.
        (folder / "new.txt").write_text("new")
        wait_for(lambda: receive() or any("5 files" in s for s in fields("STATUS=")), 15)
        # WatchdogSec=0.3s: pinged every 0.15 s from the event loop.
        wait_for(lambda: receive() or len(fields("WATCHDOG=1")) >= 3, 10, "WATCHDOG=1 pings")
        assert d.stop(signal.SIGTERM) == 0
        receive()
        assert fields("STOPPING=1"), [m for m, _ in got[-5:]]
        assert len(fields("READY=1")) == 1, "READY=1 is said once"
        first_stop = min(i for i, (m, _) in enumerate(got) if "STOPPING=1" in m)
        assert ready < first_stop
    finally:
        d.stop()
        sock.close()


def test_notifier_abstract_socket_and_no_socket() -> None:
    name = f"syncd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_interval == 1.0
        assert n.ready("in sync:\n 3 files")
        msg = sock.recv(4096).decode().splitlines()
        assert msg[0] == "READY=1" and "STATUS=in sync: 3 files" in msg, msg
        n.close()
    finally:
        sock.close()
    # Not under systemd (or on Windows): every call is a no-op.
    off = Notifier({})
    assert not off.enabled and off.watchdog_interval is None and not off.ready()
    # A watchdog meant for another process is not ours to ping.
    other = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None


# --------------------------------------------------------------------------- status, page


def chromium_dom(url: str, profile: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: scripts/test installs it with `apt_install chromium`"
    r = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def dd(dom: str, ident: str) -> str:
    m = re.search(rf'id="{ident}"[^>]*>([^<]*)<', dom)
    assert m, f"#{ident} not in the page:\n{dom[:3000]}"
    return m.group(1)


def test_status_page_renders_live_figures_in_chromium(
    tmp_path: Path, server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    url = status_url(daemon)
    status, ctype, html = get(url)
    assert status == 200 and ctype.startswith("text/html")
    assert "/status.js" in html and "://" not in html, (
        "the page must load nothing from elsewhere (no CDN)"
    )
    dom = chromium_dom(url, tmp_path / "chromium")
    assert dd(dom, "t-files") == "3", "the page did not fill in the live figures"
    assert dd(dom, "t-uploaded") == "3"
    assert dd(dom, "r-reachable") == "yes"
    assert 'class="badge in_sync"' in dom and 'data-folder="docs"' in dom
    assert "docs/file0.txt" in dom, "recent transfers are listed"
    # Change the folder: two new files, and one the server refuses (its directory there is
    # a symlink).
    (folder / "more1.txt").write_text("1")
    (folder / "more2.txt").write_text("2")
    refused_by_the_server(server, folder)
    wait_for(lambda: status_json(daemon)["totals"]["files"] == 5, what="5 files mirrored")
    wait_for(lambda: status_json(daemon)["totals"]["errors"] == 1, what="the refused file")
    dom = chromium_dom(url, tmp_path / "chromium")
    assert dd(dom, "t-files") == "5", "the page did not show the new figure"
    assert dd(dom, "t-errors") == "1"
    assert "is a symlink" in dom, "the error's reason is on the page"
    assert 'class="badge error"' in dom


def test_status_json_schema_and_exit_codes(
    tmp_path: Path, server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    cfg = daemon.config
    wait_for(lambda: status_cli(cfg)[0] == 0, what="in sync")
    code, doc = status_cli(cfg)
    web = status_json(daemon)
    assert keys(doc) == keys(web), "syncd status --json and /status.json differ in schema"
    assert doc["version"] == 1 and doc["source"] == "daemon" and doc["state"] == "in_sync"
    assert doc["in_sync"] is True and doc["last_sync"] is not None
    assert doc["daemon"]["ready"] is True and doc["daemon"]["pid"] == daemon.proc.pid
    assert doc["daemon"]["status_url"] == status_url(daemon)
    assert doc["remote"]["reachable"] is True and doc["remote"]["error"] is None
    f = doc["folders"][0]
    assert f["path"] == str(folder) and f["remote_path"] == "docs"
    assert (f["state"], f["files"], f["pending_count"], f["in_flight"]) == ("in_sync", 3, 0, [])
    assert f["watcher"] == "watching" and f["bytes"] == sum(
        p.stat().st_size for p in folder.iterdir() if p.is_file()
    )
    assert doc["totals"]["uploaded"] == 3 and doc["totals"]["errors"] == 0
    assert {r["path"] for r in doc["recent"]} == {"file0.txt", "file1.txt", "file2.txt"}
    documented = (ROOT / "docs" / "status.md").read_text()
    for key in [*doc, *doc["folders"][0], *doc["totals"], *doc["remote"], *doc["recent"][0]]:
        assert f"`{key}`" in documented, f"docs/status.md does not document {key!r}"
    # An error: exit 1, with the path, the kind, the reason and the time.
    refused = refused_by_the_server(server, folder)
    wait_for(lambda: status_cli(cfg)[0] == 1, what="exit 1 on an error")
    code, doc = status_cli(cfg)
    err = doc["errors"][0]
    assert (err["folder"], err["path"], err["kind"], err["current"]) == (
        "docs",
        "linked/refused.txt",
        "remote",
        True,
    )
    assert "is a symlink" in err["reason"] and abs(err["time"] - time.time()) < 60
    assert doc["state"] == "error" and doc["folders"][0]["state"] == "error"
    human = run_syncd("status", config=cfg)
    assert human.returncode == 1 and "[remote] docs/linked/refused.txt" in human.stdout, (
        human.stdout
    )
    # Gone again: resolved, in sync, exit 0.
    refused.unlink()
    refused.parent.rmdir()
    wait_for(lambda: status_cli(cfg)[0] == 0, what="exit 0 once resolved")
    human = run_syncd("status", config=cfg)
    assert human.stdout.startswith("in sync") and "(resolved since)" in human.stdout
    # No daemon: the manifest's view, same schema version, exit 4 (no daemon runs).
    assert daemon.stop() == 0
    code, off = status_cli(cfg)
    assert code == 4 and off["source"] == "manifest" and off["daemon"] is None
    assert off["version"] == 1 and off["folders"][0]["files"] == 3
    assert set(off) == set(doc) and set(off["folders"][0]) == set(doc["folders"][0])


# --------------------------------------------------------------------------- metrics, logs


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text, checked line by line: every sample belongs to a family with HELP and
    TYPE, names are syncd_-prefixed, values are numbers."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
        else:
            m = re.fullmatch(
                r'(syncd_[a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\S+)', line
            )
            assert m, f"not a Prometheus sample: {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
            family = family if family in types else m.group(1)
            assert family in types and family in helps, f"{line!r} has no TYPE/HELP"
            if types[family] == "counter":
                assert family.endswith("_total"), family
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_move_with_uploads_deletes_and_moves(
    server: ServerProc, folder: Path, daemon: DaemonProc
) -> None:
    url = status_url(daemon) + "metrics"
    status, ctype, text = get(url)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    before = parse_metrics(text)
    assert before["syncd_uploads_total"] == 3 and before["syncd_ready"] == 1
    assert before['syncd_pending_files{folder="docs"}'] == 0
    assert before['syncd_in_flight_files{folder="docs"}'] == 0
    assert before['syncd_errors_total{kind="remote"}'] == 0
    assert before['syncd_watcher_restarts_total{folder="docs"}'] == 0
    assert before["syncd_last_success_timestamp_seconds"] > time.time() - 60
    buckets = [v for k, v in before.items() if k.startswith("syncd_upload_duration_seconds_b")]
    assert (
        buckets == sorted(buckets) and buckets[-1] == before["syncd_upload_duration_seconds_count"]
    )
    assert before["syncd_upload_duration_seconds_count"] == 3
    (folder / "a.bin").write_bytes(os.urandom(5000))
    (folder / "b.bin").write_bytes(os.urandom(7000))
    (folder / "file0.txt").unlink()
    (folder / "file1.txt").rename(folder / "renamed.txt")
    refused_by_the_server(server, folder)

    def moved() -> bool:
        now = parse_metrics(get(url)[2])
        return (
            now["syncd_uploads_total"] == 5
            and now["syncd_deletes_total"] == 1
            and now["syncd_moves_total"] == 1
            and now['syncd_errors_total{kind="remote"}'] == 1
        )

    wait_for(moved, what="counters moved")
    after = parse_metrics(get(url)[2])
    assert after["syncd_sent_bytes_total"] >= before["syncd_sent_bytes_total"] + 12000
    assert after["syncd_upload_duration_seconds_count"] == 5
    assert after["syncd_current_errors"] == 1 and after["syncd_in_sync"] == 0
    assert after['syncd_mirrored_files{folder="docs"}'] == 4


def test_json_logs_one_object_per_line_without_secrets(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    cfg = ops_config(tmp_path, server, folder)
    cfg.write_text(cfg.read_text() + 'level = "debug"\n')
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        (folder / "late.txt").write_text("late")
        wait_for(lambda: '"path": "late.txt"' in d.log(), 60, what="late.txt sent")
    finally:
        assert d.stop() == 0
    lines = d.log().splitlines()
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    for doc in docs:
        assert set(doc) >= {"time", "level", "event", "folder", "path", "bytes", "ms", "result"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"]), doc
    sent = [doc for doc in docs if doc["event"] == "sent"]
    assert {doc["path"] for doc in sent} == {"file0.txt", "file1.txt", "file2.txt", "late.txt"}
    for doc in sent:
        assert doc["level"] == "info" and doc["folder"] == "docs" and doc["result"] == "ok"
        assert isinstance(doc["bytes"], int) and isinstance(doc["ms"], int), doc
    token = server.token
    assert token and token not in d.log(), "the token appeared in the log"


def test_redaction_and_json_formatter() -> None:
    r = Redactor()
    r.add("s3cr3t-t0ken")
    line = (
        "GET http://bob:hunter2@example.org/ Authorization: Bearer abc.def token=xyz s3cr3t-t0ken"
    )
    # A message (syncd's own text, file names): the registered secret and URL userinfo go;
    # words that merely look like credentials stay (a file may be named "token=xyz").
    text = r.redact(line)
    for secret in ("hunter2", "s3cr3t-t0ken"):
        assert secret not in text, text
    assert "Bearer abc.def token=xyz" in text
    assert r.redact("put it in a file named by remote.token_file") == (
        "put it in a file named by remote.token_file"
    )
    # A traceback (other code's text): anything that looks like a credential goes too.
    dump = r.redact_dump(line)
    for secret in ("hunter2", "abc.def", "xyz", "s3cr3t-t0ken"):
        assert secret not in dump, dump
    import logging

    rec = logging.LogRecord("syncd.x", logging.INFO, __file__, 1, "sent %s", ("a",), None)
    rec.folder, rec.path, rec.bytes, rec.ms, rec.result, rec.event = "d", "a", 1, 2, "ok", "sent"
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["msg"] == "sent a" and (doc["folder"], doc["bytes"], doc["ms"]) == ("d", 1, 2)


# --------------------------------------------------------------------------- config, init


def test_config_check_prints_effective_values_and_exits_2_on_errors(
    tmp_path: Path, server: ServerProc, folder: Path
) -> None:
    cfg = mirror_config(tmp_path, server, folder, extra="concurrency = 8\n")
    r = run_syncd("config", "check", config=cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f'url = "{server.url}"' in out and 'remote_path = "docs"' in out
    assert "concurrency = 8\n" in out, "a value the file sets is not marked as a default"
    assert "debounce = 0.5  # default" in out and 'format = "text"  # default' in out
    assert f'state_dir = "{tmp_path / "state"}"' in out
    assert server.token and server.token not in out, "the token itself is never printed"
    assert "OK" in r.stderr
    import tomllib

    assert tomllib.loads(out)["sync"]["concurrency"] == 8, "the output is TOML"
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("concurrency = 8", "concurency = 8"))
    r = run_syncd("config", "check", config=bad)
    assert r.returncode == 2 and "sync.concurency" in r.stderr and "concurrency" in r.stderr
    r = run_syncd("config", "check", config=tmp_path / "missing.toml")
    assert r.returncode == 2 and "not found" in r.stderr


def test_init_writes_a_commented_config_and_a_new_token(tmp_path: Path, folder: Path) -> None:
    target = tmp_path / "conf" / "config.toml"
    args = ["init", "--folder", str(folder), "--url", "http://127.0.0.1:8765/", "--new-token"]
    r = run_syncd(*args, config=target)
    assert r.returncode == 0, r.stderr
    token_file = target.parent / "token"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40 and token not in r.stdout
    text = target.read_text()
    assert text.count("\n# ") > 10, "the config explains itself in comments"
    assert '# listen = "127.0.0.1:8384"' in text
    cfg = cfgmod.load(target, kinds=KINDS)
    assert cfg.folders[0].path == folder and cfg.remote.options["token_file"] == token_file
    assert run_syncd("config", "check", config=target).returncode == 0
    # Never overwritten.
    before = target.read_bytes()
    r = run_syncd(*args, config=target)
    assert r.returncode == 2 and "already exists" in r.stderr and target.read_bytes() == before
    assert token_file.read_text().strip() == token
    # --new-token does not overwrite a token either.
    r = run_syncd(*args, "--token-file", str(token_file), config=tmp_path / "other.toml")
    assert r.returncode == 2 and "exists" in r.stderr and not (tmp_path / "other.toml").exists()


# --------------------------------------------------------------------------- service files


def unit(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_units(tmp_path: Path) -> None:
    units = {p.name: p.read_text() for p in (PACKAGING / "systemd").glob("*.service")}
    assert set(units) == {"syncd.service", "syncd@.service", "syncd-serve.service"}
    user, tmpl, srv = (
        unit(units[n]) for n in ("syncd.service", "syncd@.service", "syncd-serve.service")
    )
    for u in (user, tmpl):
        assert u["Type"] == ["notify"] and u["Restart"] == ["on-failure"]
        assert u["ExecStart"][0].startswith("%h/.local/bin/syncd run")
        assert u["TimeoutStartSec"] == ["infinity"], "READY=1 waits for the first upload"
        assert "WatchdogSec" in u and u["NoNewPrivileges"] == ["yes"]
        assert u["WantedBy"] == ["default.target"]
    assert tmpl["ExecStart"] == ["%h/.local/bin/syncd run -c %h/.config/syncd/%i.toml"]
    assert srv["DynamicUser"] == ["yes"] and srv["StateDirectory"] == ["syncd-serve"]
    assert "syncd serve --root ${STATE_DIRECTORY}" in srv["ExecStart"][0]
    assert srv["ProtectSystem"] == ["strict"] and srv["ProtectHome"] == ["yes"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed (apt package `systemd`): the units passed the "
            "static checks above only; scripts/test installs it"
        )
    # Installed as the README says: ExecStart pointed at the installed syncd.
    syncd = shutil.which("syncd", path=str(Path(sys.executable).parent)) or shutil.which("syncd")
    assert syncd, "the syncd command is not installed in this environment"
    work = tmp_path / "units"
    work.mkdir()
    for name, text in units.items():
        text = text.replace("%h/.local/bin/syncd", syncd).replace("/usr/local/bin/syncd", syncd)
        (work / name).write_text(text)
    shutil.copy(work / "syncd@.service", work / "syncd@work.service")  # an instance
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    for mode, names in (
        ("--user", ["syncd.service", "syncd@work.service"]),
        ("--system", ["syncd-serve.service"]),
    ):
        r = subprocess.run(
            [analyze, "verify", mode, *names],
            cwd=work,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        complaints = [
            line
            for line in (r.stdout + r.stderr).splitlines()
            if any(n.split("@")[0] in line for n in names)
        ]
        assert r.returncode == 0 and not complaints, (
            f"systemd-analyze verify {mode} {names}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        )


def test_launchd_plist_and_windows_task() -> None:
    with (PACKAGING / "launchd" / "syncd.plist").open("rb") as f:
        plist = plistlib.load(f)
    assert plist["RunAtLoad"] is True and plist["KeepAlive"], plist
    assert plist["ProgramArguments"][-1] == "run" and plist["Label"] == "syncd"
    assert plist["StandardOutPath"].endswith("syncd.log")
    assert plist["StandardErrorPath"].endswith("syncd.log")
    ps1 = (PACKAGING / "windows" / "syncd-task.ps1").read_text()
    for needed in ("Register-ScheduledTask", "-AtLogOn", "-m syncd $runArgs", "-RestartCount"):
        assert needed in ps1, f"the Windows task script lacks {needed}"


# --------------------------------------------------------------------------- Windows fallbacks


def test_without_unix_sockets_status_asks_the_endpoint_then_the_manifest(
    tmp_path: Path,
    server: ServerProc,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `syncd status` finds the endpoint by its configured address: a fixed port here.
    cfg = ops_config(tmp_path, server, folder, port=free_port())
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        # As on Windows: no AF_UNIX. The control socket is not served and not asked...
        monkeypatch.setattr(control, "HAS_UNIX", False)  # the daemon's side
        monkeypatch.setattr(client, "HAS_UNIX", False)  # the CLI's side
        assert asyncio.run(client.query(tmp_path / "state")) is None
        server_sock = control.ControlServer(None, tmp_path / "elsewhere")  # type: ignore[arg-type]

        async def enter_exit() -> None:
            async with server_sock:
                pass

        asyncio.run(enter_exit())
        assert not (tmp_path / "elsewhere").exists(), "no control socket without AF_UNIX"
        # ...`syncd status` asks the status endpoint instead (the daemon runs with one)...
        wait_for(lambda: cli.main(["status", "--json", "-c", str(daemon.config)]) == 0, 60)
        capsys.readouterr()
        assert cli.main(["status", "--json", "-c", str(daemon.config)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["source"] == "daemon" and doc["daemon"]["pid"] == daemon.proc.pid
        # ...and without one, reads the manifest (exit 4: no daemon runs).
        assert daemon.stop() == 0
        assert cli.main(["status", "--json", "-c", str(daemon.config)]) == 4
        doc = json.loads(capsys.readouterr().out)
        assert doc["source"] == "manifest" and doc["folders"][0]["files"] == 3
    finally:
        daemon.stop()
