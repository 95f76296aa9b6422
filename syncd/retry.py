"""The one retry policy: transient errors are retried with capped exponential backoff and
jitter (honouring Retry-After); everything else is raised at once. No remote retries on its own.

All of syncd's backoff is here: the tries of one request (``run``), a pass's first contact with
a server that cannot be reached (``reach``), the daemon's outbox (``later``) and its checks on
a remote that is down (``pings``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from syncd.errors import Silent, TransientError, Unreachable

log = logging.getLogger("syncd.retry")

T = TypeVar("T")

PING_FIRST = 1.0  # seconds before the first check of a remote that is down
PING_MAX = 10.0  # longest wait between two checks of a remote that is down
OUTBOX_SKIP = 3  # a path back in the outbox waits as after this many more tries...
OUTBOX_STEPS = 12  # ...and at most as after this many


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    base: float = 0.5  # seconds before the second try
    cap: float = 30.0  # longest wait between two tries
    #: called once per retry (the engine counts them in its metrics)
    on_retry: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        backoff = float(min(self.cap, self.base * 2 ** (attempt - 1)))
        backoff *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.cap * 10))
        return backoff

    async def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Call ``fn`` until it succeeds, a non-transient error is raised, or tries run out.

        ``fn`` is called afresh for every try, so it reopens its file each time.
        """
        attempt = 1
        while True:
            try:
                return await fn()
            except TransientError as e:
                if attempt >= self.attempts:
                    raise
                wait = self.delay(attempt, e.retry_after)
                self.on_retry()
                # An unreachable server is said once by the pass or the daemon, not per file.
                text = str(e)
                log.log(
                    logging.DEBUG if isinstance(e, Unreachable | Silent) else logging.INFO,
                    "%s; retry %d/%d in %.1fs",
                    text if text.startswith(what) else f"{what}: {text}",
                    attempt,
                    self.attempts - 1,
                    wait,
                    extra={"event": "retry", "result": "retry"},
                )
                await asyncio.sleep(wait)
                attempt += 1

    async def reach(self, what: Callable[[], Awaitable[T]]) -> T:
        """``what`` (a read), retried while the server cannot be reached at all, with this
        backoff but logged at debug level (the pass says it once); the last Unreachable or
        Silent is raised once the tries run out, any other error at once."""
        attempt = 1
        while True:
            try:
                return await what()
            except (Unreachable, Silent) as e:
                if attempt >= self.attempts:
                    raise
                wait = self.delay(attempt)
                log.debug("%s; retry %d/%d in %.1fs", e, attempt, self.attempts - 1, wait)
                await asyncio.sleep(wait)
                attempt += 1

    def later(self, tries: int, retry_after: float | None = None) -> float:
        """Seconds before a path in the daemon's outbox is tried again, after ``tries``
        failures there (each after the workers' own ``attempts``): longer than theirs."""
        return self.delay(min(tries + OUTBOX_SKIP, OUTBOX_STEPS), retry_after)


def pings() -> Iterator[float]:
    """The waits between checks on a remote that is down: 1, 2, 4, 8, then every 10 s."""
    delay = PING_FIRST
    while True:
        yield delay
        delay = min(delay * 2, PING_MAX)
