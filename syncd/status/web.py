"""The status endpoint, ``[status] listen``: three views of the same status document.

- ``/`` a page a person can leave open in a browser: plain HTML, CSS and a little JavaScript
  (``syncd/status/static/``, package data) served from here (no build step, no CDN, works
  offline) that refreshes itself from
- ``/status.json``, the document ``syncd status --json`` prints (docs/status.md), and
- ``/metrics``, the same figures in the Prometheus text format (``syncd_`` series).

It binds to loopback unless the config names another address. Bound to loopback, it answers
only requests addressed to a loopback name (a DNS-rebinding page cannot read it). It never
changes anything: every route is a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from syncd.logs import REDACTOR
from syncd.status.board import StatusBoard
from syncd.status.client import split_listen
from syncd.status.prometheus import render_metrics
from syncd.types import is_loopback

log = logging.getLogger("syncd.web")

RETRY_BIND = 10.0  # seconds between tries when the address is taken
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
#: The page: (route, file in syncd/status/static/, content type).
PAGE_FILES = (
    ("/", "page.html", "text/html"),
    ("/status.css", "page.css", "text/css"),
    ("/status.js", "page.js", "text/javascript"),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BOARD = web.AppKey("board", StatusBoard)
LOOPBACK_ONLY = web.AppKey("loopback_only", bool)


def _hostname(host: str) -> str:
    """The name in a Host header, without the port: "[::1]:8384" -> "::1"."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# --------------------------------------------------------------------------- the app


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    if request.app[LOOPBACK_ONLY]:
        host = _hostname(request.host or "")
        if host not in LOOPBACK_NAMES and not is_loopback(host):
            raise web.HTTPForbidden(text="this status page answers only to a loopback address\n")
    resp = await handler(request)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return resp


def _asset(name: str, content_type: str) -> Handler:
    """A route that serves one of the page's files (``static/``, package data), read once."""
    text = (files("syncd.status") / "static" / name).read_text(encoding="utf-8")

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, content_type=content_type, charset="utf-8")

    return serve


async def _json(request: web.Request) -> web.StreamResponse:
    doc = request.app[BOARD].snapshot()
    text = REDACTOR.scrub(json.dumps(doc, indent=1))  # (defence in depth: it holds none)
    return web.Response(text=text, content_type="application/json")


async def _metrics(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD]
    text = REDACTOR.scrub(render_metrics(board.snapshot(), board.metrics))
    return web.Response(
        body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def make_app(board: StatusBoard, *, loopback_only: bool = True) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[BOARD] = board
    app[LOOPBACK_ONLY] = loopback_only
    for route, name, content_type in PAGE_FILES:
        app.router.add_get(route, _asset(name, content_type))
    app.router.add_get("/status.json", _json)
    app.router.add_get("/metrics", _metrics)
    return app


class StatusSite:
    """The endpoint's life (async context manager): ``start()`` binds (or keeps trying, if
    the address is taken: mirroring matters more than the page), ``stop()`` closes it.
    ``listen`` is ``[status] listen``: "" (off) serves nothing."""

    def __init__(self, board: StatusBoard, listen: str) -> None:
        self.board = board
        self.listen = listen
        self.host, self.port = split_listen(listen) if listen else ("", 0)
        self.loopback = is_loopback(self.host)
        self._runner: web.AppRunner | None = None
        self._retry: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusSite:
        if self.listen:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._runner = web.AppRunner(
            make_app(self.board, loopback_only=self.loopback),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        if not await self._bind(first=True):
            self._retry = asyncio.create_task(self._keep_trying())

    async def _bind(self, first: bool) -> bool:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            if first:
                log.error(
                    "cannot serve the status page on %s:%d: %s; trying again every %.0fs",
                    self.host,
                    self.port,
                    e.strerror or e,
                    RETRY_BIND,
                )
            return False
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.board.status_url = f"http://{host}:{port}/"
        log.info(
            "status page at %s (JSON at /status.json, metrics at /metrics)", self.board.status_url
        )
        if not self.loopback:
            log.warning(
                "the status page listens on %s, beyond this machine, without authentication: "
                "anyone who can reach it sees file names",
                self.host,
            )
        return True

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(RETRY_BIND)
            if await self._bind(first=False):
                return

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._runner is not None:
            await self._runner.cleanup()
        self.board.status_url = None


__all__ = ["StatusSite", "make_app"]
