"""Logging set-up: ``[log] format = "text"`` (one readable line) or ``"json"`` (one JSON object
per line, for journald, Loki, jq...), and secrets kept out of both.

JSON lines carry ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``event``, ``msg``,
``folder``, ``path``, ``bytes``, ``ms`` and ``result``: the last five are filled in where the
code that logs knows them (passed with ``extra=``) and null elsewhere. ``event`` names what
happened (``sent``, ``deleted``, ``moved``, ``failed``, ``retry``...); a line that names
nothing has ``"event": "log"``.

Tokens and passwords never reach a log line: the secrets the config points to are registered
with ``configure`` and replaced by ``***`` wherever they appear, as are ``Authorization``
headers and credentials in URLs.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# json, datetime and logging.handlers are imported where they are used: most runs log text
# to stderr, and a `syncd sync` with nothing to do should not pay for them at start-up.

#: Fields a log call may pass with ``extra=`` that JSON lines carry.
FIELDS = ("event", "folder", "path", "bytes", "ms", "result")

HANDLER_NAME = "syncd"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_PATTERNS = (
    # Authorization: Bearer xyz / Basic xyz
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',]+"),
    # scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)"),
    # token=..., password: ...
    re.compile(
        r"(?i)(\b(?:token|password|passwd|secret|api_key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+"
    ),
)


class Redactor(logging.Filter):
    """Replaces secrets in every record's message (and its traceback) with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:  # a shorter "secret" would blank ordinary words
            self.secrets.add(secret)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        for p in _PATTERNS:
            text = p.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self.redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "msg": record.getMessage(),
        }
        for key in FIELDS[1:]:
            doc[key] = getattr(record, key, None)  # every line has every key (null: n/a)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


REDACTOR = Redactor()


def _ours(root: logging.Logger) -> logging.Handler | None:
    for h in root.handlers:
        if h.get_name() == HANDLER_NAME:
            return h
    return None


def _install(root: logging.Logger, handler: logging.Handler) -> logging.Handler:
    handler.set_name(HANDLER_NAME)
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    return handler


def configure(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str | None] = (),
    log_file: Path | None = None,
) -> None:
    """Set up (or update) syncd's handler on the root logger: stderr, ``fmt``, ``level``.

    Without a stderr (``pythonw.exe``, as the Windows scheduled task runs it), the log goes to
    ``log_file`` instead, rotated at 10 MiB. When something else already handles the root
    logger (pytest's capture, an embedding application), it is left alone: only the level and
    the redaction are applied.
    """
    for s in secrets:
        REDACTOR.add(s)
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    handler = _ours(root)
    if handler is None and root.handlers:
        for h in root.handlers:
            if REDACTOR not in h.filters:
                h.addFilter(REDACTOR)
        return
    if sys.stderr is None and log_file is not None:
        from logging.handlers import RotatingFileHandler

        if handler is not None and not isinstance(handler, RotatingFileHandler):
            root.removeHandler(handler)
            handler.close()
            handler = None
        if handler is None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = _install(
                root,
                RotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=3, encoding="utf-8"),
            )
    elif handler is None:
        handler = _install(root, logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))


__all__ = ["REDACTOR", "JsonFormatter", "Redactor", "configure"]
