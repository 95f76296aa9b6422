"""Uploads in progress that a restart can resume: one small JSON record per upload, in the
state dir beside the manifest (``<state_dir>/uploads/``).

A remote that resumes (``syncd serve``'s resumable uploads, S3 multipart uploads) writes the
record when the upload is created on the server and drops it when the upload is finished or
given up. Each record names the local file by its identity (size, mtime, ctime, inode): an
upload is resumed only for the very file it was started for, and cancelled otherwise.
Records are written atomically (temp file, fsync, rename); one that cannot be read is
treated as absent. Without a directory (a remote opened outside a folder's pass) the records
live in memory only, which still resumes after a dropped connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from syncd.types import LocalFile

log = logging.getLogger("syncd.resumes")

MAX_AGE = 7 * 86400.0
"""Seconds after which a record left behind is dropped (its server upload long expired)."""


def identity(local: LocalFile) -> list[int]:
    """The local file's identity as a record keeps it: size, mtime, ctime, inode."""
    return [local.size, local.mtime_ns, local.ctime_ns, local.inode]


class Resumes:
    """The records of uploads in progress, by key (the remote's kind, address and path)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._memory: dict[str, dict[str, Any]] = {}

    def _file(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record under ``key`` (None if none, unreadable, or for another key)."""
        path = self._file(key)
        if path is None:
            return self._memory.get(key)
        try:
            record = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("resume record %s is unreadable (%s); starting the upload again", path, e)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Keep ``record`` under ``key`` (durably: it must outlive a SIGKILL)."""
        record = {**record, "key": key, "saved": time.time()}
        path = self._file(key)
        if path is None:
            self._memory[key] = record
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            # Not fatal: the upload goes on, it just cannot be resumed after a restart.
            log.warning("cannot keep the resume record %s: %s", path, e.strerror)

    def drop(self, key: str) -> None:
        path = self._file(key)
        if path is None:
            self._memory.pop(key, None)
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the resume record %s: %s", path, e.strerror)

    def sweep(self, max_age: float = MAX_AGE) -> int:
        """Drop records older than ``max_age`` seconds; how many were dropped."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        cutoff = time.time() - max_age
        dropped = 0
        for path in self.directory.glob("*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    dropped += 1
            except OSError:
                continue
        return dropped
