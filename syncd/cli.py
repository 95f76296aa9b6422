"""Command line: ``main(argv) -> int`` is the only place that maps errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd import __version__
from syncd.errors import AuthError, ConfigError, SyncdError

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.engine import Progress, Report, VerifyReport

log = logging.getLogger("syncd")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncd", description="Mirror folders to a server, live.")
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            type=Path,
            help="config file (default: $SYNCD_CONFIG, then $XDG_CONFIG_HOME/syncd/config.toml)",
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

    s = sub.add_parser("status", help="what is mirrored (per folder)")
    config_arg(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("init", help="write a config file")
    config_arg(s)
    s.add_argument("--folder", required=True, type=Path, help="the folder to mirror")
    s.add_argument("--url", required=True, help="the server's URL")
    s.add_argument("--token-file", type=Path, help="file holding the server's bearer token")
    s.add_argument("--remote-path", default="", help="where the folder lands on the server")
    s.add_argument("--kind", default="syncd", help="remote kind (default: syncd)")

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


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _cmd_serve(args: argparse.Namespace) -> int:
    from syncd.server import ServeOptions, serve

    token: str | None = None
    if args.token_file is not None:
        try:
            token = args.token_file.expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(args.token_file, "--token-file", f"cannot read: {e.strerror}") from e
        if not token:
            raise ConfigError(args.token_file, "--token-file", "the token file is empty")
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


def _load(args: argparse.Namespace) -> Config:
    from syncd import config as cfgmod

    cfg = cfgmod.load(cfgmod.find_config(args.config))
    logging.getLogger().setLevel(getattr(logging, cfg.log.level.upper()))
    return cfg


def _cmd_run(args: argparse.Namespace) -> int:
    from syncd.daemon import Daemon

    cfg = _load(args)
    return asyncio.run(Daemon(cfg).serve())


def _cmd_sync(args: argparse.Namespace) -> int:
    from syncd.engine import Engine

    cfg = _load(args)
    progress = _terminal_progress()

    async def go() -> Report:
        async with Engine(cfg, progress=progress, force_delete=args.force_delete) as engine:
            return await engine.sync(dry_run=args.dry_run)

    report = asyncio.run(go())
    if args.dry_run:
        for line in report.planned:
            print(line)
        print(f"dry run: {len(report.planned)} changes planned, nothing changed")
    for p in report.failed:
        print(f"syncd: failed: {p}", file=sys.stderr)
    if not args.dry_run:
        print(report.summary())
    return EXIT_FAILED if report.failed else EXIT_OK


def _terminal_progress() -> Progress | None:
    if not sys.stderr.isatty():
        return None
    from syncd.progress import RichProgress

    return RichProgress()


def _cmd_verify(args: argparse.Namespace) -> int:
    from syncd.engine import Engine

    cfg = _load(args)

    async def go() -> VerifyReport:
        async with Engine(cfg) as engine:
            return await engine.verify()

    out = asyncio.run(go())
    for name in out.missing:
        print(f"missing on the server: {name}")
    for name in out.extra:
        print(f"only on the server:    {name}")
    for name in out.different:
        print(f"different:             {name}")
    for p in out.failed:
        print(f"syncd: could not check: {p}", file=sys.stderr)
    verdict = "identical" if out.ok else "DIFFERENT"
    print(
        f"verify: {verdict}: {out.identical} identical, {len(out.missing)} missing, "
        f"{len(out.extra)} only on the server, {len(out.different)} different"
    )
    return EXIT_OK if out.ok else EXIT_FAILED


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from syncd.engine import scope_of
    from syncd.manifest import Manifest
    from syncd.status import query

    cfg = _load(args)
    live = asyncio.run(query(cfg.sync.state_dir))
    if live is not None:
        if args.json:
            print(json.dumps(live, indent=2))
        else:
            print(_format_live(live))
        return EXIT_OK
    folders: list[dict[str, Any]] = []
    with Manifest.in_state_dir(cfg.sync.state_dir) as m:
        for f in cfg.folders:
            t = m.totals(scope_of(cfg, f))
            folders.append(
                {
                    "path": str(f.path),
                    "remote_path": f.remote_path,
                    "files": t.files,
                    "bytes": t.bytes,
                    "last_synced": t.last_synced,
                }
            )
    doc = {"daemon": None, "remote": cfg.remote.url, "folders": folders}
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(f"remote: {cfg.remote.url} (no daemon running; from the manifest)")
    for row in folders:
        last = row["last_synced"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last)) if last else "never"
        print(
            f"  {row['path']} -> {row['remote_path']}: {row['files']} files, "
            f"{row['bytes']} bytes, last synced {when}"
        )
    return EXIT_OK


def _format_live(doc: dict[str, Any]) -> str:
    import time

    d = doc["daemon"]
    lines = [
        f"daemon pid {d['pid']}, up since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['started']))}"
        + ("" if d["ready"] else " (first reconcile still running)"),
        f"remote: {doc['remote']['url']}"
        + (f" -- {doc['remote']['error']}" if doc["remote"]["error"] else "")
        + (
            ""
            if doc["remote"].get("reachable", True)
            else " -- UNREACHABLE since "
            + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["remote"]["unreachable_since"]))
            + f", {doc['remote']['queued']} change(s) queued"
        ),
    ]
    for f in doc["folders"]:
        state = "in sync" if f["in_sync"] else f"{f['pending_count']} pending"
        lines.append(
            f"  {f['path']} -> {f['remote_path']}: {state}; {f['files']} files mirrored; "
            f"watcher {f['watcher']}"
        )
        for t in f["in_flight"]:
            lines.append(
                f"    sending {t['path']}: {t['bytes_done']}/{t['bytes_total']} bytes "
                f"({t['rate'] / 1e6:.1f} MB/s)"
            )
    t = doc["totals"]
    lines.append(
        f"since start: uploaded {t['uploaded']}, deleted {t['deleted']}, moved {t['moved']}, "
        f"{t['bytes_sent']} bytes, {t['failed']} errors"
    )
    for e in doc["errors"][-5:]:
        when = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        lines.append(f"  error at {when}: {e['path']}: {e['reason']}")
    return "\n".join(lines)


def _cmd_init(args: argparse.Namespace) -> int:
    import os

    import tomli_w

    from syncd import config as cfgmod

    path = cfgmod.find_config(args.config)
    if path.exists():
        raise ConfigError(path, None, "already exists; edit it, or pass -c for another file")
    folder = args.folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError("command line", "--folder", f"not a directory: {folder}")
    token_file = args.token_file.expanduser().resolve() if args.token_file else None
    if token_file is not None and not token_file.is_file():
        raise ConfigError("command line", "--token-file", f"file not found: {token_file}")
    if args.kind not in cfgmod.REMOTE_KINDS:
        raise ConfigError("command line", "--kind", f"must be one of {cfgmod.REMOTE_KINDS}")
    doc = cfgmod.render_initial(
        folder, args.url, token_file=token_file, remote_path=args.remote_path, kind=args.kind
    )
    cfgmod.from_dict(doc, path)  # the file we write must load
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"# syncd config: see config.example.toml for every key\n")
        tomli_w.dump(doc, f)
    print(f"wrote {path}")
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "sync": _cmd_sync,
    "verify": _cmd_verify,
    "status": _cmd_status,
    "init": _cmd_init,
    "serve": _cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"syncd: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as e:
        print(f"syncd: {e}", file=sys.stderr)
        return EXIT_FAILED
    except SyncdError as e:
        print(f"syncd: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130
