"""The Look step: what is there locally, as the planner takes it (``Looked``).

Every way in looks here: a pass (and the daemon's start-up, rescans, reconnects) scans the whole
folder and compares it with the manifest as two sorted streams (``first_look``: ``syncd
sync``'s prescan and the engine share it), a live batch looks at
its settled paths (``look_at``: a directory that appeared is scanned, a path that is gone stands
for everything that was below it). Nothing is decided here: that is the planner's.
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from syncd.config import FolderConfig
from syncd.manifestdb import decoded, reader, sorted_rows
from syncd.planner import Looked, Server
from syncd.scanner import FolderUnavailable, Scanner, ScanResult
from syncd.types import LocalFile, Problem, RemoteEntry, Row

if TYPE_CHECKING:
    from syncd.manifest import Manifest
    from syncd.uploader import FolderCtx


@dataclass
class FirstLook:
    """A look at the whole folder, compared with the manifest's rows as two sorted streams
    (``first_look``): the differences, and counts of the rest.

    ``scan.files`` holds only the files that are new or not as their rows say; ``gone`` the
    rows whose file was not found; ``unchanged`` and ``found`` count the files that matched
    and every file. Problems, incomplete directories and skips are the scan's, in full."""

    scan: ScanResult
    gone: list[Row]
    unchanged: int
    found: int

    @property
    def in_sync(self) -> bool:
        """Does the folder match its rows exactly?"""
        return not self.scan.files and not self.gone

    def looked(self) -> Looked:
        """The look as the planner takes it: its differences (``Looked.gone``)."""
        return Looked(
            self.scan.files,
            incomplete=self.scan.incomplete,
            folder_empty=self.found == 0,
            gone=self.gone,
            unchanged=self.unchanged,
        )

    @property
    def every_file(self) -> bool:
        """Does ``scan.files`` hold every file found (none matched a row)?"""
        return self.unchanged == 0


def first_look(
    scanner: Scanner,
    manifest: Manifest,
    scope: str,
    staged: Mapping[str, Row | None] | None = None,
    *,
    parts: int | None = None,
) -> FirstLook:
    """Scan the whole folder and compare it with the rows of ``scope``, walk and rows both in
    path order (``Scanner.walk``, ``manifestdb.sorted_rows``): memory for the differences
    only, however many files match. ``staged``: the changes not committed yet
    (``Manifest.staged_rows``, taken on the thread that makes them: the caller's, when this
    runs in a worker thread). Blocking; raises FolderUnavailable.

    A folder of ``PARALLEL_MIN`` rows or more is walked in two parts on two cores, the second
    by a process of its own (``parts``: how many, default the CPUs, at most 2): the walk is
    Python and stat calls, which one core cannot do faster. Each part compares its own range
    of paths; put together they are exactly the look of one walk."""
    if staged is None:
        staged = manifest.staged_rows(scope)
    split = _split(manifest.path, scope, parts)
    if split is None:
        result = ScanResult()
        look = _compare(
            scanner.walk(result, summarise=False),
            with_staged(sorted_rows(manifest.path, scope), staged),
            result,
        )
        scanner.summarise(look.scan)
        return look
    theirs_staged = {rel: row for rel, row in staged.items() if rel >= split}
    mine_staged = {rel: row for rel, row in staged.items() if rel < split}
    level = logging.getLogger("syncd").getEffectiveLevel()
    job = (scanner.folder, manifest.path, scope, theirs_staged, split, level)
    theirs = _Part.start(job)
    result = ScanResult()
    try:
        mine = _compare(
            scanner.walk(result, part=("", split), summarise=False),
            with_staged(sorted_rows(manifest.path, scope, "", split), mine_staged),
            result,
        )
    except BaseException:  # (the folder went away, a stop): the second part is not needed
        if theirs is not None:
            theirs.abandon()
        raise
    got = theirs.result() if theirs is not None else None
    if isinstance(got, FolderUnavailable):
        raise got
    if not isinstance(got, tuple):  # no second process here: the rest is walked by this one
        log.debug("the second part of the walk runs here: %s", got)
        got = _look_part(*job, keep_logs=False)
    other, records = got
    for name, levelno, message in records:
        logging.getLogger(name).log(levelno, "%s", message)
    look = _joined(mine, other)
    scanner.summarise(look.scan)
    return look


PARALLEL_MIN = 200_000
"""Rows from which a folder is walked in two processes: below, starting the second one costs
about what it saves."""

log = logging.getLogger("syncd.scanner")


