"""Command line: ``main(argv) -> int`` is the only place that maps errors to exit codes.

The commands are one table, ``COMMANDS``: each names its help, its options and the function
that runs it (in a ``cli_*`` room: cli_sync, cli_status, cli_config, cli_serve); the argparse
parser is built from that table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd import __version__, cli_config, cli_restore, cli_serve, cli_status, cli_sync
from syncd.cli_io import EXIT_FAILED, EXIT_PIPE, EXIT_USAGE, log, say, setup_logging
from syncd.errors import ConfigError, InUse, SyncdError

#: One option: its flags and ``add_argument``'s keywords.
Option = tuple[tuple[str, ...], dict[str, Any]]


def opt(*flags: str, **kw: Any) -> Option:
    return flags, kw


@dataclass(frozen=True)
class Command:
    help: str
    #: What runs it; None for a group of ``actions`` (``syncd config check``).
    run: Callable[[argparse.Namespace], int] | None = None
    options: tuple[Option, ...] = ()
    description: str | None = None
    #: Takes ``-c/--config`` and ``-v/--verbose`` (CONFIG_OPTIONS) before its own options.
    config: bool = True
    actions: dict[str, Command] = field(default_factory=dict)


CONFIG_OPTIONS: tuple[Option, ...] = (
    opt(
        "-c",
        "--config",
        type=Path,
        help="config file (default: $SYNCD_CONFIG, then $XDG_CONFIG_HOME/syncd/config.toml)",
    ),
    opt(
        "-v",
        "--verbose",
        action="store_true",
        help="log at debug level (every file, every retry), whatever [log] level says",
    ),
)

COMMANDS: dict[str, Command] = {
    "run": Command("mirror every folder, then keep watching (the daemon)", cli_sync.run),
    "sync": Command(
        "mirror every folder once, then exit",
        cli_sync.sync,
        (
            opt("--dry-run", action="store_true", help="print the plan, change nothing"),
            opt(
                "--force-delete",
                action="store_true",
                help="make the deletions even if there are more than [sync] max_delete allows",
            ),
        ),
    ),
    "verify": Command(
        "compare local files with what the remote holds",
        cli_sync.verify,
        (
            opt(
                "--times",
                action="store_true",
                help="also compare mtimes and exec bits, where the remote keeps them",
            ),
        ),
    ),
    "status": Command(
        "is every folder in sync, and if not, why (exit 0: a daemon runs and all is in "
        "sync; 1: errors, held deletions, a folder missing; 3: busy; 4: no daemon running)",
        cli_status.status,
        (opt("--json", action="store_true", help="machine-readable output (docs/status.md)"),),
        description="What the running daemon is doing, or the manifest's view when none runs. "
        "Exit codes, for `syncd status || alert`: 0 a daemon runs and every folder is in sync; "
        "1 errors (a path failed, the remote unreachable, a folder missing, deletions held "
        "back); 2 usage or config error; 3 busy (syncing, or the first reconcile running); "
        "4 no daemon is running. See docs/status.md.",
    ),
    "restore": Command(
        "get files back from the server: current copies, earlier versions, deleted files",
        cli_restore.restore,
        (
            opt(
                "paths",
                nargs="*",
                type=Path,
                metavar="PATH",
                help="files or directories inside a configured folder (or the folder itself)",
            ),
            opt("--all", action="store_true", help="every folder (with --to: a new machine)"),
            opt("--to", type=Path, metavar="DIR", help="write here instead of the folders"),
            opt(
                "--overwrite",
                action="store_true",
                help="replace a different local file, "
                "keeping it beside as NAME.syncd-kept-YYYYmmdd-HHMMSS",
            ),
            opt("--at", metavar="TIME", help="as it was at TIME (2026-12-01T14:30, 2h, 1d)"),
            opt(
                "--version",
                type=int,
                metavar="N",
                help="version N of one file "
                "(1 = the oldest kept; `syncd versions PATH` lists them)",
            ),
            opt(
                "--deleted-since",
                metavar="TIME",
                help="every file deleted since TIME (undo a mass delete)",
            ),
            opt("--under", type=Path, metavar="DIR", help="with --deleted-since: only in DIR"),
            opt("--dry-run", action="store_true", help="print the plan, change nothing"),
            opt("--json", action="store_true", help="one JSON document (for scripts)"),
        ),
        description="Bring files back from the server, verified by sha-256 and written "
        "safely (a temp file, then renamed into place). A different local file is never "
        "replaced without --overwrite. Exit 0: all restored; 1: something not restored "
        "(listed); 2: usage or config error. TIME is ISO 8601 (local time unless it has an "
        "offset) or relative (90s, 30m, 2h, 1d: that long ago).",
    ),
    "versions": Command(
        "list the kept versions of a file (or of every file under a directory)",
        cli_restore.versions,
        (
            opt("path", type=Path, metavar="PATH", help="a file or directory in a folder"),
            opt("--json", action="store_true", help="one JSON document (for scripts)"),
        ),
    ),
    "init": Command(
        "write a config file",
        cli_config.init,
        (
            opt("--folder", required=True, type=Path, help="the folder to mirror"),
            opt("--url", required=True, help="the server's URL"),
            opt("--token-file", type=Path, help="file holding the server's bearer token"),
            opt(
                "--new-token",
                action="store_true",
                help="create the token file with a new random token "
                "(default: token beside the config)",
            ),
            opt("--remote-path", default="", help="where the folder lands on the server"),
            opt("--kind", default="syncd", help="remote kind (default: syncd)"),
        ),
    ),
    "config": Command(
        "check a config file",
        actions={
            "check": Command(
                "validate the config and print the effective values", cli_config.check
            ),
        },
    ),
    "serve": Command(
        "run the receiving server",
        cli_serve.serve,
        (
            opt("--root", required=True, type=Path, help="directory that holds the mirrors"),
            opt("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"),
            opt("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)"),
            opt("--token-file", type=Path, help="require this bearer token on every request"),
            opt("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)"),
            opt("--tls-key", type=Path, help="the certificate's private key (PEM)"),
            opt(
                "--insecure",
                action="store_true",
                help="allow listening on a non-loopback address without a token",
            ),
            opt(
                "--keep",
                default="30d",
                metavar="AGE",
                help="keep replaced and deleted files this long (30d, 12h, 90m, 0 = keep "
                "nothing, forever; default 30d)",
            ),
            opt(
                "--keep-space",
                default="10%",
                metavar="SIZE",
                help="at most this much for them, oldest pruned first (a share of the disk "
                "like 10%%, or a size like 20GiB; default 10%%)",
            ),
            opt(
                "--no-batch",
                action="store_true",
                help="take no batch uploads (answer as a server from before them)",
            ),
            opt("--prune-interval", type=float, default=600.0, help=argparse.SUPPRESS),
        ),
        config=False,
    ),
}


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


def _add(sub: Any, name: str, cmd: Command) -> None:
    """``name``'s parser under ``sub`` (an argparse subparsers action), from its table entry."""
    s = sub.add_parser(name, help=cmd.help, description=cmd.description)
    if cmd.actions:
        actions = s.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
        for action, inner in cmd.actions.items():
            _add(actions, action, inner)
        return
    for flags, options in (*(CONFIG_OPTIONS if cmd.config else ()), *cmd.options):
        s.add_argument(*flags, **options)
    s.set_defaults(handler=cmd.run)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="syncd", description="Mirror folders to a server, live.")
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        _add(sub, name, cmd)
    return p


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
    handler: Callable[[argparse.Namespace], int] = args.handler
    setup_logging()
    try:
        return handler(args)
    except ConfigError as e:
        say(f"syncd: config error: {e}")
        return EXIT_USAGE
    except InUse as e:
        say(f"syncd {args.command}: {e}")
        return EXIT_USAGE
    except SyncdError as e:  # (an AuthError among them)
        say(f"syncd: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("syncd: interrupted")
        return 130
    except BrokenPipeError:
        raise
    except Exception:
        # A bug: its traceback goes through the log (secrets redacted, names escaped).
        log.critical(
            "internal error (a bug in syncd %s; please report it)", __version__, exc_info=True
        )
        return EXIT_FAILED
