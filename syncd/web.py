"""The status endpoint, ``[status] listen``: three views of the same status document.

- ``/`` a page a person can leave open in a browser: plain HTML, CSS and a little JavaScript
  served from here (no build step, no CDN, works offline) that refreshes itself from
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


async def _page(request: web.Request) -> web.StreamResponse:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


async def _css(request: web.Request) -> web.StreamResponse:
    return web.Response(text=CSS, content_type="text/css", charset="utf-8")


async def _js(request: web.Request) -> web.StreamResponse:
    return web.Response(text=JS, content_type="text/javascript", charset="utf-8")


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
    app.router.add_get("/", _page)
    app.router.add_get("/status.css", _css)
    app.router.add_get("/status.js", _js)
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


# --------------------------------------------------------------------------- the page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncd</title>
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body>
<header>
  <h1>syncd</h1>
  <span id="state" class="badge">loading</span>
  <span id="summary"></span>
  <span id="updated" class="muted"></span>
</header>
<noscript><p class="banner">This page fills itself in with JavaScript. The same figures are
at <a href="/status.json">/status.json</a> and <a href="/metrics">/metrics</a>.</p></noscript>
<p id="banner" class="banner" hidden></p>
<main>
  <section class="row">
    <div class="card">
      <h2>Remote</h2>
      <dl>
        <dt>URL</dt><dd id="r-url"></dd>
        <dt>Reachable</dt><dd id="r-reachable"></dd>
        <dt>Queued changes</dt><dd id="r-queued"></dd>
        <dt>Last transfer</dt><dd id="r-last"></dd>
      </dl>
    </div>
    <div class="card">
      <h2>Totals</h2>
      <dl>
        <dt>Files mirrored</dt><dd id="t-files"></dd>
        <dt>Size mirrored</dt><dd id="t-bytes"></dd>
        <dt>Pending</dt><dd id="t-pending"></dd>
        <dt>In flight</dt><dd id="t-in_flight"></dd>
        <dt>Uploaded</dt><dd id="t-uploaded"></dd>
        <dt>Deleted</dt><dd id="t-deleted"></dd>
        <dt>Moved</dt><dd id="t-moved"></dd>
        <dt>Sent</dt><dd id="t-bytes_sent"></dd>
        <dt>Errors</dt><dd id="t-errors"></dd>
        <dt>Retries</dt><dd id="t-retries"></dd>
      </dl>
    </div>
  </section>
  <section id="folders"></section>
  <section class="card">
    <h2>Recent transfers</h2>
    <table>
      <thead><tr><th>When</th><th>What</th><th>Path</th><th>Size</th><th>Took</th></tr></thead>
      <tbody id="recent"></tbody>
    </table>
  </section>
  <section class="card">
    <h2>Errors</h2>
    <table>
      <thead><tr><th>When</th><th>Kind</th><th>Path</th><th>Reason</th></tr></thead>
      <tbody id="errors"></tbody>
    </table>
  </section>
</main>
<footer id="footer" class="muted"></footer>
</body>
</html>
"""

