"""Command line: ``main(argv) -> int`` is the only place that maps errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd import __version__
from syncd.errors import AuthError, ConfigError, InUse, SyncdError

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.engine import Progress
    from syncd.prescan import Prescan
    from syncd.report import Report, VerifyReport
    from syncd.statelock import AlreadyRunning

log = logging.getLogger("syncd")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNCHECKED = 3  # `syncd verify`: nothing different found, but something could not be checked
EXIT_BUSY = 3  # `syncd status`: the daemon is still sending or waiting for changes to settle
EXIT_NO_DAEMON = 4  # `syncd status`: no daemon runs (the output is the manifest's view)
EXIT_PIPE = 128 + 13  # stdout was closed (`syncd status | head`): as a shell shows SIGPIPE


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, minus its ``import shutil`` for the terminal width (which
    pulls in bz2 and friends: ~10 ms of every command, a twentieth of a no-op pass)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:  # what shutil.get_terminal_size() does
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    out = sys.__stdout__
                    columns = os.get_terminal_size(out.fileno()).columns if out else 80
                except (OSError, ValueError):
                    columns = 80
            width = max(columns, 1) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and its subcommands' parsers) with :class:`_Formatter`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="syncd", description="Mirror folders to a server, live.")
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            type=Path,
            help="config file (default: $SYNCD_CONFIG, then $XDG_CONFIG_HOME/syncd/config.toml)",
        )
        sp.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="log at debug level (every file, every retry), whatever [log] level says",
        )

    s = sub.add_parser("run", help="mirror every folder, then keep watching (the daemon)")
    config_arg(s)

    s = sub.add_parser("sync", help="mirror every folder once, then exit")
    config_arg(s)
    s.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s.add_argument(
        "--force-delete",
        action="store_true",
        help="make the deletions even if there are more than [sync] max_delete allows",
    )

    s = sub.add_parser("verify", help="compare local files with what the remote holds")
    config_arg(s)

    s = sub.add_parser(
        "status",
        help="is every folder in sync, and if not, why (exit 0: a daemon runs and all is in "
        "sync; 1: errors, held deletions, a folder missing; 3: busy; 4: no daemon running)",
        description="What the running daemon is doing, or the manifest's view when none runs. "
        "Exit codes, for `syncd status || alert`: 0 a daemon runs and every folder is in sync; "
        "1 errors (a path failed, the remote unreachable, a folder missing, deletions held "
        "back); 2 usage or config error; 3 busy (syncing, or the first reconcile running); "
        "4 no daemon is running. See docs/status.md.",
    )
    config_arg(s)
    s.add_argument("--json", action="store_true", help="machine-readable output (docs/status.md)")

    s = sub.add_parser("init", help="write a config file")
    config_arg(s)
    s.add_argument("--folder", required=True, type=Path, help="the folder to mirror")
    s.add_argument("--url", required=True, help="the server's URL")
    s.add_argument("--token-file", type=Path, help="file holding the server's bearer token")
    s.add_argument(
        "--new-token",
        action="store_true",
        help="create the token file with a new random token (default: token beside the config)",
    )
    s.add_argument("--remote-path", default="", help="where the folder lands on the server")
    s.add_argument("--kind", default="syncd", help="remote kind (default: syncd)")

    s = sub.add_parser("config", help="check a config file")
    csub = s.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate the config and print the effective values")
    config_arg(c)

    s = sub.add_parser("serve", help="run the receiving server")
    s.add_argument("--root", required=True, type=Path, help="directory that holds the mirrors")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    s.add_argument("--token-file", type=Path, help="require this bearer token on every request")
    s.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    s.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token",
    )
    return p


def _setup_logging(level: str = "info", fmt: str = "text", cfg: Config | None = None) -> None:
    """stderr, text or JSON lines (``[log] format``); the config's secrets are redacted."""
    from syncd.logs import configure

    secrets: list[str] = []
    if cfg is not None:
        for f in cfg.remote.secret_files:
            try:
                secrets += [f.read_text(encoding="utf-8").strip()] if f is not None else []
            except (OSError, UnicodeDecodeError):
                pass
    configure(level, fmt, secrets, cfg.sync.state_dir / "syncd.log" if cfg is not None else None)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.server import ServeOptions, serve

    token: str | None = None
    if args.token_file is not None:
        try:
            token = args.token_file.expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(args.token_file, "--token-file", f"cannot read: {e.strerror}") from e
        if not token:
            raise ConfigError(args.token_file, "--token-file", "the token file is empty")
        from syncd.logs import REDACTOR

        REDACTOR.add(token)  # never in the server's log, whatever a client sends
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("command line", "--tls-cert/--tls-key", "give both or neither")
    opts = ServeOptions(
        root=args.root.expanduser(),
        host=args.host,
        port=args.port,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
    )
    asyncio.run(serve(opts))
    return EXIT_OK


