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
from typing import Any

from aiohttp import web

from syncd.errors import ERROR_KINDS
from syncd.logs import REDACTOR
from syncd.status import StatusBoard, split_listen
from syncd.status.metrics import Metrics
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


# --------------------------------------------------------------------------- /metrics


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float | int | bool | None) -> str:
    if v is None:
        return "0"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render_metrics(doc: dict[str, Any], m: Metrics) -> str:
    """The status document and the counters as Prometheus text (exposition format 0.0.4)."""
    t, d, r = doc["totals"], doc["daemon"], doc["remote"]

    def lab(**kv: str) -> str:
        return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"

    def per_folder(key: Callable[[dict[str, Any]], Any]) -> list[tuple[str, Any]]:
        return [(lab(folder=f["remote_path"]), key(f)) for f in doc["folders"]]

    kinds = sorted(set(ERROR_KINDS) | set(m.errors_total))
    families: list[tuple[str, str, str, list[tuple[str, Any]]]] = [
        ("info", "gauge", "The running daemon's version.", [(lab(version=d["version"]), 1)]),
        (
            "start_time_seconds",
            "gauge",
            "When the daemon started (unix time).",
            [("", d["started"])],
        ),
        ("ready", "gauge", "1 once the first reconcile has finished.", [("", d["ready"])]),
        ("in_sync", "gauge", "1 when every folder is mirrored.", [("", doc["in_sync"])]),
        ("uploads_total", "counter", "Files uploaded since start.", [("", t["uploaded"])]),
        ("sent_bytes_total", "counter", "Bytes sent since start.", [("", t["bytes_sent"])]),
        ("deletes_total", "counter", "Deletions mirrored since start.", [("", t["deleted"])]),
        ("moves_total", "counter", "Server-side moves since start.", [("", t["moved"])]),
        (
            "errors_total",
            "counter",
            "Failures since start, by kind.",
            [(lab(kind=k), m.errors_total.get(k, 0)) for k in kinds],
        ),
        ("retries_total", "counter", "Retries of transient failures.", [("", m.retries)]),
        ("current_errors", "gauge", "Paths whose last attempt failed.", [("", t["errors"])]),
        (
            "pending_files",
            "gauge",
            "Paths waiting to be sent, deleted or moved.",
            per_folder(lambda f: f["pending_count"]),
        ),
        (
            "in_flight_files",
            "gauge",
            "Transfers running now.",
            per_folder(lambda f: len(f["in_flight"])),
        ),
        (
            "mirrored_files",
            "gauge",
            "Files the remote is known to hold.",
            per_folder(lambda f: f["files"]),
        ),
        (
            "mirrored_bytes",
            "gauge",
            "Bytes the remote is known to hold.",
            per_folder(lambda f: f["bytes"]),
        ),
        (
            "folder_in_sync",
            "gauge",
            "1 when the folder is fully mirrored.",
            per_folder(lambda f: f["in_sync"]),
        ),
        (
            "held_deletions",
            "gauge",
            "Deletions the deletion guard holds back (release: syncd sync --force-delete).",
            per_folder(lambda f: (f.get("held_deletions") or {}).get("count", 0)),
        ),
        (
            "watcher_restarts_total",
            "counter",
            "Times a folder's watch was restarted.",
            per_folder(lambda f: f["watcher_restarts"]),
        ),
        (
            "last_success_timestamp_seconds",
            "gauge",
            "Last time every folder was seen fully mirrored (unix time; 0: not yet).",
            [("", doc["last_sync"])],
        ),
        (
            "last_transfer_timestamp_seconds",
            "gauge",
            "Last successful upload, delete or move (unix time; 0: none yet).",
            [("", r["last_transfer"])],
        ),
        ("remote_reachable", "gauge", "1 while the remote answers.", [("", r["reachable"])]),
        ("queued_changes", "gauge", "Changes kept while the remote is down.", [("", r["queued"])]),
    ]
    out: list[str] = []
    for name, kind, help_, samples in families:
        out += [f"# HELP syncd_{name} {help_}", f"# TYPE syncd_{name} {kind}"]
        out += [f"syncd_{name}{labels} {_num(value)}" for labels, value in samples]
    h = m.upload_seconds
    name = "syncd_upload_duration_seconds"
    out.append(f"# HELP {name} Time to send one file, hashing and retries included.")
    out.append(f"# TYPE {name} histogram")
    for bound, count in zip(h.buckets, h.counts, strict=True):
        out.append(f'{name}_bucket{{le="{_num(bound)}"}} {count}')
    out.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
    out.append(f"{name}_sum {_num(h.sum)}")
    out.append(f"{name}_count {h.count}")
    return "\n".join(out) + "\n"


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
    """The endpoint's life: ``start()`` binds (or keeps trying, if the address is taken:
    mirroring matters more than the page), ``stop()`` closes it."""

    def __init__(self, board: StatusBoard, listen: str) -> None:
        self.board = board
        self.host, self.port = split_listen(listen)
        self.loopback = is_loopback(self.host)
        self._runner: web.AppRunner | None = None
        self._retry: asyncio.Task[None] | None = None

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


__all__ = ["StatusSite", "make_app", "render_metrics"]
