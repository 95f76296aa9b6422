"""What a pass did (``Report``) and what ``syncd verify`` found (``VerifyReport``).

Apart from the engine so that ``syncd sync`` can print a pass's summary without importing it
(a pass with nothing to do never starts the event loop: see ``syncd.prescan``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from syncd.types import Problem


@dataclass
class Report:
    """What a pass did. ``failed`` lists every path that could not be mirrored, with why."""

    uploaded: int = 0
    deleted: int = 0
    moved: int = 0
    unchanged: int = 0
    refreshed: int = 0
    adopted: int = 0
    bytes_sent: int = 0
    failed: list[Problem] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # for --dry-run
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> str:
        secs = self.seconds
        rate = self.bytes_sent / secs / 1e6 if secs > 0 else 0.0
        return (
            f"uploaded {self.uploaded}, deleted {self.deleted}, "
            + (f"moved {self.moved}, " if self.moved else "")
            + f"unchanged {self.unchanged + self.refreshed + self.adopted}, "
            f"failed {len(self.failed)}, {human(self.bytes_sent)} in {secs:.2f}s ({rate:.1f} MB/s)"
        )


def human(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class VerifyReport:
    identical: int = 0
    missing: list[str] = field(default_factory=list)  # local, not on the remote
    extra: list[str] = field(default_factory=list)  # on the remote, not local
    different: list[str] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.failed)


__all__ = ["Report", "VerifyReport", "human"]
