"""``syncd restore`` and ``syncd versions``: files back from the server, safely.

A request names local paths inside configured folders (or every folder). For each folder the
server's current files are listed, and its kept versions where the request needs them and the
remote keeps any (``features.versions``); ``syncd.restore_plan`` picks the bytes of each file.
Then each file is written:

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
import contextlib
import logging
import os
import shlex
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from syncd import restore_plan as rp
from syncd.config import Config, FolderConfig
from syncd.errors import AuthError, PermanentError, RemoteError, SyncdError
from syncd.manifest import scope_of
from syncd.remotes.base import Marker, Reader, Remote, Version, Versions
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
from syncd.restore_keep import Keeper, ManifestKeeper, NoKeeper
from syncd.retry import RetryPolicy
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.restore")


class RestoreError(SyncdError):
    """The request cannot be carried out as asked (exit 2): a path outside every folder, a
    remote that cannot give files back, no such version. The message says what to type."""


# --------------------------------------------------------------------------- what is asked


@dataclass(frozen=True)
class Spot:
    """A local path inside a configured folder: the folder and the path relative to it."""

    folder: FolderConfig
    rel: str  # "" is the folder itself


def locate(config: Config, path: Path, cwd: Path | None = None) -> Spot:
    """Which configured folder ``path`` (absolute or relative to ``cwd``) is in."""
    full = Path(os.path.abspath((cwd or Path.cwd()) / path.expanduser()))
    for folder in config.folders:
        root = Path(os.path.abspath(folder.path))
        if full == root:
            return Spot(folder, "")
        with contextlib.suppress(ValueError):
            return Spot(folder, full.relative_to(root).as_posix())
    names = ", ".join(str(f.path) for f in config.folders)
    raise RestoreError(
        f"{full} is not inside a configured folder ({names}); give a path inside one, "
        "or --all for every folder"
    )


@dataclass(frozen=True)
class Request:
    """What ``syncd restore`` was asked (the command line, parsed)."""

    spots: tuple[Spot, ...]
    #: Where to write instead of the folders (None: back into the folders).
    to: Path | None = None
    #: ``--all``: the spots are whole folders, written under ``to/<remote_path>``.
    everything: bool = False
    at_ns: int | None = None
    version: int | None = None
    deleted_since_ns: int | None = None
    overwrite: bool = False
    dry_run: bool = False


# --------------------------------------------------------------------------- the outcome


@dataclass
class Outcome:
    """What was done, file by file (local paths), for the summary and ``--json``."""

    restored: list[tuple[str, str]] = field(default_factory=list)  # (path, what)
    identical: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    kept_aside: list[tuple[str, str]] = field(default_factory=list)  # (path, where it went)
    planned: list[tuple[str, str]] = field(default_factory=list)  # dry run: (path, what)
    #: dry run: how many of ``planned`` have a local file of the same size that only reading
    #: the server's copy can tell apart (a remote that lists no digests): restored or skipped
    unsure: int = 0
    notes: list[str] = field(default_factory=list)  # what was chosen and why, for people
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- the restorer


@dataclass
class Job:
    """One file to write: the pick, the folder's scope and remote path, the local target."""

    pick: rp.Pick
    folder: FolderConfig
    scope: str
    target: Path
    into_folder: bool
    #: Where writing starts (the folder, or ``--to``): nothing below it is followed if it is
    #: a symbolic link.
    base: Path
    #: The local file's sha-256 at the target, once read (it is read at most once).
    local_sha: str | None = None

    def local_digest(self) -> str:
        """The sha-256 of the local file at the target (blocking; OSError if unreadable)."""
        if self.local_sha is None:
            self.local_sha = sha256_of(self.target)
        return self.local_sha

    @property
    def remote_path(self) -> str:
        return f"{self.folder.remote_path}/{self.pick.rel}".strip("/")


