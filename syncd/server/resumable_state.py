"""Resumable uploads on disk: ``ROOT/.~syncd-uploads/<id>.part`` (the bytes received so far)
and ``<id>.json`` (the target path, the length if known, the file's metadata), so that an
upload survives a restart of the server (docs/protocol.md, "Resumable uploads").

The offset of an upload is the size of its ``.part``: bytes are appended only in order, and
fsynced when an append ends (however it ends), so what is there is what was received.
Uploads not appended to for :data:`MAX_AGE` are removed by :meth:`Parts.sweep`. Every
method blocks: run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.server.errors import NotFound, os_error
from syncd.server.fdio import O_CLOEXEC, O_NOFOLLOW, fsync_quiet
from syncd.types import RESERVED_PREFIX

log = logging.getLogger("syncd.server")

UPLOADS_DIR = f"{RESERVED_PREFIX}uploads"
MAX_AGE = 24 * 3600
"""Seconds an upload waits for its next append before it is removed (``max-age``)."""
_ID = re.compile(r"[0-9a-f]{32}\Z")


@dataclass(frozen=True)
class Meta:
    """What an upload was created for."""

    parts: tuple[str, ...]
    length: int | None
    mtime_ns: int | None
    executable: bool | None
    digests: tuple[str, ...]  # the sha-256s the creation's Repr-Digest named (hex)


def valid_id(uid: str) -> bool:
    return bool(_ID.match(uid))


class Parts:
    """The uploads in ``root``'s :data:`UPLOADS_DIR`."""

    def __init__(self, root: Path) -> None:
        self.dir = root / UPLOADS_DIR

    def _path(self, uid: str, suffix: str) -> Path:
        if not valid_id(uid):
            raise NotFound("no such upload")
        return self.dir / f"{uid}{suffix}"

    def create(self, meta: Meta) -> str:
        """A new upload (its ``.part`` empty); returns its id."""
        uid = secrets.token_hex(16)
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            record = {
                "parts": list(meta.parts),
                "length": meta.length,
                "mtime_ns": meta.mtime_ns,
                "executable": meta.executable,
                "digests": list(meta.digests),
                "created": time.time(),
            }
            tmp = self._path(uid, ".json.tmp")
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            fd = os.open(self._path(uid, ".part"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.replace(tmp, self._path(uid, ".json"))
            self.sync_dir()
        except OSError as e:
            raise os_error(e, "a new upload") from e
        return uid

    def sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
        try:
            fsync_quiet(fd)
        finally:
            os.close(fd)

    def meta(self, uid: str) -> Meta:
        """The upload's record (NotFound if there is none, or it is unreadable)."""
        try:
            with open(self._path(uid, ".json"), encoding="utf-8", errors="surrogateescape") as f:
                r = json.load(f)
            return Meta(
                tuple(r["parts"]),
                r["length"],
                r["mtime_ns"],
                r["executable"],
                tuple(r.get("digests", ())),
            )
        except (OSError, ValueError, KeyError, TypeError):
            raise NotFound("no such upload (unknown, finished, cancelled or expired)") from None

    def exists(self, uid: str) -> bool:
        return valid_id(uid) and self._path(uid, ".json").exists()

    def offset(self, uid: str) -> int:
        try:
            return os.stat(self._path(uid, ".part"), follow_symlinks=False).st_size
        except OSError:
            raise NotFound("no such upload (unknown, finished, cancelled or expired)") from None

    def open_append(self, uid: str) -> int:
        """An fd of the upload's data for writing (the caller writes at the offset)."""
        try:
            return os.open(self._path(uid, ".part"), os.O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
        except OSError:
            raise NotFound("no such upload (unknown, finished, cancelled or expired)") from None

    def hash_prefix(self, uid: str, size: int) -> hashlib._Hash:
        """sha-256 state of the first ``size`` bytes received (after a restart)."""
        h = hashlib.sha256()
        fd = os.open(self._path(uid, ".part"), os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        try:
            off = 0
            while off < size:
                piece = os.pread(fd, min(8 << 20, size - off), off)
                if not piece:
                    raise NotFound("the upload's data is shorter than its offset")
                h.update(piece)
                off += len(piece)
        finally:
            os.close(fd)
        return h

    def open_dir(self) -> int:
        return os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

    def drop(self, uid: str) -> None:
        """Remove the upload (idempotent)."""
        for suffix in (".json", ".part"):
            try:
                self._path(uid, suffix).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove upload %s%s: %s", uid, suffix, e.strerror)

    def age(self, uid: str) -> float:
        """Seconds since the upload was created or last appended to."""
        try:
            return max(0.0, time.time() - self._path(uid, ".part").stat().st_mtime)
        except OSError:
            return 0.0

    def sweep(self, max_age: float = MAX_AGE) -> int:
        """Remove the uploads not appended to for ``max_age`` seconds; how many."""
        if not self.dir.is_dir():
            return 0
        gone = 0
        for entry in os.scandir(self.dir):
            uid, _, suffix = entry.name.partition(".")
            if suffix == "part" and valid_id(uid) and self.age(uid) > max_age:
                self.drop(uid)
                gone += 1
            elif suffix in ("json", "json.tmp") and not (self.dir / f"{uid}.part").exists():
                self.drop(uid)
                with_tmp = self.dir / f"{uid}.json.tmp"
                with_tmp.unlink(missing_ok=True)
        if gone:
            log.info("removed %d resumable upload(s) left for over %d s", gone, int(max_age))
        return gone
