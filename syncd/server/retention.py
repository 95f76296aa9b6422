"""How long ``syncd serve`` keeps versions, and how much room they may take: the
``--keep`` and ``--keep-space`` flags (``parse_keep``, ``parse_space``) and the ``Retention``
they make, which the keeper (``versions.Keeper``: ``--keep 0`` keeps nothing), the pruner
and the ``X-Syncd-Versions`` header read."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

DAY = 86400
KEEP_DEFAULT = 30 * DAY
SPACE_DEFAULT = 0.10


@dataclass(frozen=True)
class Retention:
    """How long versions are kept (``keep_s``: None = forever, 0 = none kept) and how much
    room they may take (``space_share`` of ROOT's filesystem, or ``space_bytes``)."""

    keep_s: int | None = KEEP_DEFAULT
    space_share: float | None = SPACE_DEFAULT
    space_bytes: int | None = None

    @property
    def off(self) -> bool:
        """``--keep 0``: nothing is kept, what a request replaces or deletes is gone."""
        return self.keep_s == 0

    def space_limit(self, root: Path) -> int:
        """The most bytes the versions may take now."""
        if self.space_bytes is not None:
            return self.space_bytes
        try:
            st = os.statvfs(root)
        except OSError:
            return 0
        return int(st.f_blocks * st.f_frsize * (self.space_share or 0.0))

    def header(self, root: Path) -> str:
        """``X-Syncd-Versions``: ``keep=<seconds or forever>; space=<bytes>``, or ``off``."""
        if self.off:
            return "off"
        keep = "forever" if self.keep_s is None else str(self.keep_s)
        return f"keep={keep}; space={self.space_limit(root)}"


_AGE = re.compile(r"(\d+)\s*([smhdw])\Z")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1 << 20, "mb": 10**6}
_SIZE_UNITS |= {"mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40}
_SIZE_UNITS |= {"tb": 10**12, "tib": 1 << 40, "p": 1 << 50, "pb": 10**15, "pib": 1 << 50}


def parse_keep(text: str) -> int | None:
    """``--keep``: ``30d``, ``12h``, ``90m``, ``45s``, ``2w``, ``0`` (keep nothing) or
    ``forever`` (None); ValueError naming what is accepted."""
    t = text.strip().lower()
    if t == "forever":
        return None
    if t == "0":
        return 0
    m = _AGE.match(t)
    if m is None:
        raise ValueError(f"{text!r}: give an age like 30d, 12h, 90m, 0 (keep nothing) or forever")
    return int(m.group(1)) * _AGE_UNITS[m.group(2)]


def parse_space(text: str) -> tuple[float | None, int | None]:
    """``--keep-space``: ``10%`` (a share of ROOT's filesystem) or a size (``20GiB``,
    ``500MB``, ``1048576``); ``(share, None)`` or ``(None, bytes)``; ValueError otherwise."""
    t = text.strip()
    try:
        if t.endswith("%"):
            share = Decimal(t[:-1].strip())
            if not 0 <= share <= 100:
                raise ValueError
            return float(share) / 100, None
        m = _SIZE.match(t)
        if m is None:
            raise ValueError
        return None, int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"{text!r}: give a share of the disk like 10% or a size like 20GiB, 500MB"
        ) from None


__all__ = ["DAY", "KEEP_DEFAULT", "SPACE_DEFAULT", "Retention", "parse_keep", "parse_space"]
