"""The daemon's offline side: paths that could not be sent (server down, 5xx), kept in the
manifest's outbox across restarts (written through the engine's recorder), when each is due
again (``RetryPolicy.later``), and whether the remote is reachable at all: while it is down
nothing is dispatched, and it is checked on with backoff (``syncd.retry.pings``) until it
answers; then the outbox is looked at again and every folder rescanned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from syncd.engine import Engine
from syncd.errors import (
    AuthError,
    RemoteError,
    Silent,
    SyncdError,
    TransientError,
    Unreachable,
    WrongProtocol,
)
from syncd.pool import Fatal
from syncd.retry import pings

log = logging.getLogger("syncd.daemon")  # (the name its log lines have always carried)

Key = tuple[int, str]  # (folder index, relative path)


class Outbox:
    def __init__(
        self,
        engine: Engine,
        touch: Callable[[Key, float], None],
        wake: Callable[[], None],
    ) -> None:
        """``touch``: look at a path again (the debouncer); ``wake``: the scheduler."""
        self.engine = engine
        self._touch = touch
        self._wake = wake
        self.keys: set[Key] = set()
        self._retry_at: dict[Key, float] = {}
        self._attempts: dict[Key, int] = {}
        #: when the remote was found down (None: it is reachable)
        self.down_since: float | None = None
        self.up = asyncio.Event()
        self.up.set()
        self._down = asyncio.Event()

    def _scope(self, key: Key) -> str:
        return self.engine.folders[key[0]].scope

    def load(self) -> None:
        """Paths left unsent by an earlier run (crash, reboot) are looked at again."""
        scopes = {ctx.scope: i for i, ctx in enumerate(self.engine.folders)}
        now = time.monotonic()
        for scope, rel, _since, dest in self.engine.manifest.outbox():
            if scope in scopes:
                key = (scopes[scope], rel)
                self.keys.add(key)
                self._touch(key, now)
                if dest is not None:  # a move: both ends are looked at again together
                    self._touch((scopes[scope], dest), now)

    def add(self, key: Key, dest: str | None) -> None:
        """``key`` waits to be sent (``dest``: a move's destination, replayed with it)."""
        if key not in self.keys:
            self.keys.add(key)
            self.engine.recorder.queued(self._scope(key), key[1], dest)

    def remove(self, key: Key) -> None:
        """``key`` needs sending no more (sent, or it turned out to need nothing)."""
        if key in self.keys:
            self.keys.discard(key)
            self.engine.recorder.unqueued(self._scope(key), key[1])

    def sent(self, key: Key) -> None:
        self._attempts.pop(key, None)
        self.remove(key)

    def retry_later(self, key: Key, dest: str | None, e: TransientError) -> None:
        """A transient failure: kept, and tried again after a backoff (or, when the server
        gave no answer at all, once a ping finds it back)."""
        self.add(key, dest)
        n = self._attempts[key] = self._attempts.get(key, 0) + 1
        if isinstance(e, Unreachable | Silent):  # no answer at all: down until a ping answers
            self.mark_down(e)
        else:
            delay = self.engine.policy.later(n, e.retry_after)
            self._retry_at[key] = time.monotonic() + delay
            log.warning("%s; trying again in %.0fs", e, delay)
        self._wake()

    def deadlines(self) -> Iterable[float]:
        return self._retry_at.values()

    def due(self, now: float) -> list[Key]:
        """The paths whose backoff is over (taken off the schedule)."""
        keys = [key for key, when in self._retry_at.items() if when <= now]
        for key in keys:
            del self._retry_at[key]
        return keys

    def mark_down(self, e: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.time()
            self.up.clear()
            self._down.set()
            why = self.engine.why_stopped(e) if isinstance(e, RemoteError) else str(e)
            log.error("%s. Watching on; changes are queued and sent when it is back", why)

    async def watch_remote(
        self, on_fatal: Callable[[Fatal], None], rescan_all: Callable[[], None]
    ) -> None:
        """While the remote is down, check on it with backoff; when it is back, send the
        outbox and rescan (a server that came back empty is filled again)."""
        while True:
            await self._down.wait()
            for delay in pings():
                await asyncio.sleep(delay)
                try:
                    await self.engine.remote.ping()
                    break
                except (AuthError, WrongProtocol) as e:
                    on_fatal(e)
                    return
                except SyncdError as e:
                    log.debug("remote still unreachable: %s", e)
            down_for = time.time() - (self.down_since or time.time())
            log.info(
                "remote reachable again after %.0fs; sending %d queued change(s)",
                down_for,
                len(self.keys),
            )
            self.down_since = None
            self._down.clear()
            self.up.set()
            now = time.monotonic()
            for key in self.keys:
                self._touch(key, now)
            rescan_all()


__all__ = ["Key", "Outbox"]
