"""``syncd restore``: files back from the server, safely.

A ``Request`` (``syncd.restore_jobs``: what is asked, and the ``Job`` of each file it brings
back) is carried out file by file:

1. the local file there is looked at first: the same sha-256 is skipped (what makes
   ``--all --to DIR`` resumable); a different one is never replaced without ``overwrite``
   (unless it is the server's current copy, which putting a version back keeps); nothing is
   written through a symbolic link;
2. the bytes go to a temp beside the target (``.~syncd-restore-<pid>-<hex>.tmp``: the scanner
   skips the reserved prefix), their digest is checked, they are fsynced, the mtime and
   executable bit set, and the temp is linked into place (never over a file that appeared
   meanwhile); with ``overwrite`` the local file is first renamed aside to
   ``<name>.syncd-kept-<stamp>``;
3. into a configured folder, an old or deleted version is then put back on the server
   (``restore_version``, a server-side copy), so that the mirror and the folder agree (killed
   between the two, the folder holds the file and the daemon sends it);
4. into a configured folder the file is then recorded as sent (``Keeper``): through a running
   daemon (which holds the paths meanwhile, so it neither sends them back nor deletes them)
   or, with none running, in the manifest under the state lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

from syncd.config import Config
from syncd.errors import AuthError, PermanentError, RemoteError
from syncd.manifest import scope_of
from syncd.remotes.base import Marker, Reader, Remote, Versions
from syncd.report import Progress
from syncd.restore_files import (
    KEPT_INFIX,
    Temp,
    kept_name,
    make_dirs,
    process_umask,
    sha256_of,
    stat_local,
    sweep,
    symlink_on_the_way,
)
from syncd.restore_jobs import Finder, Job, Outcome, Request
from syncd.restore_keep import Keeper, NoKeeper
from syncd.retry import RetryPolicy

log = logging.getLogger("syncd.restore")


class Restorer:
    """Carries out one ``Request`` against ``remote``: the jobs ``Finder`` gives, each one
    looked at, written, put back on the server and recorded (``keeper``)."""

    def __init__(
        self,
        config: Config,
        remote: Remote,
        *,
        keeper: Keeper | None = None,
        policy: RetryPolicy | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.remote = remote
        self.find = Finder(config, remote)  # (RestoreError if it cannot give files back)
        self.keeper: Keeper = keeper or NoKeeper()
        self.policy = policy or RetryPolicy()
        self.progress = progress or Progress()
        self._swept: set[Path] = set()
        process_umask()  # now, before any worker thread writes

    # -- carrying it out ------------------------------------------------------------------
    async def run(self, req: Request) -> Outcome:
        out = Outcome()
        jobs = await self.find.jobs(req, out)
        if req.dry_run:
            for job in jobs:
                await self._dry(job, req, out)
            return out
        into = [j for j in jobs if j.into_folder]
        by_scope: dict[str, list[str]] = {}
        for j in into:
            by_scope.setdefault(j.scope, []).append(j.pick.rel)
        for scope, rels in by_scope.items():
            await self.keeper.hold(scope, rels)
        self.progress.start(len(jobs), sum(j.pick.size for j in jobs))
        sem = asyncio.Semaphore(max(1, self.config.sync.concurrency))

        async def one(job: Job) -> None:
            async with sem:
                await self._one(job, req, out)
                self.progress.file_done(job.pick.rel)

        try:
            async with asyncio.TaskGroup() as tg:
                for job in jobs:
                    tg.create_task(one(job))
        finally:
            self.progress.stop()
        if req.to is None:
            await self._adopt(req, out)
        return out

    async def _adopt(self, req: Request, out: Outcome) -> None:
        """Whole folders restored into place (a new machine): their mirror is the one they
        came from, so the next pass does not take it for another machine's."""
        if not self.remote.features.mark:
            return
        marker = cast(Marker, self.remote)
        for spot in {s.folder.remote_path: s for s in req.spots if s.rel == ""}.values():
            try:
                mirror = await marker.read_marker(spot.folder.remote_path)
            except RemoteError as e:
                log.debug("%s: no mirror marker read: %s", spot.folder.remote_path, e)
                continue
            if mirror is not None:
                await self.keeper.adopt(scope_of(self.config, spot.folder), mirror)

    def _local_state(self, job: Job) -> str:
        """ "absent", "same" (the sha-256 the pick has), "differs", or why it is in the way."""
        t = job.target
        if not os.path.lexists(t):
            return "absent"
        if os.path.isdir(t) and not os.path.islink(t):
            return "a directory is there"
        if not os.path.isfile(t) or os.path.islink(t):
            return "something that is not a regular file is there"
        want = job.pick.sha256
        try:
            size = os.path.getsize(t)
            if size != job.pick.size:
                return "differs"
            if want is None:
                return "differs?"  # same size, no digest to compare: read it and see
            return "same" if job.local_digest() == want else "differs"
        except OSError as e:
            return f"cannot be read ({e.strerror})"

    async def _one(self, job: Job, req: Request, out: Outcome) -> None:
        shown = str(job.target)
        state = await self._state(job, req, out)
        if state is None:
            return
        if state == "same":
            out.identical.append(shown)
            await self._record_same(job)
            return
        try:
            await self._write(job, state, req, out)
        except AuthError:
            raise
        except (RemoteError, OSError, ValueError) as e:
            out.failed.append((shown, _reason(e)))

    async def _state(self, job: Job, req: Request, out: Outcome) -> str | None:
        """What is at the target, for writing there: "absent", "same", "differs" (with
        ``--overwrite``), "differs?" (same size, no digest to tell), "on the server" (the
        server's current copy, which putting a version back keeps); None when it must not be
        written (listed in ``out.failed`` with what to do), for the dry run and the real one
        alike."""
        shown = str(job.target)
        link = await asyncio.to_thread(symlink_on_the_way, job.base, job.target)
        if link is not None:
            out.failed.append(
                (
                    shown,
                    f"{link} is a symbolic link, which syncd never follows (it would write "
                    "outside the folder); move it away, then run the restore again",
                )
            )
            return None
        state = await asyncio.to_thread(self._local_state, job)
        if state not in ("absent", "same", "differs", "differs?"):
            out.failed.append((shown, f"{state}; move it away, then run the restore again"))
            return None
        if state in ("differs", "differs?") and await self._kept_on_server(job):
            return "on the server"  # replaced without --overwrite: nothing of yours is lost
        if state == "differs" and not req.overwrite:
            out.failed.append((shown, _differs(job)))
            return None
        return state

    async def _dry(self, job: Job, req: Request, out: Outcome) -> None:
        """What the real run would do with ``job``, said and changing nothing."""
        state = await self._state(job, req, out)
        if state is None:
            return
        if state == "same":
            out.identical.append(str(job.target))
            return
        if state == "differs?":
            out.unsure += 1
        note = {
            "differs": "a different local file is there (kept aside first)",
            "differs?": "a local file of the same size is there (compared when restored)",
            "on the server": "replaces the server's current copy, which it keeps as a version",
        }.get(state, "")
        out.planned.append((str(job.target), job.pick.what + (f"; {note}" if note else "")))

    async def _kept_on_server(self, job: Job) -> bool:
        """Whether the local file is the server's current copy, which putting an older version
        back into the folder keeps on the server as a version: then it is replaced without
        ``--overwrite`` and not kept aside (`syncd versions` lists it afterwards)."""
        pick = job.pick
        if not (job.into_folder and pick.version is not None and pick.replaces):
            return False
        try:
            return await asyncio.to_thread(job.local_digest) == pick.replaces
        except OSError:
            return False

    async def _drop_if_on_server(self, job: Job, aside: Path, state: str) -> bool:
        """The local file set aside was the server's current copy (now kept there as a
        version): remove it, if it still is exactly that (an edit in the meantime stays)."""
        if state != "on the server":
            return False
        try:
            if await asyncio.to_thread(sha256_of, aside) != job.pick.replaces:
                return False
            await asyncio.to_thread(os.unlink, aside)
        except OSError:
            return False
        return True

    async def _record_same(self, job: Job) -> None:
        """An identical local file: recorded as sent where the server holds those bytes now."""
        if job.into_folder and job.pick.version is None and job.pick.sha256:
            local = stat_local(job.target, job.pick.rel)
            if local is not None:
                await self.keeper.record(job.scope, local, job.pick.sha256)

    def _reader(self, job: Job, *, current: bool) -> Callable[[], AsyncIterator[bytes]]:
        if current or job.pick.version is None:
            reader = cast(Reader, self.remote)
            return lambda: reader.read(job.remote_path)
        versions = cast(Versions, self.remote)
        version = job.pick.version
        return lambda: versions.read_version(version)

    async def _write(self, job: Job, state: str, req: Request, out: Outcome) -> None:
        pick = job.pick
        await asyncio.to_thread(make_dirs, job.target)
        if job.target.parent not in self._swept:
            self._swept.add(job.target.parent)
            await asyncio.to_thread(sweep, job.target.parent)
        temp = await asyncio.to_thread(Temp, job.target)
        try:
            await self._download(job, temp)
            if state == "differs?":
                same = await asyncio.to_thread(job.local_digest)
                if same == temp.hash.hexdigest():
                    out.identical.append(str(job.target))
                    return
                if not req.overwrite:
                    out.failed.append((str(job.target), _differs(job)))
                    return
            sha = temp.hash.hexdigest()
            # (times and the exec bit only where the remote keeps them: a WebDAV server's
            # getlastmodified is when the file was uploaded, not the file's own mtime)
            features = self.remote.features
            mtime = pick.mtime_ns if features.keeps_times else None
            executable = pick.executable if features.keeps_exec else None
            await asyncio.to_thread(temp.finish, mtime, executable)
            aside = None
            if state != "absent":
                aside = kept_name(job.target)
                await asyncio.to_thread(os.rename, job.target, aside)
            await asyncio.to_thread(temp.place)
            # Only now the server: killed before this point, the folder holds the restored
            # file and the mirror the old one, which the daemon mends by sending the file
            # (the other way round, it would delete from the server what is not here).
            try:
                await self._put_back(job)
            except RemoteError as e:
                if aside is not None:
                    out.kept_aside.append((str(job.target), str(aside)))
                out.failed.append(
                    (
                        str(job.target),
                        f"restored here, but the server did not take it back ({_reason(e)}); "
                        "`syncd run` or `syncd sync` will send it",
                    )
                )
                return
            if aside is not None and not await self._drop_if_on_server(job, aside, state):
                out.kept_aside.append((str(job.target), str(aside)))
        finally:
            await asyncio.to_thread(temp.discard)
        out.restored.append((str(job.target), pick.what))
        out.bytes += temp.size
        if job.into_folder:
            local = stat_local(job.target, pick.rel)
            if local is not None:
                await self.keeper.record(job.scope, local, sha)
        log.debug("restored %s (%s)", job.target, pick.what)

    async def _download(self, job: Job, temp: Temp) -> None:
        """The bytes into ``temp``, checked against the pick's size and sha-256 (an old
        version read from where the remote keeps it, a current copy from its path)."""
        pick = job.pick
        chunks = self._reader(job, current=pick.version is None)

        async def attempt() -> None:
            await asyncio.to_thread(temp.restart)
            async for chunk in chunks():
                await asyncio.to_thread(temp.write, chunk)
                self.progress.advance(len(chunk))

        await self.policy.run(f"read {job.remote_path}", attempt)
        got = temp.hash.hexdigest()
        if pick.sha256 is not None and got != pick.sha256:
            raise ValueError(
                f"the server's bytes do not match their sha-256 (got {got[:12]}, "
                f"expected {pick.sha256[:12]}); nothing written, try again"
            )
        if temp.size != pick.size:
            raise ValueError(
                f"the server sent {temp.size} bytes, not the {pick.size} it lists; "
                "nothing written, try again"
            )

    async def _put_back(self, job: Job) -> None:
        """Into a folder, an old version is made current on the server too (a server-side
        copy, once the file is in place here), so that the mirror holds what the folder
        does: nothing is sent back."""
        version = job.pick.version
        if version is None or not job.into_folder:
            return
        versions = cast(Versions, self.remote)
        await self.policy.run(
            f"put back {job.remote_path}",
            lambda: versions.restore_version(version, job.remote_path),
        )


def _differs(job: Job) -> str:
    """Why a different local file at the target stops the restore of it, and what to add."""
    return (
        "a different local file is there; to replace it and keep yours beside it as "
        f"{job.target.name}{KEPT_INFIX}…, add --overwrite"
    )


def _reason(e: BaseException) -> str:
    if isinstance(e, FileExistsError):
        return "a file appeared there while it was restored; nothing replaced, run it again"
    if isinstance(e, PermanentError) and e.status in (404, 410):
        return "the server no longer has it (it may have been pruned); nothing written"
    if isinstance(e, OSError) and e.strerror:
        name = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{name}; nothing written"
    return str(e)


__all__ = ["Restorer"]
