"""One log line, not a traceback, for a request aiohttp's parser refused.

aiohttp logs every malformed request (a bad request line, a header too long, a broken chunked
body) at ERROR with the parser's traceback, and its message quotes the request's bytes, which
can hold a bearer token. A request is input, not a fault of the server: while
:func:`quiet_bad_requests` is active such records become one INFO line naming the client and
the kind of problem, without the bytes. Any other exception keeps its traceback: that one is
a bug to fix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

_LOGGER = "aiohttp.server"


def bad_request_reason(exc: BaseException) -> str | None:
    """A short, byte-free description if ``exc`` is about a malformed request, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, HttpProcessingError):
            text = str(current.message or "").strip()
            first = text.splitlines()[0] if text else ""
            first = first.split(":", 1)[0].split("'", 1)[0].split('"', 1)[0].strip()
            name = type(current).__name__
            return f"{name}: {first[:100]}" if first else name
        if isinstance(current, RequestPayloadError) and current.__cause__ is None:
            return "malformed body"
        current = current.__cause__ or current.__context__
    return None


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        reason = bad_request_reason(exc)
        if reason is None:
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "refused a malformed request from %s: %s"
        record.args = (remote, reason)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        return True


@contextlib.contextmanager
def quiet_bad_requests() -> Iterator[None]:
    """Rewrite aiohttp's records about malformed requests for the life of the block."""
    logger = logging.getLogger(_LOGGER)
    one_line = _OneLine()
    logger.addFilter(one_line)
    try:
        yield
    finally:
        logger.removeFilter(one_line)
