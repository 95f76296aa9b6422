"""The status document's shared pieces (docs/status.md), and the document when no daemon
runs: ``manifest_snapshot()``, what the manifest knows (``syncd status`` without a daemon).

A running daemon's document is built by ``StatusBoard`` (status/board.py) with the same
pieces: ``SCHEMA_VERSION``, ``totals()``, ``held_by_scope()``, ``public_url()``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from syncd.config import Config
from syncd.manifest import Manifest, scope_of
from syncd.remotes.kinds import versions_line

SCHEMA_VERSION = 1


def manifest_snapshot(config: Config, manifest: Manifest) -> dict[str, Any]:
    """The status document when no daemon runs: what the manifest knows (``source`` is
    ``"manifest"``; what only a daemon can know is null). A folder that is missing, or whose
    deletions are held back, has the state ``"error"``; the others ``"stopped"``."""
    queued: dict[str, list[str]] = {}
    for scope, rel, *_ in manifest.outbox():
        queued.setdefault(scope, []).append(rel)
    held = held_by_scope(manifest)
    folders: list[dict[str, Any]] = []
    for f in config.folders:
        scope = scope_of(config, f)
        t = manifest.totals(scope)
        pending = sorted(queued.get(scope, []))
        problem = folder_problem(f.path)
        hold = held.get(scope)
        folders.append(
            {
                "path": str(f.path),
                "remote_path": f.remote_path,
                "state": "error" if problem or hold else "stopped",
                "in_sync": None,
                "last_sync": None,
                "files": t.files,
                "bytes": t.bytes,
                "last_synced_file": t.last_synced,
                "pending": pending[:100],
                "pending_count": len(pending),
                "in_flight": [],
                "watcher": "stopped",
                "watcher_restarts": 0,
                "watch_degraded": None,
                "errors": None,
                "unavailable": problem,
                "held_deletions": hold,
            }
        )
    return {
        "version": SCHEMA_VERSION,
        "source": "manifest",
        "time": time.time(),
        "state": "stopped",
        "in_sync": None,
        "last_sync": None,
        "daemon": None,
        "remote": {
            "url": public_url(config.remote.url),
            "reachable": None,
            "unreachable_since": None,
            "queued": sum(len(v) for v in queued.values()),
            "last_transfer": None,
            "error": None,
            "versions": versions_line(config.remote),
        },
        "folders": folders,
        "totals": totals(
            folders,
            uploaded=None,
            deleted=None,
            moved=None,
            bytes_sent=None,
            errors=None,
            retries=None,
        ),
        "recent": [],
        "errors": [],
    }


def totals(
    folders: list[dict[str, Any]], *, light: bool = False, **since_start: Any
) -> dict[str, Any]:
    """The document's ``totals``: the folders' figures summed, with the daemon's counts since
    it started (``since_start``, in the document's order; null when no daemon runs)."""
    return {
        "files": sum(f["files"] for f in folders),
        "bytes": None if light else sum(f["bytes"] for f in folders),
        "pending": sum(f["pending_count"] for f in folders),
        "in_flight": sum(len(f["in_flight"]) for f in folders),
        **since_start,
        "held_deletions": sum((f["held_deletions"] or {}).get("count", 0) for f in folders),
    }


def held_by_scope(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """``Manifest.held()`` as the status document's ``held_deletions`` entries, by scope."""
    return {
        scope: {"count": count, "reason": reason, "since": since}
        for scope, count, reason, since in manifest.held()
        if count
    }


def folder_problem(path: Path) -> str | None:
    """Why a configured folder cannot be mirrored now (missing, not a directory,
    unreadable), or None. For the manifest's view: a daemon has its watcher's word."""
    try:
        if not path.is_dir():
            return "not a directory" if path.exists() else "folder does not exist"
        os.scandir(path).close()
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    return None


def public_url(url: str) -> str:
    """``url`` as it may be shown: without userinfo (``user:password@``, a token as the
    user name). Config refuses credentials in URLs; this is defence in depth."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


__all__ = [
    "SCHEMA_VERSION",
    "folder_problem",
    "held_by_scope",
    "manifest_snapshot",
    "public_url",
    "totals",
]
