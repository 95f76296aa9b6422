"""The aiohttp app of ``syncd serve``: its resources, its middleware (auth, errors, the
requests in flight) and its routes, one line per endpoint of :mod:`.handlers`.

docs/protocol.md is the contract. Paths are parsed from the raw request target (never from
aiohttp's decoded match info) and every filesystem operation goes through the handlers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from syncd import chunking
from syncd.server import delta, handlers, resumable
from syncd.server.appkeys import BATCHES, BODY_POOL, INFLIGHT, STORE, TOKEN, UPLOADS
from syncd.server.batch import ADVERTISED, BATCH_HEADER
from syncd.server.errors import BadRequest, Forbidden, StoreError, Unavailable, printable
from syncd.server.paths import Target, parse_path, parse_query, split_target
from syncd.server.pending import UPLOAD_TTL, Pending, swept
from syncd.server.receive import CLOSE, body_pool, check_body_headers
from syncd.server.resumable_state import Parts
from syncd.server.store import Store
from syncd.server.versions import PRUNE_INTERVAL, Pruner, PruneThread, Retention

log = logging.getLogger("syncd.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]


async def _options(request: web.Request, target: Target) -> web.StreamResponse:
    store = request.app[STORE]
    retention = store.keeper.retention.header(store.root)
    # WebDAV class 1 (no locks: never class 2); MS-Author-Via for Windows' client
    headers = {"Allow": ALLOW, "DAV": "1", "MS-Author-Via": "DAV", "X-Syncd-Versions": retention}
    if request.app[BATCHES]:
        headers[BATCH_HEADER] = ADVERTISED
    headers[delta.CHUNKING] = chunking.PARAMS  # (delta uploads: ?chunks, ?delta)
    # (resumable uploads: the draft's OPTIONS answer names the limits, "min-size=0" for none)
    headers["Upload-Limit"] = resumable.limit(request.app[resumable.PARTS], None)
    headers["Upload-Draft-Interop-Version"] = resumable.INTEROP
    return web.Response(status=204, headers=headers)


ROUTES: dict[tuple[str, str | None], Endpoint] = {
    # (method, query kind: None, "list", "state", "upload", "commit", "batch"): the endpoint
    ("GET", None): handlers.get,
    ("HEAD", None): handlers.get,
    ("GET", "list"): handlers.listing,
    ("GET", "state"): handlers.state,
    ("PUT", None): handlers.put,
    ("PUT", "upload"): handlers.put_upload,
    ("POST", "commit"): handlers.commit,
    ("POST", "batch"): handlers.batch,
    ("GET", "chunks"): delta.chunks,
    ("POST", "delta"): delta.delta,
    ("DELETE", None): handlers.delete,
    ("DELETE", "upload"): handlers.abort,
    ("MOVE", None): handlers.move,
    ("MKCOL", None): handlers.mkcol,
    ("OPTIONS", None): _options,
    ("PROPFIND", None): handlers.propfind,
    ("COPY", None): handlers.copy,
}
METHODS = tuple(dict.fromkeys(method for method, _ in ROUTES))
ALLOW = ", ".join(METHODS)
"""The methods served, for ``Allow`` (GET, HEAD, PUT, POST, DELETE, MOVE, MKCOL, OPTIONS,
PROPFIND, COPY)."""
CREATES = ("POST", "PUT")
"""The methods that create a resumable upload when they carry ``Upload-Complete``."""
MARKER_METHODS = ("GET", "HEAD", "PUT")
"""The plain requests that may name the mirror marker (to read or write it)."""
VERSION_READS = {
    ("GET", None),
    ("HEAD", None),
    ("GET", "list"),
    ("GET", "state"),
    ("OPTIONS", None),
    ("PROPFIND", None),
    ("COPY", None),  # (as the source: a version put back)
}
"""What a request may do under ``/.~syncd-versions/``: read (every other method is 403)."""

ANY_PATH = r"/{tail:[\s\S]*}"
"""The one route: every path, whatever characters it holds (``.*`` stops at a newline)."""


def make_app(
    root: Path,
    token: str | None,
    *,
    upload_ttl: float = UPLOAD_TTL,
    retention: Retention | None = None,
    prune_interval: float = PRUNE_INTERVAL,
    batches: bool = True,
) -> web.Application:
    """The aiohttp application serving ``root`` (with a bearer ``token``, if given), keeping
    versions as ``retention`` says, pruned every ``prune_interval`` seconds; taking batch
    uploads unless ``batches`` is False (it then answers as a server from before them)."""
    app = web.Application(middlewares=[_track_middleware, _auth_middleware, _error_middleware])
    app[STORE] = Store(root, retention)
    app[UPLOADS] = Pending(upload_ttl)
    app[BODY_POOL] = body_pool()  # (its threads start with the first body)
    app[INFLIGHT] = set()
    app[BATCHES] = batches
    app[resumable.PARTS] = Parts(root)
    app[resumable.REGISTRY] = resumable.Registry()
    if token is not None:
        app[TOKEN] = token
    app.cleanup_ctx.append(_uploads_lifecycle)
    app.cleanup_ctx.append(_parts_lifecycle)
    app.cleanup_ctx.append(_pool_lifecycle)
    app.cleanup_ctx.append(functools.partial(_prune_lifecycle, interval=prune_interval))
    app.router.add_route("*", ANY_PATH, _dispatch, expect_handler=_expect)
    return app


async def _pool_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(app[BODY_POOL].shutdown)


async def _prune_lifecycle(app: web.Application, *, interval: float) -> AsyncIterator[None]:
    """The versions are pruned in a thread of their own: at start, then every interval."""
    store = app[STORE]
    thread = PruneThread(Pruner(store.keeper, store.stopping), interval=interval)
    thread.start()
    yield
    thread.finish()
    await asyncio.to_thread(thread.join, 2.0)


async def _parts_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Resumable uploads left for longer than their ``max-age`` are removed at start, then
    every hour."""

    async def sweep() -> None:
        while True:
            try:
                await asyncio.to_thread(app[resumable.PARTS].sweep)
                app[resumable.REGISTRY].forget_gone(app[resumable.PARTS])
            except OSError as e:
                log.warning("cannot sweep the resumable uploads: %s", e)
            await asyncio.sleep(3600)

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _uploads_lifecycle(app: web.Application) -> AsyncIterator[None]:
    async with swept(app[UPLOADS]):
        yield


