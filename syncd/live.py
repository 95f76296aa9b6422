"""The daemon's live dispatch: settled paths become ops on the engine's workers.

A batch of settled paths of one folder is looked at (``syncd.look.look_at``) and planned by
the one planner under the guard (``Engine.plan_live``); its ops are submitted frees first. A
path is claimed while an op for it is queued or running: an op for it, an ancestor or a
descendant waits (``deferred``) and is looked at again once the op in the way is done. An op of
a pass (``syncd sync`` beside the daemon) that waits so stays in the pass (``waiting``): once
the op in the way is done, its path is looked at again for that pass, which reports what came
of it. The engine's live jobs report back here (``changed``, ``done``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from syncd.debounce import Debouncer
from syncd.engine import Engine
from syncd.look import look_at
from syncd.outbox import Key, Outbox
from syncd.planner import Plan
from syncd.pool import Batch, Job
from syncd.report import Report
from syncd.scanner import FolderUnavailable
from syncd.types import Op
from syncd.uploader import FolderCtx

#: a pass's op held back by an op in the way: its batch, its report, its path(s)
Waiting = tuple[Batch, Report, list[str]]

log = logging.getLogger("syncd.daemon")  # (the name its log lines have always carried)


class Live:
    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        debouncer: Debouncer[Key],
        report: Report,
        *,
        wake: Callable[[], None],
        rescan: Callable[[int], None],
        stop: Callable[[], None],
        held: Callable[[int, str], bool] = lambda i, rel: False,
    ) -> None:
        """``wake``: the scheduler; ``rescan``: plan a whole folder again; ``stop``: the
        daemon (the remote refused us); ``held``: is a path being restored (``syncd
        restore`` writes it: it waits, deferred, until the restore records and releases it)."""
        self.engine = engine
        self.outbox = outbox
        self.debouncer = debouncer
        self.report = report
        self._wake = wake
        self._rescan = rescan
        self._stop = stop
        self._held = held
        #: the paths of the ops queued or running (a move claims both ends)
        self.claims: dict[Key, Job] = {}
        #: paths an op in the way holds back, looked at again once it is done
        self.deferred: set[Key] = set()
        #: a pass's paths an op in the way holds back: looked at again for that pass
        self.waiting: dict[Key, list[Waiting]] = {}
        self._again: set[asyncio.Task[None]] = set()

    @property
    def folders(self) -> list[FolderCtx]:
        return self.engine.folders

    async def dispatch(self, due: list[Key]) -> None:
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
        under = []
        for rel in rels:
            if self._busy(i, rel) or self._held(i, rel):
                self.deferred.add((i, rel))
            else:
                under.append(rel)
        if not under:
            return
        looked, problems = await look_at(ctx, under)
        self.report.failed += problems  # ops: `syncd status` lists them
        plan, recount = await self.engine.plan_live(ctx, looked, self.report)
        if recount:
            self._rescan(i)
        await self.submit_plan(i, plan)
        # Outbox entries that turned out to need nothing (already sent, or gone) are done.
        handled = {op.rel for op in plan.ops} | {op.dest for op in plan.ops if op.dest}
        for rel in rels:
            key = (i, rel)
            if rel not in handled and key not in self.deferred:
                self.outbox.remove(key)

    async def submit_plan(
        self, i: int, plan: Plan, batch: Batch | None = None, report: Report | None = None
    ) -> None:
        """Frees first (deletes, moves), then uploads: an upload that needs a path a free is
        still working on waits for it (``_busy``) and is looked at again once it is done."""
        for op in plan.ops:
            await self._submit(i, op, batch, report)

    def _any_busy(self, i: int, rels: list[str]) -> bool:
        return any(self._busy(i, r) for r in rels)

    def _waits_on(self, i: int, waiting: list[Waiting]) -> bool:
        return any(self._any_busy(i, rels) for _, _, rels in waiting)

    def _busy(self, i: int, rel: str) -> bool:
        """Is an op for ``rel``, an ancestor or a descendant of it already queued or running?"""
        if (i, rel) in self.claims:
            return True
        parts = rel.split("/")
        for n in range(1, len(parts)):
            if (i, "/".join(parts[:n])) in self.claims:
                return True
        prefix = rel + "/"
        return any(ci == i and r.startswith(prefix) for ci, r in self.claims)

    async def _submit(
        self, i: int, op: Op, batch: Batch | None = None, report: Report | None = None
    ) -> None:
        key = (i, op.rel)
        rels = [op.rel] if op.dest is None else [op.rel, op.dest]
        if self._any_busy(i, rels):
            if batch is not None and report is not None:  # a pass: it waits for the outcome
                batch.add()
                self.waiting.setdefault(key, []).append((batch, report, rels))
            else:
                self.deferred.add(key)  # looked at again once the op in the way is done
            return
        if self.outbox.down_since is not None:
            # The server is known to be down: straight to the outbox (sent when it is back),
            # not through the retry policy file by file.
            self.outbox.add(key, op.dest)
            return
        job = Job(self.folders[i], op, report if report is not None else self.report, batch)
        self.claims[key] = job
        if op.dest is not None:
            self.claims[(i, op.dest)] = job
        if batch is not None:
            batch.add()
        await self.engine.submit(job)  # once fatal is set, the workers leave it undone

    def key(self, job: Job) -> Key:
        return (self.folders.index(job.ctx), job.op.rel)

    def done(self, job: Job) -> None:
        """The job is over: out of the outbox if it completed, its paths free."""
        key = self.key(job)
        i = key[0]
        if job.ok:
            self.outbox.sent(key)
        self.claims.pop(key, None)
        if job.op.dest is not None:
            self.claims.pop((i, job.op.dest), None)
        if self.engine.fatal is not None:
            self._stop()
        for k in [k for k, w in self.waiting.items() if k[0] == i and not self._waits_on(i, w)]:
            task = asyncio.create_task(self._look_again(k, self.waiting.pop(k)))
            self._again.add(task)
            task.add_done_callback(self._again.discard)
        if self.deferred:
            now = time.monotonic()
            for k in self.deferred:
                self.debouncer.touch(k, now)
            self.deferred.clear()
            self._wake()

    async def _look_again(self, key: Key, passes: list[Waiting]) -> None:
        """The op in the way of a pass's path is done: the path (both ends of a move) is
        looked at and planned again for each pass waiting on it (what the op did may leave
        nothing to do)."""
        i = key[0]
        ctx = self.folders[i]
        for batch, report, rels in passes:
            try:
                if self._any_busy(i, rels):  # taken again meanwhile: wait more
                    batch.add()
                    self.waiting.setdefault(key, []).append((batch, report, rels))
                    continue
                looked, problems = await look_at(ctx, rels)
                report.failed += problems
                plan, recount = await self.engine.plan_live(ctx, looked, report)
                report.unchanged += plan.unchanged
                if recount:
                    self._rescan(i)
                await self.submit_plan(i, plan, batch, report)
            except FolderUnavailable as e:
                log.error("folder %s: %s; nothing sent, nothing deleted", ctx.remote_path, e)
            finally:
                batch.done()

    def changed(self, job: Job) -> None:
        """It changed while it was sent: sent again once it settles."""
        self.debouncer.touch(self.key(job), time.monotonic())
        self._wake()


__all__ = ["Live"]