CSS = """:root {
  --bg: #f6f7f9; --fg: #1d2330; --card: #fff; --line: #dde1e7; --muted: #6b7280;
  --ok: #15803d; --busy: #1d4ed8; --bad: #b91c1c; --warn: #b45309;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c; --fg: #e5e7eb; --card: #1d2128; --line: #2f3540; --muted: #9ca3af;
    --ok: #4ade80; --busy: #93c5fd; --bad: #f87171; --warn: #fbbf24;
  }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  background: var(--bg); color: var(--fg); }
header { display: flex; gap: .8em; align-items: baseline; flex-wrap: wrap;
  padding: .8em 1.2em; border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 1.3em; margin: 0; }
h2 { font-size: 1.05em; margin: 0 0 .5em; }
main { padding: 1em 1.2em; display: grid; gap: 1em; max-width: 1200px; }
.row { display: grid; gap: 1em; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: .9em 1.1em; overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
.badge { display: inline-block; padding: .05em .6em; border-radius: 999px; font-weight: 600;
  border: 1px solid currentColor; font-size: .9em; }
.in_sync, .yes { color: var(--ok); }
.syncing, .starting { color: var(--busy); }
.error, .no { color: var(--bad); }
.warn { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
.banner { margin: 0; padding: .6em 1.2em; background: var(--warn); color: #fff; }
.folder-head { display: flex; gap: .7em; align-items: baseline; flex-wrap: wrap;
  margin-bottom: .5em; }
.folder-head h2 { margin: 0; }
ul { margin: .3em 0 0; padding-left: 1.2em; }
li { word-break: break-all; }
progress { width: 12em; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em .25em 0; border-bottom: 1px solid var(--line);
  vertical-align: top; }
td { word-break: break-all; }
th { color: var(--muted); font-weight: 500; }
footer { padding: 0 1.2em 1.2em; }
footer a { color: inherit; }
"""

