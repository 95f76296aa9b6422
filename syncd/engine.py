"""The engine: scan, plan, upload, delete, commit. ``syncd sync`` runs one pass of it and
``syncd run`` runs the same passes with a watcher in front; there is no second code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from syncd.config import Config
from syncd.errors import (
    AuthError,
    PermanentError,
    RemoteError,
    Silent,
    SourceChanged,
    SourceError,
    SyncdError,
    TransientError,
    Unreachable,
    WrongProtocol,
    error_kind,
)
from syncd.hashing import ReadStats, hash_path
from syncd.manifest import Manifest, scope_of
from syncd.planner import Looked, Plan, Rules, Server, plan
from syncd.remotes.base import Marker, Sizer, StateToken
from syncd.report import Report, VerifyReport
from syncd.retry import RetryPolicy
from syncd.scanner import FolderUnavailable, Scanner, ScanResult
from syncd.status.metrics import Metrics
from syncd.types import LocalFile, Op, OpKind, Problem, RemoteEntry
from syncd.uploader import FolderCtx, Outcome, Throttle, Uploader

if TYPE_CHECKING:
    from syncd.prescan import Prescan
    from syncd.remotes.base import Reader, Remote

log = logging.getLogger("syncd.engine")

T = TypeVar("T")

#: What stops everything at once: the credentials refused, or a URL that does not speak the
#: remote kind's protocol. Nothing more is tried; the pass (or the daemon) says why once.
Fatal = AuthError | WrongProtocol

FLUSH_EVERY = 0.5  # seconds between manifest commits while transfers run
CHANGED_RETRIES = 3  # a file that keeps changing while it is sent, in one pass
UNLISTED_MAX = 1000  # dot files a listing left out that are asked for one by one, per pass


class Progress:
    """Receives progress from a pass. The default does nothing; the CLI draws a bar."""

    def start(self, files: int, nbytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self, rel: str) -> None: ...

    def stop(self) -> None: ...


@dataclass(eq=False)
class Job:
    """One op queued for the workers, with where to report it."""

    ctx: FolderCtx
    op: Op
    report: Report
    batch: Batch | None = None
    on_changed: Callable[[Job], None] | None = None  # live mode: re-queue after it settles
    on_done: Callable[[Job], None] | None = None
    # live mode: a transient failure (server down, 5xx) goes back to the daemon's outbox
    on_retry: Callable[[Job, TransientError], None] | None = None
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


class Engine:
    """Owns the manifest, the remote (opened on first use) and the folders' scanners."""

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
    ) -> None:
        """``prescan``: the manifest, scanners and scans ``syncd sync`` already made without
        the event loop; the engine owns (and closes) that manifest, and each folder's first
        ``plan`` uses its scan instead of scanning again."""
        self.config = config
        self.force_delete = force_delete
        self.progress = progress or Progress()
        #: what the passes report (errors, transfers, retries); the status board reads it
        self.metrics = metrics or Metrics()
        self.policy = dataclasses.replace(policy or RetryPolicy(), on_retry=self.metrics.retry)
        self.stats = ReadStats()
        self.throttle = Throttle(config.sync.bwlimit)
        self._remote = remote
        self._manifest: Manifest | None = prescan.manifest if prescan is not None else None
        self._prescanned: dict[str, ScanResult] = prescan.scans if prescan is not None else {}
        scanners = prescan.scanners if prescan is not None else [Scanner(f) for f in config.folders]
        self.folders = [
            FolderCtx(f.path, f.remote_path, scope_of(config, f), scanner)
            for f, scanner in zip(config.folders, scanners, strict=True)
        ]
        self.bytes_sent = 0
        self._workers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[Job] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._flush_stop: asyncio.Event | None = None
        self.inflight: dict[tuple[str, str], Job] = {}
        #: Set when the remote refused our credentials or does not speak its protocol:
        #: nothing more is attempted.
        self.fatal: Fatal | None = None
        #: Set when the remote could not be reached after all retries (`syncd sync` stops trying).
        self.unreachable: Unreachable | Silent | None = None
        #: A one-shot pass (``sync``): a remote that cannot be reached stops it, and what it
        #: leaves undone is counted (each named at debug level), not failed file by file.
        self.one_shot = False
        self._probed = False

    # -- resources ---------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        if self._manifest is None:
            self._manifest = Manifest.in_state_dir(self.config.sync.state_dir)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_pool()
        try:
            if self._manifest is not None:
                await self._manifest.aflush()
                self._manifest.close()
        finally:
            if self._remote is not None:
                await self._remote.aclose()

    @property
    def manifest(self) -> Manifest:
        assert self._manifest is not None, "use Engine as an async context manager"
        return self._manifest

    @property
    def remote(self) -> Remote:
        """The remote, created on first use (a pass with nothing to send never imports aiohttp)."""
        if self._remote is None:
            from syncd.remotes.kinds import open_remote

            self._remote = open_remote(self.config.remote, self.config.sync.concurrency)
        return self._remote

    def _uploader(self) -> Uploader:
        return Uploader(
            self.remote, self.manifest, self.policy, self.stats, self.throttle, self._on_bytes
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
        self.one_shot = True
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
        if self.fatal is not None:
            return self.fatal
        return self.unreachable if self.one_shot else None

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
                self._left_undone(ctx, op, report, stop)
            return
        try:
            if not plan.empty:
                self.apply_plan(ctx, plan)
                await self.execute(ctx, plan, report)
            if plan.remote_checked or not plan.empty:
                ok = len(report.failed) == failed and self.stopped() is None
                await self.confirmed(ctx, ok=ok)
        finally:
            ctx.remote_hints = {}
            await self.manifest.aflush()

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

        ``server``: plan against the server's holdings (``server_view``). ``None``: only when
        the folder differs from the manifest (the daemon's start-up checks an unchanged folder
        after it is ready). ``plan.remote_checked`` says whether it was done. ``force``: let
        the deletions the guard would hold through (``--force-delete``). ``dry_run``: change
        nothing, the held deletions included.
        """
        try:
            prescanned = self._prescanned.pop(ctx.scope, None)
            states: set[tuple[str, int, int, int, int]] | None = None
            if prescanned is not None:
                scan = prescanned
            elif self.manifest.loaded(ctx.scope):
                scan = await asyncio.to_thread(ctx.scanner.scan)
            else:
                # The first look at this folder (the daemon's start): what the manifest says
                # is read while the folder is scanned; if they agree, the rows are not loaded.
                scan, states = await asyncio.gather(
                    asyncio.to_thread(ctx.scanner.scan),
                    asyncio.to_thread(self.manifest.states, ctx.scope),
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
        self.metrics.scanned(ctx.remote_path)
        looked = Looked(scan.files, incomplete=scan.incomplete)
        in_sync = (
            states is not None
            and not self.manifest.loaded(ctx.scope)
            and states == set(scan.files.values())
        )
        del states
        view: Server | None = None
        if (server or (server is None and not in_sync)) and self.stopped() is None:
            view = await self.server_view(ctx)
        # A pass that cannot go on plans from the manifest only to count what it leaves
        # undone: it records nothing (no hold either).
        stopped = self.stopped() is not None
        if in_sync and view is None:
            plan = Plan(unchanged=len(scan.files))  # in sync, as the manifest says
        else:
            plan = self.planner(ctx, looked, server=view, force=force or self.force_delete)
            if not dry_run and not stopped:
                self.record_hold(ctx, plan, whole=True)
        plan.problems = len(scan.problems)
        report.failed += [Problem(f"{ctx.remote_path}/{p.path}", p.reason) for p in scan.problems]
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
        force: bool = False,
        held: bool = False,
        recent_deletes: int = 0,
        held_rels: AbstractSet[str] = frozenset(),
    ) -> Plan:
        """The one planner, with this folder's rules and rows."""
        folder = ctx.scanner.folder
        return plan(
            looked,
            self.manifest.rows(ctx.scope),
            Rules(
                ignored=ctx.scanner.ignorer.ignored,
                delete=folder.delete,
                max_delete=self.config.sync.max_delete,
                can_move=self.remote.features.move,
            ),
            server=server,
            force=force,
            held=held,
            recent_deletes=recent_deletes,
            held_rels=held_rels,
        )

    def record_hold(self, ctx: FolderCtx, plan: Plan, *, whole: bool) -> None:
        """Keep the guard's verdict in the manifest: held deletions persist across restarts
        (``syncd status`` shows them) until a look at the whole folder needs them no more."""
        if plan.held:
            reason = plan.held_back[0].reason if plan.held_back else "deletions held back"
            count = plan.held
            earlier = next((h for h in self.manifest.held() if h[0] == ctx.scope), None)
            if not whole and earlier is not None:
                count = earlier[1] + plan.held_new  # (the ones held already counted once)
                reason = earlier[2]  # why they were held first stays the reason
            self.manifest.hold(ctx.scope, count, reason)
        elif whole:
            self.manifest.release(ctx.scope)

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
            for rel in plan.forget:
                self.manifest.delete(ctx.scope, rel)
        ctx.remote_hints = plan.hints

    async def server_view(self, ctx: FolderCtx) -> Server | None:
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
        remote = self.remote
        if not remote.features.lists:
            if self.one_shot and not self._probed:
                self._probed = True
                await self._first_contact(remote.ping, any_answer=True)
            return None

        async def look() -> Server | None:
            known = self.manifest.mirror(ctx.scope)
            token = (
                await cast(StateToken, remote).state(ctx.remote_path)
                if remote.features.state_token
                else None
            )
            if known is not None and token is not None and known[1] == token:
                return None  # nothing changed on the server since it matched the rows
            first_contact = await self._identify(ctx, known)
            entries = {e.path: e async for e in remote.list(ctx.remote_path)}
            await self._unlisted(ctx, entries)
            return Server(entries, first_contact=first_contact and bool(entries))

        try:
            if self.one_shot:
                self._probed = True
                return await self._first_contact(look)
            return await look()
        except TransientError as e:
            log.warning("could not list %s (%s); planning from the manifest", ctx.remote_path, e)
            return None

    async def _first_contact(
        self, fn: Callable[[], Awaitable[T]], *, any_answer: bool = False
    ) -> T | None:
        """``fn`` (a read), retried while the server cannot be reached at all, with the
        retry policy's backoff but logged at debug level. What stops the pass is kept in
        ``unreachable``/``fatal`` (None is returned); other errors reach the caller, but a
        PermanentError when ``any_answer`` (a ping: any answer means the server is there)."""
        attempt = 1
        while True:
            try:
                return await fn()
            except (Unreachable, Silent) as e:
                if attempt >= self.policy.attempts:
                    self.unreachable = e
                    return None
                wait = self.policy.delay(attempt)
                log.debug("%s; retry %d/%d in %.1fs", e, attempt, self.policy.attempts - 1, wait)
                await asyncio.sleep(wait)
                attempt += 1
            except (AuthError, WrongProtocol) as e:
                self.fatal = e
                return None
            except PermanentError as e:
                if not any_answer:
                    raise
                log.debug("%s: %s", self.remote.description, e)
                return None

    async def _unlisted(self, ctx: FolderCtx, entries: dict[str, RemoteEntry]) -> None:
        """Rows of dot files the listing left out, asked for one by one where the remote can
        say (nginx hides dot files from PROPFIND): held, they are not "lost"."""
        remote = self.remote
        if not remote.features.size_of:
            return
        sizer = cast(Sizer, remote)
        hidden = [
            row
            for rel, row in self.manifest.rows(ctx.scope).items()
            if rel not in entries and any(part.startswith(".") for part in rel.split("/"))
        ]
        for row in hidden[:UNLISTED_MAX]:
            size = await sizer.size_of(ctx.remote(row.rel))
            if size is not None:
                entries[row.rel] = RemoteEntry(row.rel, size, None)

    async def _identify(self, ctx: FolderCtx, known: tuple[str, str | None] | None) -> bool:
        """Read the mirror marker; adopt another scope's rows for the same mirror. Returns
        whether this is a first contact: no marker on the server, and no mirror recorded for
        this folder (a new mirror, or one made by a syncd older than the marker). Its marker
        is written once a pass left nothing undone (``confirmed``), so a first contact whose
        extra files are held stays one until the user confirms with ``--force-delete``."""
        remote = self.remote
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
            n = self.manifest.rekey(other, ctx.scope)
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
        self.manifest.set_mirror(ctx.scope, mirror)
        return False

    async def confirmed(self, ctx: FolderCtx, *, ok: bool) -> None:
        """After a pass that planned against the server: with nothing left undone (``ok``),
        write the marker where there is none, and record the server's state token, so that
        the next pass trusts the rows until the server changes. Otherwise forget the token."""
        known = self.manifest.mirror(ctx.scope)
        if not ok:
            if known is not None and known[1] is not None:
                self.manifest.set_mirror(ctx.scope, known[0], None)
            return
        remote = self.remote
        mirror = ctx.mirror or (known[0] if known is not None else None)
        try:
            # (``marked`` is None when the server was not listed: its token had not changed
            # since a pass that left the marker there.)
            if remote.features.mark and (mirror is None or ctx.marked is False):
                mirror = mirror or uuid.uuid4().hex
                # Recorded (and committed) before it is on the server: a rescan that reads the
                # marker meanwhile (the daemon's) finds its own mirror, not one "this state dir
                # does not know".
                self.manifest.set_mirror(ctx.scope, mirror, None)
                await self.manifest.aflush()
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
            self.manifest.set_mirror(ctx.scope, mirror, token)

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

    # -- the worker pool ---------------------------------------------------------------------
    def _start_pool(self) -> None:
        if self._workers:
            return
        self._uploader_ = self._uploader()
        self._queue = asyncio.Queue(maxsize=2 * self.config.sync.concurrency)
        self._flush_stop = asyncio.Event()
        self._workers = [
            asyncio.create_task(self._work(), name=f"syncd-worker-{i}")
            for i in range(self.config.sync.concurrency)
        ]
        self._flusher = asyncio.create_task(self._flush_loop(self._flush_stop))

    async def stop_pool(self) -> None:
        for t in self._workers:
            t.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._flusher is not None:
            assert self._flush_stop is not None
            self._flush_stop.set()
            await self._flusher
            self._flusher = None

    async def submit(self, job: Job) -> None:
        """Queue one op for the workers; waits while the queue is full (backpressure). Once
        the remote refused us (``fatal``), the workers leave what is queued undone (and call
        ``on_done``)."""
        self._start_pool()
        assert self._queue is not None
        await self._queue.put(job)

    async def run_ops(self, ctx: FolderCtx, ops: Iterable[Op], report: Report) -> None:
        """Run ``ops`` on the workers, ``concurrency`` at a time, and wait for all of them."""
        batch = Batch()
        for op in ops:
            stop = self.stopped()
            if stop is not None:
                self._left_undone(ctx, op, report, stop)
                continue
            batch.add()
            await self.submit(Job(ctx, op, report, batch))
        await batch.wait()

    def _left_undone(self, ctx: FolderCtx, op: Op, report: Report, why: RemoteError) -> None:
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

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            key = (job.ctx.scope, job.op.rel)
            self.inflight[key] = job
            job.started = time.monotonic()
            try:
                await self._one(self._uploader_, job)
            except (AuthError, WrongProtocol) as e:
                if self.fatal is None:
                    self.fatal = e
                    self.metrics.error(error_kind(e), f"{job.ctx.remote_path}/{job.op.rel}")
                    # A pass says it once, at its end (``Report.outcome``); the daemon here.
                    log.log(logging.DEBUG if self.one_shot else logging.ERROR, "%s", e)
                self._left_undone(job.ctx, job.op, job.report, e)
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
                if job.on_done is not None:
                    job.on_done(job)

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        """Commit staged manifest rows every FLUSH_EVERY seconds while transfers run."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            if self.manifest.pending:
                await self.manifest.aflush()

    async def _one(self, uploader: Uploader, job: Job) -> None:
        """Carry out one op; record its outcome in the report; never raise but AuthError or
        WrongProtocol (nothing will work: the caller stops everything)."""
        ctx, op, report = job.ctx, job.op, job.report
        name = f"{ctx.remote_path}/{op.rel}"
        stop = self.stopped()
        if stop is not None:
            # Once the server refused us, or (one pass) could not be reached after every
            # retry, the other ops are not tried: counted, and said once by the caller.
            self._left_undone(ctx, op, report, stop)
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
                if job.on_changed is not None:
                    job.on_changed(job)  # the daemon waits for the file to settle again
                    return
                now = ctx.scanner.stat(op.rel)
                if now is None:
                    log.warning("%s vanished before it was sent; skipped", name)
                    return
                if attempt == CHANGED_RETRIES:
                    self.metrics.error("changed", name)
                    why = f"{e.problem} (kept changing while sent; the server may hold an old copy)"
                    report.failed.append(Problem(name, why))
                    return
                log.info("%s: %s; sending again", name, e.problem)
                await asyncio.sleep(self.config.sync.debounce)
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
                if isinstance(e, TransientError) and job.on_retry is not None:
                    job.on_retry(job, e)  # the daemon keeps it in its outbox and tries later
                    return
                if isinstance(e, Unreachable | Silent):
                    self.unreachable = self.unreachable or e
                    self._left_undone(ctx, op, report, e)  # the pass says it once
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

    # -- verify ------------------------------------------------------------------------------
    async def verify(self) -> VerifyReport:
        """Compare every local file with what the remote holds, by size and sha-256.

        The sha-256 comes from the remote's listing where it gives one; otherwise each file of
        the right size is read back and hashed (said once in the log). A remote that cannot
        list at all (``features.lists`` False) cannot be verified: SyncdError saying so.
        """
        from syncd.remotes.base import Reader

        out = VerifyReport()
        remote = self.remote
        if not remote.features.lists:
            raise SyncdError(
                f"cannot verify: {remote.description} cannot list what it holds "
                f'(remote.kind = "{self.config.remote.kind}"), so there is nothing to compare '
                "with; the manifest (`syncd status`) is the only record of what was sent"
            )
        reader = cast(Reader, remote) if remote.features.read else None
        if not remote.features.lists_digests:
            if reader is not None:
                log.warning(
                    "verify: %s lists no sha-256; reading every file back to hash it",
                    remote.description,
                )
            else:
                log.warning(
                    "verify: %s lists no sha-256 and cannot read files back; comparing sizes only",
                    remote.description,
                )
        for ctx in self.folders:
            try:
                scan = await asyncio.to_thread(ctx.scanner.scan)
            except FolderUnavailable as e:
                out.failed.append(Problem(ctx.remote_path, str(e)))
                continue
            out.failed += [Problem(f"{ctx.remote_path}/{p.path}", p.reason) for p in scan.problems]
            listing = {e.path: e async for e in remote.list(ctx.remote_path)}
            local = await self._hash_all(ctx, scan.files.values(), out)
            stored: dict[str, str | None] = {}
            if reader is not None:
                # Read back what the listing gives no digest for, and what it does not show
                # at all (some servers hide names, e.g. nginx's dot files): absent is "".
                unread = [
                    rel
                    for rel, (_sha, size) in local.items()
                    if rel not in listing
                    or (listing[rel].sha256 is None and listing[rel].size == size)
                ]
                stored = await self._read_back(reader, ctx, unread, out)
            for rel, (want, size) in sorted(local.items()):
                name = f"{ctx.remote_path}/{rel}"
                entry = listing.pop(rel, None)
                got = stored.get(rel, "" if entry is None else entry.sha256 or want)
                if got is None:
                    continue  # could not be read back: listed in out.failed
                if got == "":
                    out.missing.append(name)
                elif got != want or (entry is not None and entry.size != size):
                    out.different.append(name)
                else:
                    out.identical += 1
            ignored = ctx.scanner.ignorer.ignored  # neither sent nor deleted: no difference
            out.extra += sorted(f"{ctx.remote_path}/{rel}" for rel in listing if not ignored(rel))
        return out

    async def _read_back(
        self, reader: Reader, ctx: FolderCtx, rels: list[str], out: VerifyReport
    ) -> dict[str, str | None]:
        """Read each file back from the remote and hash it: the sha-256, "" where the remote
        does not hold it, None where reading failed (recorded in ``out.failed``)."""
        sem = asyncio.Semaphore(max(2, self.config.sync.concurrency))
        result: dict[str, str | None] = {}

        async def one(rel: str) -> None:
            target = ctx.remote(rel)

            async def attempt() -> str:
                h = hashlib.sha256()
                async for chunk in reader.read(target):
                    h.update(chunk)
                return h.hexdigest()

            async with sem:
                try:
                    result[rel] = await self.policy.run(f"read back {target}", attempt)
                except AuthError:
                    raise
                except PermanentError as e:
                    if e.status in (404, 410):
                        result[rel] = ""  # not there
                    else:
                        result[rel] = None
                        out.failed.append(Problem(target, f"could not read it back: {e}"))
                except RemoteError as e:
                    result[rel] = None
                    out.failed.append(Problem(target, f"could not read it back: {e}"))

        async with asyncio.TaskGroup() as tg:
            for rel in rels:
                tg.create_task(one(rel))
        return result

    async def _hash_all(
        self, ctx: FolderCtx, files: Iterable[LocalFile], out: VerifyReport
    ) -> dict[str, tuple[str, int]]:
        sem = asyncio.Semaphore(max(2, self.config.sync.concurrency))
        result: dict[str, tuple[str, int]] = {}

        async def one(lf: LocalFile) -> None:
            async with sem:
                try:
                    sha = await asyncio.to_thread(hash_path, ctx.root / lf.rel, lf, self.stats)
                    result[lf.rel] = (sha, lf.size)
                except SourceError as e:
                    out.failed.append(Problem(f"{ctx.remote_path}/{lf.rel}", e.problem))

        async with asyncio.TaskGroup() as tg:
            for lf in files:
                tg.create_task(one(lf))
        return result


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


__all__ = ["Engine", "Progress", "Report", "VerifyReport", "scope_of"]
