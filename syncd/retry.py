"""The one retry policy: transient errors are retried with capped exponential backoff and
jitter (honouring Retry-After); everything else is raised at once. No remote retries on its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from syncd.errors import Silent, TransientError, Unreachable

log = logging.getLogger("syncd.retry")

T = TypeVar("T")


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
