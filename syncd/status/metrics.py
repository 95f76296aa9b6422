"""Counters the status document cannot read from the daemon's state: retries, errors by kind,
upload durations, recent transfers, what is failing now.

One ``Metrics`` belongs to one engine (``Engine.metrics``) and is handed to whoever reports to
it (the retry policy, the status board). It imports nothing above the shared layer.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from syncd.types import Op, Problem

#: Upper bounds (seconds) of the upload duration histogram's buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


# --------------------------------------------------------------------------- metrics


class Histogram:
    """A Prometheus-style histogram: cumulative counts per upper bound, sum and count."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class Metrics:
    """Counters fed by one-line calls from the engine, the uploader and the retry policy.

    Also the daemon's error log: every problem is recorded with its time and kind, and stays
    *current* until the same path is mirrored, or a full rescan of its folder starts over.
    """

    def __init__(self) -> None:
        self.retries = 0
        self.errors_total: Counter[str] = Counter()
        self.upload_seconds = Histogram(DURATION_BUCKETS)
        self.last_transfer: float | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.errors: deque[dict[str, Any]] = deque(maxlen=100)
        self.failing: dict[str, dict[str, Any]] = {}
        self._kinds: dict[str, str] = {}

    # -- calls from the pipeline ------------------------------------------------------------
    def retry(self) -> None:
        """One more try of a transient failure (retry.py)."""
        self.retries += 1

    def error(self, kind: str, name: str) -> None:
        """A failure of ``kind`` for ``name`` ("remote_path/rel", or a folder's remote_path).

        Counted here; its reason is recorded when the problem reaches the daemon's report.
        """
        self.errors_total[kind] += 1
        if len(self._kinds) > 1000:  # one-shot passes never hand their problems to a board
            self._kinds.clear()
        self._kinds[name] = kind

    def done(self, folder: str, op: Op, outcome: str, started: float | None) -> None:
        """``op`` in ``folder`` (its remote_path) succeeded, having started at ``started``
        (``time.monotonic()``): ``outcome`` is uploaded, refreshed, adopted, deleted or moved."""
        name = f"{folder}/{op.rel}"
        self._resolve(name)
        if op.dest is not None:
            self._resolve(f"{folder}/{op.dest}")
        if outcome in ("refreshed", "adopted"):
            return  # nothing was transferred
        now = time.time()
        seconds = max(0.0, time.monotonic() - started) if started else 0.0
        if outcome == "uploaded":
            self.upload_seconds.observe(seconds)
        self.last_transfer = now
        self.recent.appendleft(
            {
                "time": now,
                "folder": folder,
                "path": op.rel,
                "op": outcome,
                "to": op.dest,
                "bytes": op.local.size if op.local is not None and outcome == "uploaded" else 0,
                "seconds": round(seconds, 3),
            }
        )

    def scanned(self, folder: str) -> None:
        """A full scan of ``folder`` (its remote_path) starts: what still fails is found again."""
        prefix = folder + "/"
        for name in [n for n in self.failing if n == folder or n.startswith(prefix)]:
            del self.failing[name]

    def problem(self, p: Problem) -> None:
        """A problem reached the daemon's report (see ``FailedLog``)."""
        kind = self._kinds.pop(p.path, None)
        if kind is None:  # found by a scan, not by a transfer: counted here
            kind = "local"
            self.errors_total[kind] += 1
        entry = {"time": time.time(), "name": p.path, "kind": kind, "reason": p.reason}
        self.errors.append(entry)
        self.failing[p.path] = entry
        if len(self.failing) > 10_000:
            del self.failing[next(iter(self.failing))]

    def _resolve(self, name: str) -> None:
        self.failing.pop(name, None)
        if self.failing:
            prefix = name + "/"  # a directory deleted or moved as a whole
            for n in [n for n in self.failing if n.startswith(prefix)]:
                del self.failing[n]
