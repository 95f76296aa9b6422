"""``syncd restore`` and ``syncd versions``: getting files back (syncd.restore does the work).

Exit codes: 0 everything asked was restored (or is identical already), 1 something was not
(listed, with what to do), 2 a usage or config error (a path outside the folders, a bad TIME,
a version that does not exist, a remote that keeps no versions when one is asked for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.cli_io import EXIT_FAILED, EXIT_OK, EXIT_USAGE, load, say, show

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.remotes.base import Remote
    from syncd.restore_jobs import Outcome, Request
    from syncd.restore_keep import Keeper


LIST_AT_MOST = 100  # `--all` names the files it restored only up to this many


def _usage(message: str) -> int:
    say(f"syncd restore: {message}")
    return EXIT_USAGE


def _request(args: argparse.Namespace, cfg: Config) -> Request:
    """The command line as a ``Request``; RestoreError/BadTime/ValueError say what is wrong."""
    from syncd.restore_jobs import Request, RestoreError, folder_spots, spots
    from syncd.timespec import parse_time

    paths: list[Path] = list(args.paths)
    if args.under is not None:
        if args.deleted_since is None:
            raise RestoreError("--under goes with --deleted-since TIME")
        paths.append(args.under)
    picked = [args.at is not None, args.version is not None, args.deleted_since is not None]
    if sum(picked) > 1:
        raise RestoreError("choose one of --at, --version and --deleted-since")
    if args.all and paths:
        raise RestoreError("give PATHs or --all, not both")
    if args.all and (args.version is not None or args.deleted_since is not None):
        raise RestoreError("--all restores the current copies (or --at TIME); use PATH for more")
    if not paths and not args.all and args.deleted_since is None:
        raise RestoreError(
            "what should be restored? give a PATH inside a folder (syncd restore ~/docs/a.txt), "
            "--all, or --deleted-since TIME"
        )
    if args.version is not None and len(paths) != 1:
        raise RestoreError("--version N picks a version of one file: give exactly one PATH")
    if args.version is not None and args.version < 1:
        raise RestoreError("versions are numbered from 1 (the oldest kept); see `syncd versions`")
    chosen = spots(cfg, paths) if paths else folder_spots(cfg)
    to = Path(args.to).expanduser().absolute() if args.to is not None else None
    if to is not None:
        for spot in chosen:
            source = Path(os.path.abspath(spot.folder.path)) / spot.rel
            if to == source or source in to.parents:
                raise RestoreError(
                    f"--to {to} is inside {source}, which is being restored: the copy would "
                    "land in what it copies (and be mirrored back); give a DIR outside it"
                )
    return Request(
        spots=chosen,
        to=to,
        everything=bool(args.all),
        at_ns=parse_time(args.at) if args.at is not None else None,
        version=args.version,
        deleted_since_ns=parse_time(args.deleted_since) if args.deleted_since else None,
        overwrite=bool(args.overwrite),
        dry_run=bool(args.dry_run),
    )


def restore(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.restore_jobs import RestoreError
    from syncd.restore_plan import PlanError
    from syncd.timespec import BadTime

    cfg = load(args)
    try:
        req = _request(args, cfg)
    except (RestoreError, BadTime) as e:
        return _usage(str(e))
    try:
        out = asyncio.run(_restore(cfg, req, json_out=args.json))
    except (RestoreError, PlanError) as e:
        return _usage(str(e))
    if args.json:
        print(json.dumps(_doc(out, req), indent=2))
    else:
        _print(out, req)
    return EXIT_OK if out.ok else EXIT_FAILED


async def _keeper(cfg: Config, req: Request) -> Keeper:
    """Who records what is written into the folders: the running daemon, or the manifest
    under the state lock; nobody for a dry run or ``--to``."""
    import asyncio

    from syncd.errors import SyncdError
    from syncd.restore_keep import ManifestKeeper, NoKeeper
    from syncd.statelock import AlreadyRunning
    from syncd.status.client import RestoreSession

    if req.dry_run or req.to is not None:
        return NoKeeper()
    state = cfg.sync.state_dir
    try:
        return ManifestKeeper(state)
    except AlreadyRunning as e:
        if e.command != "run":
            raise SyncdError(
                f"{e}; run the restore again when it is done (it writes into the folders, "
                "and the manifest has one writer)"
            ) from None
        deadline = time.monotonic() + 10  # a daemon just started opens its socket a moment later
        while True:
            session = await RestoreSession.open(state)
            if session is not None:
                return session
            if time.monotonic() >= deadline:
                raise SyncdError(
                    f"{e}, but it does not answer on its control socket; wait until "
                    "`syncd status` answers, then run the restore again"
                ) from None
            await asyncio.sleep(0.2)


def _open_remote(cfg: Config) -> Remote:
    from syncd.remotes.kinds import open_remote

    return open_remote(cfg.remote, cfg.sync.concurrency)


async def _restore(cfg: Config, req: Request, *, json_out: bool) -> Outcome:
    from syncd.restore import Restorer

    remote = _open_remote(cfg)
    try:
        progress = None
        if not json_out and not req.dry_run and sys.stderr is not None and sys.stderr.isatty():
            from syncd.progress import RichProgress

            progress = RichProgress()
        restorer = Restorer(cfg, remote, progress=progress)
        restorer.keeper = await _keeper(cfg, req)
        try:
            return await restorer.run(req)
        finally:
            await restorer.keeper.release()
    finally:
        await remote.aclose()


def _print(out: Outcome, req: Request) -> None:
    from syncd.report import human

    for note in out.notes:
        say(f"syncd restore: {note}")
    if req.dry_run:
        for path, what in out.planned:
            print(show(f"would restore {path} ({what})"))
        for path, reason in out.failed:
            say(f"syncd restore: would not restore: {path}: {reason}")
        unsure = (
            f" ({out.unsure} of them only if they differ from a local file of the same size, "
            "which this remote gives no digest to compare with)"
            if out.unsure
            else ""
        )
        print(
            f"dry run: {len(out.planned)} file(s) would be restored{unsure}, "
            f"{len(out.identical)} identical already, {len(out.failed)} would not be; "
            "nothing changed"
        )
        return
    if req.everything and len(out.restored) > LIST_AT_MOST:
        print(f"({len(out.restored)} files restored: --json lists every one)")
    else:
        for path, what in out.restored:
            print(show(f"restored {path} ({what})"))
    for path, aside in out.kept_aside:
        print(show(f"kept your file {path} as {aside}"))
    for path, reason in out.failed:
        say(f"syncd restore: not restored: {path}: {reason}")
    line = (
        f"restore: {len(out.restored)} restored ({human(out.bytes)}), "
        f"{len(out.identical)} identical already, {len(out.failed)} not restored"
    )
    print(line)
    if out.failed:
        say("syncd restore: fix what is listed above, then run the same command again")


def _doc(out: Outcome, req: Request) -> dict[str, Any]:
    return {
        "version": 1,
        "dry_run": req.dry_run,
        "planned": [{"path": p, "what": w} for p, w in out.planned],
        "unsure": out.unsure,
        "restored": [{"path": p, "what": w} for p, w in out.restored],
        "identical": out.identical,
        "kept_aside": [{"path": p, "kept_as": a} for p, a in out.kept_aside],
        "not_restored": [{"path": p, "reason": r} for p, r in out.failed],
        "notes": out.notes,
        "bytes": out.bytes,
        "ok": out.ok,
    }


# --------------------------------------------------------------------------- syncd versions


def versions(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.restore_jobs import RestoreError, locate

    cfg = load(args)
    try:
        spot = locate(cfg, args.path)
        doc = asyncio.run(_versions(cfg, spot))
    except RestoreError as e:
        say(f"syncd versions: {e}")
        return EXIT_USAGE
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_versions(doc)
    return EXIT_OK if doc["files"] else EXIT_FAILED


async def _versions(cfg: Config, spot: Any) -> dict[str, Any]:
    from pathlib import Path

    from syncd.errors import RemoteError
    from syncd.remotes.base import Versions
    from syncd.restore_jobs import Finder, file_histories

    remote = _open_remote(cfg)
    try:
        found = await file_histories(Finder(cfg, remote), spot)
        retention = None
        if isinstance(remote, Versions) and remote.features.versions:
            try:
                retention = await remote.retention()
            except RemoteError:
                retention = None
        root = Path(spot.folder.path)
        return {
            "version": 1,
            "path": str(root / spot.rel) if spot.rel else str(root),
            "remote": remote.description,
            "keeps_versions": remote.features.versions,
            "retention": retention,
            "files": [
                {
                    "path": str(root / h.rel),
                    "versions": [
                        {
                            "number": n,
                            "when_ns": v.when_ns,
                            "why": v.why,
                            "size": v.size,
                            "mtime_ns": v.mtime_ns,
                            "sha256": v.sha256,
                        }
                        for n, v in enumerate(h.versions, 1)
                    ],
                    "current": None
                    if h.current is None
                    else {
                        "size": h.current.size,
                        "mtime_ns": h.current.mtime_ns,
                        "sha256": h.current.sha256,
                    },
                }
                for h in found
            ],
        }
    finally:
        await remote.aclose()


def _print_versions(doc: dict[str, Any]) -> None:
    from syncd.report import human
    from syncd.timespec import format_time

    def when(ns: int | None) -> str:
        return format_time(ns) if ns is not None else "-"

    if not doc["keeps_versions"]:
        say(
            f"syncd versions: {doc['remote']} keeps no versions: only current copies can be "
            "restored (syncd restore PATH)"
        )
    elif doc["retention"]:
        say(doc["retention"])
    if not doc["files"]:
        say(f"syncd versions: the server holds no copy and no version of {doc['path']}")
        return
    for f in doc["files"]:
        print(show(f["path"]))
        print(
            f"  {'#':>3}  {'stopped being current':<21}  {'why':<11}  {'size':>9}  "
            f"{'modified':<19}  sha256"
        )
        for v in f["versions"]:
            sha = (v["sha256"] or "-")[:12]
            print(
                f"  {v['number']:>3}  {when(v['when_ns']):<21}  {v['why']:<11}  "
                f"{human(v['size']):>9}  {when(v['mtime_ns']):<19}  {sha}"
            )
        cur = f["current"]
        if cur is None:
            print("  (not on the server now: deleted)")
        else:
            sha = (cur["sha256"] or "-")[:12]
            print(
                f"  {'now':>3}  {'current':<21}  {'':<11}  {human(cur['size']):>9}  "
                f"{when(cur['mtime_ns']):<19}  {sha}"
            )
    if any(f["versions"] for f in doc["files"]):
        first = doc["files"][0]["path"]
        print(show(f"to bring one back: syncd restore {first} --version N   (or --at TIME)"))


__all__ = ["restore", "versions"]
