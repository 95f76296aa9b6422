"""The manifest: what the remote is known to hold, per folder and relative path (SQLite, WAL).

A row changes only after the remote confirmed the bytes. Rows are kept in memory per folder
(loaded once) and changes are staged, then written in one transaction per batch
(``synchronous=FULL``): a crash loses at most the last batch, which costs a re-check, never a
wrong row. A change that cannot be stored is left out of its batch with one warning; the rest
of the batch is written. Only ``syncd.recorder`` writes it; everyone may read it.

How the file is laid out, opened and migrated, and how wide integers are kept: ``syncd.manifestdb``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import ManifestError
from syncd.manifestdb import (
    BAD_VALUE,
    COLUMNS,
    WIDE_ROWS,
    named,
    number,
    open_db,
    reason,
    stored,
)
from syncd.types import LocalFile, Row

if TYPE_CHECKING:
    from syncd.config import Config, FolderConfig

log = logging.getLogger("syncd.manifest")

FILENAME = "manifest.sqlite3"


def scope_of(config: Config, folder: FolderConfig) -> str:
    """The manifest key of a folder: which remote, and where on it."""
    return f"{config.remote.kind}:{config.remote.url.rstrip('/')}/#{folder.remote_path}"


@dataclass(frozen=True)
class Totals:
    files: int
    bytes: int
    last_synced: float | None


class Manifest:
    """One SQLite file in the state dir. Use as a context manager; one writer per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Row]] = {}
        self._counts: dict[str, int] = {}
        self._staged: list[tuple[str, tuple[object, ...]]] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ManifestError(f"{path}: cannot create the state dir: {e.strerror}") from e
        try:
            self._db = open_db(self.path)
        except sqlite3.DatabaseError as e:
            # A corrupt manifest is set aside, not trusted and not fatal: syncd starts a new
            # one and rebuilds it from the server's listing (identical files are adopted,
            # nothing is deleted because of the loss).
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("%s is unreadable (%s); moved aside to %s, rebuilding", path, e, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            try:
                self._db = open_db(self.path)
            except sqlite3.DatabaseError as e2:
                raise ManifestError(f"{path}: cannot open the manifest: {e2}") from e2

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Manifest:
        return cls(state_dir / FILENAME)

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    # -- reading ----------------------------------------------------------------------------
    def rows(self, scope: str) -> dict[str, Row]:
        """Every row of one folder, by relative path (loaded once, then kept current)."""
        cached = self._cache.get(scope)
        if cached is None:
            with self._lock:
                cur = self._db.execute(f"SELECT {COLUMNS} FROM files WHERE scope = ?", (scope,))
                cached = {row.rel: row for row in map(Row._make, cur)}
                for rel, _size, mtime, ctime, inode in self._db.execute(WIDE_ROWS, (scope,)):
                    cached[rel] = cached[rel]._replace(
                        mtime_ns=number(mtime), ctime_ns=number(ctime), inode=number(inode)
                    )
            self._cache[scope] = cached
        return cached

    def loaded(self, scope: str) -> bool:
        """Are the rows of ``scope`` in memory (``rows`` was called)?"""
        return scope in self._cache

    def states(self, scope: str) -> set[tuple[str, int, int, int, int]]:
        """``(path, size, mtime_ns, ctime_ns, inode)`` of every row of ``scope``, read from the
        table without loading the rows: when a scan's files (``LocalFile`` tuples) are exactly
        these, the folder matches the rows and the rows are not needed (a folder in sync is
        known to be so sooner, with less memory). Only while the rows are not loaded:
        loaded rows may hold changes not written yet. Safe to call from a worker thread."""
        with self._lock:
            cur = self._db.execute(
                "SELECT path, size, mtime_ns, ctime_ns, inode FROM files WHERE scope = ?",
                (scope,),
            )
            states = set(cur)
            wide = list(self._db.execute(WIDE_ROWS, (scope,)))
        for rel, size, mtime, ctime, inode in wide:
            states.discard((rel, size, mtime, ctime, inode))
            states.add((rel, size, number(mtime), number(ctime), number(inode)))
        return states

    def count(self, scope: str) -> int:
        """``len(rows(scope))``, without loading the rows."""
        cached = self._cache.get(scope)
        if cached is not None:
            return len(cached)
        n = self._counts.get(scope)
        if n is None:  # while the rows are not loaded, nothing changes them
            with self._lock:
                (n,) = self._db.execute(
                    "SELECT count(*) FROM files WHERE scope = ?", (scope,)
                ).fetchone()
            self._counts[scope] = n
        return n

    def get(self, scope: str, rel: str) -> Row | None:
        return self.rows(scope).get(rel)

    def totals(self, scope: str) -> Totals:
        with self._lock:
            n, size, last = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), max(synced_at) FROM files"
                " WHERE scope = ?",
                (scope,),
            ).fetchone()
        return Totals(n, size, last)

    # -- staging changes (visible at once in memory, durable at the next flush) -------------
    def put(self, scope: str, row: Row) -> None:
        self.rows(scope)[row.rel] = row
        rel, size, mtime, sha, synced, ctime, inode, exe = row
        self._staged.append(
            (
                f"INSERT OR REPLACE INTO files (scope, {COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    scope,
                    rel,
                    size,
                    stored(mtime),
                    sha,
                    synced,
                    stored(ctime),
                    stored(inode),
                    int(bool(exe)),
                ),
            )
        )

    def delete(self, scope: str, rel: str) -> None:
        self.rows(scope).pop(rel, None)
        self._staged.append(("DELETE FROM files WHERE scope = ? AND path = ?", (scope, rel)))

    def delete_tree(self, scope: str, rel_dir: str) -> list[Row]:
        """Drop every row under directory ``rel_dir``; returns the rows dropped."""
        rows = self.rows(scope)
        prefix = rel_dir.rstrip("/") + "/"
        gone = [r for p, r in rows.items() if p.startswith(prefix)]
        for r in gone:
            self.delete(scope, r.rel)
        return gone

    def move(self, scope: str, src: str, dst: str, local: LocalFile | None = None) -> None:
        """The row at ``src`` becomes ``dst``; ``local``: the file now at ``dst`` (a rename
        changes its ctime), else the identity stays as it was (a file in a renamed directory)."""
        row = self.rows(scope).get(src)
        if row is None:
            return
        self.delete(scope, src)
        ctime, inode = (local.ctime_ns, local.inode) if local else (row.ctime_ns, row.inode)
        self.put(scope, row._replace(rel=dst, synced_at=time.time(), ctime_ns=ctime, inode=inode))

    def rekey(self, old: str, new: str) -> int:
        """Rows recorded under ``old`` become ``new``'s (the same mirror reached by another URL
        spelling). Written at once. Returns how many rows moved."""
        self.flush()
        with self._lock:
            self._db.execute("BEGIN")
            n = self._db.execute("UPDATE files SET scope = ? WHERE scope = ?", (new, old)).rowcount
            for table in ("outbox", "held", "mirrors"):
                self._db.execute(f"DELETE FROM {table} WHERE scope = ?", (new,))
                self._db.execute(f"UPDATE {table} SET scope = ? WHERE scope = ?", (new, old))
            self._db.execute("COMMIT")
        for cache in (self._cache, self._counts):
            cache.pop(old, None)
            cache.pop(new, None)
        return n

    # -- which mirror, and the server's state --------------------------------------------------
    def mirror(self, scope: str) -> tuple[str, str | None] | None:
        """(mirror id, last state token) recorded for ``scope``, or None."""
        with self._lock:
            got = self._db.execute(
                "SELECT mirror, state FROM mirrors WHERE scope = ?", (scope,)
            ).fetchone()
        return (got[0], got[1]) if got else None

    def scope_of_mirror(self, mirror: str) -> str | None:
        """The scope whose rows describe ``mirror``, if any."""
        with self._lock:
            got = self._db.execute(
                "SELECT scope FROM mirrors WHERE mirror = ?", (mirror,)
            ).fetchone()
        return got[0] if got else None

    def set_mirror(self, scope: str, mirror: str, state: str | None = None) -> None:
        self._staged.append(
            ("INSERT OR REPLACE INTO mirrors VALUES (?, ?, ?)", (scope, mirror, state))
        )

    # -- held deletions --------------------------------------------------------------------------
    def hold(self, scope: str, count: int, reason: str) -> None:
        """Record (or update) the deletions held back for ``scope``; ``since`` is kept."""
        self._staged.append(
            (
                "INSERT INTO held VALUES (?, ?, ?, ?) ON CONFLICT(scope) DO UPDATE SET"
                " count = excluded.count, reason = excluded.reason",
                (scope, count, reason, time.time()),
            )
        )

    def release(self, scope: str) -> None:
        self._staged.append(("DELETE FROM held WHERE scope = ?", (scope,)))

    def held(self) -> list[tuple[str, int, str, float]]:
        """Every (scope, count, reason, since) of held deletions, as last committed."""
        with self._lock:
            return list(self._db.execute("SELECT scope, count, reason, since FROM held"))

    # -- the outbox ---------------------------------------------------------------------------
    def outbox_add(self, scope: str, rel: str, dest: str | None = None) -> None:
        self._staged.append(
            ("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)", (scope, rel, time.time(), dest))
        )

    def outbox_remove(self, scope: str, rel: str) -> None:
        self._staged.append(("DELETE FROM outbox WHERE scope = ? AND path = ?", (scope, rel)))

    def outbox(self) -> list[tuple[str, str, float, str | None]]:
        """Every (scope, path, since, move destination) waiting to be sent again."""
        with self._lock:
            return list(self._db.execute("SELECT scope, path, since, dest FROM outbox"))

    @property
    def pending(self) -> int:
        return len(self._staged)

    def flush(self) -> None:
        """Write every staged change in one transaction (blocking)."""
        self._write(self._take())

    async def aflush(self) -> None:
        """``flush`` without blocking the event loop: the commit's fsync runs in a thread."""
        import asyncio

        staged = self._take()
        if staged:
            await asyncio.to_thread(self._write, staged)

    def _take(self) -> list[tuple[str, tuple[object, ...]]]:
        # Called on the thread that stages (the event loop), so nothing staged is lost.
        staged, self._staged = self._staged, []
        return staged

    def _write(self, staged: list[tuple[str, tuple[object, ...]]]) -> None:
        if not staged:
            return
        left_out = 0
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for sql, args in staged:
                    try:
                        self._db.execute(sql, args)
                    except BAD_VALUE as e:
                        # This change only (a value SQLite cannot take): the rest of the batch
                        # is written. Without its row the file is checked again next time.
                        left_out += 1
                        log.warning("manifest: %s not recorded: %s", named(args), reason(e))
                self._db.execute("COMMIT")
            except BaseException as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(e, sqlite3.Error):
                    raise ManifestError(f"{self.path}: cannot write the manifest: {e}") from e
                raise
        log.debug("manifest: committed %d changes", len(staged) - left_out)
