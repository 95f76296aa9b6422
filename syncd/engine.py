"""The engine: scan, plan, upload, delete, commit. ``syncd sync`` runs one pass of it and
``syncd run`` runs the same passes with a watcher in front; there is no second code path.

A pass: the first look (``syncd.look``) -> the server's view (``syncd.serverview``) -> the one
planner (``syncd.planner``, its guard's memory in ``syncd.guard``) -> the ops on the workers
(``syncd.pool``: frees, then uploads) -> the mark of a complete pass. Every manifest write goes
through ``syncd.recorder``; ``syncd verify`` is ``syncd.verify``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from syncd.config import Config
from syncd.errors import RemoteError, Silent, SourceError, Unreachable
from syncd.guard import Guard
from syncd.hashing import ReadStats
from syncd.look import FirstLook, first_look, with_listing, with_staged
from syncd.manifest import Manifest, scope_of
from syncd.planner import NOTHING_HELD, GuardState, Looked, Plan, Rules, Server, plan
from syncd.pool import Batch, Fatal, Job, LiveJobs, Pool, Stops, left_undone
from syncd.recorder import Recorder
from syncd.report import Progress, Report, VerifyReport
from syncd.retry import RetryPolicy
from syncd.scanner import FolderUnavailable, Scanner
from syncd.serverview import ServerView
from syncd.status.metrics import Metrics
from syncd.types import Op, Problem, Rows
from syncd.uploader import FolderCtx, Throttle, Uploader
from syncd.verify import Verifier

if TYPE_CHECKING:
    from syncd.prescan import Prescan
    from syncd.remotes.base import Remote

log = logging.getLogger("syncd.engine")


class Engine:
    """Owns the manifest (written through its ``recorder`` only), the remote (opened on first
    use), the folders' scanners and the workers."""

    def __init__(
        self,
        config: Config,
        *,
        progress: Progress | None = None,
        policy: RetryPolicy | None = None,
        remote: Remote | None = None,
        force_delete: bool = False,
        prescan: Prescan | None = None,
        metrics: Metrics | None = None,
        live: LiveJobs | None = None,
    ) -> None:
        """``prescan``: the manifest, scanners and scans ``syncd sync`` already made without
        the event loop; the engine owns (and closes) that manifest, and each folder's first
        ``plan`` uses its scan instead of scanning again. ``live``: the daemon's side of its
        jobs (``syncd run``); without it the engine runs passes."""
        self.config = config
        self.force_delete = force_delete
        self.progress = progress or Progress()
        #: what the passes report (errors, transfers, retries); the status board reads it
        self.metrics = metrics or Metrics()
        self.policy = dataclasses.replace(policy or RetryPolicy(), on_retry=self.metrics.retry)
        self.stats = ReadStats()
        self.throttle = Throttle(config.sync.bwlimit)
        self._remote = remote
        self._recorder: Recorder | None = None
        self._view: ServerView | None = None
        if prescan is not None:
            self._open(prescan.manifest)
        self._prescanned: dict[str, FirstLook] = prescan.looks if prescan is not None else {}
        scanners = prescan.scanners if prescan is not None else [Scanner(f) for f in config.folders]
        self.folders = [
            FolderCtx(f.path, f.remote_path, scope_of(config, f), scanner)
            for f, scanner in zip(config.folders, scanners, strict=True)
        ]
        self.bytes_sent = 0
        #: why nothing more is tried (``fatal``, ``unreachable``), and whether this is a pass
        self.stops = Stops()
        self.pool = Pool(
            config.sync.concurrency,
            self._uploader,
            self.stops,
            self.metrics,
            self.progress,
            debounce=config.sync.debounce,
            live=live,
        )
        #: the jobs running now, by (scope, rel) (the status board reads it)
        self.inflight = self.pool.inflight
        #: the deletion guard's memory between looks (what is held, what was just deleted)
        self.guard = Guard()

    # -- resources ---------------------------------------------------------------------------
    def _open(self, manifest: Manifest) -> None:
        self._recorder = Recorder(manifest)

    async def __aenter__(self) -> Engine:
        if self._recorder is None:
            self._open(Manifest.in_state_dir(self.config.sync.state_dir))
        self.guard.load(scope for scope, *_ in self.manifest.held())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_pool()
        try:
            if self._recorder is not None:
                await self._recorder.flush()
                self._recorder.manifest.close()
        finally:
            if self._remote is not None:
                await self._remote.aclose()

    @property
    def fatal(self) -> Fatal | None:
        """Set when the remote refused our credentials or does not speak its protocol."""
        return self.stops.fatal

    @fatal.setter
    def fatal(self, e: Fatal | None) -> None:
        self.stops.fatal = e

    @property
    def recorder(self) -> Recorder:
        """The one writer of the manifest."""
        assert self._recorder is not None, "use Engine as an async context manager"
        return self._recorder

    @property
    def view(self) -> ServerView:
        """The passes' side of the server: its holdings, the mirror, the mark."""
        if self._view is None:
            self._view = ServerView(lambda: self.remote, self.recorder, self.policy, self.stops)
        return self._view

    @property
    def manifest(self) -> Manifest:
        """The manifest, to read (the recorder writes it)."""
        return self.recorder.manifest

    @property
    def remote(self) -> Remote:
        """The remote, created on first use (a pass with nothing to send never imports aiohttp)."""
        if self._remote is None:
            from syncd.remotes.kinds import open_remote

            self._remote = open_remote(
                self.config.remote, self.config.sync.concurrency, self.config.sync.state_dir
            )
        return self._remote

    def _uploader(self) -> Uploader:
        return Uploader(
            self.remote, self.recorder, self.policy, self.stats, self.throttle, self._on_bytes
        )

    def _on_bytes(self, n: int) -> None:
        self.bytes_sent += n
        self.progress.advance(n)

    # -- one pass ----------------------------------------------------------------------------
    async def sync(self, *, dry_run: bool = False, report: Report | None = None) -> Report:
        """Reconcile every folder once.

        A remote that refuses the credentials, does not speak its protocol, or cannot be
        reached after every retry stops the pass: ``report.stopped`` says why in one line,
        ``report.not_sent``/``not_done`` count what was left undone, nothing more is tried.
        """
        report = report if report is not None else Report()
        self.stops.one_shot = True
        try:
            for ctx in self.folders:
                await self.reconcile(ctx, report, dry_run=dry_run)
        finally:
            self.progress.stop()
            report.finished = time.monotonic()
        stop = self.stopped()
        if stop is not None:
            report.stopped = self.why_stopped(stop)
        return report

    def stopped(self) -> Fatal | Unreachable | Silent | None:
        """Why nothing more is tried: ``fatal``, or (one-shot) the remote unreachable."""
        return self.stops.stopped()

    def why_stopped(self, e: RemoteError) -> str:
        """One line: "server URL unreachable (connection refused)", or the error's own."""
        if isinstance(e, Unreachable):
            return f"server {self.remote.description} unreachable ({_os_reason(e)})"
        if isinstance(e, Silent):
            timeout = self.config.remote.timeout
            return f"server {self.remote.description} not answering (nothing for {timeout:g} s)"
        return str(e)

    async def reconcile(
        self, ctx: FolderCtx, report: Report, *, dry_run: bool = False, server: bool = True
    ) -> None:
        """Scan one folder, compare it with the manifest and the server, and make the server
        hold exactly the folder: upload, delete and move what differs."""
        failed = len(report.failed)
        plan = await self.plan(ctx, report, server=server, dry_run=dry_run)
        if plan is None:
            return
        if dry_run:
            report.planned += plan.describe(ctx.remote_path)
            return
        stop = self.stopped()
        if stop is not None:  # nothing is tried: what the plan holds is left undone
            for op in plan.ops:
                left_undone(ctx, op, report, stop)
            return
        try:
            if not plan.empty:
                self.apply_plan(ctx, plan)
                await self.execute(ctx, plan, report)
            if plan.remote_checked or not plan.empty:
                ok = len(report.failed) == failed and self.stopped() is None
                await self.view.confirmed(ctx, ok=ok)
        finally:
            ctx.remote_hints = {}
            await self.recorder.flush()

    async def plan(
        self,
        ctx: FolderCtx,
        report: Report,
        *,
        server: bool | None = True,
        force: bool = False,
        dry_run: bool = False,
    ) -> Plan | None:
        """Scan one folder and plan it (None: the folder is unavailable).

        ``server``: plan against the server's holdings (``ServerView.look``). ``None``: only when
        the folder differs from the manifest (the daemon's start-up checks an unchanged folder
        after it is ready). ``plan.remote_checked`` says whether it was done. ``force``: let
        the deletions the guard would hold through (``--force-delete``). ``dry_run``: change
        nothing, the held deletions included.
        """
        try:
            first = self._prescanned.pop(ctx.scope, None)
            if first is None:
                staged = self.manifest.staged_rows(ctx.scope)  # (taken here, on the loop)
                first = await asyncio.to_thread(
                    first_look, ctx.scanner, self.manifest, ctx.scope, staged
                )
            self.metrics.scanned(ctx.remote_path)
            view: Server | None = None
            if (server or (server is None and not first.in_sync)) and self.stopped() is None:
                epoch = self.manifest.epoch
                view = await self.view.look(ctx)
                if view is not None and self.manifest.epoch != epoch:
                    # Another scope's rows became this folder's (the same mirror under
                    # another URL spelling): the look is compared with them again.
                    staged = self.manifest.staged_rows(ctx.scope)
                    first = await asyncio.to_thread(
                        first_look, ctx.scanner, self.manifest, ctx.scope, staged
                    )
        except FolderUnavailable as e:
            self.metrics.error("folder", ctx.remote_path)
            report.failed.append(Problem(ctx.remote_path, f"{e}: nothing sent, nothing deleted"))
            log.error(
                "folder %s: %s; nothing sent, nothing deleted",
                ctx.remote_path,
                e,
                extra={"event": "failed", "folder": ctx.remote_path, "result": "folder"},
            )
            return None
        # A pass that cannot go on plans from the manifest only to count what it leaves
        # undone: it records nothing (no hold either).
        stopped = self.stopped() is not None
        if first.in_sync and view is None:
            plan = Plan(unchanged=first.unchanged)  # in sync, as the manifest says
        else:
            # (A one-shot pass has no earlier deletions; the daemon's rescans and reconnects
            # count the ones its live batches and earlier looks made, as a live batch does.)
            guard = self.guard.whole_state(force=force or self.force_delete)
            if view is None:
                plan = self.planner(ctx, first.looked(), guard=guard)
            else:
                # The listing against every row, once, in a thread; the planner then plans
                # the differences against what of the listing they need.
                stream = with_staged(
                    self.manifest.sorted_rows(ctx.scope), self.manifest.staged_rows(ctx.scope)
                )
                looked, view = await asyncio.to_thread(
                    with_listing, first, view, stream, ctx.scanner.stat
                )
                plan = self.planner(ctx, looked, server=view, guard=guard)
            if not dry_run and not stopped:
                self.recorder.hold(ctx.scope, plan, whole=True)
        if not dry_run:
            was_held = self.guard.held(ctx.scope)
            self.guard.looked_whole(ctx.scope, plan)
            if plan.held or was_held:
                await self.recorder.flush()  # held, or released: `syncd status` says so
        problems = first.scan.problems
        plan.problems = len(problems)
        report.failed += [Problem(f"{ctx.remote_path}/{p.path}", p.reason) for p in problems]
        if not stopped:
            self.report_held(ctx, plan, report)
        report.unchanged += plan.unchanged
        return plan

    def planner(
        self,
        ctx: FolderCtx,
        looked: Looked,
        *,
        server: Server | None = None,
        guard: GuardState = NOTHING_HELD,
        rows: Rows | None = None,
    ) -> Plan:
        """The one planner, with this folder's rules and rows (read from the manifest as the
        planner asks, unless ``rows`` is a snapshot of them)."""
        folder = ctx.scanner.folder
        return plan(
            looked,
            self.manifest.rows(ctx.scope) if rows is None else rows,
            Rules(
                ignored=ctx.scanner.ignorer.ignored,
                delete=folder.delete,
                max_delete=self.config.sync.max_delete,
                can_move=self.remote.features.move,
                keeps_times=self.remote.features.keeps_times,
                keeps_exec=self.remote.features.keeps_exec,
            ),
            server=server,
            guard=guard,
        )

    async def plan_live(self, ctx: FolderCtx, looked: Looked, report: Report) -> tuple[Plan, bool]:
        """Plan a live batch under the guard, a mass delete held exactly as a pass holds it.
        Returns the plan, and whether the whole folder is to be planned again (files came back
        into a folder whose deletions are held: the hold is recounted)."""
        plan = self.planner(ctx, looked, guard=self.guard.state(ctx.scope))
        recount = self.guard.looked_live(ctx.scope, plan, found_files=bool(looked.files))
        if plan.held:
            self.recorder.hold(ctx.scope, plan, whole=False)
            self.report_held(ctx, plan, report)
            await self.recorder.flush()  # `syncd status` reads the hold at once
        return plan, recount

    def report_held(self, ctx: FolderCtx, plan: Plan, report: Report) -> None:
        for p in plan.held_back:
            self.metrics.error("held_back", ctx.remote_path)
            report.failed.append(Problem(ctx.remote_path, p.reason))
            log.error("folder %s: %s", ctx.remote_path, p.reason)

    def apply_plan(self, ctx: FolderCtx, plan: Plan) -> None:
        """Before the plan's ops run: forget the rows the server no longer backs, and give
        the uploads what the server holds (identical files are adopted, not sent)."""
        if plan.forget:
            log.warning(
                "%s: the server no longer holds %d file(s) the manifest lists; sending them again",
                ctx.remote_path,
                len(plan.forget),
            )
            self.recorder.forget(ctx.scope, plan.forget)
        ctx.remote_hints = plan.hints

    async def execute(self, ctx: FolderCtx, plan: Plan, report: Report) -> None:
        """Run the plan, ``concurrency`` at a time: the deletes, then the moves (they free the
        paths the uploads may need), then the uploads."""
        total = sum(op.local.size for op in plan.uploads if op.local)
        self.progress.start(len(plan.uploads), total)
        before = self.bytes_sent
        await self.run_ops(ctx, plan.deletes, report)
        await self.run_ops(ctx, plan.moves, report)
        await self.run_ops(ctx, plan.uploads, report)
        report.bytes_sent += self.bytes_sent - before

    # -- the workers -------------------------------------------------------------------------
    async def submit(self, job: Job) -> None:
        """Queue one op for the workers (``Pool.submit``); the manifest is committed every
        FLUSH_EVERY seconds while they run."""
        self.recorder.running()
        await self.pool.submit(job)

    async def stop_pool(self) -> None:
        await self.pool.stop()
        if self._recorder is not None:
            await self._recorder.stop()

    async def run_ops(self, ctx: FolderCtx, ops: Iterable[Op], report: Report) -> None:
        """Run ``ops`` on the workers, ``concurrency`` at a time, and wait for all of them."""
        batch = Batch()
        for op in ops:
            stop = self.stopped()
            if stop is not None:
                left_undone(ctx, op, report, stop)
                continue
            batch.add()
            await self.submit(Job(ctx, op, report, batch))
        await batch.wait()

    # -- verify ------------------------------------------------------------------------------
    async def verify(self, *, times: bool = False) -> VerifyReport:
        """Compare every local file with what the remote holds (``syncd.verify``); with
        ``times``, their mtimes and exec bits too, where the remote keeps them."""
        return await Verifier(
            self.remote, self.config, self.folders, self.policy, self.stats, times=times
        ).verify()


def _os_reason(e: BaseException) -> str:
    """Why a connection failed, as the OS says it ("connection refused", "no route to
    host"), from the first OS error in ``e``'s causes; else the end of ``e``'s message."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and not isinstance(cur, SourceError):
            if cur.errno is not None and cur.errno > 0:
                return os.strerror(cur.errno).lower()
            if cur.strerror:
                return str(cur.strerror).lower()
        cur = cur.__cause__ or cur.__context__
    text = str(e)
    return text.rsplit(": ", 1)[-1].lower() if ": " in text else text


__all__ = ["Engine"]