JS = r"""'use strict';
// Fills the page from /status.json every two seconds. Everything from the daemon is
// inserted as text (never as HTML): file names are data, not markup.
const REFRESH_MS = 2000;
const STATES = {in_sync: 'In sync', syncing: 'Syncing', starting: 'Starting', error: 'Error'};
let lastOk = null;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}
function set(id, value, cls) {
  const e = document.getElementById(id);
  if (!e) return;
  e.textContent = value === null || value === undefined ? '-' : String(value);
  if (cls !== undefined) e.className = cls;
}
function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}
function clock(t) {
  if (!t) return 'never';
  const d = new Date(t * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString();
  return d.toDateString() === now.toDateString() ? time : d.toLocaleDateString() + ' ' + time;
}
function ago(t, now) {
  if (!t) return 'never';
  const s = Math.max(0, Math.round(now - t));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return clock(t);
}
function badge(state) {
  return el('span', {class: 'badge ' + state}, STATES[state] || state);
}

function folderCard(f, now) {
  const card = el('div', {class: 'card folder', 'data-folder': f.remote_path});
  card.append(el('div', {class: 'folder-head'},
    el('h2', {}, f.remote_path), badge(f.state),
    el('span', {class: 'muted'}, f.path + ' \u2192 ' + f.remote_path)));
  const dl = el('dl', {});
  const row = (k, v, key) => dl.append(el('dt', {}, k), el('dd', {'data-k': key}, v));
  row('Files mirrored', f.files, 'files');
  row('Size', bytes(f.bytes), 'bytes');
  row('Pending', f.pending_count, 'pending');
  row('In flight', f.in_flight.length, 'in_flight');
  row('Errors', f.errors, 'errors');
  row('Held deletions', f.held_deletions ? f.held_deletions.count : 0, 'held_deletions');
  row('Last in sync', f.in_sync ? 'now' : ago(f.last_sync, now), 'last_sync');
  row('Last file mirrored', ago(f.last_synced_file, now), 'last_synced_file');
  row('Watcher', f.watcher + (f.watcher_restarts ? ' (' + f.watcher_restarts + ' restarts)' : ''),
      'watcher');
  card.append(dl);
  if (f.unavailable) {
    card.append(el('p', {class: 'warn unavailable'}, 'Folder unavailable: ' + f.unavailable));
  }
  const held = f.held_deletions;
  if (held && held.count) {
    card.append(el('p', {class: 'warn held'},
      held.count + ' deletion(s) held back since ' + clock(held.since) + ': ' + held.reason +
      ' To release them: ', el('code', {}, 'syncd sync --force-delete')));
  }
  if (f.in_flight.length) {
    const ul = el('ul', {class: 'in-flight'});
    for (const t of f.in_flight) {
      const total = t.bytes_total || 0;
      const bar = el('progress', {max: String(Math.max(total, 1)),
                                  value: String(Math.min(t.bytes_done, Math.max(total, 1)))});
      ul.append(el('li', {}, t.op + ' ', el('code', {}, t.path), ' ', bar, ' ',
        bytes(t.bytes_done) + ' of ' + bytes(total) + ', ' + bytes(t.rate) + '/s'));
    }
    card.append(el('h3', {}, 'In flight'), ul);
  }
  if (f.pending_count) {
    const ul = el('ul', {class: 'pending'});
    for (const p of f.pending.slice(0, 10)) ul.append(el('li', {}, el('code', {}, p)));
    if (f.pending_count > 10) ul.append(el('li', {class: 'muted'},
                                           'and ' + (f.pending_count - 10) + ' more'));
    card.append(el('h3', {}, 'Pending'), ul);
  }
  return card;
}

function render(doc) {
  const now = doc.time;
  const state = document.getElementById('state');
  state.className = 'badge ' + doc.state;
  state.textContent = STATES[doc.state] || doc.state;
  document.title = 'syncd: ' + (STATES[doc.state] || doc.state);
  set('summary', doc.daemon && doc.daemon.ready ? '' : 'first scan and upload running');
  set('updated', 'updated ' + clock(now));
  const r = doc.remote;
  set('r-url', r.url);
  if (r.error) set('r-reachable', r.error, 'no');
  else if (r.reachable) set('r-reachable', 'yes', 'yes');
  else set('r-reachable', 'no, since ' + clock(r.unreachable_since), 'no');
  set('r-queued', r.queued);
  set('r-last', ago(r.last_transfer, now));
  const t = doc.totals;
  for (const k of ['files', 'pending', 'in_flight', 'uploaded', 'deleted', 'moved', 'errors',
                   'retries']) set('t-' + k, t[k]);
  set('t-bytes', bytes(t.bytes));
  set('t-bytes_sent', bytes(t.bytes_sent));
  document.getElementById('folders').replaceChildren(
    ...doc.folders.map((f) => folderCard(f, now)));
  const recent = doc.recent.map((x) => el('tr', {},
    el('td', {}, clock(x.time)), el('td', {}, x.op),
    el('td', {}, x.folder + '/' + x.path + (x.to ? ' \u2192 ' + x.folder + '/' + x.to : '')),
    el('td', {}, x.bytes ? bytes(x.bytes) : ''), el('td', {}, x.seconds.toFixed(2) + ' s')));
  if (!recent.length) recent.push(el('tr', {}, el('td', {colspan: '5', class: 'muted'},
                                                  'nothing sent since the daemon started')));
  document.getElementById('recent').replaceChildren(...recent);
  const errors = doc.errors.map((e) => el('tr', {class: e.current ? 'error' : 'muted'},
    el('td', {}, clock(e.time)), el('td', {}, e.kind),
    el('td', {}, [e.folder, e.path].filter((p) => p).join('/')),
    el('td', {}, e.reason + (e.current ? '' : ' (resolved)'))));
  if (!errors.length) errors.push(el('tr', {}, el('td', {colspan: '4', class: 'muted'},
                                                  'no errors')));
  document.getElementById('errors').replaceChildren(...errors);
  const d = doc.daemon;
  const footer = document.getElementById('footer');
  footer.replaceChildren('syncd ' + d.version + ', pid ' + d.pid + ', up since ' +
    clock(d.started) + ' \u00b7 ', el('a', {href: '/status.json'}, 'status.json'), ' \u00b7 ',
    el('a', {href: '/metrics'}, 'metrics'));
}

async function refresh() {
  const banner = document.getElementById('banner');
  try {
    const resp = await fetch('/status.json', {cache: 'no-store'});
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    render(await resp.json());
    lastOk = new Date();
    banner.hidden = true;
  } catch (err) {
    banner.textContent = 'syncd is not answering (' + err.message + ')' +
      (lastOk ? '; figures as of ' + lastOk.toLocaleTimeString() : '');
    banner.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
"""


__all__ = ["StatusSite", "make_app", "render_metrics"]