async def _dispatch(request: web.Request) -> web.StreamResponse:
    check_body_headers(request)
    raw_path, raw_query = split_target(request.raw_path)
    method = request.method
    if raw_path.startswith(resumable.PREFIX) and raw_query is None:
        return await resumable.resource(request, raw_path[len(resumable.PREFIX) :])
    query = parse_query(raw_query)
    # The mirror marker is the one reserved name a request may name: to read or write it.
    rel = parse_path(
        raw_path, marker=query.kind is None and method in MARKER_METHODS, versions=True
    )
    if rel.in_versions and (method, query.kind) not in VERSION_READS and method in METHODS:
        raise Forbidden(f"{rel}: {handlers.READ_ONLY}")
    if "Upload-Complete" in request.headers and query.kind is None and method in CREATES:
        return await resumable.create(request, Target(rel))
    endpoint = ROUTES.get((method, query.kind))
    if query.kind == "batch" and not request.app[BATCHES]:
        endpoint = None  # (answered as by a server without batches)
    if endpoint is not None:
        return await endpoint(request, Target(rel, query.uid))
    if query.kind is not None and method in METHODS:
        raise BadRequest(f"{method} does not take ?{query.kind}")
    return _text(405, f"method {method} is not supported", {"Allow": ALLOW})


# --------------------------------------------------------------------------- middleware


def _refused(request: web.Request) -> web.Response | None:
    """The 401 answer if the request lacks the right token (None: it may go on): as
    ``Authorization: Bearer <token>``, or as the password of ``Basic`` (any user name)."""
    token = request.app.get(TOKEN)
    if token is None:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    # (A header's own white space is not the token's; a Basic password is compared exactly.)
    given = _basic_password(given.strip()) if scheme == "basic" else given.strip()
    ok = scheme in ("bearer", "basic") and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8")
    )
    if ok:
        return None
    log.warning(
        "refused %s %r from %s: missing or wrong token",
        request.method,
        request.raw_path,
        request.remote,
    )
    return _text(401, "missing or wrong token", {"WWW-Authenticate": CHALLENGE})


CHALLENGE = 'Bearer realm="syncd", Basic realm="syncd"'
"""What a 401 offers: the token as a bearer token, or as a Basic password."""


def _basic_password(credentials: str) -> str:
    """The password of Basic credentials (``base64(user:password)``); "" if malformed."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        return ""
    _, sep, password = decoded.partition(":")
    return password if sep else ""


@web.middleware
async def _track_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Remember the task of every running request, for a stopping server to wait for."""
    task = asyncio.current_task()
    inflight: set[asyncio.Task[object]] = request.app[INFLIGHT]
    if task is not None:
        inflight.add(task)
    try:
        return await handler(request)
    finally:
        if task is not None:
            inflight.discard(task)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = _refused(request)
    return refused if refused is not None else await handler(request)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: a client with a wrong token gets its 401 before it sends the
    body (and closes the connection), instead of "100 Continue", a body of gigabytes read for
    nothing and a connection reset it would take for a network fault."""
    refused = _refused(request)
    if refused is None:
        try:
            check_body_headers(request)  # a coding that would be refused: before the body
        except StoreError as e:
            refused = _text(e.status, e.reason)
    if refused is None and request.headers.get("Expect", "").lower() != "100-continue":
        refused = _text(417, "only Expect: 100-continue is understood")
    if refused is not None:
        refused.force_close()
        return refused
    if request.version < (1, 1):
        return None  # HTTP/1.0 has no interim answers
    try:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    except ConnectionError:
        return None  # the client is gone; the handler finds out when it reads the body
    request.writer.output_size = 0  # as aiohttp's own handler: the body has not started
    return None


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await _handle_errors(request, handler)
    if request.get(CLOSE):  # the body was read past aiohttp: this connection ends here
        resp.force_close()
    return resp


async def _handle_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreError as e:
        if isinstance(e, Unavailable):
            log.info(
                "%s %r: %d %s", request.method, request.raw_path, e.status, printable(e.reason)
            )
        elif e.status >= 500:
            log.error(
                "%s %r: %d %s", request.method, request.raw_path, e.status, printable(e.reason)
            )
        else:
            log.debug(
                "%s %r: %d %s", request.method, request.raw_path, e.status, printable(e.reason)
            )
        headers = {"Allow": ALLOW} if e.status == 405 else None
        return _text(e.status, e.reason, headers)
    except ConnectionError:
        log.debug("%s %r: the client went away", request.method, request.raw_path)
        return _text(400, "client disconnected")


def _text(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=printable(reason) + "\n", headers=headers)
