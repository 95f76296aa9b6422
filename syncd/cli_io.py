"""What every command shares: the exit codes, loading the config (which sets up the log with
its secrets), and the two ways a line reaches the user (stderr messages, stdout lines that name
files), both with secrets out and control characters escaped."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.config import Config

log = logging.getLogger("syncd")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNCHECKED = 3  # `syncd verify`: nothing different found, but something could not be checked
EXIT_BUSY = 3  # `syncd status`: the daemon is still sending or waiting for changes to settle
EXIT_NO_DAEMON = 4  # `syncd status`: no daemon runs (the output is the manifest's view)
EXIT_PIPE = 128 + 13  # stdout was closed (`syncd status | head`): as a shell shows SIGPIPE


def setup_logging(level: str = "info", fmt: str = "text", cfg: Config | None = None) -> None:
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


def load(args: argparse.Namespace, *, require_folders: bool = True) -> Config:
    """The config of ``-c`` (or the default places), and the log set up by it (``-v``: debug).
    ``require_folders=False``: a folder that is missing (unmounted) is not a config error."""
    from syncd import config as cfgmod
    from syncd.remotes.kinds import KINDS

    cfg = cfgmod.load(cfgmod.find_config(args.config), kinds=KINDS, require_folders=require_folders)
    level = "debug" if getattr(args, "verbose", False) else cfg.log.level
    setup_logging(level, cfg.log.format, cfg)
    return cfg


def say(message: str) -> None:
    """One line on stderr: no secret in it, and no name can break it (``logs.escape``)."""
    from syncd.logs import REDACTOR, escape

    if sys.stderr is None:  # pythonw.exe: the log file is where it can be read
        log.error("%s", message)
        return
    print(escape(REDACTOR.redact(message)), file=sys.stderr)


def show(line: str) -> str:
    """A line of stdout that names files: control characters escaped, secrets out."""
    from syncd.logs import REDACTOR, escape

    return escape(REDACTOR.scrub(line))
