"""What a ``syncd restore`` or ``syncd versions`` request brings back, and where each file goes.

A request names local paths inside configured folders (``locate``: a ``Spot`` each) or every
folder (``--all``). For each folder the server's current files are listed, and its kept
versions where the request needs them and the remote keeps any (``features.versions``);
``syncd.restore_plan`` picks the bytes of each file, and ``Finder.jobs`` says where each is
written (into its folder, or under ``--to``) as a ``Job``. Nothing here writes: the writing
is ``syncd.restore``'s; what is asked and why is said to people in the ``Outcome``'s notes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from syncd import restore_plan as rp
from syncd.config import Config, FolderConfig
from syncd.errors import SyncdError
from syncd.manifest import scope_of
from syncd.remotes.base import Remote, Version, Versions
from syncd.remotes.kinds import KINDS
from syncd.restore_files import sha256_of
from syncd.types import RemoteEntry


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


# --------------------------------------------------------------------------- the jobs


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


class Finder:
    """The server's side of a request: its listing and kept versions per folder, the picks,
    and the ``Job`` of each file. RestoreError if ``remote`` cannot give files back."""

    def __init__(self, config: Config, remote: Remote) -> None:
        self.config = config
        self.remote = remote
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
        with_trash = ", ".join(k.name for k in KINDS if "trash" in k.options)
        return RestoreError(
            f"{self.remote.description} keeps no versions, so {asked} cannot be brought back: "
            "only current copies can (`syncd restore PATH`); for versions from now on, use "
            f'syncd serve or set [remote] trash = "PREFIX" ({with_trash})'
        )

    async def jobs(self, req: Request, out: Outcome) -> list[Job]:
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


def _shown(spot: Spot) -> str:
    return str(Path(spot.folder.path) / spot.rel) if spot.rel else str(spot.folder.path)


# --------------------------------------------------------------------------- syncd versions


@dataclass(frozen=True)
class FileHistory:
    rel: str
    versions: list[Version]
    current: RemoteEntry | None


async def file_histories(finder: Finder, spot: Spot) -> list[FileHistory]:
    """What ``syncd versions PATH`` shows: every file at PATH or under it, its versions
    (oldest first, numbered from 1) and its current copy."""
    listing = await finder.listing(spot.folder)
    kept = await finder.kept(spot.folder, spot.rel)
    return [
        FileHistory(rel, kept.get(rel, []), listing.get(rel))
        for rel in rp.files_with_versions(listing, kept, spot.rel)
    ]


def folder_spots(config: Config) -> tuple[Spot, ...]:
    return tuple(Spot(f, "") for f in config.folders)


def spots(config: Config, paths: Sequence[Path], cwd: Path | None = None) -> tuple[Spot, ...]:
    return tuple(locate(config, p, cwd) for p in paths)


__all__ = [
    "FileHistory",
    "Finder",
    "Job",
    "Outcome",
    "Request",
    "RestoreError",
    "Spot",
    "file_histories",
    "folder_spots",
    "locate",
    "spots",
]
