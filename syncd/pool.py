"""The workers: a bounded queue of jobs (one planned op each), ``concurrency`` workers that
carry them out through the uploader, and what each outcome counts (report, metrics).

A pass runs its ops here and waits for them (``Batch``); the daemon's live jobs report back
through ``LiveJobs``, which the daemon hands the engine when it makes it: that, and nothing
inferred, is what makes the engine live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from syncd.errors import (
    AuthError,
    RemoteError,
    Silent,
    SourceChanged,
    SourceError,
    TransientError,
    Unreachable,
    WrongProtocol,
    error_kind,
)
from syncd.remotes.base import BatchLimits
from syncd.report import Progress, Report
from syncd.status.metrics import Metrics
from syncd.types import Op, OpKind, Problem
from syncd.uploader import BatchResult, FolderCtx, Outcome, Uploader

log = logging.getLogger("syncd.engine")  # (the name its log lines have always carried)

#: What stops everything at once: the credentials refused, or a URL that does not speak the
#: remote kind's protocol. Nothing more is tried; the pass (or the daemon) says why once.
Fatal = AuthError | WrongProtocol

CHANGED_RETRIES = 3  # a file that keeps changing while it is sent, in one pass
#: Uploads of files up to BATCH_FILE bytes go in batches where the remote takes them: up to
#: BATCH_FILES files and BATCH_BYTES bytes per request, taken from what is queued (no
#: waiting for more). The server's own limits (``BatchLimits``) bound them too.
BATCH_FILE = 256 << 10
BATCH_FILES = 100
BATCH_BYTES = 1 << 20


@dataclass(eq=False)
class Job:
    """One op queued for the workers, with where to report it."""

    ctx: FolderCtx
    op: Op
    report: Report
    batch: Batch | None = None
    ok: bool = False  # set when the op completed
    sent: int = 0  # bytes sent so far (for status)
    started: float = 0.0


class Batch:
    """Counts a group of jobs so that a pass can wait for all of them."""

    def __init__(self) -> None:
        self._left = 0
        self.failed = 0  # jobs that did not complete
        self._event = asyncio.Event()
        self._event.set()

    def add(self) -> None:
        self._left += 1
        self._event.clear()

    def done(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


def _sent_by(job: Job) -> Callable[[int], None]:
    def add(n: int) -> None:
        job.sent += n

    return add


class LiveJobs(Protocol):
    """The daemon's side of the live jobs (``syncd run``); a pass has none."""

    def changed(self, job: Job) -> None:
        """It changed while it was sent: queue it again once it settles."""

    def retry_later(self, job: Job, e: TransientError) -> None:
        """A transient failure (server down, 5xx): keep it in the outbox, try it later."""

    def done(self, job: Job) -> None:
        """The job is over (``job.ok``: it completed)."""


class Stops:
    """Why nothing more is tried, shared by the passes, the server view and the workers."""

    def __init__(self) -> None:
        #: Set when the remote refused our credentials or does not speak its protocol:
        #: nothing more is attempted.
        self.fatal: Fatal | None = None
        #: Set when the remote could not be reached after all retries (`syncd sync` stops).
        self.unreachable: Unreachable | Silent | None = None
        #: A one-shot pass (``sync``): a remote that cannot be reached stops it, and what it
        #: leaves undone is counted (each named at debug level), not failed file by file.
        self.one_shot = False

    def stopped(self) -> Fatal | Unreachable | Silent | None:
        """Why nothing more is tried: ``fatal``, or (one-shot) the remote unreachable."""
        if self.fatal is not None:
            return self.fatal
        return self.unreachable if self.one_shot else None


