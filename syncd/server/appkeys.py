"""What the app holds for its requests, by key: read by the middleware (:mod:`.app`), the
handlers (:mod:`.handlers`) and the server's shutdown (:mod:`.serve`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from syncd.server.pending import Pending
from syncd.server.store import Store

STORE = web.AppKey("store", Store)
UPLOADS = web.AppKey("uploads", Pending)
TOKEN = web.AppKey("token", str)
BODY_POOL = web.AppKey("body_pool", ThreadPoolExecutor)
INFLIGHT = web.AppKey("inflight", set)
"""The tasks of the requests being handled."""
BATCHES = web.AppKey("batches", bool)
"""Whether ``POST ?batch`` is served (``syncd serve --no-batch``: not)."""
