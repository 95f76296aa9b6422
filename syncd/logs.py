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

One record is one line. Text lines show control characters (a newline in a file name, ESC,
C1 controls, line and paragraph separators, bidi overrides) and bytes that are not UTF-8 (the
surrogates ``os.fsdecode`` makes of them) escaped (``\\n``, ``\\x1b``, ``\\xff``, ``\\u2028``), so a
name can neither break a line nor forge one; ``escape`` is the same rule for the command
line's own messages. JSON lines are valid JSON in valid UTF-8 (a byte that is not UTF-8 is
shown as ``\\xNN`` text there too), one per line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

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
    # scheme://user:password@host, scheme://token@host: the whole userinfo
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@?#]+(?=@)"),
    # token=..., password: ..., access_token=... (not a path: "/x/wrong-token: 4 files")
    re.compile(
        r"(?i)((?<![\w./-])(?:[a-z]+_)?(?:token|password|passwd|secret|api_key)[\"']?\s*[:=]\s*"
        r"[\"']?)[^\s\"',&]+"
    ),
)


# What ``escape`` replaces: C0 and C1 controls and DEL; lone surrogates (a byte that is not
# UTF-8, as os.fsdecode gives it, or a stray half of a pair); what str.splitlines() or a
# terminal takes as a line break (U+2028, U+2029); the bidi controls that reorder what a
# line shows (U+061C, U+200E/F, U+202A-E, U+2066-9).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(m: re.Match[str]) -> str:
    c = m.group()
    n = ord(c)
    if c in _SHORT:
        return _SHORT[c]
    if n < 0x100:
        return f"\\x{n:02x}"
    if 0xDC80 <= n <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"\\x{n - 0xDC00:02x}"
    return f"\\u{n:04x}"


def escape(text: str) -> str:
    """``text`` safe on one line of a log or a terminal: control characters, line
    separators, bidi controls and lone surrogates shown as escapes; the rest as it is
    (a backslash too: names are shown the way a person reads them)."""
    return _UNSAFE.sub(_escaped, text)


def _json_safe(text: str) -> str:
    """Lone surrogates (bytes that were not UTF-8) as the same ``\\xNN`` text escapes:
    what remains can be encoded as UTF-8, so the line is valid JSON in valid UTF-8."""
    return re.sub("[\ud800-\udfff]", _escaped, text)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one line per record: the line escaped (see ``escape``). A traceback
    follows on lines of its own, each indented and escaped, so none can pass for a record."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, record.stack_info):
            if block:
                line += "".join("\n    " + escape(part) for part in block.splitlines())
        return line


class Redactor(logging.Filter):
    """Replaces secrets in every record's message (and its traceback) with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        """Keep ``secret`` out of every line: as it is, stripped, and in the forms it is sent
        in (percent-encoded in a URL)."""
        if not secret:
            return
        from urllib.parse import quote

        for form in (secret, secret.strip(), quote(secret.strip(), safe="")):
            if len(form) >= 4:  # a shorter "secret" would blank ordinary words
                self.secrets.add(form)

    def scrub(self, text: str) -> str:
        """``text`` without the registered secrets (and no userinfo in URLs): for documents
        (status JSON, the page, metrics), where the looser patterns could alter data."""
        for s in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(s, "***")
        return _PATTERNS[1].sub(r"\1***", text)

    def redact(self, text: str) -> str:
        """A message: the registered secrets and URL userinfo out. syncd's own sentences and
        file names are left as they are (a file may be named "my token=x.txt")."""
        return self.scrub(text)

    def redact_dump(self, text: str) -> str:
        """A traceback or stack: also anything that looks like a credential (a header or a
        ``token=`` someone else's code printed), since its text is not syncd's own."""
        text = self.scrub(text)
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
            record.exc_text = self.redact_dump(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact_dump(record.stack_info)
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
        for key, value in doc.items():
            if isinstance(value, str):
                doc[key] = _json_safe(value)
        # (json escapes C0 controls itself; C1, the line separators and bidi controls are
        # valid JSON as they are, but not safe on a terminal or for str.splitlines.)
        line = json.dumps(doc, ensure_ascii=False, default=str)
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


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
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())


class Writer(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


@contextlib.contextmanager
def routed(stream: Writer) -> Iterator[None]:
    """While a live display (the progress bar) holds the terminal: syncd's stderr handler
    writes to ``stream`` instead (one that prints above the display), then back."""
    handler = _ours(logging.getLogger())
    if not isinstance(handler, logging.StreamHandler) or handler.stream is not sys.stderr:
        yield
        return
    old = handler.setStream(stream)
    try:
        yield
    finally:
        handler.setStream(old)


__all__ = [
    "REDACTOR",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "configure",
    "escape",
    "routed",
]
