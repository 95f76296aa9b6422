"""What the server holds (``Server``, for the planner), which mirror it is, and the mark a
complete pass leaves there: the passes' side of the server, apart from sending.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from syncd.errors import (
    AuthError,
    PermanentError,
    RemoteError,
    Silent,
    TransientError,
    Unreachable,
    WrongProtocol,
)
from syncd.manifest import Manifest
from syncd.planner import Server
from syncd.pool import Stops
from syncd.recorder import Recorder
from syncd.remotes.base import Marker, Remote, Sizer, StateToken
from syncd.retry import RetryPolicy
from syncd.types import RemoteEntry
from syncd.uploader import FolderCtx

log = logging.getLogger("syncd.engine")  # (the name its log lines have always carried)

T = TypeVar("T")

UNLISTED_MAX = 1000  # dot files a listing left out that are asked for one by one, per pass


class ServerView:
    """``remote``: the remote, opened on first use (a pass with nothing to send never imports
    aiohttp)."""

    def __init__(
        self, remote: Callable[[], Remote], recorder: Recorder, policy: RetryPolicy, stops: Stops
    ) -> None:
        self.remote = remote
        self.recorder = recorder
        self.manifest: Manifest = recorder.manifest  # (read only: the recorder writes)
        self.policy = policy
        self.stops = stops
        self._probed = False

    async def look(self, ctx: FolderCtx) -> Server | None:
        """What the server holds under the folder's remote path, or None where that is not
        needed or cannot be known: the remote cannot list, it could not be reached, or its
        state token says nothing changed since the rows were last confirmed.

        Also ties the folder's rows to the mirror (the marker the first sync leaves on the
        server): the same mirror under another URL spelling keeps its rows.

        One-shot (``sync``): this is the pass's first contact with the server, so a server
        that cannot be reached is retried here (quietly), and if it stays unreachable, or
        refuses the credentials, or does not speak the protocol, the pass stops (``stopped``)
        instead of failing every file in turn. The daemon plans from the manifest instead.
        """
        remote = self.remote()
        if not remote.features.lists:
            if self.stops.one_shot and not self._probed:
                self._probed = True
                await self._first_contact(remote.ping, any_answer=True)
            return None

        async def read() -> Server | None:
            known = self.manifest.mirror(ctx.scope)
            if await self._token_unchanged(ctx, known):
                return None  # nothing changed on the server since it matched the rows
            first_contact = await self._identify(ctx, known)
            entries = {e.path: e async for e in remote.list(ctx.remote_path)}
            await self._unlisted(ctx, entries)
            return Server(entries, first_contact=first_contact and bool(entries))

        try:
            if self.stops.one_shot:
                self._probed = True
                return await self._first_contact(read)
            return await read()
        except TransientError as e:
            log.warning("could not list %s (%s); planning from the manifest", ctx.remote_path, e)
            return None

    async def unchanged(self, ctx: FolderCtx) -> bool:
        """Does the server's state token say it holds what it held when the rows last matched
        it? (False where it cannot say.) The daemon asks this after its start-up: a folder
        found in sync with its rows then needs no second look."""
        try:
            return await self._token_unchanged(ctx, self.manifest.mirror(ctx.scope))
        except RemoteError:
            return False

    async def _token_unchanged(self, ctx: FolderCtx, known: tuple[str, str | None] | None) -> bool:
        remote = self.remote()
        if known is None or known[1] is None or not remote.features.state_token:
            return False
        return await cast(StateToken, remote).state(ctx.remote_path) == known[1]

    async def _first_contact(
        self, fn: Callable[[], Awaitable[T]], *, any_answer: bool = False
    ) -> T | None:
        """``fn`` (a read), retried while the server cannot be reached at all, with the
        retry policy's backoff but logged at debug level. What stops the pass is kept in
        ``unreachable``/``fatal`` (None is returned); other errors reach the caller, but a
        PermanentError when ``any_answer`` (a ping: any answer means the server is there)."""
        try:
            return await self.policy.reach(fn)
        except (Unreachable, Silent) as e:
            self.stops.unreachable = e
            return None
        except (AuthError, WrongProtocol) as e:
            self.stops.fatal = e
            return None
        except PermanentError as e:
            if not any_answer:
                raise
            log.debug("%s: %s", self.remote().description, e)
            return None

    async def _unlisted(self, ctx: FolderCtx, entries: dict[str, RemoteEntry]) -> None:
        """Rows of dot files the listing left out, asked for one by one where the remote can
        say (nginx hides dot files from PROPFIND): held, they are not "lost"."""
        remote = self.remote()
        if not remote.features.size_of:
            return
        hidden = [
            row
            for rel, row in self.manifest.rows(ctx.scope).items()
            if rel not in entries and any(part.startswith(".") for part in rel.split("/"))
        ]
        for row in hidden[:UNLISTED_MAX]:
            size = await cast(Sizer, remote).size_of(ctx.remote(row.rel))
            if size is not None:
                entries[row.rel] = RemoteEntry(row.rel, size, None)

    async def _identify(self, ctx: FolderCtx, known: tuple[str, str | None] | None) -> bool:
        """Read the mirror marker; adopt another scope's rows for the same mirror. Returns
        whether this is a first contact: no marker on the server, and no mirror recorded for
        this folder (a new mirror, or one made by a syncd older than the marker). Its marker
        is written once a pass left nothing undone (``confirmed``), so a first contact whose
        extra files are held stays one until the user confirms with ``--force-delete``."""
        remote = self.remote()
        if not remote.features.mark:
            return False
        mirror = await cast(Marker, remote).read_marker(ctx.remote_path)
        ctx.marked = mirror is not None
        if mirror is None:
            if known is not None:
                ctx.mirror = known[0]  # the server lost its marker: written again after the pass
                return False
            ctx.mirror = None
            return True
        ctx.mirror = mirror
        if known is not None and known[0] == mirror:
            return False
        other = self.manifest.scope_of_mirror(mirror)
        if other is not None and other != ctx.scope:
            n = self.recorder.rekey(other, ctx.scope)
            log.info(
                "%s: the same mirror as %s (another URL spelling); its %d manifest rows apply",
                ctx.remote_path,
                other.split("#", 1)[0],
                n,
            )
        else:
            # A mirror this state dir does not know: its own lost manifest, or another
            # machine's folder. Nothing there is deleted until the user confirms.
            log.warning(
                "%s: the server's directory is a mirror this state dir does not know (a lost "
                "manifest, or another machine's folder); what it holds beyond this folder is "
                "kept until you confirm",
                ctx.remote_path,
            )
            return True
        self.recorder.mirror(ctx.scope, mirror)
        return False

    async def confirmed(self, ctx: FolderCtx, *, ok: bool) -> None:
        """After a pass that planned against the server: with nothing left undone (``ok``),
        write the marker where there is none, and record the server's state token, so that
        the next pass trusts the rows until the server changes. Otherwise forget the token."""
        known = self.manifest.mirror(ctx.scope)
        if not ok:
            if known is not None and known[1] is not None:
                self.recorder.mirror(ctx.scope, known[0], None)
            return
        remote = self.remote()
        mirror = ctx.mirror or (known[0] if known is not None else None)
        try:
            # (``marked`` is None when the server was not listed: its token had not changed
            # since a pass that left the marker there.)
            if remote.features.mark and (mirror is None or ctx.marked is False):
                mirror = mirror or uuid.uuid4().hex
                # Recorded (and committed) before it is on the server: a rescan that reads the
                # marker meanwhile (the daemon's) finds its own mirror, not one "this state dir
                # does not know".
                self.recorder.mirror(ctx.scope, mirror, None)
                await self.recorder.flush()
                await cast(Marker, remote).write_marker(ctx.remote_path, mirror)
                ctx.marked = True
            token = (
                await cast(StateToken, remote).state(ctx.remote_path)
                if remote.features.state_token
                else None
            )
        except RemoteError as e:
            log.warning("%s: could not mark the mirror on the server: %s", ctx.remote_path, e)
            return
        if mirror is not None:
            ctx.mirror = mirror
            self.recorder.mirror(ctx.scope, mirror, token)


__all__ = ["ServerView"]
