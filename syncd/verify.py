"""``syncd verify``: compare every local file with what the remote holds, by size and sha-256
(from the remote's listing, or read back and hashed where it lists none); with ``--times``,
the mtime and exec bit too where the remote keeps them (``features.keeps_times`` /
``keeps_exec``): exactly where the remote gives nanoseconds, to the second where it gives
whole seconds (WebDAV's getlastmodified)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from syncd.config import Config
from syncd.errors import AuthError, PermanentError, RemoteError, SourceError, SyncdError
from syncd.hashing import ReadStats, hash_path
from syncd.remotes.base import Reader, Remote, Stat
from syncd.report import VerifyReport
from syncd.retry import RetryPolicy
from syncd.scanner import FolderUnavailable
from syncd.types import LocalFile, Problem, RemoteEntry
from syncd.uploader import FolderCtx

log = logging.getLogger("syncd.engine")  # (the name its log lines have always carried)


@dataclass
class Verifier:
    remote: Remote
    config: Config
    folders: list[FolderCtx]
    policy: RetryPolicy
    stats: ReadStats
    times: bool = False

    async def verify(self) -> VerifyReport:
        """Compare every local file with what the remote holds, by size and sha-256.

        The sha-256 comes from the remote's listing where it gives one; otherwise each file of
        the right size is read back and hashed (said once in the log). A remote that cannot
        list at all (``lists = False``) cannot be verified: SyncdError saying so.
        """
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
        feats = remote.features
        times = self.times and (feats.keeps_times or feats.keeps_exec)
        if self.times and not times:
            log.warning(
                "verify --times: %s keeps neither mtimes nor exec bits; comparing contents only",
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
            listing_all = dict(listing)
            identical: list[str] = []
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
                    if times:
                        identical.append(rel)
            if times:
                await self._times(ctx, scan.files, listing_all, identical, out)
            ignored = ctx.scanner.ignorer.ignored  # neither sent nor deleted: no difference
            out.extra += sorted(f"{ctx.remote_path}/{rel}" for rel in listing if not ignored(rel))
        return out

    async def _times(
        self,
        ctx: FolderCtx,
        files: dict[str, LocalFile],
        listing: dict[str, RemoteEntry],
        rels: list[str],
        out: VerifyReport,
    ) -> None:
        """Compare the mtime and exec bit of each file of ``rels`` (same bytes) with what the
        remote keeps: from the listing, else asked per file (``Stat``)."""
        feats = self.remote.features
        stat = cast(Stat, self.remote) if feats.stat else None
        sem = asyncio.Semaphore(max(2, self.config.sync.concurrency))
        found: list[str] = []

        async def one(rel: str) -> None:
            entry = listing.get(rel)
            if stat is not None and (
                entry is None or (entry.mtime_ns is None and entry.executable is None)
            ):
                target = ctx.remote(rel)
                async with sem:
                    try:
                        entry = await self.policy.run(f"stat {target}", lambda: stat.stat(target))
                    except AuthError:
                        raise
                    except RemoteError as e:
                        out.failed.append(Problem(target, f"could not ask for its time: {e}"))
                        return
            if entry is None:
                return
            why = time_difference(files[rel], entry, feats.keeps_times, feats.keeps_exec)
            if why:
                found.append(f"{ctx.remote_path}/{rel} ({why})")

        async with asyncio.TaskGroup() as tg:
            for rel in rels:
                tg.create_task(one(rel))
        out.times += sorted(found)

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


def _when(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs))
    except (OverflowError, OSError, ValueError):  # beyond what the C library can show
        return f"{ns} ns since 1970"
    return f"{stamp}.{frac:09d}" if frac else stamp


def time_difference(lf: LocalFile, entry: RemoteEntry, keeps_times: bool, keeps_exec: bool) -> str:
    """Why the stored file's mtime or exec bit is not the local one's ("" if they agree):
    exact where the remote gives nanoseconds, to the second where it gives whole seconds."""
    whys: list[str] = []
    if keeps_times and entry.mtime_ns is not None:
        theirs, ours = entry.mtime_ns, lf.mtime_ns
        if theirs % 1_000_000_000 == 0:  # whole seconds: compared to the second
            ours = ours // 1_000_000_000 * 1_000_000_000
        if theirs != ours:
            whys.append(f"mtime here {_when(lf.mtime_ns)}, on the server {_when(theirs)}")
    if keeps_exec and entry.executable is not None and entry.executable != lf.executable:
        here = "executable" if lf.executable else "not executable"
        there = "executable" if entry.executable else "not executable"
        whys.append(f"{here} here, {there} on the server")
    return "; ".join(whys)


__all__ = ["Verifier", "time_difference"]
