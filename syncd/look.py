"""The Look step: what is there locally, as the planner takes it (``Looked``).

Every way in looks here: a pass (and the daemon's start-up, rescans, reconnects) scans the whole
folder and compares it with the manifest as two sorted streams (``first_look``: ``syncd
sync``'s prescan and the engine share it), a live batch looks at
its settled paths (``look_at``: a directory that appeared is scanned, a path that is gone stands
for everything that was below it). Nothing is decided here: that is the planner's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from syncd.manifestdb import decoded
from syncd.planner import Looked
from syncd.scanner import FolderUnavailable, Scanner, ScanResult
from syncd.types import LocalFile, Problem, Row

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
) -> FirstLook:
    """Scan the whole folder and compare it with the rows of ``scope``, walk and rows both in
    path order (``Scanner.walk``, ``Manifest.sorted_rows``): memory for the differences only,
    however many files match. ``staged``: the changes not committed yet
    (``Manifest.staged_rows``, taken on the thread that makes them: the caller's, when this
    runs in a worker thread). Blocking; raises FolderUnavailable."""
    if staged is None:
        staged = manifest.staged_rows(scope)
    result = ScanResult()
    files = result.files
    gone: list[Row] = []
    unchanged = found = 0
    rows = _with_staged(manifest.sorted_rows(scope), staged)
    r = next(rows, None)
    for lf in scanner.walk(result):
        found += 1
        rel = lf.rel
        while r is not None and r[0] < rel:
            gone.append(decoded(r))
            r = next(rows, None)
        if r is not None and r[0] == rel:
            # (size, mtime, ctime, inode): ``LocalFile.same``; wide values are decoded first
            if (r[1], r[2], r[5], r[6]) == lf.same or decoded(r).same == lf.same:
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


def _with_staged(
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


__all__ = ["FirstLook", "first_look", "look_at", "whole"]
