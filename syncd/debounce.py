"""When has a path settled? Events coalesce per path (one entry however many events); a path
is due after ``quiet`` seconds without events *and* with the same size and mtime as at its last
event, or at the latest ``max_delay`` seconds after its first unsent event.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    first: float  # first event not yet sent (for max_delay)
    last: float  # latest event
    sig: object  # the path's (size, mtime) at the latest event, or None if absent


class Debouncer(Generic[K]):
    """Coalesces events per key. ``probe(key)`` returns a comparable signature of the path's
    current state (e.g. ``(size, mtime_ns)``, or None when it does not exist)."""

    def __init__(self, quiet: float, max_delay: float, probe: Callable[[K], object]) -> None:
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self.probe = probe
        self._entries: dict[K, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def touch(self, key: K, now: float) -> None:
        """Record an event for ``key``."""
        sig = self.probe(key)
        e = self._entries.get(key)
        if e is None:
            self._entries[key] = _Entry(now, now, sig)
        else:
            e.last = now
            e.sig = sig

    def keys(self) -> list[K]:
        return list(self._entries)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def next_deadline(self) -> float | None:
        """The earliest time at which some key may become due (None when empty)."""
        if not self._entries:
            return None
        return min(
            min(e.last + self.quiet, e.first + self.max_delay) for e in self._entries.values()
        )

    def pop_due(self, now: float) -> list[K]:
        """Keys that have settled (or waited max_delay), removed from the debouncer."""
        due: list[K] = []
        for key, e in list(self._entries.items()):
            overdue = now - e.first >= self.max_delay
            if not overdue and now - e.last < self.quiet:
                continue
            if not overdue:
                sig = self.probe(key)
                if sig != e.sig:
                    # Changed without an event (or the event is still on its way): wait again.
                    e.last = now
                    e.sig = sig
                    continue
            del self._entries[key]
            due.append(key)
        return due
