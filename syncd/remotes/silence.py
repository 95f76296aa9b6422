"""``silence_limit``: a request with a body is bounded by seconds of silence (no byte of its
body taken, no answer), not by its length."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


@asynccontextmanager
async def silence_limit(signal: Callable[[], object], seconds: float) -> AsyncIterator[None]:
    """Bound what runs inside (one request) by ``seconds`` of silence: TimeoutError once, for
    ``seconds``, ``signal()`` stayed the same (a body's progress, ``_Body.signal``: no byte of
    the body accepted by the transport, nor by the server as the kernel's send queue drains)
    and no answer came. A slow server that is still reading never trips it, however long the
    body takes (unlike aiohttp's ``sock_read``, which also runs while the body is being sent:
    aiohttp issue 7149). Our own pauses for ``bwlimit`` count as progress."""
    loop = asyncio.get_running_loop()
    tick = min(1.0, seconds / 4)
    async with asyncio.timeout(seconds) as limit:

        async def watch() -> None:
            last = signal()
            while True:
                await asyncio.sleep(tick)
                now = signal()
                if now != last:
                    last = now
                    limit.reschedule(loop.time() + seconds)

        watcher = asyncio.create_task(watch())
        try:
            yield
        finally:
            watcher.cancel()
