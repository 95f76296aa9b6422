"""``syncd run``: the engine with a watcher in front.

Phases: start the watchers (before anything else, so no change is missed), reconcile every
folder (the same plan as ``syncd sync``), then live: events settle in the debouncer, settled
paths become ops for the engine's workers. A rescan runs every ``rescan_interval`` and whenever
the watcher reports trouble. SIGTERM/SIGINT drain the transfers in flight for up to
``GRACE`` seconds; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator

import watchfiles

from syncd.config import Config
from syncd.debounce import Debouncer
from syncd.engine import Batch, Engine, Job, Report
from syncd.errors import (
    AuthError,
    RemoteError,
    Silent,
    SyncdError,
    TransientError,
    Unreachable,
    WrongProtocol,
)
from syncd.planner import Looked, Plan
from syncd.retry import RetryPolicy
from syncd.scanner import FolderUnavailable
from syncd.status.board import StatusBoard
from syncd.status.control import ControlServer
from syncd.status.notify import Lifecycle
from syncd.status.web import StatusSite
from syncd.types import LocalFile, Op, Problem
from syncd.uploader import FolderCtx
from syncd.watcher import FolderWatcher, UndecodableName

log = logging.getLogger("syncd.daemon")

GRACE = 10.0  # seconds in-flight transfers get to finish after the first signal
ROOT_CHECK = 2.0  # seconds between checks of a folder that is unavailable
PING_MAX = 10.0  # longest wait between two checks of a remote that is down
DELETE_WINDOW = 60.0  # seconds: live deletions this close together count as one for max_delete
HELD_RECHECK = 5.0  # seconds between whole rescans of a held folder that files come back to

Key = tuple[int, str]  # (folder index, relative path)


class Daemon:
    def __init__(self, config: Config, *, engine: Engine | None = None) -> None:
        self.config = config
        # Short in-worker retries: longer outages are handled by the outbox, so a worker is
        # never held for long by one path.
        self.engine = engine or Engine(config, policy=RetryPolicy(attempts=3, cap=5.0))
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
        self._claims: dict[tuple[int, str], Job] = {}
        self.watchers = [FolderWatcher(ctx.root, self._ignorer(ctx)) for ctx in self.engine.folders]
        self._deferred: set[Key] = set()
        self.ready = asyncio.Event()
        self.started_at = time.time()
        # Offline handling: paths that could not be sent (persisted in the manifest's outbox),
        # when each is due again, and whether the remote is reachable at all.
        self.outbox: set[Key] = set()
        self._retry_at: dict[Key, float] = {}
        self._attempts: dict[Key, int] = {}
        self.remote_down_since: float | None = None
        self._undecodable: set[str] = set()  # names watchfiles could not report, warned once
        self._up = asyncio.Event()
        self._up.set()
        self._down = asyncio.Event()
        # The deletion guard: folders whose deletions are held (until `sync --force-delete`),
        # and (when, how many) deletions the live path made recently.
        self._held_scopes: set[str] = set()  # loaded from the manifest at the start
        self._held_rels: dict[str, set[str]] = {}  # which paths live batches held, per scope
        self._deleted: collections.deque[tuple[float, int]] = collections.deque()
        self._confirms: set[asyncio.Task[None]] = set()
        self._recheck_at = [0.0] * len(self.engine.folders)  # per folder: see HELD_RECHECK

    @property
    def folders(self) -> list[FolderCtx]:
        return self.engine.folders

    # -- life --------------------------------------------------------------------------------
    async def serve(self) -> int:
        """Run until a signal. Returns the exit code (0 after a clean stop)."""
        async with (
            self.engine,
            ControlServer(self.board, self.config.sync.state_dir),
            StatusSite(self.board, self.config.status.listen),  # ops: the status endpoint
            self.notify.running(),  # ops: sd_notify STATUS/WATCHDOG/STOPPING
        ):
            with self._signals():
                tasks = [asyncio.create_task(self._watch(i)) for i in range(len(self.folders))]
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
        self._load_outbox()
        self._held_scopes = {scope for scope, *_ in self.engine.manifest.held()}
        remote_watch = asyncio.create_task(self._watch_remote())
        # A folder with nothing to do is not compared with the remote's listing before ready
        # (listing 100,000 files takes seconds): that check runs right after, and sends again
        # whatever the server lost meanwhile. A folder with work to do is checked first.
        first = [await self._reconcile(i, check_remote=None) for i in range(len(self.folders))]
        for b, _ in first:
            await b.wait()
        await self.engine.manifest.aflush()
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
            await asyncio.gather(self._schedule(), self._rescans(), self._check_remote(unchecked))
        finally:
            remote_watch.cancel()

    async def _check_remote(self, folders: list[int]) -> None:
        """After the start-up: does the server hold exactly the folder? What it lost is sent
        again, what it holds beyond the folder is deleted (under the guard)."""
        for i in folders:
            if self.remote_down_since is not None:
                return  # the rescans when it is back compare every folder
            try:
                await self._reconcile(i, check_remote=True)
            except (AuthError, WrongProtocol) as e:
                self.engine.fatal = e
                self._stopping.set()
                return
            except RemoteError as e:
                log.warning("could not compare %s with the server: %s", self.folders[i].root, e)

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
        await self.engine.manifest.aflush()
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

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        sigs = [signal.SIGINT, signal.SIGTERM]
        installed = []
        for sig in sigs:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

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
        while self._claims and time.monotonic() < deadline and not self._force.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), 0.05)
        if self._claims:
            log.warning("aborting %d transfer(s) still in flight", len(self._claims))
        await self.engine.stop_pool()
        await self.engine.manifest.aflush()

    # -- watching ----------------------------------------------------------------------------
    @staticmethod
    def _ignorer(ctx: FolderCtx) -> Callable[[str, bool], bool]:
        # Looked up at each call: the rules are reloaded when .syncdignore changes.
        return lambda rel, is_dir: ctx.scanner.ignorer.ignored(rel, is_dir)

    def pending_keys(self) -> list[Key]:
        """Paths waiting to settle, deferred, or queued/running."""
        return [*self.debouncer.keys(), *self._deferred, *self._claims]

    async def _watch(self, i: int) -> None:
        """Keep folder ``i`` watched: restart (and rescan) when the watch breaks, the folder
        disappears and comes back, or is replaced by another directory."""
        ctx = self.folders[i]
        w = self.watchers[i]
        unavailable = False
        while not self._stopping.is_set():
            try:
                ctx.scanner.check_root()
                ident = _identity(ctx.root)
            except (FolderUnavailable, OSError) as e:
                if not unavailable:
                    log.error("folder %s: %s; waiting for it to come back", ctx.root, e)
                unavailable = True
                w.state = f"folder unavailable: {e}"
                w.started.set()
                await self._sleep_or_stop(ROOT_CHECK)
                continue
            if unavailable:
                log.info("folder %s is back; rescanning", ctx.root)
                unavailable = False
                self._request_rescan(i)
            try:
                async for batch in w.events():
                    self._on_events(i, batch)
                    if _identity(ctx.root) != ident:
                        log.warning("folder %s was replaced; watching it again", ctx.root)
                        break
            except UndecodableName as e:  # once per name: the scanner names it too
                if e.detail not in self._undecodable:
                    self._undecodable.add(e.detail)
                    log.warning("%s", e)
            except Exception as e:  # the watcher broke: say so, rescan, start again
                log.error("watching %s failed: %s; rescanning and watching again", ctx.root, e)
            if self._stopping.is_set():
                return
            w.restarts += 1
            w.state = "restarting"
            self._request_rescan(i)
            w.stop_event = asyncio.Event()
            await self._sleep_or_stop(0.2)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _on_events(self, i: int, batch: list[tuple[watchfiles.Change, str]]) -> None:
        if not batch:
            return
        now = time.monotonic()
        for change, rel in batch:
            if rel == "":
                # The folder itself was deleted, replaced or re-created: rescan it.
                self._request_rescan(i)
                if change == watchfiles.Change.deleted:
                    self.watchers[i].stop()  # watch again when it is back
                continue
            if rel == ".syncdignore":
                self._request_rescan(i)
            self.debouncer.touch((i, rel), now)
        self._wake.set()

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

    # -- scheduling --------------------------------------------------------------------------
    async def _schedule(self) -> None:
        while True:
            if not self._up.is_set():
                # The remote is down: events keep settling in the debouncer (one entry per
                # path), nothing is dispatched until _watch_remote sees it back.
                await self._up.wait()
                continue
            deadlines = [d for d in (self.debouncer.next_deadline(),) if d is not None]
            deadlines += self._retry_at.values()
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not self._up.is_set():
                continue
            now = time.monotonic()
            for key, when in list(self._retry_at.items()):
                if when <= now:
                    del self._retry_at[key]
                    self.debouncer.touch(key, now - self.debouncer.quiet)
            for i in sorted(self._rescan_now):
                self._rescan_now.discard(i)
                await self._reconcile(i)
            due = self.debouncer.pop_due(time.monotonic())
            if due:
                await self._dispatch(due)

    # -- offline: the outbox and the remote's health -------------------------------------------
    def _load_outbox(self) -> None:
        """Paths left unsent by an earlier run (crash, reboot) are looked at again."""
        scopes = {ctx.scope: i for i, ctx in enumerate(self.folders)}
        now = time.monotonic()
        for scope, rel, _since, dest in self.engine.manifest.outbox():
            if scope in scopes:
                key = (scopes[scope], rel)
                self.outbox.add(key)
                self.debouncer.touch(key, now)
                if dest is not None:  # a move: both ends are looked at again together
                    self.debouncer.touch((scopes[scope], dest), now)

    def _on_retry(self, job: Job, e: TransientError) -> None:
        key = (self._index(job.ctx), job.op.rel)
        if key not in self.outbox:
            self.outbox.add(key)
            self.engine.manifest.outbox_add(job.ctx.scope, job.op.rel, job.op.dest)
        n = self._attempts[key] = self._attempts.get(key, 0) + 1
        if isinstance(e, Unreachable | Silent):  # no answer at all: down until a ping answers
            self._mark_down(e)
        else:
            delay = self.engine.policy.delay(min(n + 3, 12), e.retry_after)
            self._retry_at[key] = time.monotonic() + delay
            log.warning("%s; trying again in %.0fs", e, delay)
        self._wake.set()

    def _mark_down(self, e: Exception) -> None:
        if self.remote_down_since is None:
            self.remote_down_since = time.time()
            self._up.clear()
            self._down.set()
            why = self.engine.why_stopped(e) if isinstance(e, RemoteError) else str(e)
            log.error("%s. Watching on; changes are queued and sent when it is back", why)

    async def _watch_remote(self) -> None:
        """While the remote is down, check on it with backoff; when it is back, send the
        outbox and rescan (a server that came back empty is filled again)."""
        while True:
            await self._down.wait()
            delay = 1.0
            while True:
                await asyncio.sleep(delay)
                try:
                    await self.engine.remote.ping()
                    break
                except (AuthError, WrongProtocol) as e:
                    self.engine.fatal = e
                    self._stopping.set()
                    return
                except SyncdError as e:
                    log.debug("remote still unreachable: %s", e)
                    delay = min(delay * 2, PING_MAX)
            down_for = time.time() - (self.remote_down_since or time.time())
            log.info(
                "remote reachable again after %.0fs; sending %d queued change(s)",
                down_for,
                len(self.outbox),
            )
            self.remote_down_since = None
            self._down.clear()
            self._up.set()
            now = time.monotonic()
            for key in self.outbox:
                self.debouncer.touch(key, now)
            for i in range(len(self.folders)):
                self._request_rescan(i)

    async def _rescans(self) -> None:
        interval = self.config.sync.rescan_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            for i in range(len(self.folders)):
                self._request_rescan(i)

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
        was checked. Once every op is done, the mirror is confirmed (``Engine.confirmed``)."""
        ctx = self.folders[i]
        report = report if report is not None else self.report
        batch = Batch()
        plan = await self.engine.plan(ctx, report, server=check_remote, force=force)
        if plan is None:
            return batch, True
        if plan.held or ctx.scope in self._held_scopes:
            await self.engine.manifest.aflush()  # held, or released: `syncd status` says so
        self._held_scopes.discard(ctx.scope)
        self._held_rels.pop(ctx.scope, None)  # a whole look decides afresh
        if plan.held:
            self._held_scopes.add(ctx.scope)
            self._held_rels[ctx.scope] = set(plan.held_rels)
        if not plan.empty:
            self.engine.apply_plan(ctx, plan)
            await self._submit_plan(i, plan, batch, report)
        if plan.remote_checked and not plan.held and not plan.problems:
            self._confirm_later(i, batch)
        return batch, plan.remote_checked

    def _confirm_later(self, i: int, batch: Batch) -> None:
        async def confirm() -> None:
            await batch.wait()
            await self.engine.confirmed(self.folders[i], ok=batch.failed == 0)

        task = asyncio.create_task(confirm())
        self._confirms.add(task)
        task.add_done_callback(self._confirms.discard)

    async def _submit_plan(
        self, i: int, plan: Plan, batch: Batch | None = None, report: Report | None = None
    ) -> None:
        """Frees first (deletes, moves), then uploads: an upload that needs a path a free is
        still working on waits for it (``_busy``) and is looked at again once it is done."""
        for op in plan.ops:
            await self._submit(i, op, batch, report)

    def _busy(self, i: int, rel: str) -> bool:
        """Is an op for ``rel``, an ancestor or a descendant of it already queued or running?"""
        if (i, rel) in self._claims:
            return True
        parts = rel.split("/")
        for n in range(1, len(parts)):
            if (i, "/".join(parts[:n])) in self._claims:
                return True
        prefix = rel + "/"
        return any(ci == i and r.startswith(prefix) for ci, r in self._claims)

    async def _submit(
        self, i: int, op: Op, batch: Batch | None = None, report: Report | None = None
    ) -> None:
        key = (i, op.rel)
        if self._busy(i, op.rel) or (op.dest is not None and self._busy(i, op.dest)):
            self._deferred.add(key)  # looked at again once the op in the way is done
            return
        if self.remote_down_since is not None:
            # The server is known to be down: straight to the outbox (sent when it is back),
            # not through the retry policy file by file.
            if key not in self.outbox:
                self.outbox.add(key)
                self.engine.manifest.outbox_add(self.folders[i].scope, op.rel, op.dest)
            return
        job = Job(
            self.folders[i],
            op,
            report if report is not None else self.report,
            batch,
            on_changed=self._on_changed,
            on_done=self._on_done,
            on_retry=self._on_retry,
        )
        self._claims[key] = job
        if op.dest is not None:
            self._claims[(i, op.dest)] = job
        if batch is not None:
            batch.add()
        await self.engine.submit(job)  # once fatal is set, the workers leave it undone

    def _index(self, ctx: FolderCtx) -> int:
        return self.folders.index(ctx)

    def _on_done(self, job: Job) -> None:
        i = self._index(job.ctx)
        key = (i, job.op.rel)
        if job.ok:
            self._attempts.pop(key, None)
            if key in self.outbox:
                self.outbox.discard(key)
                self.engine.manifest.outbox_remove(job.ctx.scope, job.op.rel)
        self._claims.pop((i, job.op.rel), None)
        if job.op.dest is not None:
            self._claims.pop((i, job.op.dest), None)
        if self.engine.fatal is not None:
            self._stopping.set()
        if self._deferred:
            now = time.monotonic()
            for key in self._deferred:
                self.debouncer.touch(key, now)
            self._deferred.clear()
            self._wake.set()

    def _on_changed(self, job: Job) -> None:
        self.debouncer.touch((self._index(job.ctx), job.op.rel), time.monotonic())
        self._wake.set()

    async def _dispatch(self, due: list[Key]) -> None:
        """Turn settled paths into ops: uploads, deletes, directory scans, moves."""
        by_folder: dict[int, list[str]] = {}
        for i, rel in due:
            by_folder.setdefault(i, []).append(rel)
        for i, rels in by_folder.items():
            await self._dispatch_folder(i, rels)

    async def _dispatch_folder(self, i: int, rels: list[str]) -> None:
        """Look at the settled paths of folder ``i`` (a directory that appeared is scanned; a
        path that is gone stands for all that was below it) and plan them with the one
        planner, the guard included: a live mass delete is held exactly as a pass holds it."""
        ctx = self.folders[i]
        try:
            ctx.scanner.check_root()
        except FolderUnavailable as e:
            log.error("folder %s: %s; nothing sent, nothing deleted", ctx.remote_path, e)
            return
        ignored = ctx.scanner.ignorer.ignored
        files: dict[str, LocalFile] = {}
        under: list[str] = []
        incomplete: list[str] = []
        for rel in rels:
            if self._busy(i, rel):
                self._deferred.add((i, rel))
                continue
            under.append(rel)
            st = _lstat_exact(ctx, rel)
            if st is None:
                continue  # gone: the rows at and below it are the planner's to judge
            if stat.S_ISDIR(st.st_mode):
                if ignored(rel, True):
                    continue
                # A directory appeared (or changed): its files may have no events of their own.
                try:
                    scan = await asyncio.to_thread(ctx.scanner.scan, rel)
                except FolderUnavailable:
                    incomplete.append(rel)
                    continue
                # ops: named like the engine's problems ("remote_path/rel"), for `syncd status`
                self.report.failed += [Problem(ctx.remote(p.path), p.reason) for p in scan.problems]
                files.update(scan.files)
                incomplete += scan.incomplete
            elif (lf := ctx.scanner.look(rel, st)) is not None:  # judged as a scan judges it
                files[rel] = lf
        if not under:
            return
        looked = Looked(files, under, incomplete, folder_empty=_empty(ctx))
        plan = self.engine.planner(
            ctx,
            looked,
            held=ctx.scope in self._held_scopes,
            recent_deletes=self._recent_deletes(),
            held_rels=self._held_rels.get(ctx.scope, set()),
        )
        if ctx.scope in self._held_scopes and files and self._recheck_at[i] <= time.monotonic():
            # Files came back into a folder whose deletions are held (a restore): the whole
            # folder is planned again, so the hold counts only what is still missing.
            self._recheck_at[i] = time.monotonic() + HELD_RECHECK
            self._request_rescan(i)
        if plan.held:
            self._held_scopes.add(ctx.scope)
            self._held_rels.setdefault(ctx.scope, set()).update(plan.held_rels)
            self.engine.record_hold(ctx, plan, whole=False)
            self.engine.report_held(ctx, plan, self.report)
            await self.engine.manifest.aflush()  # `syncd status` reads the hold at once
        if plan.deleting:
            self._deleted.append((time.monotonic(), plan.deleting))
        await self._submit_plan(i, plan)
        # Outbox entries that turned out to need nothing (already sent, or gone) are done.
        handled = {op.rel for op in plan.ops} | {op.dest for op in plan.ops if op.dest}
        for rel in rels:
            key = (i, rel)
            if key in self.outbox and rel not in handled and key not in self._deferred:
                self.outbox.discard(key)
                self.engine.manifest.outbox_remove(ctx.scope, rel)

    def _recent_deletes(self) -> int:
        """Deletions the live path made in the last DELETE_WINDOW seconds: they count toward
        ``max_delete`` with the next batch's, so a mass delete arriving in pieces is held."""
        cutoff = time.monotonic() - DELETE_WINDOW
        while self._deleted and self._deleted[0][0] < cutoff:
            self._deleted.popleft()
        return sum(n for _, n in self._deleted)

    # -- status ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        return self.board.snapshot()


def _empty(ctx: FolderCtx) -> bool:
    """Does the folder hold nothing that is mirrored (it was emptied, or a disk unmounted)?
    Reads the folder's first entries only."""
    ignored = ctx.scanner.ignorer.ignored
    try:
        with os.scandir(ctx.root) as it:
            return not any(not ignored(e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except OSError:
        return True


def _identity(path: os.PathLike[str] | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _lstat_exact(ctx: FolderCtx, rel: str) -> os.stat_result | None:
    """lstat that also checks the name's exact case (case-insensitive filesystems)."""
    path = os.path.join(ctx.root, rel)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not ctx.scanner.case_insensitive:
        return st
    parent, name = os.path.split(path)
    try:
        if name not in os.listdir(parent):
            return None  # only a differently-cased name exists (a case-only rename)
    except OSError:
        return None
    return st


async def run(config: Config) -> int:
    return await Daemon(config).serve()


__all__ = ["Daemon", "run"]
