"""What the upload endpoints share: the file metadata a request gives (mtime, exec bit) and
the answer once a file is stored (docs/protocol.md, "File metadata")."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from aiohttp import web

from syncd.digests import digest_header
from syncd.server.errors import BadRequest

MTIME = "X-Syncd-Mtime"
EXECUTABLE = "X-Syncd-Executable"
OC_MTIME = "X-OC-Mtime"
_INT = re.compile(r"-?\d{1,20}\Z")
_SECONDS = re.compile(r"-?\d{1,12}(\.\d{1,9})?\Z")


def request_meta(request: web.Request) -> tuple[int | None, bool | None]:
    """The mtime (ns) and executable bit a request gives its file: ``X-Syncd-Mtime``
    (integer ns since the epoch; it wins over ``X-OC-Mtime``, seconds, int or decimal) and
    ``X-Syncd-Executable`` (``?1``/``?0``); None for what it does not say; 400 naming the
    header for a value that is not one."""
    mtime_ns: int | None = None
    raw = request.headers.get(MTIME)
    if raw is not None:
        if not _INT.match(raw.strip()):
            raise BadRequest(f"{MTIME} must be an integer count of nanoseconds since the epoch")
        mtime_ns = int(raw.strip())
    else:
        raw = request.headers.get(OC_MTIME)
        if raw is not None:
            if not _SECONDS.match(raw.strip()):
                raise BadRequest(f"{OC_MTIME} must be seconds since the epoch (like 1700000000.5)")
            try:
                mtime_ns = int(Decimal(raw.strip()) * 1_000_000_000)
            except InvalidOperation:
                raise BadRequest(f"{OC_MTIME} must be seconds since the epoch") from None
    # Any time a 64-bit time_t holds (the filesystem clamps it to its own range, as it does
    # for the client's own files, which can hold such times too).
    if mtime_ns is not None and not -(2**63) * 10**9 <= mtime_ns < 2**63 * 10**9:
        raise BadRequest(f"{MTIME if MTIME in request.headers else OC_MTIME} is out of range")
    executable: bool | None = None
    raw = request.headers.get(EXECUTABLE)
    if raw is not None:
        flag = raw.strip()
        if flag not in ("?1", "?0"):
            raise BadRequest(f"{EXECUTABLE} must be ?1 or ?0 (an RFC 8941 boolean)")
        executable = flag == "?1"
    return mtime_ns, executable


def meta_headers(request: web.Request) -> dict[str, str]:
    """ownCloud's answer to ``X-OC-Mtime`` (rclone reads it: the mtime was set)."""
    return {OC_MTIME: "accepted"} if OC_MTIME in request.headers else {}


def stored_response(request: web.Request, replaced: bool, digest: bytes) -> web.Response:
    return web.Response(
        status=204 if replaced else 201,
        headers={"Repr-Digest": digest_header(digest), **meta_headers(request)},
    )
