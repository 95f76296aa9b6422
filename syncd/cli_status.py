"""``syncd status``: ask the running daemon (control socket, else its status endpoint), or
print the manifest's view when none runs; the document as JSON or as lines for a person."""

from __future__ import annotations

import argparse
import time
from typing import Any

from syncd.cli_io import EXIT_BUSY, EXIT_FAILED, EXIT_NO_DAEMON, EXIT_OK, load, say, show


def status(args: argparse.Namespace) -> int:
    """0: a daemon runs and every folder is in sync; 1: errors (a path that failed, the remote
    unreachable, a folder missing, deletions held back, a daemon that does not answer);
    3: busy (syncing, starting); 4: no daemon runs (the manifest's view is printed)."""
    import asyncio

    from syncd.manifest import Manifest
    from syncd.statelock import holder
    from syncd.status.client import query, query_http
    from syncd.status.document import manifest_snapshot

    # A folder that is missing (unmounted) is reported, not a config error.
    cfg = load(args, require_folders=False)
    state_dir = cfg.sync.state_dir

    async def ask() -> dict[str, Any] | None:
        # A `syncd run` holding the state dir but not answering yet is (most likely) starting.
        deadline = time.monotonic() + 5
        while True:
            doc = await query(state_dir)
            if doc is None and cfg.status.listen:  # no control socket (Windows): the endpoint
                doc = await query_http(cfg.status.listen, wait=2)
            who = holder(state_dir) if doc is None else None
            if doc is not None or who is None or who[1] != "run" or time.monotonic() > deadline:
                return doc
            await asyncio.sleep(0.2)

    doc = asyncio.run(ask())
    if doc is not None:
        print(status_text(doc, as_json=args.json))
        if doc.get("state") in ("syncing", "starting"):
            return EXIT_BUSY
        return EXIT_OK if doc.get("state") == "in_sync" else EXIT_FAILED
    with Manifest.in_state_dir(state_dir) as m:
        doc = manifest_snapshot(cfg, m)
    who = holder(state_dir)
    print(status_text(doc, as_json=args.json))
    if who is not None and who[1] == "run":
        say(
            f"syncd: `syncd run` (pid {who[0]}) holds {state_dir} but does not answer on its "
            "control socket"
        )
        return EXIT_FAILED
    if who is not None and not args.json:
        print(f"(`syncd {who[1]}`, pid {who[0]}, is making a pass now)")
    return EXIT_NO_DAEMON


def status_text(doc: dict[str, Any], *, as_json: bool) -> str:
    """The status document as ``--json`` prints it (ASCII JSON), or the human view; in both,
    no secret (the daemon's document has none; an older daemon's might) and, in the human
    view, names escaped line by line."""
    import json

    from syncd.logs import REDACTOR

    if as_json:
        return REDACTOR.scrub(json.dumps(doc, indent=2))
    return "\n".join(show(line) for line in human_status(doc))


def watch_line(wd: dict[str, Any]) -> str:
    """A folder watched in part: how much is polled, how often, and the sysctl that ends it."""
    every = wd["poll_interval"]
    limit = "unknown" if wd["limit"] is None else f"{wd['limit']:,}"
    total = wd["watched_dirs"] + wd["polled_dirs"]
    return (
        f"    watch: degraded -- {wd['polled_dirs']:,} of {total:,} directories polled every "
        f"{every:g} s (inotify limit {limit}); raise it: {wd['sysctl']}"
    )


def human_status(doc: dict[str, Any]) -> list[str]:
    """The human view of the status document (the same figures as --json)."""
    from syncd.report import human as _human

    def when(t: float | None) -> str:
        if not t:
            return "never"
        fmt = "%H:%M:%S" if time.time() - t < 86400 else "%Y-%m-%d %H:%M:%S"
        return time.strftime(fmt, time.localtime(t))

    d, r, t = doc["daemon"], doc["remote"], doc["totals"]
    state = {"in_sync": "in sync", "syncing": "syncing", "starting": "first scan and upload"}
    lines: list[str] = []
    if d is None:
        lines.append("NOT RUNNING: no daemon is running; what the manifest says:")
    else:
        lines.append(
            f"{state.get(doc['state'], doc['state'].upper())}: daemon pid {d['pid']}, "
            f"up since {when(d['started'])}, last in sync {when(doc['last_sync'])}"
        )
    remote = f"remote: {r['url']}"
    if r["error"]:
        remote += f" -- {r['error']}"
    elif r["reachable"] is False:
        remote += (
            f" -- UNREACHABLE since {when(r['unreachable_since'])}, {r['queued']} change(s) queued"
        )
    elif r["reachable"]:
        remote += " (reachable)"
    lines.append(remote)
    if r.get("versions"):
        lines.append(f"  {r['versions']}")
    for f in doc["folders"]:
        head = f"  {f['path']} -> {f['remote_path']}: "
        if d is None:
            head += (
                f"{f['files']} files, {_human(f['bytes'])}, last file {when(f['last_synced_file'])}"
            )
        else:
            what = "in sync" if f["in_sync"] else state.get(f["state"], f["state"])
            head += (
                f"{what}; {f['files']} files, {_human(f['bytes'] or 0)}; "
                f"{f['pending_count']} pending, {len(f['in_flight'])} in flight; "
                f"watcher {f['watcher']}"
            )
        lines.append(head)
        if f.get("unavailable"):
            lines.append(f"    FOLDER UNAVAILABLE: {f['unavailable']}")
        if wd := f.get("watch_degraded"):
            lines.append(watch_line(wd))
        held = f.get("held_deletions")
        if held:
            lines.append(
                f"    {held['count']} deletion(s) HELD BACK since {when(held['since'])}: "
                f"{held['reason']}"
            )
            lines.append("    to release them (delete on the server): syncd sync --force-delete")
        for x in f["in_flight"]:
            pct = 100 * x["bytes_done"] / x["bytes_total"] if x["bytes_total"] else 100
            lines.append(
                f"    {x['op']} {x['path']}: {pct:.0f}% of {_human(x['bytes_total'])} "
                f"({_human(x['rate'])}/s)"
            )
        for p in f["pending"][:5]:
            lines.append(f"    pending {p}")
        if f["pending_count"] > 5:
            lines.append(f"    ... and {f['pending_count'] - 5} more pending")
    if d is not None:
        lines.append(
            f"since start: uploaded {t['uploaded']}, deleted {t['deleted']}, moved {t['moved']}, "
            f"sent {_human(t['bytes_sent'])}, {t['retries']} retries, {t['errors']} current errors"
        )
    for e in doc["errors"][:10]:
        where = "/".join(p for p in (e["folder"], e["path"]) if p)
        done = "" if e["current"] else " (resolved since)"
        lines.append(f"  error at {when(e['time'])} [{e['kind']}] {where}: {e['reason']}{done}")
    if d is not None and d.get("status_url"):
        lines.append(f"status page: {d['status_url']}")
    return lines  # one line each: a newline in a name is escaped within its line