class Restorer:
    """Plans and carries out one ``Request`` against ``remote``."""

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
        self.keeper: Keeper = keeper or NoKeeper()
        self.policy = policy or RetryPolicy()
        self.progress = progress or Progress()
        self._swept: set[Path] = set()
        process_umask()  # now, before any worker thread writes
        if not (remote.features.read or remote.features.versions):
            raise RestoreError(
                f"{remote.description} cannot give files back (remote.kind = "
                f'"{config.remote.kind}" has no way to read a stored file)'
            )

    @property
    def keeps_versions(self) -> bool:
        return self.remote.features.versions

    # -- reading the server --------------------------------------------------------------
    async def listing(self, folder: FolderConfig) -> dict[str, RemoteEntry]:
        return {e.path: e async for e in self.remote.list(folder.remote_path)}

    async def kept(self, folder: FolderConfig, rel: str) -> dict[str, list[Version]]:
        """The versions of every file at ``rel`` or under it; {} where none are kept."""
        if not self.keeps_versions:
            return {}
        versions = cast(Versions, self.remote)
        prefix = f"{folder.remote_path}/{rel}".strip("/")
        found = [v async for v in versions.versions(prefix)]
        return rp.history(found, folder.remote_path)

    def _no_versions(self, asked: str) -> RestoreError:
        return RestoreError(
            f"{self.remote.description} keeps no versions, so {asked} cannot be brought back: "
            "only current copies can (`syncd restore PATH`); for versions from now on, use "
            'syncd serve or set [remote] trash = "PREFIX" (webdav, s3)'
        )

    async def plan(self, req: Request, out: Outcome) -> list[Job]:
        """The files to write for ``req`` (PlanError/RestoreError if it cannot be done)."""
        needs_versions = req.at_ns is not None or req.version is not None
        needs_versions |= req.deleted_since_ns is not None
        if needs_versions and not self.keeps_versions:
            what = "--at" if req.at_ns is not None else "--version"
            what = "--deleted-since" if req.deleted_since_ns is not None else what
            raise self._no_versions(f"what {what} asks for")
        jobs: list[Job] = []
        listings: dict[str, dict[str, RemoteEntry]] = {}
        for spot in req.spots:
            folder = spot.folder
            key = folder.remote_path
            if key not in listings:
                listings[key] = await self.listing(folder)
            listing = listings[key]
            picks = await self._picks(req, spot, listing, out)
            scope = scope_of(self.config, folder)
            for pick in picks:
                target, into = self._target(req, spot, pick.rel)
                base = Path(folder.path) if into else (req.to or Path(folder.path))
                jobs.append(Job(pick, folder, scope, target, into, base))
        seen: set[Path] = set()
        unique = []
        for job in jobs:  # (two PATHs can overlap)
            if job.target not in seen:
                seen.add(job.target)
                unique.append(job)
        return unique

    async def _picks(
        self, req: Request, spot: Spot, listing: dict[str, RemoteEntry], out: Outcome
    ) -> list[rp.Pick]:
        where = _shown(spot)
        if req.version is not None:
            kept = await self.kept(spot.folder, spot.rel)
            return [rp.numbered(listing, kept, spot.rel, req.version, shlex.quote(where))]
        if req.at_ns is not None:
            picks = rp.as_at(listing, await self.kept(spot.folder, spot.rel), spot.rel, req.at_ns)
            if not picks:
                out.notes.append(f"{where}: nothing was there at that time")
            return picks
        if req.deleted_since_ns is not None:
            kept = await self.kept(spot.folder, spot.rel)

            def not_here(rel: str) -> bool:
                return not os.path.lexists(self._target(req, spot, rel)[0])

            picks = rp.deleted_since(listing, kept, spot.rel, req.deleted_since_ns, not_here)
            if not picks:
                note = f"{where}: nothing deleted since then is missing from the server"
                root = Path(spot.folder.path)
                here = [r for r in listing if rp.under(r, spot.rel)]
                missing = sum(1 for r in here if not os.path.lexists(root / r))
                if missing:  # (deletions the guard held back, say: the server still has them)
                    note += (
                        f"; {missing} file(s) missing here are still on the server: "
                        f"syncd restore {shlex.quote(where)}"
                    )
                out.notes.append(note)
            return picks
        picks = rp.current(listing, spot.rel)
        if picks:
            one_file = len(picks) == 1 and picks[0].rel == spot.rel
            if self.keeps_versions and not req.everything and not one_file:
                await self._hint_deleted(spot, listing, out)
            return picks
        if not self.keeps_versions:
            out.failed.append(
                (
                    where,
                    f"the server does not hold it, and {self.remote.description} keeps "
                    "no versions: it cannot be brought back",
                )
            )
            return []
        kept = await self.kept(spot.folder, spot.rel)
        picks, when = rp.deleted(listing, kept, spot.rel)
        if when is None:
            out.failed.append(
                (
                    where,
                    "the server holds no copy and no version of it; check the path "
                    f"(`syncd versions {shlex.quote(where)}` lists what is kept)",
                )
            )
            return []
        from syncd.timespec import format_time

        out.notes.append(
            f"{where}: not on the server any more; restoring it as it was just before it "
            f"was deleted ({format_time(when)})"
        )
        return picks

    async def _hint_deleted(
        self, spot: Spot, listing: dict[str, RemoteEntry], out: Outcome
    ) -> None:
        """Files under ``spot`` deleted from the server are not brought back by a plain
        restore (only current copies are): say how to get them too."""
        gone, when = rp.deleted(listing, await self.kept(spot.folder, spot.rel), spot.rel)
        if when is None:
            return
        from syncd.timespec import format_time

        since = format_time(when - rp.DELETION_WINDOW_NS).replace(" ", "T")
        out.notes.append(
            f"{_shown(spot)}: {len(gone)} more file(s) under it were deleted from the server "
            f"(the last at {format_time(when)}); to bring them back too: syncd restore "
            f"--deleted-since {since} --under {shlex.quote(_shown(spot))}"
        )

    def _target(self, req: Request, spot: Spot, rel: str) -> tuple[Path, bool]:
        """Where the file ``rel`` (folder-relative) of ``spot`` is written, and whether that
        is its place in the folder (the manifest is then kept)."""
        if req.to is None:
            return Path(spot.folder.path) / rel, True
        base = req.to
        if req.everything or spot.rel == "":
            name = spot.folder.remote_path if req.everything else Path(spot.folder.path).name
            base = base / (name or Path(spot.folder.path).name)
            inner = rel
        else:
            base = base / spot.rel.rsplit("/", 1)[-1]
            inner = rel[len(spot.rel) + 1 :] if rel != spot.rel else ""
        return (base / inner if inner else base), False

    # -- carrying it out ------------------------------------------------------------------
    async def run(self, req: Request) -> Outcome:
        out = Outcome()
        jobs = await self.plan(req, out)
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
            out.failed.append(
                (
                    shown,
                    "a different local file is there; to replace it and keep yours "
                    f"beside it as {job.target.name}{KEPT_INFIX}…, add --overwrite",
                )
            )
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
                    out.failed.append(
                        (
                            str(job.target),
                            "a different local file is there; to replace it and "
                            f"keep yours beside it as {job.target.name}{KEPT_INFIX}…, add "
                            "--overwrite",
                        )
                    )
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


