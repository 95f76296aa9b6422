"""``syncd run``: the engine with a watcher in front.

Phases: start the watchers (before anything else, so no change is missed), reconcile every
folder (the same plan as ``syncd sync``), then live: events settle in the debouncer, settled
paths become ops for the engine's workers. A rescan runs every ``rescan_interval`` and whenever
the watcher reports trouble. SIGTERM/SIGINT drain the transfers in flight for up to
``GRACE`` seconds; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence

from syncd.config import Config
from syncd.debounce import Debouncer
from syncd.engine import Engine
from syncd.errors import (
    AuthError,
    RemoteError,
    SyncdError,
    TransientError,
    WrongProtocol,
)
from syncd.live import Live
from syncd.outbox import Key, Outbox
from syncd.pool import Batch, Fatal, Job
from syncd.remotes.base import Versions
from syncd.report import Report
from syncd.retry import RetryPolicy
from syncd.signals import stop_signals
from syncd.status.board import StatusBoard
from syncd.status.control import ControlServer
from syncd.status.notify import Lifecycle
from syncd.status.web import StatusSite
from syncd.types import LocalFile
from syncd.uploader import FolderCtx
from syncd.watching import Watching

log = logging.getLogger("syncd.daemon")

GRACE = 10.0  # seconds in-flight transfers get to finish after the first signal


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        # Short in-worker retries: longer outages are handled by the outbox, so a worker is
        # never held for long by one path. The engine is live: its jobs report back here
        # (``changed``, ``retry_later``, ``done``: ``syncd.pool.LiveJobs``).
        self.engine = Engine(config, policy=RetryPolicy(attempts=3, cap=5.0), live=self)
        self.debouncer: Debouncer[Key] = Debouncer(
            config.sync.debounce, config.sync.max_delay, self._probe
        )
        self.report = Report()
        self.board = StatusBoard(self)
        self.notify = Lifecycle(self.board)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._rescan_now: set[int] = set()
        self.watching = Watching(
            self.engine.folders,
            self.debouncer,
            wake=self._wake.set,
            rescan=self._request_rescan,
            stopping=self._stopping,
            rescan_interval=config.sync.rescan_interval,
        )
        self.watchers = self.watching.watchers  # (the status board reads their state)
        self.ready = asyncio.Event()
        self.started_at = time.time()
        # Offline handling: paths that could not be sent, and whether the remote is reachable.
        self._outbox = Outbox(self.engine, self.debouncer.touch, self._wake.set)
        # Settled paths -> ops on the engine's workers.
        self.live = Live(
            self.engine,
            self._outbox,
            self.debouncer,
            self.report,
            wake=self._wake.set,
            rescan=self._request_rescan,
            stop=self._stopping.set,
            held=self.is_held,
        )
        # Paths a `syncd restore` is writing (the control socket's `restore`), by restore.
        self._holds: dict[object, set[Key]] = {}
        self._held: dict[int, Counter[str]] = {}  # folder -> held paths and their parents
        self._released = asyncio.Event()
        self._confirms: set[asyncio.Task[None]] = set()
        self.retention: str | None = None
        """What the remote says it keeps (``Versions.retention``), once asked; for status."""

    @property
    def folders(self) -> list[FolderCtx]:
        return self.engine.folders

    @property
    def outbox(self) -> set[Key]:
        """The paths waiting to be sent again (``syncd status``: queued)."""
        return self._outbox.keys

    @property
    def remote_down_since(self) -> float | None:
        """When the remote was found down (None: it is reachable)."""
        return self._outbox.down_since

    # -- LiveJobs: the engine's jobs report here ---------------------------------------------
    def changed(self, job: Job) -> None:
        self.live.changed(job)

    def retry_later(self, job: Job, e: TransientError) -> None:
        self._outbox.retry_later(self.live.key(job), job.op.dest, e)

    def done(self, job: Job) -> None:
        self.live.done(job)

    # -- life --------------------------------------------------------------------------------
    async def serve(self) -> int:
        """Run until a signal. Returns the exit code (0 after a clean stop)."""
        async with (
            self.engine,
            ControlServer(self.board, self.config.sync.state_dir),
            StatusSite(self.board, self.config.status.listen),  # ops: the status endpoint
            self.notify.running(),  # ops: sd_notify STATUS/WATCHDOG/STOPPING
        ):
            with stop_signals(self._on_signal):
                tasks = [
                    asyncio.create_task(self.watching.watch(i)) for i in range(len(self.folders))
                ]
                # The watches must be in place before the reconcile scan, or a change made
                # during the scan could be missed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*(w.started.wait() for w in self.watchers)), 10
                    )
                main = asyncio.create_task(self._main())
                stop = asyncio.create_task(self._stopping.wait())
                await asyncio.wait([main, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                for w in self.watchers:
                    w.stop()
                if not main.done():
                    main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await main
                await self._drain()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if self.engine.fatal is not None:
            log.error("stopped: %s", self.engine.fatal)
            return 1
        log.info("stopped cleanly")
        return 0

    async def _main(self) -> None:
        # Reconcile every folder, wait for it, then announce readiness and go live.
        self._outbox.load()
        remote_watch = asyncio.create_task(self._outbox.watch_remote(self._fatal, self._rescan_all))
        # A folder with nothing to do is not compared with the remote's listing before ready
        # (listing 100,000 files takes seconds): that check runs right after, and sends again
        # whatever the server lost meanwhile. A folder with work to do is checked first.
        first = [await self._reconcile(i, check_remote=None) for i in range(len(self.folders))]
        for b, _ in first:
            await b.wait()
        await self.engine.recorder.flush()
        self.ready.set()
        self.notify.ready()  # ops: sd_notify READY=1, only now that the first reconcile is done
        if self.remote_down_since is None:
            log.info(
                "ready: %d folder(s) mirrored to %s; watching for changes",
                len(self.folders),
                self.engine.remote.description,
            )
        else:
            log.info(
                "ready: watching %d folder(s); %d change(s) queued until %s can be reached",
                len(self.folders),
                len(self.outbox),
                self.engine.remote.description,
            )
        unchecked = [i for i, (_, checked) in enumerate(first) if not checked]
        try:
            await asyncio.gather(
                self._schedule(),
                self._rescans(),
                self._check_remote(unchecked),
                self._ask_retention(),
            )
        finally:
            remote_watch.cancel()

    async def _ask_retention(self) -> None:
        """Ask the remote once how long it keeps versions (``syncd status`` shows it; until
        then, and if it cannot say, status shows what the config alone tells)."""
        remote = self.engine.remote
        if not remote.features.versions or not isinstance(remote, Versions):
            return
        try:
            async with asyncio.timeout(30):
                self.retention = await remote.retention()
        except (SyncdError, TimeoutError) as e:
            log.debug("the remote did not say how long it keeps versions: %s", e)

    async def _check_remote(self, folders: list[int]) -> None:
        """After the start-up: does the server hold exactly the folder? What it lost is sent
        again, what it holds beyond the folder is deleted (under the guard)."""
        for i in folders:
            if self.remote_down_since is not None:
                return  # the rescans when it is back compare every folder
            try:
                # Found in sync with its rows at start-up, and the server unchanged since it
                # matched them: nothing to look at again (a million files are not walked twice).
                if await self.engine.view.unchanged(self.folders[i]):
                    continue
                await self._reconcile(i, check_remote=True)
            except (AuthError, WrongProtocol) as e:
                self._fatal(e)
                return
            except RemoteError as e:
                log.warning("could not compare %s with the server: %s", self.folders[i].root, e)

    def _fatal(self, e: Fatal) -> None:
        """The remote refused us, or does not speak its protocol: stop."""
        self.engine.fatal = e
        self._stopping.set()

    async def sync_now(self, *, force_delete: bool = False) -> Report:
        """Reconcile every folder with the server now (``syncd sync`` beside a running
        daemon): wait for every op and return what was done. ``force_delete`` releases the
        deletions the guard holds back."""
        report = Report()
        sent = self.engine.bytes_sent  # (live uploads meanwhile count too)
        batches = [
            (await self._reconcile(i, check_remote=True, report=report, force=force_delete))[0]
            for i in range(len(self.folders))
        ]
        for b in batches:
            await b.wait()
        await self.engine.recorder.flush()
        report.finished = time.monotonic()
        report.bytes_sent = self.engine.bytes_sent - sent
        mine = self.report  # the daemon's totals since start include this pass
        mine.uploaded += report.uploaded
        mine.deleted += report.deleted
        mine.moved += report.moved
        mine.refreshed += report.refreshed
        mine.adopted += report.adopted
        mine.failed += report.failed
        return report

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.warning("second %s: stopping at once", sig.name)
            self._force.set()
        else:
            log.info(
                "%s: finishing transfers in flight (up to %.0fs), then stopping", sig.name, GRACE
            )
            self.notify.stopping()  # ops: sd_notify STOPPING=1
            self._stopping.set()

    async def _drain(self) -> None:
        """Let transfers in flight finish (bounded), abort the rest; commit the manifest."""
        deadline = time.monotonic() + GRACE
        claims = self.live.claims
        while claims and time.monotonic() < deadline and not self._force.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), 0.05)
        if claims:
            log.warning("aborting %d transfer(s) still in flight", len(claims))
        await self.engine.stop_pool()
        await self.engine.recorder.flush()

    # -- watching ----------------------------------------------------------------------------
    def pending_keys(self) -> list[Key]:
        """Paths waiting to settle, deferred, or queued/running."""
        return [*self.debouncer.keys(), *self.live.deferred, *self.live.claims]

    def _probe(self, key: Key) -> object:
        i, rel = key
        try:
            st = os.lstat(os.path.join(self.folders[i].root, rel))
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_mode)

    def _request_rescan(self, i: int) -> None:
        self._rescan_now.add(i)
        self._wake.set()

    def _rescan_all(self) -> None:
        for i in range(len(self.folders)):
            self._request_rescan(i)

    # -- scheduling --------------------------------------------------------------------------
    async def _schedule(self) -> None:
        while True:
            up = self._outbox.up
            if not up.is_set():
                # The remote is down: events keep settling in the debouncer (one entry per
                # path), nothing is dispatched until the outbox's pings find it back.
                await up.wait()
                continue
            deadlines = [d for d in (self.debouncer.next_deadline(),) if d is not None]
            deadlines += self._outbox.deadlines()
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not up.is_set():
                continue
            now = time.monotonic()
            for key in self._outbox.due(now):
                self.debouncer.touch(key, now - self.debouncer.quiet)
            for i in sorted(self._rescan_now):
                if self._held.get(i):
                    continue  # a restore is writing into it: once it is done
                self._rescan_now.discard(i)
                await self._reconcile(i)
            due = self.debouncer.pop_due(time.monotonic())
            if due:
                await self.live.dispatch(due)

    async def _rescans(self) -> None:
        interval = self.config.sync.rescan_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self._rescan_all()

    async def _reconcile(
        self,
        i: int,
        check_remote: bool | None = True,
        *,
        report: Report | None = None,
        force: bool = False,
    ) -> tuple[Batch, bool]:
        """A full scan of folder ``i``, planned against the server (``Engine.plan``'s
        ``server``); its ops go to the workers. Returns their batch, and whether the server
        was checked. Once every op is done, the mirror is confirmed (``ServerView.confirmed``)."""
        while self._held.get(i):  # a restore is writing into it: plan once it is done
            self._released.clear()
            await self._released.wait()
        ctx = self.folders[i]
        report = report if report is not None else self.report
        batch = Batch()
        plan = await self.engine.plan(ctx, report, server=check_remote, force=force)
        if plan is None:
            return batch, True
        if not plan.empty:
            self.engine.apply_plan(ctx, plan)
            await self.live.submit_plan(i, plan, batch, report)
        if plan.remote_checked and not plan.held and not plan.problems:
            self._confirm_later(i, batch)
        return batch, plan.remote_checked

    def _confirm_later(self, i: int, batch: Batch) -> None:
        async def confirm() -> None:
            await batch.wait()
            await self.engine.view.confirmed(self.folders[i], ok=batch.failed == 0)

        task = asyncio.create_task(confirm())
        self._confirms.add(task)
        task.add_done_callback(self._confirms.discard)

    # -- restores: `syncd restore` beside a running daemon ---------------------------------
    def is_held(self, i: int, rel: str) -> bool:
        """Is ``rel`` of folder ``i`` being restored, or a directory above or below such a
        path? (Its events wait, and so do the folder's whole looks.)"""
        held = self._held.get(i)
        if not held:
            return False
        if rel in held:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:n]) in held for n in range(1, len(parts)))

    def _folder(self, scope: str) -> int:
        for i, ctx in enumerate(self.folders):
            if ctx.scope == scope:
                return i
        raise SyncdError(f"this daemon mirrors no folder {scope!r}; is it the same config?")

    async def hold_paths(self, owner: object, scope: str, rels: Sequence[str]) -> None:
        """``syncd restore`` is about to write ``rels`` of the folder ``scope``: their events
        wait (and the folder's rescans) until it records them and ``release_paths``. Waits
        for the start-up reconcile and for ops on those paths already running (30 s at most)."""
        await self.ready.wait()
        i = self._folder(scope)
        keys = {(i, rel) for rel in rels} - self._holds.get(owner, set())
        self._holds.setdefault(owner, set()).update(keys)
        held = self._held.setdefault(i, Counter())
        for _, rel in keys:
            parts = rel.split("/")
            held.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
        deadline = time.monotonic() + 30
        # (the claims signal nothing when one ends: polled, for these few seconds at most)
        while any(k in self.live.claims for k in keys) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        log.debug("restore: holding %d path(s) of %s while they are written", len(keys), scope)

    async def record_restored(
        self, owner: object, scope: str, files: Sequence[tuple[LocalFile, str]]
    ) -> int:
        """The files ``syncd restore`` wrote, as it stat'ed them, and their sha-256 (which the
        server holds at their paths): recorded as sent, unless a file changed since (then it
        is sent like any change). Returns how many were recorded."""
        i = self._folder(scope)
        ctx = self.folders[i]
        n = 0
        for given, sha in files:
            if (i, given.rel) not in self._holds.get(owner, set()):
                continue
            now = ctx.stat(given.rel)
            if now is not None and now.same == given.same:
                self.engine.recorder.sent(ctx.scope, now, sha)
                n += 1
        if n:
            self.engine.recorder.running()
        return n

    async def release_paths(self, owner: object) -> None:
        """The restore is done (or gone): its paths are looked at again, as any change (the
        ones it recorded are found unchanged), and the folders' rescans go on."""
        keys = self._holds.pop(owner, set())
        for i, rel in keys:
            held = self._held.get(i)
            if held is None:
                continue
            parts = rel.split("/")
            held.subtract("/".join(parts[:n]) for n in range(1, len(parts) + 1))
            for k in [k for k, c in held.items() if c <= 0]:
                del held[k]
            if not held:
                del self._held[i]
        if not keys:
            return
        now = time.monotonic()
        for key in [k for k in self.live.deferred if not self.is_held(*k)]:
            self.live.deferred.discard(key)
            self.debouncer.touch(key, now)
        self._released.set()
        self._wake.set()
        log.info("restore: released %d path(s)", len(keys))
        await self.engine.recorder.flush()

    # -- status ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        return self.board.snapshot()


async def run(config: Config) -> int:
    return await Daemon(config).serve()


__all__ = ["Daemon", "run"]
