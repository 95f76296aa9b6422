"""``syncd verify``: compare every local file with what the remote holds, by size and sha-256
(from the remote's listing, or read back and hashed where it lists none)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from syncd.config import Config
from syncd.errors import AuthError, PermanentError, RemoteError, SourceError, SyncdError
from syncd.hashing import ReadStats, hash_path
from syncd.remotes.base import Reader, Remote
from syncd.report import VerifyReport
from syncd.retry import RetryPolicy
from syncd.scanner import FolderUnavailable
from syncd.types import LocalFile, Problem
from syncd.uploader import FolderCtx

log = logging.getLogger("syncd.engine")  # (the name its log lines have always carried)


@dataclass
class Verifier:
    remote: Remote
    config: Config
    folders: list[FolderCtx]
    policy: RetryPolicy
    stats: ReadStats

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


__all__ = ["Verifier"]