def _level(args: argparse.Namespace, cfg: Config) -> str:
    return "debug" if getattr(args, "verbose", False) else cfg.log.level


def _load(args: argparse.Namespace) -> Config:
    from syncd import config as cfgmod
    from syncd.remotes.kinds import KINDS

    cfg = cfgmod.load(cfgmod.find_config(args.config), kinds=KINDS)
    _setup_logging(_level(args, cfg), cfg.log.format, cfg)
    return cfg


def _say(message: str) -> None:
    """One line on stderr: no secret in it, and no name can break it (``logs.escape``)."""
    from syncd.logs import REDACTOR, escape

    if sys.stderr is None:  # pythonw.exe: the log file is where it can be read
        log.error("%s", message)
        return
    print(escape(REDACTOR.redact(message)), file=sys.stderr)


def _show(line: str) -> str:
    """A line of stdout that names files: control characters escaped, secrets out."""
    from syncd.logs import REDACTOR, escape

    return escape(REDACTOR.scrub(line))


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.daemon import Daemon
    from syncd.statelock import StateLock

    cfg = _load(args)
    # One worker per state dir, for the daemon's whole life (AlreadyRunning: exit 1).
    with StateLock(cfg.sync.state_dir, "run"):
        return asyncio.run(Daemon(cfg).serve())


def _cmd_sync(args: argparse.Namespace) -> int:
    from syncd.statelock import AlreadyRunning, StateLock

    cfg = _load(args)
    if args.dry_run:  # changes nothing: plans locally, without the lock, even while one runs
        return _sync_pass(args, cfg)
    try:
        lock = StateLock(cfg.sync.state_dir, "sync").acquire()
    except AlreadyRunning as e:
        return _delegate_sync(args, cfg, e)
    with lock:
        return _sync_pass(args, cfg)


def _delegate_sync(args: argparse.Namespace, cfg: Config, held: AlreadyRunning) -> int:
    """The state dir is locked: a running daemon makes the pass (over its control socket) and
    its result is printed as ours; any other holder (another `syncd sync`) is refused."""
    import asyncio

    from syncd.status import ask_sync

    async def ask() -> dict[str, Any] | None:
        # A `syncd run` that has just started opens its control socket a moment later.
        deadline = time.monotonic() + (10 if held.command == "run" else 0)
        while True:
            doc = await ask_sync(cfg.sync.state_dir, force_delete=args.force_delete)
            if doc is not None or time.monotonic() >= deadline:
                return doc
            await asyncio.sleep(0.2)

    doc = asyncio.run(ask())
    if doc is None:
        _say(f"syncd: {held}; not starting a second pass")
        return EXIT_FAILED
    if doc.get("error"):
        _say(f"syncd: the running daemon (pid {doc.get('pid')}): {doc['error']}")
        return EXIT_FAILED
    _say(f"syncd: the running daemon (pid {doc.get('pid')}) made this pass")
    for p in doc.get("failed", []):
        _say(f"syncd: failed: {p['path']}: {p['reason']}")
    if doc.get("outcome"):
        _say(f"syncd: {doc['outcome']}")
    print(doc["summary"])
    return EXIT_FAILED if doc.get("failed") or doc.get("outcome") else EXIT_OK


