"""``syncd run``, ``syncd sync`` and ``syncd verify``: the client's passes over every folder.

``sync`` plans without the event loop first (``Prescan``) and starts the engine only when there
is something to do; a state dir held by a running daemon hands the pass to it."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from syncd.cli_io import EXIT_FAILED, EXIT_OK, EXIT_UNCHECKED, load, say, show
from syncd.errors import SyncdError

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.prescan import Prescan
    from syncd.report import Progress, Report, VerifyReport
    from syncd.statelock import AlreadyRunning


def run(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.daemon import Daemon
    from syncd.statelock import StateLock

    cfg = load(args)
    # One worker per state dir, for the daemon's whole life (AlreadyRunning: exit 1).
    with StateLock(cfg.sync.state_dir, "run"):
        return asyncio.run(Daemon(cfg).serve())


def sync(args: argparse.Namespace) -> int:
    from syncd.statelock import AlreadyRunning, StateLock

    cfg = load(args)
    if args.dry_run:  # changes nothing: plans locally, without the lock, even while one runs
        return _sync_pass(args, cfg)
    try:
        lock = StateLock(cfg.sync.state_dir, "sync").acquire()
    except AlreadyRunning as e:
        return _delegate_sync(args, cfg, e)
    with lock:
        return _sync_pass(args, cfg)


def _delegate_sync(args: argparse.Namespace, cfg: Config, held: AlreadyRunning) -> int:
    """The state dir is locked: a running daemon makes the pass (over its control socket) and
    its result is printed as ours; any other holder (another `syncd sync`) is refused."""
    import asyncio

    from syncd.status.client import ask_sync

    async def ask() -> dict[str, Any] | None:
        # A `syncd run` that has just started opens its control socket a moment later.
        deadline = time.monotonic() + (10 if held.command == "run" else 0)
        while True:
            doc = await ask_sync(cfg.sync.state_dir, force_delete=args.force_delete)
            if doc is not None or time.monotonic() >= deadline:
                return doc
            await asyncio.sleep(0.2)

    doc = asyncio.run(ask())
    if doc is None:
        say(f"syncd: {held}; not starting a second pass")
        return EXIT_FAILED
    if doc.get("error"):
        say(f"syncd: the running daemon (pid {doc.get('pid')}): {doc['error']}")
        return EXIT_FAILED
    say(f"syncd: the running daemon (pid {doc.get('pid')}) made this pass")
    for p in doc.get("failed", []):
        say(f"syncd: failed: {p['path']}: {p['reason']}")
    if doc.get("outcome"):
        say(f"syncd: {doc['outcome']}")
    print(doc["summary"])
    return EXIT_FAILED if doc.get("failed") or doc.get("outcome") else EXIT_OK


def _sync_pass(args: argparse.Namespace, cfg: Config) -> int:
    """``syncd sync`` proper, in this process (the state dir is ours, or --dry-run)."""
    from syncd.prescan import Prescan
    from syncd.report import Report

    report = Report()
    # Scan and plan first, without the event loop: when there is nothing to do (the common
    # case), that is the whole pass, and neither asyncio nor the HTTP client is imported.
    pre = Prescan(cfg)
    if pre.settled:
        pre.close()
        report.unchanged = pre.unchanged
        report.finished = time.monotonic()
    else:
        report = _engine_sync(args, cfg, pre, report)
    if args.dry_run:
        for line in report.planned:
            print(show(line))
        print(f"dry run: {len(report.planned)} changes planned, nothing changed")
    for p in report.failed:
        say(f"syncd: failed: {p}")
    if report.stopped is not None:
        # One line, however many files: why, what was left undone, what was recorded.
        if args.dry_run:
            say(f"syncd: {report.stopped}: planned from the manifest alone")
        else:
            say(f"syncd: {report.outcome()}")
    if not args.dry_run:
        print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _engine_sync(args: argparse.Namespace, cfg: Config, pre: Prescan, report: Report) -> Report:
    """The pass proper, on the engine, which takes over ``pre`` (its scans and manifest)."""
    import asyncio

    from syncd.engine import Engine

    async def go() -> Report:
        try:
            engine = Engine(
                cfg, progress=_terminal_progress(), force_delete=args.force_delete, prescan=pre
            )
        except BaseException:
            pre.close()
            raise
        async with engine:
            return await engine.sync(dry_run=args.dry_run, report=report)

    return asyncio.run(go())


def _terminal_progress() -> Progress | None:
    if sys.stderr is None or not sys.stderr.isatty():
        return None
    from syncd.progress import RichProgress

    return RichProgress()


def verify(args: argparse.Namespace) -> int:
    import asyncio

    from syncd.engine import Engine

    cfg = load(args)

    async def go() -> VerifyReport:
        async with Engine(cfg) as engine:
            return await engine.verify(times=getattr(args, "times", False))

    try:
        out = asyncio.run(go())
    except SyncdError as e:  # the server could not be reached, refused us, cannot list
        say(f"syncd: could not check: {e}")
        return EXIT_UNCHECKED
    for name in out.missing:
        print(show(f"missing on the server: {name}"))
    for name in out.extra:
        print(show(f"only on the server:    {name}"))
    for name in out.different:
        print(show(f"different:             {name}"))
    for name in out.times:
        print(show(f"different times:       {name}"))
    for p in out.failed:
        say(f"syncd: could not check: {p}")
    verdict = "identical" if out.ok else "DIFFERENT"
    timed = f", {len(out.times)} with different times" if out.times else ""
    print(
        f"verify: {verdict}: {out.identical} identical, {len(out.missing)} missing, "
        f"{len(out.extra)} only on the server, {len(out.different)} different{timed}"
    )
    if out.missing or out.extra or out.different or out.times:
        return EXIT_FAILED
    return EXIT_UNCHECKED if out.failed else EXIT_OK
