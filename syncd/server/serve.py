"""``syncd serve``'s life: options, TLS, ROOT and its lock, startup, run until a signal,
and a bounded shutdown (docs/protocol.md: gone within :data:`STOP_LIMIT` of SIGTERM).

The app itself (routes, auth, handlers) is :func:`.app.make_app`'s.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from syncd.errors import ConfigError, SyncdError
from syncd.server.app import make_app
from syncd.server.appkeys import INFLIGHT, STORE
from syncd.server.fdio import SUPPORTED
from syncd.server.logfilter import quiet_bad_requests
from syncd.server.retention import Retention
from syncd.server.rootlock import RootLock, remove_leftover_temps
from syncd.server.versions import PRUNE_INTERVAL
from syncd.signals import stop_signals
from syncd.types import is_loopback

log = logging.getLogger("syncd.server")

KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle (or half-sent) connection is kept."""
SHUTDOWN_TIMEOUT = 5.0
"""Seconds running requests get to finish after SIGTERM/SIGINT."""
CANCEL_TIMEOUT = 1.0
"""Seconds cancelled requests get to clean up (each removes its temp) before the server
removes what is left itself."""
STOP_LIMIT = 7.0
"""The server is gone this many seconds after SIGTERM at the latest (docs/protocol.md)."""


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``syncd serve`` is started with."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    retention: Retention = field(default_factory=Retention)
    """``--keep`` and ``--keep-space``: how long and how much the versions are kept."""
    prune_interval: float = PRUNE_INTERVAL
    batches: bool = True
    """``--no-batch``: False, and ``POST ?batch`` is answered as by a server without it."""


def _ssl_context(opts: ServeOptions) -> ssl.SSLContext | None:
    if opts.tls_cert is None and opts.tls_key is None:
        return None
    if opts.tls_cert is None or opts.tls_key is None:
        raise ConfigError("command line", "--tls-cert/--tls-key", "give both or neither")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(opts.tls_cert, "--tls-cert", f"cannot load certificate/key: {e}") from e
    return ctx


def _prepare_root(root: Path) -> Path:
    root = root.absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError("command line", "--root", f"{root} is not a directory") from None
    except OSError as e:
        raise ConfigError("command line", "--root", f"cannot create {root}: {e.strerror}") from e
    return root


class _Stop:
    """What the stop signals said: the first sets ``stop``, the second ``force``."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def on_signal(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log.info("%s: stopping", sig.name)
            self.stop.set()
        elif not self.force.is_set():
            log.warning("%s again: stopping now", sig.name)
            self.force.set()


async def serve(opts: ServeOptions) -> None:
    """Run the server until SIGTERM/SIGINT; raise :class:`ConfigError` for bad options."""
    if opts.token is None and not opts.insecure and not is_loopback(opts.host):
        raise ConfigError(
            "command line",
            "--host",
            f"{opts.host} is not a loopback address: give --token-file"
            " (or --insecure to serve it without a token)",
        )
    if not SUPPORTED:
        raise SyncdError("syncd serve needs a POSIX system (openat with O_NOFOLLOW)")
    ssl_ctx = _ssl_context(opts)
    root = _prepare_root(opts.root)
    # Before anything in ROOT is touched: the temps removed below could be a running server's.
    lock = RootLock.acquire(root)  # RootInUse names the server that holds it (exit 2)
    try:
        await _serve_locked(opts, root, ssl_ctx, lock)
    finally:
        lock.release()
    log.info("stopped")


async def _serve_locked(
    opts: ServeOptions, root: Path, ssl_ctx: ssl.SSLContext | None, lock: RootLock
) -> None:
    removed = await asyncio.to_thread(remove_leftover_temps, root)
    log.info("removed %d leftover temporary file(s) under %s", removed, root)

    app = make_app(
        root,
        opts.token,
        retention=opts.retention,
        prune_interval=opts.prune_interval,
        batches=opts.batches,
    )
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        # Requests were given their time and cancelled by _shutdown: what is left is closing.
        shutdown_timeout=0.25,
        # Never decode a request body: a body is stored, and its digest checked, as sent
        # (and one with a content coding is refused, see receive.check_body_headers).
        auto_decompress=False,
    )
    signals = _Stop()
    with stop_signals(signals.on_signal), quiet_bad_requests():
        await runner.setup()
        try:
            site = web.TCPSite(runner, opts.host, opts.port, ssl_context=ssl_ctx)
            try:
                await site.start()
            except OSError as e:
                raise SyncdError(
                    f"cannot listen on {opts.host}:{opts.port}: {e.strerror or e}"
                ) from e
            port = runner.addresses[0][1]
            scheme = "https" if ssl_ctx else "http"
            host = f"[{opts.host}]" if ":" in opts.host else opts.host
            url = f"{scheme}://{host}:{port}/"
            lock.set_url(url)
            print(f"syncd serve: listening on {url} (root {root})", flush=True)
            await signals.stop.wait()
        finally:
            await _shutdown(runner, app, signals)


async def _shutdown(runner: web.AppRunner, app: web.Application, signals: _Stop) -> None:
    """Stop within :data:`STOP_LIMIT`: accept nothing new; give running requests
    :data:`SHUTDOWN_TIMEOUT` (none after a second signal); cancel the rest; remove the temp of
    every upload still in flight; close every connection and the app."""
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is not None:
        server.pre_shutdown()  # idle connections close now, busy ones after their answer
    store = app[STORE]
    inflight: set[asyncio.Task[object]] = app[INFLIGHT]
    if not signals.force.is_set():
        await _settle(inflight, SHUTDOWN_TIMEOUT, signals.force)
    store.stopping.set()  # bodies, hashes and walks still running end within moments
    running = {t for t in inflight if not t.done()}
    if running:
        log.info("cancelling %d running request(s)", len(running))
        for task in running:
            task.cancel()
        await _settle(running, CANCEL_TIMEOUT, None)
    removed = await asyncio.to_thread(store.stop)
    if removed:
        log.info("removed the temporary files of %d upload(s) in flight", removed)
    await runner.cleanup()


async def _settle(
    tasks: set[asyncio.Task[object]], within: float, force: asyncio.Event | None
) -> None:
    """Wait until every task is done, ``within`` seconds have passed or ``force`` is set."""
    pending: set[asyncio.Future[Any]] = {t for t in tasks if not t.done()}
    if not pending:
        return
    forced: asyncio.Future[Any] | None = None
    waiters = set(pending)
    if force is not None:
        forced = asyncio.ensure_future(force.wait())
        waiters.add(forced)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while pending and not (forced is not None and forced.done()):
            left = deadline - loop.time()
            if left <= 0:
                break
            done, _ = await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            pending -= done
            waiters -= done
    finally:
        if forced is not None:
            forced.cancel()