def _split(path: Path, scope: str, parts: int | None) -> str | None:
    """Where the second part of the walk starts: the sort key of the top-level entry that
    holds the middle row (None: one part -- one CPU, few rows, or every row in one entry)."""
    if (parts if parts is not None else min(2, os.cpu_count() or 1)) < 2:
        return None
    db = reader(path)
    try:
        (n,) = db.execute("SELECT count(*) FROM files WHERE scope = ?", (scope,)).fetchone()
        if n < PARALLEL_MIN and parts is None:
            return None
        if n < 2:
            return None
        first, middle = (
            cast(
                str,
                db.execute(
                    "SELECT path FROM files WHERE scope = ? ORDER BY path LIMIT 1 OFFSET ?",
                    (scope, k),
                ).fetchone()[0],
            )
            for k in (0, n // 2)
        )
    finally:
        db.close()
    key = _top_key(middle)
    return None if key <= _top_key(first) else key


def _top_key(rel: str) -> str:
    """The sort key of the top-level entry holding ``rel`` (``Scanner.walk``'s order)."""
    top, sep, _rest = rel.partition("/")
    return top + "/" if sep else top


Job = tuple[FolderConfig, Path, str, Mapping[str, "Row | None"], str, int]
"""What the second part of a walk needs: the folder, the manifest's path, the scope, the
staged changes of its paths, where it starts, the log level."""


class _Part:
    """The second part of a walk, in a process of its own: ``python -m syncd.lookpart``, its
    job and its answer pickled through its stdin and stdout (a child started this way runs
    nothing of the parent's ``__main__``, however the parent was started)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, job: Job) -> _Part | None:
        try:
            # -P and syncd's own location first: never code from the current directory.
            here = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *_pythonpath()])}
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "syncd.lookpart"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as e:
            log.debug("no second process for the walk: %s", e)
            return None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            with proc.stdin:
                proc.stdin.write(pickle.dumps(job))
        except (OSError, pickle.PicklingError) as e:  # it died at once (or cannot be told)
            log.debug("no second process for the walk: %s", e)
            proc.stdout.close()
            proc.kill()
            proc.wait()
            return None
        return cls(proc)

    def abandon(self) -> None:
        """Stop the part and wait for it (no process left behind)."""
        assert self.proc.stdout is not None
        self.proc.kill()
        self.proc.stdout.close()
        self.proc.wait()

    def result(self) -> tuple[FirstLook, list[tuple[str, int, str]]] | BaseException | str:
        """The part's look and log, the error it raised, or why there is neither."""
        assert self.proc.stdout is not None
        try:
            data = self.proc.stdout.read()
        finally:
            self.proc.stdout.close()
            code = self.proc.wait()
        try:
            got = pickle.loads(data)
        except Exception as e:  # it died: no answer, or half of one
            return f"the second process ended ({code}) without an answer ({e})"
        if isinstance(got, BaseException | tuple):
            return got
        return f"an answer of type {type(got).__name__}"


def _look_part(
    folder: FolderConfig,
    path: Path,
    scope: str,
    staged: Mapping[str, Row | None],
    low: str,
    level: int,
    *,
    keep_logs: bool = True,
) -> tuple[FirstLook, list[tuple[str, int, str]]]:
    """The second part of a walk: its look, and what it logged (in its own process, kept for
    the parent to log, as if it had walked that part itself)."""
    records: list[tuple[str, int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.name, record.levelno, record.getMessage()))

    if keep_logs:
        top = logging.getLogger("syncd")
        top.handlers[:] = [Keep()]
        top.setLevel(level)
        top.propagate = False
    scanner = Scanner(folder)
    records.clear()  # (the parent warned about the ignore rules already)
    result = ScanResult()
    look = _compare(
        scanner.walk(result, part=(low, None), summarise=False),
        with_staged(sorted_rows(path, scope, low), staged),
        result,
    )
    return look, records


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _joined(a: FirstLook, b: FirstLook) -> FirstLook:
    """Two parts' looks (``a`` the lower paths) as one."""
    scan = a.scan
    scan.files.update(b.scan.files)
    scan.problems += b.scan.problems
    scan.incomplete += b.scan.incomplete
    scan.skipped += b.scan.skipped
    scan.skips.update(b.scan.skips)
    return FirstLook(scan, a.gone + b.gone, a.unchanged + b.unchanged, a.found + b.found)


def _compare(
    walk: Iterator[LocalFile], rows: Iterator[tuple[Any, ...]], result: ScanResult
) -> FirstLook:
    """Merge the walk with the rows (both in path order): what differs, and counts."""
    files = result.files
    gone: list[Row] = []
    unchanged = found = 0
    r = next(rows, None)
    for lf in walk:
        found += 1
        rel = lf.rel
        while r is not None and r[0] < rel:
            gone.append(decoded(r))
            r = next(rows, None)
        if r is not None and r[0] == rel:
            # (size, mtime, ctime, inode): ``LocalFile.same``; wide values are decoded first
            if (r[1] == lf[1] and r[2] == lf[2] and r[5] == lf[3] and r[6] == lf[4]) or decoded(
                r
            ).same == lf.same:
                unchanged += 1
            else:
                files[rel] = lf
            r = next(rows, None)
        else:
            files[rel] = lf
    while r is not None:
        gone.append(decoded(r))
        r = next(rows, None)
    return FirstLook(result, gone, unchanged, found)


def with_staged(
    committed: Iterator[tuple[object, ...]], staged: Mapping[str, Row | None]
) -> Iterator[tuple[Any, ...]]:
    """The committed rows (in path order) with the staged changes applied, in path order."""
    if not staged:
        yield from committed
        return
    changes = sorted(staged.items())
    i = 0
    for t in committed:
        rel = cast(str, t[0])
        while i < len(changes) and changes[i][0] < rel:
            if (row := changes[i][1]) is not None:
                yield row
            i += 1
        if i < len(changes) and changes[i][0] == rel:
            if (row := changes[i][1]) is not None:
                yield row
            i += 1
            continue
        yield t
    for _rel, row in changes[i:]:
        if row is not None:
            yield row


def with_listing(
    first: FirstLook,
    server: Server,
    rows: Iterator[tuple[Any, ...]],
    restat: Callable[[str], LocalFile | None],
) -> tuple[Looked, Server]:
    """The look and the server's listing, both reduced to what the planner needs to plan the
    differences against the listing (``Server.forget``): the rows (``rows``, every one, in
    path order, staged changes applied) are compared with the listing once here, and of the
    listing only the entries the differences bear on are kept -- the listing itself is
    consumed (``server.entries`` is emptied). A row the listing does not back whose file
    was unchanged is looked at again (``restat``): its file is to be sent again.

    Blocking (a stream of every row): run it in a thread."""
    entries = cast(dict[str, RemoteEntry], server.entries)
    total = len(entries)
    files = dict(first.scan.files)
    gone = {r.rel for r in first.gone}
    unchanged = first.unchanged
    forget: list[str] = []
    kept: dict[str, RemoteEntry] = {}
    for t in rows:
        rel = t[0]
        e = entries.pop(rel, None)
        if e is None or e.size != t[1] or e.sha256 not in (None, t[3]):
            forget.append(rel)
            if e is not None:
                kept[rel] = e
            if rel not in files and rel not in gone:  # unchanged here, lost there
                unchanged -= 1
                if (lf := restat(rel)) is not None:
                    files[rel] = lf
        elif rel in files:
            kept[rel] = e  # a changed file: what the server holds may be it already
    kept.update(entries)  # what no row knows: new files' entries, files only the server has
    entries.clear()
    if len(files) != len(first.scan.files):  # (in path order, as a whole scan gives them)
        files = dict(sorted(files.items()))
    looked = Looked(
        files,
        incomplete=first.scan.incomplete,
        folder_empty=first.found == 0,
        gone=first.gone,
        unchanged=unchanged,
    )
    return looked, Server(kept, server.first_contact, forget=forget, total=total)


def whole(scan: ScanResult) -> Looked:
    """A scan of the whole folder (every file), as the planner takes it."""
    return Looked(scan.files, incomplete=scan.incomplete)


async def look_at(ctx: FolderCtx, rels: Sequence[str]) -> tuple[Looked, list[Problem]]:
    """Look at the settled paths ``rels`` of a folder (checked to be there: ``check_root``).
    Returns the look, and the problems of the directories it scanned (named like the engine's:
    "remote_path/rel")."""
    import asyncio  # (here: ``syncd sync``'s prescan imports this module without an event loop)

    ignored = ctx.scanner.ignorer.ignored
    files: dict[str, LocalFile] = {}
    incomplete: list[str] = []
    problems: list[Problem] = []
    for rel in rels:
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
            problems += [Problem(ctx.remote(p.path), p.reason) for p in scan.problems]
            files.update(scan.files)
            incomplete += scan.incomplete
        elif (lf := ctx.scanner.look(rel, st)) is not None:  # judged as a scan judges it
            files[rel] = lf
    return Looked(files, list(rels), incomplete, folder_empty=_empty(ctx)), problems


def _empty(ctx: FolderCtx) -> bool:
    """Does the folder hold nothing that is mirrored (it was emptied, or a disk unmounted)?
    Reads the folder's first entries only."""
    ignored = ctx.scanner.ignorer.ignored
    try:
        with os.scandir(ctx.root) as it:
            return not any(not ignored(e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except OSError:
        return True


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


__all__ = ["FirstLook", "first_look", "look_at", "whole", "with_listing", "with_staged"]