def _sync_pass(args: argparse.Namespace, cfg: Config) -> int:
    """``syncd sync`` proper, in this process (the state dir is ours, or --dry-run)."""
    from syncd.prescan import Prescan
    from syncd.report import Report

    report = Report()
    # Scan and plan first, without the event loop: when there is nothing to do (the common
    # case), that is the whole pass, and neither asyncio nor the HTTP client is imported.
    pre = Prescan(cfg)
    if pre.settled:
        pre.close()
        report.unchanged = pre.unchanged
        report.finished = time.monotonic()
    else:
        report = _engine_sync(args, cfg, pre, report)
    if args.dry_run:
        for line in report.planned:
            print(_show(line))
        print(f"dry run: {len(report.planned)} changes planned, nothing changed")
    for p in report.failed:
        _say(f"syncd: failed: {p}")
    if report.stopped is not None:
        # One line, however many files: why, what was left undone, what was recorded.
        if args.dry_run:
            _say(f"syncd: {report.stopped}: planned from the manifest alone")
        else:
            _say(f"syncd: {report.outcome()}")
    if not args.dry_run:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _engine_sync(args: argparse.Namespace, cfg: Config, pre: Prescan, report: Report) -> Report:
    """The pass proper, on the engine, which takes over ``pre`` (its scans and manifest)."""
    import asyncio

    from syncd.engine import Engine

    async def go() -> Report:
        try:
            engine = Engine(
                cfg, progress=_terminal_progress(), force_delete=args.force_delete, prescan=pre
            )
        except BaseException:
            pre.close()
            raise
        async with engine:
            return await engine.sync(dry_run=args.dry_run, report=report)

    return asyncio.run(go())


def _terminal_progress() -> Progress | None:
    if sys.stderr is None or not sys.stderr.isatty():
        return None
    from syncd.progress import RichProgress

    return RichProgress()


