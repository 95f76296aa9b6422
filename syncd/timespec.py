"""TIME, as ``syncd restore --at TIME`` and ``--deleted-since TIME`` take it.

- ISO 8601: ``2026-12-01T14:30``, ``2026-12-01 14:30:05``, ``2026-12-01`` (midnight): local
  time unless it carries an offset (``+01:00``) or ``Z`` (UTC);
- relative: ``90s``, ``30m``, ``2h``, ``1d``, ``1w`` or a sum of them (``1h30m``): that long
  ago.

The result is Unix nanoseconds, the unit of ``Version.when_ns``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from fractions import Fraction

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

EXAMPLES = "2026-12-01T14:30 (local time), 2026-12-01T14:30Z (UTC), 2h, 30m, 1d (that long ago)"


class BadTime(ValueError):
    """TIME could not be read; the message says what was given and what works."""


def parse_time(text: str, now_ns: int | None = None) -> int:
    """``text`` as Unix nanoseconds (``now_ns``: the "now" of relative times; the clock)."""
    raw = text.strip()
    if not raw:
        raise BadTime(f"empty TIME; use for example {EXAMPLES}")
    compact = raw.replace(" ", "").lower()
    if _RELATIVE.fullmatch(compact):
        ago = sum(Fraction(n) * UNITS[u] for n, u in _PART.findall(compact))
        now = time.time_ns() if now_ns is None else now_ns
        return now - round(ago * 1_000_000_000)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadTime(f"cannot read TIME {raw!r}; use for example {EXAMPLES}") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, with this machine's offset at that date
    seconds = int(when.replace(microsecond=0).timestamp())  # (whole: exact as a float)
    return seconds * 1_000_000_000 + when.microsecond * 1000


def format_time(ns: int) -> str:
    """Local time, to the second, as a person reads it back: ``2026-12-01 14:30:05``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))


__all__ = ["EXAMPLES", "BadTime", "format_time", "parse_time"]