def _shown(spot: Spot) -> str:
    return str(Path(spot.folder.path) / spot.rel) if spot.rel else str(spot.folder.path)


def _reason(e: BaseException) -> str:
    if isinstance(e, FileExistsError):
        return "a file appeared there while it was restored; nothing replaced, run it again"
    if isinstance(e, PermanentError) and e.status in (404, 410):
        return "the server no longer has it (it may have been pruned); nothing written"
    if isinstance(e, OSError) and e.strerror:
        name = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{name}; nothing written"
    return str(e)


# --------------------------------------------------------------------------- syncd versions


@dataclass(frozen=True)
class FileHistory:
    rel: str
    versions: list[Version]
    current: RemoteEntry | None


async def file_histories(restorer: Restorer, spot: Spot) -> list[FileHistory]:
    """What ``syncd versions PATH`` shows: every file at PATH or under it, its versions
    (oldest first, numbered from 1) and its current copy."""
    listing = await restorer.listing(spot.folder)
    kept = await restorer.kept(spot.folder, spot.rel)
    return [
        FileHistory(rel, kept.get(rel, []), listing.get(rel))
        for rel in rp.files_with_versions(listing, kept, spot.rel)
    ]


def folder_spots(config: Config) -> tuple[Spot, ...]:
    return tuple(Spot(f, "") for f in config.folders)


def spots(config: Config, paths: Sequence[Path], cwd: Path | None = None) -> tuple[Spot, ...]:
    return tuple(locate(config, p, cwd) for p in paths)


def scopes(config: Config, chosen: Iterable[Spot]) -> set[str]:
    return {scope_of(config, s.folder) for s in chosen}


__all__ = [
    "KEPT_INFIX",
    "FileHistory",
    "Keeper",
    "ManifestKeeper",
    "NoKeeper",
    "Outcome",
    "Request",
    "RestoreError",
    "Restorer",
    "Spot",
    "file_histories",
    "folder_spots",
    "kept_name",
    "locate",
    "spots",
]