def _cmd_verify(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.engine import Engine

    cfg = _load(args)

    async def go() -> VerifyReport:
        async with Engine(cfg) as engine:
            return await engine.verify()

    try:
        out = asyncio.run(go())
    except SyncdError as e:  # the server could not be reached, refused us, cannot list
        _say(f"syncd: could not check: {e}")
        return EXIT_UNCHECKED
    for name in out.missing:
        print(_show(f"missing on the server: {name}"))
    for name in out.extra:
        print(_show(f"only on the server:    {name}"))
    for name in out.different:
        print(_show(f"different:             {name}"))
    for p in out.failed:
        _say(f"syncd: could not check: {p}")
    verdict = "identical" if out.ok else "DIFFERENT"
    print(
        f"verify: {verdict}: {out.identical} identical, {len(out.missing)} missing, "
        f"{len(out.extra)} only on the server, {len(out.different)} different"
    )
    if out.missing or out.extra or out.different:
        return EXIT_FAILED
    return EXIT_UNCHECKED if out.failed else EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    """0: a daemon runs and every folder is in sync; 1: errors (a path that failed, the remote
    unreachable, a folder missing, deletions held back, a daemon that does not answer);
    3: busy (syncing, starting); 4: no daemon runs (the manifest's view is printed)."""
    import asyncio

    from syncd import config as cfgmod
    from syncd.manifest import Manifest
    from syncd.remotes.kinds import KINDS
    from syncd.statelock import holder
    from syncd.status import manifest_snapshot, query, query_http

    # A folder that is missing (unmounted) is reported, not a config error.
    cfg = cfgmod.load(cfgmod.find_config(args.config), kinds=KINDS, require_folders=False)
    _setup_logging(_level(args, cfg), cfg.log.format, cfg)
    state_dir = cfg.sync.state_dir

    async def ask() -> dict[str, Any] | None:
        # A `syncd run` holding the state dir but not answering yet is (most likely) starting.
        deadline = time.monotonic() + 5
        while True:
            doc = await query(state_dir)
            if doc is None and cfg.status.listen:  # no control socket (Windows): the endpoint
                doc = await query_http(cfg.status.listen, wait=2)
            who = holder(state_dir) if doc is None else None
            if doc is not None or who is None or who[1] != "run" or time.monotonic() > deadline:
                return doc
            await asyncio.sleep(0.2)

    doc = asyncio.run(ask())
    if doc is not None:
        print(_status_text(doc, as_json=args.json))
        if doc.get("state") in ("syncing", "starting"):
            return EXIT_BUSY
        return EXIT_OK if doc.get("state") == "in_sync" else EXIT_FAILED
    with Manifest.in_state_dir(state_dir) as m:
        doc = manifest_snapshot(cfg, m)
    who = holder(state_dir)
    print(_status_text(doc, as_json=args.json))
    if who is not None and who[1] == "run":
        _say(
            f"syncd: `syncd run` (pid {who[0]}) holds {state_dir} but does not answer on its "
            "control socket"
        )
        return EXIT_FAILED
    if who is not None and not args.json:
        print(f"(`syncd {who[1]}`, pid {who[0]}, is making a pass now)")
    return EXIT_NO_DAEMON


def _status_text(doc: dict[str, Any], *, as_json: bool) -> str:
    """The status document as ``--json`` prints it (ASCII JSON), or the human view; in both,
    no secret (the daemon's document has none; an older daemon's might) and, in the human
    view, names escaped line by line."""
    import json

    from syncd.logs import REDACTOR

    if as_json:
        return REDACTOR.scrub(json.dumps(doc, indent=2))
    return "\n".join(_show(line) for line in _format_status(doc))


def _format_status(doc: dict[str, Any]) -> list[str]:
    """The human view of the status document (the same figures as --json)."""
    from syncd.report import human as _human

    def when(t: float | None) -> str:
        if not t:
            return "never"
        fmt = "%H:%M:%S" if time.time() - t < 86400 else "%Y-%m-%d %H:%M:%S"
        return time.strftime(fmt, time.localtime(t))

    d, r, t = doc["daemon"], doc["remote"], doc["totals"]
    state = {"in_sync": "in sync", "syncing": "syncing", "starting": "first scan and upload"}
    lines: list[str] = []
    if d is None:
        lines.append("NOT RUNNING: no daemon is running; what the manifest says:")
    else:
        lines.append(
            f"{state.get(doc['state'], doc['state'].upper())}: daemon pid {d['pid']}, "
            f"up since {when(d['started'])}, last in sync {when(doc['last_sync'])}"
        )
    remote = f"remote: {r['url']}"
    if r["error"]:
        remote += f" -- {r['error']}"
    elif r["reachable"] is False:
        remote += (
            f" -- UNREACHABLE since {when(r['unreachable_since'])}, {r['queued']} change(s) queued"
        )
    elif r["reachable"]:
        remote += " (reachable)"
    lines.append(remote)
    for f in doc["folders"]:
        head = f"  {f['path']} -> {f['remote_path']}: "
        if d is None:
            head += (
                f"{f['files']} files, {_human(f['bytes'])}, last file {when(f['last_synced_file'])}"
            )
        else:
            what = "in sync" if f["in_sync"] else state.get(f["state"], f["state"])
            head += (
                f"{what}; {f['files']} files, {_human(f['bytes'] or 0)}; "
                f"{f['pending_count']} pending, {len(f['in_flight'])} in flight; "
                f"watcher {f['watcher']}"
            )
        lines.append(head)
        if f.get("unavailable"):
            lines.append(f"    FOLDER UNAVAILABLE: {f['unavailable']}")
        held = f.get("held_deletions")
        if held:
            lines.append(
                f"    {held['count']} deletion(s) HELD BACK since {when(held['since'])}: "
                f"{held['reason']}"
            )
            lines.append("    to release them (delete on the server): syncd sync --force-delete")
        for x in f["in_flight"]:
            pct = 100 * x["bytes_done"] / x["bytes_total"] if x["bytes_total"] else 100
            lines.append(
                f"    {x['op']} {x['path']}: {pct:.0f}% of {_human(x['bytes_total'])} "
                f"({_human(x['rate'])}/s)"
            )
        for p in f["pending"][:5]:
            lines.append(f"    pending {p}")
        if f["pending_count"] > 5:
            lines.append(f"    ... and {f['pending_count'] - 5} more pending")
    if d is not None:
        lines.append(
            f"since start: uploaded {t['uploaded']}, deleted {t['deleted']}, moved {t['moved']}, "
            f"sent {_human(t['bytes_sent'])}, {t['retries']} retries, {t['errors']} current errors"
        )
    for e in doc["errors"][:10]:
        where = "/".join(p for p in (e["folder"], e["path"]) if p)
        done = "" if e["current"] else " (resolved since)"
        lines.append(f"  error at {when(e['time'])} [{e['kind']}] {where}: {e['reason']}{done}")
    if d is not None and d.get("status_url"):
        lines.append(f"status page: {d['status_url']}")
    return lines  # one line each: a newline in a name is escaped within its line


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are TOML basic strings


def _render_config(cfg: Config, raw: dict[str, Any]) -> str:
    """Every key with its effective value, as TOML; ``# default`` where the file sets nothing."""
    from syncd import config as cfgmod
    from syncd.remotes.kinds import KINDS

    sections: dict[str, list[tuple[Any, dict[str, Any]]]] = {
        "remote": [(cfg.remote, raw.get("remote", {}))],
        "folder": [
            (f, rf)
            for f, rf in zip(
                cfg.folders,
                raw["folder"] if isinstance(raw.get("folder"), list) else [raw.get("folder", {})],
                strict=False,
            )
        ],
        "sync": [(cfg.sync, raw.get("sync", {}))],
        "log": [(cfg.log, raw.get("log", {}))],
        "status": [(cfg.status, raw.get("status", {}))],
    }
    out = [f"# effective configuration of {cfg.file.absolute()}"]
    for name, keys in cfgmod.schema(KINDS).items():
        for obj, given in sections[name]:
            out += ["", "[[folder]]" if name == "folder" else f"[{name}]"]
            for key, spec in keys.items():
                value = obj.value(key) if name == "remote" else getattr(obj, key)
                notes = [] if key in given else ["default"]
                if key == "bwlimit":
                    notes.insert(0, f"{value} bytes/s" if value else "no limit")
                    value = given.get(key, spec.default)
                elif value is None:
                    value = ""
                elif isinstance(value, Path):
                    value = str(value)
                elif not isinstance(value, bool | int | float | str | tuple | list):
                    value = given.get(key, spec.default)  # e.g. max_delete: as written
                out.append(
                    f"{key} = {_toml_value(value)}" + (f"  # {'; '.join(notes)}" if notes else "")
                )
    return "\n".join(out)


def _cmd_config(args: argparse.Namespace) -> int:
    import tomllib

    from syncd import config as cfgmod
    from syncd.remotes.kinds import KINDS

    path = cfgmod.find_config(args.config)
    # A ConfigError names the file, the key and the problem: exit 2.
    cfg = cfgmod.load(path, kinds=KINDS)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    _setup_logging(_level(args, cfg), cfg.log.format, cfg)  # (registers the secrets)
    from syncd.logs import REDACTOR

    print(REDACTOR.scrub(_render_config(cfg, raw)))  # (a URL is shown without its userinfo)
    for f in cfg.remote.secret_files:
        if f is not None and os.name == "posix" and f.stat().st_mode & 0o077:
            _say(f"# warning: {f} is readable by other users: chmod 600 {f}")
    _say(f"# {path}: OK")
    return EXIT_OK


def _init_text(folder: Path, url: str, token_file: Path | None, remote_path: str, kind: str) -> str:
    """The commented config ``syncd init`` writes: what was given, then every other key
    commented out with its default and meaning (from the schema, so it stays current)."""
    from syncd import config as cfgmod
    from syncd.config_schema import REQUIRED
    from syncd.remotes.kinds import KINDS

    given: dict[str, dict[str, object]] = {
        "remote": {"kind": kind, "url": url},
        "folder": {"path": str(folder), "ignore": [".git/"]},
        "sync": {},
        "log": {},
        "status": {},
    }
    if token_file is not None:
        given["remote"]["token_file"] = str(token_file)
    if remote_path:
        given["folder"]["remote_path"] = remote_path
    out = [
        "# syncd configuration, written by `syncd init`.",
        "# Uncomment a key to change it; `syncd config check` shows what is in effect.",
        '# Paths expand ~ and $VARIABLES. Every key: README.md, "Configuration reference".',
    ]
    for name, keys in cfgmod.schema(KINDS).items():
        out += ["", "[[folder]]  # one table per folder" if name == "folder" else f"[{name}]"]
        for key, spec in keys.items():
            if key in given[name]:
                out.append(f"{key} = {_toml_value(given[name][key])}")
                continue
            default = "" if spec.default is REQUIRED else spec.default
            if name == "status" and key == "listen":
                default = "127.0.0.1:8384"
                out.append(
                    f"# {key} = {_toml_value(default)}  # status page, /status.json, /metrics"
                )
                continue
            out.append(f"# {key} = {_toml_value(default)}  # {spec.help}")
    return "\n".join(out) + "\n"


def _cmd_init(args: argparse.Namespace) -> int:
    import secrets
    import tomllib

    from syncd import config as cfgmod
    from syncd.remotes.kinds import KINDS, NAMES

    path = cfgmod.find_config(args.config)
    if path.exists():
        raise ConfigError(path, None, "already exists; edit it, or pass -c for another file")
    folder = args.folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError("command line", "--folder", f"not a directory: {folder}")
    if args.kind not in NAMES:
        raise ConfigError("command line", "--kind", f"must be one of {NAMES}")
    token_file = args.token_file.expanduser().absolute() if args.token_file else None
    if args.new_token:
        token_file = token_file or path.parent.absolute() / "token"
        if token_file.exists():
            raise ConfigError(
                "command line", "--new-token", f"{token_file} exists; use --token-file alone"
            )
    elif token_file is not None and not token_file.is_file():
        raise ConfigError("command line", "--token-file", f"file not found: {token_file}")
    text = _init_text(folder, args.url, token_file, args.remote_path, args.kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    made_token = False
    try:
        if args.new_token:
            assert token_file is not None
            token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            made_token = True
        cfgmod.from_dict(tomllib.loads(text), path, kinds=KINDS)  # the file we write must load
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except BaseException:
        if made_token and token_file is not None:
            token_file.unlink(missing_ok=True)
        raise
    print(f"wrote {path}")
    if made_token:
        print(
            f"wrote a new token to {token_file} (mode 0600); give the server the same file:\n"
            f"  syncd serve --root DIR --token-file {token_file}"
        )
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "sync": _cmd_sync,
    "verify": _cmd_verify,
    "status": _cmd_status,
    "init": _cmd_init,
    "config": _cmd_config,
    "serve": _cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, not in Python's exit
        return code
    except BrokenPipeError:
        # The reader went away (`syncd status | head -4`): end quietly, as `cat` would. What
        # is still buffered goes nowhere instead of to a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(devnull, stream.fileno())
        os.close(devnull)
        return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        _say(f"syncd: config error: {e}")
        return EXIT_USAGE
    except InUse as e:
        _say(f"syncd {args.command}: {e}")
        return EXIT_USAGE
    except AuthError as e:
        _say(f"syncd: {e}")
        return EXIT_FAILED
    except SyncdError as e:
        _say(f"syncd: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("syncd: interrupted")
        return 130
    except BrokenPipeError:
        raise
    except Exception:
        # A bug: its traceback goes through the log (secrets redacted, names escaped).
        log.critical(
            "internal error (a bug in syncd %s; please report it)", __version__, exc_info=True
        )
        return EXIT_FAILED
