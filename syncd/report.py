"""What a pass did (``Report``), where it tells its progress (``Progress``), and what
``syncd verify`` found (``VerifyReport``).

Apart from the engine so that ``syncd sync`` can print a pass's summary without importing it
(a pass with nothing to do never starts the event loop: see ``syncd.prescan``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from syncd.types import Problem


class Progress:
    """Receives progress from a pass. The default does nothing; the CLI draws a bar."""

    def start(self, files: int, nbytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self, rel: str) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Report:
    """What a pass did. ``failed`` lists every path that could not be mirrored, with why.

    A pass that could not go on at all (the server unreachable, refusing the credentials, or
    not speaking the remote kind's protocol) says so once: ``stopped`` is that reason, and
    ``not_sent`` / ``not_done`` count the uploads and the deletes or moves it left undone
    (each is named at debug level, not listed in ``failed``).
    """

    uploaded: int = 0
    deleted: int = 0
    moved: int = 0
    unchanged: int = 0
    refreshed: int = 0
    adopted: int = 0
    bytes_sent: int = 0
    failed: list[Problem] = field(default_factory=list)
    stopped: str | None = None
    not_sent: int = 0
    not_done: int = 0
    planned: list[str] = field(default_factory=list)  # for --dry-run
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def ok(self) -> bool:
        """Everything mirrored: nothing failed and the pass was not stopped."""
        return not self.failed and self.stopped is None

    def summary(self) -> str:
        secs = self.seconds
        rate = self.bytes_sent / secs if secs > 0 else 0.0
        return (
            f"uploaded {self.uploaded}, deleted {self.deleted}, "
            + (f"moved {self.moved}, " if self.moved else "")
            + f"unchanged {self.unchanged + self.refreshed + self.adopted}, "
            f"failed {len(self.failed)}, "
            + (f"not sent {self.not_sent:,}, " if self.not_sent else "")
            + f"{human(self.bytes_sent)} in {secs:.2f}s ({human(rate)}/s)"
        )

    def outcome(self) -> str | None:
        """One line for a stopped pass: why, what it left undone, what it recorded; e.g.
        "server http://h:8765/ unreachable (connection refused): 4,269 files not sent;
        nothing recorded". None when the pass was not stopped."""
        if self.stopped is None:
            return None
        undone = []
        if self.not_sent:
            undone.append(_count(self.not_sent, "file", "files") + " not sent")
        if self.not_done:
            undone.append(_count(self.not_done, "deletion or move", "deletions or moves"))
            undone[-1] += " not made"
        done = self.uploaded + self.deleted + self.moved
        if done:
            recorded = f"the {_count(done, 'change', 'changes')} made before are recorded"
        else:
            recorded = "nothing recorded"
        left = ", ".join(undone) or "nothing to send, but the server was not checked"
        return f"{self.stopped}: {left}; {recorded}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


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
    #: ``verify --times``: same bytes, another mtime or exec bit ("path (why)").
    times: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.failed or self.times)


__all__ = ["Report", "VerifyReport", "human"]
