"""``syncd serve``: the receiving server, from its command-line options."""

from __future__ import annotations

import argparse

from syncd.cli_io import EXIT_OK
from syncd.errors import ConfigError


def serve(args: argparse.Namespace) -> int:
    """Runs until SIGTERM or Ctrl-C; a token file that cannot be read is a config error."""
    import asyncio

    from syncd.server import ServeOptions
    from syncd.server import serve as run_server

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
    from syncd.server.retention import Retention, parse_keep, parse_space

    try:
        keep_s = parse_keep(args.keep)
    except ValueError as e:
        raise ConfigError("command line", "--keep", str(e)) from None
    try:
        share, size = parse_space(args.keep_space)
    except ValueError as e:
        raise ConfigError("command line", "--keep-space", str(e)) from None
    if args.prune_interval <= 0:
        raise ConfigError("command line", "--prune-interval", "give a number of seconds > 0")
    opts = ServeOptions(
        root=args.root.expanduser(),
        host=args.host,
        port=args.port,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        retention=Retention(keep_s, share, size),
        prune_interval=args.prune_interval,
        batches=not args.no_batch,
    )
    asyncio.run(run_server(opts))
    return EXIT_OK