class Pool:
    """``concurrency`` workers behind a queue of twice as many jobs (backpressure)."""

    def __init__(
        self,
        concurrency: int,
        uploader: Callable[[], Uploader],
        stops: Stops,
        metrics: Metrics,
        progress: Progress,
        *,
        debounce: float,
        live: LiveJobs | None,
    ) -> None:
        self.concurrency = concurrency
        self._make_uploader = uploader
        self._uploader: Uploader | None = None
        self.stops = stops
        self.metrics = metrics
        self.progress = progress
        self.debounce = debounce
        self.live = live
        self._workers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[Job] | None = None
        self.inflight: dict[tuple[str, str], Job] = {}

    def start(self) -> None:
        if self._workers:
            return
        self._uploader = self._make_uploader()
        # Room for a batch per worker: small files are gathered from what is queued.
        self._queue = asyncio.Queue(maxsize=(2 + BATCH_FILES) * self.concurrency)
        self._workers = [
            asyncio.create_task(self._work(), name=f"syncd-worker-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for t in self._workers:
            t.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def submit(self, job: Job) -> None:
        """Queue one op for the workers; waits while the queue is full (backpressure). Once
        the remote refused us (``fatal``), the workers leave what is queued undone (and tell
        ``live.done``)."""
        self.start()
        assert self._queue is not None
        await self._queue.put(job)

    async def _work(self) -> None:
        assert self._queue is not None
        uploader = self._uploader
        assert uploader is not None
        while True:
            job = self._take(await self._queue.get())
            jobs, rest = [job], list[Job]()
            limits = uploader.batch_limits() if _small(job, BATCH_FILE) else None
            if limits is not None:
                jobs, rest = self._gather(job, limits)
            results: list[BatchResult] = [None] * len(jobs)
            if len(jobs) > 1 and self.stops.stopped() is None:
                results = await self._send_batch(uploader, jobs)
            for one, result in zip(jobs + rest, results + [None] * len(rest), strict=True):
                await self._run(uploader, one, result)

    def _take(self, job: Job) -> Job:
        self.inflight[(job.ctx.scope, job.op.rel)] = job
        job.started = time.monotonic()
        return job

    def _gather(self, first: Job, limits: BatchLimits) -> tuple[list[Job], list[Job]]:
        """``first`` and the small uploads of its folder queued behind it, taken without
        waiting, up to the batch's limits; and the job that ended the gathering, if any."""
        assert self._queue is not None and first.op.local is not None
        most_files = min(BATCH_FILES, limits.parts)
        most_bytes = min(BATCH_BYTES, limits.bytes)
        part = min(BATCH_FILE, limits.part)
        jobs, size = [first], first.op.local.size
        while len(jobs) < most_files:
            try:
                job = self._take(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
            local = job.op.local
            if job.ctx is not first.ctx or not _small(job, part) or local is None:
                return jobs, [job]
            if size + local.size > most_bytes:
                return jobs, [job]
            jobs.append(job)
            size += local.size
        return jobs, []

    async def _send_batch(self, uploader: Uploader, jobs: list[Job]) -> list[BatchResult]:
        """One request for ``jobs`` (small uploads of one folder); their results, for
        :meth:`_one` to handle as if each had been sent alone."""
        items = [(job.op, _sent_by(job)) for job in jobs]
        try:
            return await uploader.upload_batch(jobs[0].ctx, items)
        except (AuthError, WrongProtocol) as e:
            return [e] * len(jobs)
        except Exception as e:  # a bug: each job reports it (see _run)
            log.exception("internal error in a batch of %d files: %r", len(jobs), e)
            return [None] * len(jobs)

    async def _run(self, uploader: Uploader, job: Job, done: BatchResult) -> None:
        """Carry out one job (``done``: what its batch made of it, if it went in one) and say
        how it went: counts, the report, the daemon's bookkeeping."""
        key = (job.ctx.scope, job.op.rel)
        try:
            await self._one(uploader, job, done)
        except (AuthError, WrongProtocol) as e:
            if self.stops.fatal is None:
                self.stops.fatal = e
                self.metrics.error(error_kind(e), f"{job.ctx.remote_path}/{job.op.rel}")
                # A pass says it once, at its end (``Report.outcome``); the daemon here.
                log.log(logging.DEBUG if self.stops.one_shot else logging.ERROR, "%s", e)
            left_undone(job.ctx, job.op, job.report, e)
        except Exception as e:  # a bug: say so, and keep the worker alive
            name = f"{job.ctx.remote_path}/{job.op.rel}"
            log.exception("%s: internal error: %r", name, e)
            job.report.failed.append(Problem(name, f"internal error: {e!r}"))
            self.metrics.error("internal", name)
        finally:
            self.inflight.pop(key, None)
            if job.batch is not None:
                job.batch.failed += not job.ok
                job.batch.done()
            if self.live is not None:
                self.live.done(job)

    async def _one(self, uploader: Uploader, job: Job, done: BatchResult = None) -> None:
        """Carry out one op; record its outcome in the report; never raise but AuthError or
        WrongProtocol (nothing will work: the caller stops everything). ``done``: what its
        batch made of it (its outcome or its error, taken as the first attempt's)."""
        ctx, op, report = job.ctx, job.op, job.report
        name = f"{ctx.remote_path}/{op.rel}"
        stop = self.stops.stopped()
        if stop is not None:
            # Once the server refused us, or (one pass) could not be reached after every
            # retry, the other ops are not tried: counted, and said once by the caller.
            left_undone(ctx, op, report, stop)
            return
        for attempt in range(1, CHANGED_RETRIES + 1):
            try:
                if op.kind is OpKind.DELETE:
                    n = await uploader.delete(ctx, op)  # (not `+= await`: jobs run at once)
                    report.deleted += n
                    job.ok = True
                    self.metrics.done(job.ctx.remote_path, job.op, Outcome.DELETED, job.started)
                    return
                if op.kind is OpKind.MOVE:
                    assert op.dest is not None
                    outcome = await uploader.move(ctx, op)
                    if outcome == Outcome.MOVED:
                        report.moved += 1
                    else:  # not the same bytes: uploaded to dest, deleted at rel
                        report.uploaded += outcome == Outcome.UPLOADED
                        report.adopted += outcome != Outcome.UPLOADED
                        report.deleted += 1
                    job.ok = True
                    self.metrics.done(job.ctx.remote_path, job.op, outcome, job.started)
                    return
                if done is not None:
                    result, done = done, None
                    if isinstance(result, BaseException):
                        raise result
                    outcome = result
                else:
                    outcome = await uploader.upload(ctx, op, progress=_sent_by(job))
                job.ok = True
                self.progress.file_done(op.rel)
                if outcome == Outcome.UPLOADED:
                    report.uploaded += 1
                elif outcome == Outcome.REFRESHED:
                    report.refreshed += 1
                else:
                    report.adopted += 1
                self.metrics.done(job.ctx.remote_path, job.op, outcome, job.started)
                return
            except SourceChanged as e:
                if self.live is not None:
                    self.live.changed(job)  # the daemon waits for the file to settle again
                    return
                now = ctx.stat(op.rel)
                if now is None:
                    log.warning("%s vanished before it was sent; skipped", name)
                    return
                if attempt == CHANGED_RETRIES:
                    self.metrics.error("changed", name)
                    why = f"{e.problem} (kept changing while sent; the server may hold an old copy)"
                    report.failed.append(Problem(name, why))
                    return
                log.info("%s: %s; sending again", name, e.problem)
                await asyncio.sleep(self.debounce)
                op = job.op = Op(op.kind, op.rel, local=now, row=op.row)
            except SourceError as e:
                self.metrics.error("local", name)
                report.failed.append(Problem(name, e.problem))
                log.error(
                    "%s: %s",
                    name,
                    e.problem,
                    extra={
                        "event": "failed",
                        "folder": ctx.remote_path,
                        "path": op.rel,
                        "result": "local",
                    },
                )
                return
            except (AuthError, WrongProtocol):
                raise
            except RemoteError as e:
                self.metrics.error(error_kind(e), name)
                if isinstance(e, TransientError) and self.live is not None:
                    self.live.retry_later(job, e)  # the daemon keeps it in its outbox
                    return
                if isinstance(e, Unreachable | Silent):
                    self.stops.unreachable = self.stops.unreachable or e
                    left_undone(ctx, op, report, e)  # the pass says it once
                    return
                report.failed.append(Problem(name, str(e)))
                log.error(
                    "%s",
                    e,
                    extra={
                        "event": "failed",
                        "folder": ctx.remote_path,
                        "path": op.rel,
                        "result": error_kind(e),
                    },
                )
                return


def _small(job: Job, most: int) -> bool:
    """Whether ``job`` may go in a batch: an upload of a file of at most ``most`` bytes."""
    op = job.op
    return op.kind is OpKind.UPLOAD and op.local is not None and op.local.size <= most


def left_undone(ctx: FolderCtx, op: Op, report: Report, why: RemoteError) -> None:
    """``op`` is not tried because ``why`` stopped the pass: counted, named at debug."""
    if op.kind is OpKind.UPLOAD:
        report.not_sent += 1
    else:
        report.not_done += 1
    verb = {OpKind.UPLOAD: "sent", OpKind.DELETE: "deleted", OpKind.MOVE: "moved"}[op.kind]
    log.debug(
        "%s/%s: not %s: %s",
        ctx.remote_path,
        op.rel,
        verb,
        why,
        extra={
            "event": "failed",
            "folder": ctx.remote_path,
            "path": op.rel,
            "result": error_kind(why),
        },
    )


__all__ = ["Batch", "Job", "LiveJobs", "Pool", "Stops", "left_undone"]
