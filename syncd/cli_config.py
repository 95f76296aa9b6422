"""``syncd init`` (write a commented config and, with ``--new-token``, a token file) and
``syncd config check`` (validate, print the effective values). The text is configtext's."""

from __future__ import annotations

import argparse
import os

from syncd.cli_io import EXIT_OK, load, say
from syncd.errors import ConfigError


def check(args: argparse.Namespace) -> int:
    """``syncd config check``: a ConfigError names the file, the key and the problem (exit 2)."""
    import tomllib

    from syncd.configtext import effective_text
    from syncd.logs import REDACTOR

    cfg = load(args)  # (and the log set up: its secrets registered)
    path = cfg.file
    raw = tomllib.loads(path.read_text(encoding="utf-8"))

    print(REDACTOR.scrub(effective_text(cfg, raw)))  # (a URL is shown without its userinfo)
    from syncd.remotes.kinds import large_files_line, versions_line

    say(f"# {versions_line(cfg.remote)}")
    say(f"# {large_files_line(cfg.remote)}")
    for f in cfg.remote.secret_files:
        if f is not None and os.name == "posix" and f.stat().st_mode & 0o077:
            say(f"# warning: {f} is readable by other users: chmod 600 {f}")
    say(f"# {path}: OK")
    return EXIT_OK


def init(args: argparse.Namespace) -> int:
    """``syncd init``: never overwrites a config or a token file."""
    import secrets
    import tomllib

    from syncd import config as cfgmod
    from syncd.configtext import init_text
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
    text = init_text(folder, args.url, token_file, args.remote_path, args.kind)
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
